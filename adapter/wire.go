package adapter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// The messages of @socket.io/redis-adapter 8.3's classic (pub/sub) adapter; doc.go describes them.

// Request types (lib/index.ts, enum RequestType).
const (
	reqSockets              = 0
	reqAllRooms             = 1
	reqRemoteJoin           = 2
	reqRemoteLeave          = 3
	reqRemoteDisconnect     = 4
	reqRemoteFetch          = 5
	reqServerSideEmit       = 6
	reqBroadcast            = 7
	reqBroadcastClientCount = 8
	reqBroadcastAck         = 9
)

// Socket.IO packet types a broadcast may carry (socket.io-parser PacketType).
const (
	packetEvent       = 2
	packetBinaryEvent = 5
)

// wireFlags are BroadcastFlags (socket.io-adapter): what chorus reads and writes of them.
type wireFlags struct {
	Volatile bool     `json:"volatile"`
	Local    bool     `json:"local"`
	Timeout  *float64 `json:"timeout"` // milliseconds, broadcast with ack only
}

// wireOpts are the broadcast options as they travel: rooms and except as arrays.
type wireOpts struct {
	Rooms  []string   `json:"rooms"`
	Except []string   `json:"except"`
	Flags  *wireFlags `json:"flags"`
}

func (o *wireOpts) options() BroadcastOptions {
	opts := BroadcastOptions{Rooms: o.Rooms, Except: o.Except}
	if o.Flags != nil {
		opts.Volatile = o.Flags.Volatile
	}
	return opts
}

// wirePacket is a decoded Socket.IO packet as Node's adapter puts it in a broadcast.
type wirePacket struct {
	Type *int            `json:"type"`
	Data json.RawMessage `json:"data"`
	Nsp  *string         `json:"nsp"`
}

// wireMessage is any request or response, JSON or msgpack; fields are those of every type.
type wireMessage struct {
	UID         *string         `json:"uid"`
	RequestID   *string         `json:"requestId"`
	Type        *int            `json:"type"`
	Rooms       []string        `json:"rooms"`
	Opts        *wireOpts       `json:"opts"`
	Close       bool            `json:"close"`
	SID         *string         `json:"sid"`
	Room        *string         `json:"room"`
	Data        json.RawMessage `json:"data"`
	Packet      json.RawMessage `json:"packet"`
	Sockets     json.RawMessage `json:"sockets"`
	ClientCount *int            `json:"clientCount"`

	attachments [][]byte // of a msgpack message: the bin values of Data / Packet
}

var errNotObject = errors.New("not an object")

