package adapter

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// The messages of @socket.io/redis-streams-adapter 0.3 (ClusterAdapter of socket.io-adapter
// 2.5, lib/cluster-adapter.ts); doc.go describes them.

// Message types (socket.io-adapter MessageType).
const (
	msgInitialHeartbeat       = 1
	msgHeartbeat              = 2
	msgBroadcast              = 3
	msgSocketsJoin            = 4
	msgSocketsLeave           = 5
	msgDisconnectSockets      = 6
	msgFetchSockets           = 7
	msgFetchSocketsResponse   = 8
	msgServerSideEmit         = 9
	msgServerSideEmitResponse = 10
	msgBroadcastClientCount   = 11
	msgBroadcastAck           = 12
	msgAdapterClose           = 13
	// msgReleaseSession is chorus's own (Node's adapters ignore types they do not know): a node
	// that is asked to restore a session it cannot find asks the others to end the socket that
	// still holds it (socket.io has no such message).
	msgReleaseSession = 101
)

// clusterMessage is a ClusterMessage or ClusterResponse: {uid, nsp, type, data}.
type clusterMessage struct {
	UID  string
	Nsp  string
	Type int
	Data clusterData

	attachments [][]byte // the bin values of Data's packet (msgpack messages)
}

// clusterData holds the fields of every type's data.
type clusterData struct {
	RequestID   *string         `json:"requestId"`
	Packet      json.RawMessage `json:"packet"`
	Opts        *wireOpts       `json:"opts"`
	Rooms       []string        `json:"rooms"`
	Close       bool            `json:"close"`
	Sockets     json.RawMessage `json:"sockets"`
	ClientCount *int            `json:"clientCount"`
	PID         string          `json:"pid"` // msgReleaseSession
}

