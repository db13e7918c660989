package sio

import (
	"encoding/json"
	"time"

	"github.com/chorus-rt/chorus/internal/protocol"
)

// Raw is a value as it travels: JSON in which binary parts are Socket.IO placeholders, and the binary
// attachments they point to. A Raw field in a request type keeps client data (binary included) so that
// it can be emitted again without being decoded; the request type receives the attachments by
// implementing BinaryCarrier.
type Raw struct {
	JSON        json.RawMessage
	Attachments [][]byte
}

// UnmarshalJSON keeps b as it is.
func (r *Raw) UnmarshalJSON(b []byte) error {
	r.JSON = append(r.JSON[:0], b...)
	return nil
}

// BinaryCarrier is implemented by request types with Raw fields; the wrapper hands it the packet's
// attachments after decoding the request.
type BinaryCarrier interface {
	SetAttachments(attachments [][]byte)
}

// Message is an event or ack as received: its arguments (without the event name) and the attachments
// their placeholders point to.
type Message struct {
	Args        []json.RawMessage
	Attachments [][]byte

	at time.Time // when an ack arrived (for the round-trip time)
}

// Decode decodes argument i into v; a missing argument decodes as null.
func (m *Message) Decode(i int, v any) error {
	arg := json.RawMessage("null")
	if i < len(m.Args) {
		arg = m.Args[i]
	}
	return json.Unmarshal(arg, v)
}

// encodeArgs encodes values as the JSON array of an event or ack, collecting binary attachments.
// A *Message stands for all its arguments; Raw and json.RawMessage are used as they are; anything else
// goes through encoding/json.
func encodeArgs(dst []byte, values []any) ([]byte, [][]byte, error) {
	var attachments [][]byte
	dst = append(dst, '[')
	first := true
	add := func(js json.RawMessage, att [][]byte) error {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		if len(js) == 0 {
			js = json.RawMessage("null")
		}
		if len(att) > 0 {
			if len(attachments) > 0 {
				var err error
				if js, err = shiftPlaceholders(js, len(attachments)); err != nil {
					return err
				}
			}
			attachments = append(attachments, att...)
		}
		dst = append(dst, js...)
		return nil
	}
	for _, v := range values {
		switch v := v.(type) {
		case *Message:
			// The arguments of one message share its attachments: add them once, after its arguments.
			offset := len(attachments)
			for _, a := range v.Args {
				if offset > 0 && len(v.Attachments) > 0 {
					var err error
					if a, err = shiftPlaceholders(a, offset); err != nil {
						return nil, nil, err
					}
				}
				if err := add(a, nil); err != nil {
					return nil, nil, err
				}
			}
			attachments = append(attachments, v.Attachments...)
		case Raw:
			if err := add(v.JSON, v.Attachments); err != nil {
				return nil, nil, err
			}
		case json.RawMessage:
			if err := add(v, nil); err != nil {
				return nil, nil, err
			}
		default:
			js, err := json.Marshal(v)
			if err != nil {
				return nil, nil, err
			}
			if err := add(js, nil); err != nil {
				return nil, nil, err
			}
		}
	}
	return append(dst, ']'), attachments, nil
}

// shiftPlaceholders renumbers the placeholders of js by offset, for a value whose attachments are
// appended after another's. It is rare (two binary values in one emit), so it decodes.
func shiftPlaceholders(js json.RawMessage, offset int) (json.RawMessage, error) {
	var v any
	if err := json.Unmarshal(js, &v); err != nil {
		return nil, err
	}
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]any:
			if ph, _ := v["_placeholder"].(bool); ph {
				if n, ok := v["num"].(float64); ok {
					v["num"] = int(n) + offset
				}
				return
			}
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(v)
	return json.Marshal(v)
}

// eventPacket builds the packet of an emit.
func eventPacket(nsp, event string, args []any) (*protocol.Packet, error) {
	name, _ := json.Marshal(event)
	data, attachments, err := encodeArgs(nil, append([]any{json.RawMessage(name)}, args...))
	if err != nil {
		return nil, err
	}
	return &protocol.Packet{Type: protocol.Event, Nsp: nsp, Data: data, Attachments: attachments}, nil
}
