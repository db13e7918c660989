// Package namespaces installs chorus's client protocol (docs/protocol.md) on Socket.IO namespaces:
// join, leave and publish, each acked with {ok:true} or a coded error, under the namespace's room policy.
package namespaces

import (
	"context"
	"log/slog"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/rooms"
)

// Error codes of the client protocol, besides the wrapper's own (sio.Code*).
const (
	CodeInvalidRoom = "invalid_room"
	CodeForbidden   = "forbidden"
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
	if rooms.IsServerRoom(r.Room) {
		return sio.Errorf(CodeForbidden, "%q is reserved for chorus: clients cannot publish to it", r.Room)
	}
	switch {
	case r.Event == nil || *r.Event == "":
		return sio.Errorf(sio.CodeInvalidArgument, "publish: event must be a non-empty string")
	case len(*r.Event) > MaxEventLen:
		return sio.Errorf(sio.CodeInvalidArgument, "publish: event must be at most %d bytes", MaxEventLen)
	case sio.IsReserved(*r.Event):
		return sio.Errorf(sio.CodeReservedEvent, "%q is a reserved event name", *r.Event)
	}
	return nil
}

// Register installs the client protocol on n under policy.
func Register(n *sio.Namespace, policy rooms.Policy, log *slog.Logger) {
	sio.Handle(n, "join", func(ctx context.Context, c *sio.Conn, room string) (OK, error) {
		if rooms.IsServerRoom(room) && room != rooms.StatsRoom {
			return OK{}, sio.Errorf(CodeForbidden, "rooms starting with %q are reserved for chorus", rooms.ServerRoomPrefix)
		}
		if err := rooms.ValidateName(room); err != nil {
			return OK{}, sio.Errorf(CodeInvalidRoom, "%s", err)
		}
		if !policy.CanJoin(room) {
			return OK{}, sio.Errorf(CodeForbidden, "joining %q is not allowed in %s", room, n.Name())
		}
		c.Join(room)
		log.Debug("join", "sid", c.ID(), "nsp", n.Name(), "room", room)
		return ok, nil
	})
	sio.Handle(n, "leave", func(ctx context.Context, c *sio.Conn, room string) (OK, error) {
		if err := rooms.ValidateName(room); err != nil {
			return OK{}, sio.Errorf(CodeInvalidRoom, "%s", err)
		}
		c.Leave(room)
		log.Debug("leave", "sid", c.ID(), "nsp", n.Name(), "room", room)
		return ok, nil
	})
	sio.Handle(n, "publish", func(ctx context.Context, c *sio.Conn, req publishReq) (OK, error) {
		if !policy.CanPublish(req.Room) {
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