// decodeClusterMessage decodes a message of the public or a private channel: msgpack of the whole
// message.
func decodeClusterMessage(payload []byte) (*clusterMessage, error) {
	js, atts, err := msgpackToJSON(payload)
	if err != nil {
		return nil, err
	}
	var raw struct {
		UID  any             `json:"uid"`
		Nsp  any             `json:"nsp"`
		Type any             `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if len(js) == 0 || js[0] != '{' {
		return nil, errNotObject
	}
	if err := json.Unmarshal(js, &raw); err != nil {
		return nil, err
	}
	m := &clusterMessage{attachments: atts}
	m.UID, _ = raw.UID.(string)
	m.Nsp, _ = raw.Nsp.(string)
	t, ok := raw.Type.(float64)
	if !ok {
		return nil, errors.New("message without a type")
	}
	m.Type = int(t)
	if err := m.decodeData(raw.Data); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeStreamEntry decodes an entry of the stream: fields uid, nsp, type (a decimal string) and
// data, which is JSON (it starts with '{') or, when it holds binary, base64 of msgpack.
func decodeStreamEntry(values map[string]any) (*clusterMessage, error) {
	str := func(k string) string { s, _ := values[k].(string); return s }
	m := &clusterMessage{UID: str("uid"), Nsp: str("nsp")}
	t, err := strconv.Atoi(str("type"))
	if err != nil {
		return nil, fmt.Errorf("type: %w", err)
	}
	m.Type = t
	data := str("data")
	var js json.RawMessage
	switch {
	case data == "":
	case data[0] == '{':
		js = json.RawMessage(data)
	default:
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		if js, m.attachments, err = msgpackToJSON(b); err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
	}
	if err := m.decodeData(js); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *clusterMessage) decodeData(js json.RawMessage) error {
	if len(js) == 0 || string(js) == "null" {
		return nil
	}
	if js[0] != '{' {
		return errors.New("data: not an object")
	}
	if err := json.Unmarshal(js, &m.Data); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	return nil
}

// broadcastPacket returns the event packet of a BROADCAST.
func (m *clusterMessage) broadcastPacket() (*protocol.Packet, BroadcastOptions, error) {
	if m.Data.Opts == nil || len(m.Data.Packet) == 0 {
		return nil, BroadcastOptions{}, errors.New("broadcast without packet or opts")
	}
	var wp wirePacket
	if err := json.Unmarshal(m.Data.Packet, &wp); err != nil {
		return nil, BroadcastOptions{}, fmt.Errorf("packet: %w", err)
	}
	p, err := eventPacket(&wp, m.attachments)
	if err != nil {
		return nil, BroadcastOptions{}, err
	}
	return p, m.Data.Opts.options(), nil
}

// streamValues builds the fields of a stream entry, in the order Node writes them.
func streamValues(uid, nsp string, typ int, data []byte) []string {
	return []string{"uid", uid, "nsp", nsp, "type", strconv.Itoa(typ), "data", string(data)}
}

// encodeStreamBroadcast encodes the data of a BROADCAST entry: JSON {packet, opts}, or base64 of
// its msgpack when the packet holds binary.
func encodeStreamBroadcast(nsp string, p *protocol.Packet, o BroadcastOptions) ([]byte, error) {
	if len(p.Attachments) == 0 {
		b := make([]byte, 0, len(p.Data)+64)
		b = append(b, `{"packet":{"type":2,"data":`...)
		b = append(b, p.Data...)
		b = append(b, `,"nsp":`...)
		b = appendJSON(b, nsp)
		b = append(b, `},"opts":`...)
		b = appendJSONOpts(b, o)
		return append(b, '}'), nil
	}
	e := newMsgEncoder()
	e.mapLen(2)
	e.str("packet")
	e.packet(nsp, p)
	e.str("opts")
	e.opts(o, 0)
	raw, err := e.bytes()
	if err != nil {
		return nil, err
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(len(raw)))
	base64.StdEncoding.Encode(out, raw)
	return out, nil
}

// encodeStreamOps encodes the JSON data of SOCKETS_JOIN / SOCKETS_LEAVE ({opts, rooms}) and
// DISCONNECT_SOCKETS ({opts, close}).
func encodeStreamOps(o BroadcastOptions, rooms []string, closeConn *bool) []byte {
	b := append([]byte(`{"opts":`), appendJSONOpts(nil, o)...)
	if closeConn != nil {
		b = append(b, `,"close":`...)
		b = strconv.AppendBool(b, *closeConn)
	} else {
		b = append(b, `,"rooms":`...)
		b = appendJSON(b, nonNil(rooms))
	}
	return append(b, '}')
}

// appendJSONOpts appends {rooms, except, flags} (flags: volatile only when set: Node takes any
// volatile key, false included, for volatile).
func appendJSONOpts(b []byte, o BroadcastOptions) []byte {
	b = append(b, `{"rooms":`...)
	b = appendJSON(b, nonNil(o.Rooms))
	b = append(b, `,"except":`...)
	b = appendJSON(b, nonNil(o.Except))
	if o.Volatile {
		return append(b, `,"flags":{"volatile":true}}`...)
	}
	return append(b, `,"flags":{}}`...)
}

func appendJSON(b []byte, v any) []byte {
	js, _ := json.Marshal(v) // strings and string slices: cannot fail
	return append(b, js...)
}

// encodeCluster encodes a msgpack {type, data, uid, nsp} as ClusterAdapter publishes them; data
// is a map of the given number of fields, written by data.
func encodeCluster(uid, nsp string, typ, fields int, data func(e *msgEncoder)) ([]byte, error) {
	e := newMsgEncoder()
	e.mapLen(4)
	e.str("type")
	e.int(int64(typ))
	e.str("data")
	e.mapLen(fields)
	data(e)
	e.str("uid")
	e.str(uid)
	e.str("nsp")
	e.str(nsp)
	b, err := e.bytes()
	return append([]byte(nil), b...), err
}

// parseStreamID splits a stream entry id "<ms>-<seq>".
func parseStreamID(id string) (ms, seq uint64, ok bool) {
	a, b, found := strings.Cut(id, "-")
	if !found {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}

// streamID is a parsed stream entry id; the zero value is "0-0", before every entry.
type streamID struct{ ms, seq uint64 }

func newStreamID(s string) (streamID, bool) {
	ms, seq, ok := parseStreamID(s)
	return streamID{ms, seq}, ok
}

func (a streamID) less(b streamID) bool {
	return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq)
}

func (a streamID) String() string {
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}

// next is the smallest id after a (XRANGE's exclusive start, written for Redis before 6.2 as
// Node's nextOffset does).
func (a streamID) next() streamID {
	if a.seq == ^uint64(0) {
		return streamID{a.ms + 1, 0}
	}
	return streamID{a.ms, a.seq + 1}
}
