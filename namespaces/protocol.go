// Package namespaces installs chorus's client protocol (docs/protocol.md) on Socket.IO namespaces:
// join, leave and publish, each acked with {ok:true} or a coded error, under the namespace's room policy.
package namespaces

import (
	"context"
	"log/slog"
	"strings"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/middleware"
	"github.com/chorus-rt/chorus/rooms"
)

// Error codes of the client protocol, besides the wrapper's own (sio.Code*).
const (
	CodeInvalidRoom  = "invalid_room"
	CodeForbidden    = "forbidden"
	CodeTooManyRooms = "too_many_rooms"
)

// MaxEventLen is the longest event name publish accepts, in bytes.
const MaxEventLen = 128

// OK is the ack of a request that succeeded.
type OK struct {
	OK bool `json:"ok"`
}

var ok = OK{OK: true}

type publishReq struct {
	Room  string  `json:"room"`
	Event *string `json:"event"`
	Data  sio.Raw `json:"data"`
}

func (r *publishReq) SetAttachments(a [][]byte) { r.Data.Attachments = a }

func (r *publishReq) Validate() error {
	if err := rooms.ValidateName(r.Room); err != nil {
		return sio.Errorf(CodeInvalidRoom, "%s", err)
	}
	switch {
	case r.Event == nil || *r.Event == "":
		return sio.Errorf(sio.CodeInvalidArgument, "publish: event must be a non-empty string")
	case len(*r.Event) > MaxEventLen:
		return sio.Errorf(sio.CodeInvalidArgument, "publish: event must be at most %d bytes", MaxEventLen)
	case sio.IsReserved(*r.Event) || strings.HasPrefix(*r.Event, "chorus:"):
		// chorus: names the server's own events (e.g. chorus:disconnect): a client cannot forge them.
		return sio.Errorf(sio.CodeReservedEvent, "%q is a reserved event name", *r.Event)
	}
	return nil
}

// grantOf returns what the socket's token adds to the namespace's policy (nothing if anonymous).
func grantOf(c *sio.Conn) rooms.Grant {
	if id, ok := middleware.IdentityOf(c); ok {
		return id.Grant()
	}
	return rooms.Grant{}
}

// joined counts the rooms c has joined by its own requests: all but its own-id room and its
// personal room. It reports too whether c is in room already.
func joined(c *sio.Conn, g rooms.Grant, room string) (n int, in bool) {
	for _, r := range c.Namespace().Adapter().Rooms(c.ID()) {
		switch {
		case r == room:
			in = true
		case r == c.ID() || (g.User != "" && r == rooms.UserRoom(g.User)):
			continue
		}
		n++
	}
	return n, in
}

// Register installs the client protocol on n under policy.
func Register(n *sio.Namespace, policy rooms.Policy, log *slog.Logger) {
	sio.Handle(n, "join", func(ctx context.Context, c *sio.Conn, room string) (OK, error) {
		if err := rooms.ValidateName(room); err != nil {
			return OK{}, sio.Errorf(CodeInvalidRoom, "%s", err)
		}
		g := grantOf(c)
		if !policy.JoinAllowed(room, g) {
			return OK{}, sio.Errorf(CodeForbidden, "joining %q is not allowed in %s", room, n.Name())
		}
		if policy.MaxRooms > 0 {
			if count, in := joined(c, g, room); !in && count >= policy.MaxRooms {
				return OK{}, sio.Errorf(CodeTooManyRooms, "a socket may be in at most %d rooms: leave one first", policy.MaxRooms)
			}
		}
		c.Join(room)
		log.Debug("join", "sid", c.ID(), "nsp", n.Name(), "room", room)
		return ok, nil
	})
	sio.Handle(n, "leave", func(ctx context.Context, c *sio.Conn, room string) (OK, error) {
		if err := rooms.ValidateName(room); err != nil {
			return OK{}, sio.Errorf(CodeInvalidRoom, "%s", err)
		}
		if rooms.IsUserRoom(room) {
			// A user's sockets stay in their personal room, the HTTP API's way to reach them.
			return OK{}, sio.Errorf(CodeForbidden, "personal rooms cannot be left")
		}
		c.Leave(room)
		log.Debug("leave", "sid", c.ID(), "nsp", n.Name(), "room", room)
		return ok, nil
	})
	sio.Handle(n, "publish", func(ctx context.Context, c *sio.Conn, req publishReq) (OK, error) {
		if !policy.PublishAllowed(req.Room, grantOf(c)) {
			return OK{}, sio.Errorf(CodeForbidden, "publishing to %q is not allowed in %s", req.Room, n.Name())
		}
		// The sender's own-id room in Except keeps the message from echoing back to it.
		opts := adapter.BroadcastOptions{Rooms: []string{req.Room}, Except: []string{c.ID()}}
		if err := n.Emit(opts, *req.Event, req.Data); err != nil {
			return OK{}, err
		}
		return ok, nil
	})
}