// decodeMessage decodes a request or response: JSON when it starts with '{', msgpack otherwise, as
// onrequest / onresponse tell them apart.
func decodeMessage(payload []byte) (*wireMessage, error) {
	var (
		js   json.RawMessage
		atts [][]byte
		err  error
	)
	if len(payload) > 0 && payload[0] == '{' {
		js = payload
	} else if js, atts, err = msgpackToJSON(payload); err != nil {
		return nil, err
	}
	if len(js) == 0 || js[0] != '{' {
		return nil, errNotObject
	}
	m := &wireMessage{attachments: atts}
	if err := json.Unmarshal(js, m); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeBroadcast decodes the msgpack [uid, packet, opts] of a broadcast channel. The packet must
// be an event; its data (with binary parts as placeholders) becomes the returned packet's.
func decodeBroadcast(payload []byte) (uid string, p *protocol.Packet, opts BroadcastOptions, err error) {
	js, atts, err := msgpackToJSON(payload)
	if err != nil {
		return "", nil, opts, err
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(js, &parts); err != nil || len(parts) < 3 {
		return "", nil, opts, errors.New("want [uid, packet, opts]")
	}
	var anyUID any
	if err := json.Unmarshal(parts[0], &anyUID); err != nil {
		return "", nil, opts, err
	}
	uid, _ = anyUID.(string) // a uid of another type is nobody's, as === sees it
	var wp wirePacket
	if err := json.Unmarshal(parts[1], &wp); err != nil {
		return "", nil, opts, fmt.Errorf("packet: %w", err)
	}
	var wo wireOpts
	if err := json.Unmarshal(parts[2], &wo); err != nil || bytes.Equal(parts[2], []byte("null")) {
		return "", nil, opts, fmt.Errorf("opts: want an object")
	}
	p, err = eventPacket(&wp, atts)
	if err != nil {
		return "", nil, opts, err
	}
	return uid, p, wo.options(), nil
}

// eventPacket turns a wire packet into chorus's, checking that it is an event chorus can send.
func eventPacket(wp *wirePacket, atts [][]byte) (*protocol.Packet, error) {
	if wp.Type == nil || (*wp.Type != packetEvent && *wp.Type != packetBinaryEvent) {
		return nil, errors.New("packet: not an event")
	}
	nsp := "/"
	if wp.Nsp != nil {
		nsp = *wp.Nsp
	}
	if !strings.HasPrefix(nsp, "/") || strings.ContainsRune(nsp, ',') {
		return nil, errors.New("packet: not a namespace name")
	}
	p := &protocol.Packet{Type: protocol.Event, Nsp: nsp, Data: wp.Data, Attachments: atts}
	args, err := protocol.Args(p.Data)
	if err != nil || len(args) == 0 || len(args[0]) == 0 || args[0][0] != '"' {
		return nil, errors.New("packet: data is not [event, ...args]")
	}
	if len(atts) > 0 {
		if err := p.Complete(atts); err != nil {
			return nil, fmt.Errorf("packet: %w", err)
		}
	}
	return p, nil
}

// msgEncoder writes one msgpack message.
type msgEncoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
	err error
}

func newMsgEncoder() *msgEncoder {
	e := &msgEncoder{}
	e.enc = msgpack.NewEncoder(&e.buf)
	return e
}

func (e *msgEncoder) do(f func() error) {
	if e.err == nil {
		e.err = f()
	}
}

func (e *msgEncoder) str(s string)   { e.do(func() error { return e.enc.EncodeString(s) }) }
func (e *msgEncoder) int(n int64)    { e.do(func() error { return e.enc.EncodeInt(n) }) }
func (e *msgEncoder) mapLen(n int)   { e.do(func() error { return e.enc.EncodeMapLen(n) }) }
func (e *msgEncoder) arrayLen(n int) { e.do(func() error { return e.enc.EncodeArrayLen(n) }) }
func (e *msgEncoder) value(v Value) {
	e.do(func() error { return jsonToMsgpack(e.enc, v.JSON, atts(v)) })
}
func (e *msgEncoder) bytes() ([]byte, error) { return e.buf.Bytes(), e.err }

// atts returns the attachments placeholders may point to: nil when there are none, so that an
// object that merely looks like a placeholder in a text packet stays an object.
func atts(v Value) [][]byte {
	if len(v.Attachments) == 0 {
		return nil
	}
	return v.Attachments
}

func (e *msgEncoder) strings(l []string) {
	e.arrayLen(len(l))
	for _, s := range l {
		e.str(s)
	}
}

// packet writes {type: 2, data, nsp} as BroadcastOperator builds it (type EVENT, even with binary).
func (e *msgEncoder) packet(nsp string, p *protocol.Packet) {
	e.mapLen(3)
	e.str("type")
	e.int(packetEvent)
	e.str("data")
	e.value(Value{JSON: p.Data, Attachments: p.Attachments})
	e.str("nsp")
	e.str(nsp)
}

// opts writes {rooms, except, flags}; timeout (milliseconds) is set for a broadcast with ack.
func (e *msgEncoder) opts(o BroadcastOptions, timeout float64) {
	e.mapLen(3)
	e.str("rooms")
	e.strings(o.Rooms)
	e.str("except")
	e.strings(o.Except)
	e.str("flags")
	n := 0
	if o.Volatile {
		n++
	}
	if timeout > 0 {
		n++
	}
	e.mapLen(n)
	if o.Volatile {
		e.str("volatile")
		e.do(func() error { return e.enc.EncodeBool(true) })
	}
	if timeout > 0 {
		e.str("timeout")
		e.int(int64(math.Ceil(timeout)))
	}
}

// encodeBroadcast encodes the message of a broadcast channel: [uid, packet, opts].
func encodeBroadcast(uid, nsp string, p *protocol.Packet, o BroadcastOptions) ([]byte, error) {
	e := newMsgEncoder()
	e.arrayLen(3)
	e.str(uid)
	e.packet(nsp, p)
	e.opts(o, 0)
	return e.bytes()
}

// encodeBroadcastRequest encodes a BROADCAST request (msgpack, as Node sends it).
func encodeBroadcastRequest(uid, requestID, nsp string, p *protocol.Packet, o BroadcastOptions, timeoutMs float64) ([]byte, error) {
	e := newMsgEncoder()
	e.mapLen(5)
	e.str("uid")
	e.str(uid)
	e.str("requestId")
	e.str(requestID)
	e.str("type")
	e.int(reqBroadcast)
	e.str("packet")
	e.packet(nsp, p)
	e.str("opts")
	e.opts(o, timeoutMs)
	return e.bytes()
}

// encodeBroadcastAck encodes a BROADCAST_ACK response (msgpack, as Node sends it): packet is the
// first argument of one client's ack.
func encodeBroadcastAck(requestID string, v Value) ([]byte, error) {
	e := newMsgEncoder()
	e.mapLen(3)
	e.str("type")
	e.int(reqBroadcastAck)
	e.str("requestId")
	e.str(requestID)
	e.str("packet")
	e.value(v)
	return e.bytes()
}

// jsonOpts is the opts of a JSON request: rooms and except always arrays.
type jsonOpts struct {
	Rooms  []string `json:"rooms"`
	Except []string `json:"except"`
}

func newJSONOpts(o BroadcastOptions) *jsonOpts {
	return &jsonOpts{Rooms: nonNil(o.Rooms), Except: nonNil(o.Except)}
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// jsonRequest is a JSON request as Node writes them; unset fields are left out.
type jsonRequest struct {
	UID       string            `json:"uid,omitempty"`
	RequestID string            `json:"requestId,omitempty"`
	Type      int               `json:"type"`
	Opts      *jsonOpts         `json:"opts,omitempty"`
	Rooms     []string          `json:"rooms,omitempty"`
	Close     *bool             `json:"close,omitempty"`
	Data      []json.RawMessage `json:"data,omitempty"`
}
