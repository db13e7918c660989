// Package namespaces installs chorus's client protocol (docs/protocol.md) on Socket.IO namespaces:
// join, leave and publish, each acked with {ok:true} or a coded error, under the namespace's room policy.
// A publish may carry an id, which makes it effectively-once: a retry within the dedup window is acked
// {ok:true, duplicate:true} and not broadcast again.
package namespaces

import (
	"context"
	"encoding/json"
	"errors"
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
	// CodeInvalidID: publish's id is not a string of 1 to adapter.MaxDedupIDLen bytes.
	CodeInvalidID = "invalid_id"
	// CodeUnavailable: publish's id could not be checked (the cluster's Redis is unreachable);
	// nothing was broadcast, and the client should try again later with the same id.
	CodeUnavailable = "unavailable"
)

// MaxEventLen is the longest event name publish accepts, in bytes.
const MaxEventLen = 128

// OK is the ack of a request that succeeded.
type OK struct {
	OK bool `json:"ok"`
}

var ok = OK{OK: true}

// Published is the ack of a publish: Duplicate when its id was seen within the window, and the
// message was therefore not broadcast again; Local when the cluster's Redis could not take it, and
// it reached this node's members only.
type Published struct {
	OK        bool `json:"ok"`
	Duplicate bool `json:"duplicate,omitempty"`
	Local     bool `json:"local,omitempty"`
}

type publishReq struct {
	Room  string  `json:"room"`
	Event *string `json:"event"`
	Data  sio.Raw `json:"data"`
	// ID is kept raw so that a wrong type is answered with invalid_id; Validate sets id.
	ID json.RawMessage `json:"id"`
	id string
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
	case sio.IsReserved(*r.Event) || strings.HasPrefix(*r.Event, "chorus:"):
		// chorus: names the server's own events (e.g. chorus:disconnect): a client cannot forge them.
		return sio.Errorf(sio.CodeReservedEvent, "%q is a reserved event name", *r.Event)
	}
	if len(r.ID) == 0 || string(r.ID) == "null" {
		return nil // no id: published as it comes
	}
	if json.Unmarshal(r.ID, &r.id) != nil || r.id == "" || len(r.id) > adapter.MaxDedupIDLen {
		return sio.Errorf(CodeInvalidID, "publish: id must be a string of 1 to %d bytes", adapter.MaxDedupIDLen)
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

// Register installs the client protocol on n under policy. dedup remembers the ids of published
// messages (shared by every namespace: its keys include the namespace); nil accepts ids but does
// not deduplicate.
func Register(n *sio.Namespace, policy rooms.Policy, dedup adapter.Deduper, log *slog.Logger) {
	sio.Handle(n, "join", func(ctx context.Context, c *sio.Conn, room string) (OK, error) {
		if rooms.IsServerRoom(room) && room != rooms.StatsRoom {
			return OK{}, sio.Errorf(CodeForbidden, "rooms starting with %q are reserved for chorus", rooms.ServerRoomPrefix)
		}
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
	sio.Handle(n, "publish", func(ctx context.Context, c *sio.Conn, req publishReq) (resp Published, err error) {
		if !policy.PublishAllowed(req.Room, grantOf(c)) {
			return Published{}, sio.Errorf(CodeForbidden, "publishing to %q is not allowed in %s", req.Room, n.Name())
		}
		// The sender's own-id room in Except keeps the message from echoing back to it.
		opts := adapter.BroadcastOptions{Rooms: []string{req.Room}, Except: []string{c.ID()}}
		if n.Committing() {
			// In a cluster the ack waits until Redis has the message (the claim of its id, if
			// any, made in the same operation): an acknowledged message survives this node.
			var claim *adapter.DedupKey
			if req.id != "" {
				claim = &adapter.DedupKey{Namespace: n.Name(), Room: req.Room, ID: req.id}
			}
			res, err := n.EmitCommit(ctx, c, opts, claim, *req.Event, req.Data)
			if err != nil {
				return Published{}, err
			}
			switch res {
			case adapter.Duplicate:
				return Published{OK: true, Duplicate: true}, nil
			case adapter.LocalOnly:
				log.Debug("publish reached this node only: redis is unreachable", "sid", c.ID(), "nsp", n.Name(), "room", req.Room)
				return Published{OK: true, Local: true}, nil
			case adapter.Unavailable:
				log.Debug("publish refused: its id could not be checked", "sid", c.ID(), "nsp", n.Name(), "room", req.Room)
				return Published{}, sio.Errorf(CodeUnavailable, "the message id cannot be checked now; nothing was published, try again with the same id")
			}
			return Published{OK: true}, nil
		}
		if req.id != "" && dedup != nil {
			// The claim comes first, so that a retry arriving while this attempt is still being
			// handled (on another socket or node) is a duplicate, never a second broadcast.
			key := adapter.DedupKey{Namespace: n.Name(), Room: req.Room, ID: req.id}
			first, err := dedup.Claim(ctx, key)
			if err != nil {
				log.Debug("publish refused: its id could not be checked", "sid", c.ID(), "nsp", n.Name(), "room", req.Room, "err", err)
				if errors.Is(err, adapter.ErrUnavailable) {
					return Published{}, sio.Errorf(CodeUnavailable, "the message id cannot be checked now; nothing was published, try again with the same id")
				}
				return Published{}, err
			}
			if !first {
				return Published{OK: true, Duplicate: true}, nil
			}
			// Released unless the broadcast below happens (an error, or a panic the wrapper
			// recovers), so that a retry can still deliver the message.
			defer func() {
				if !resp.OK {
					dedup.Release(context.WithoutCancel(ctx), key)
				}
			}()
		}
		if err := n.Emit(opts, *req.Event, req.Data); err != nil {
			return Published{}, err
		}
		return Published{OK: true}, nil
	})
}
