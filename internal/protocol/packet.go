// Package protocol encodes and decodes Socket.IO v5 packets (the socket.io-parser format): a text
// header and JSON payload, followed by one binary message per attachment. It keeps payloads as raw
// JSON so that data a client publishes is forwarded without being decoded and encoded again.
package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Type is a Socket.IO packet type.
type Type byte

const (
	Connect Type = iota
	Disconnect
	Event
	Ack
	ConnectError
	BinaryEvent
	BinaryAck
)

// MaxAttachments bounds the binary attachments one packet may announce: 10, as socket.io-parser's
// decoder (maxAttachments), which would refuse a packet with more when chorus forwarded it.
const MaxAttachments = 10

// MaxDepth bounds how deeply arrays and objects may nest in a packet's payload (the event's array
// counts as one level).
const MaxDepth = 64

// Packet is one Socket.IO packet. Data is the JSON payload as it travels, binary parts replaced by
// placeholders {"_placeholder":true,"num":i} that point into Attachments.
type Packet struct {
	Type        Type
	Nsp         string
	ID          uint64
	HasID       bool
	Data        json.RawMessage
	Attachments [][]byte
	// Offset, when set, is written as an extra last argument of an event: the connection-state
	// recovery offset (socket.io 4.6+), which the client remembers and sends back when it
	// reconnects. Data stays without it, so that one packet can be stamped without being copied.
	Offset string
}

var (
	ErrEmpty          = errors.New("empty packet")
	ErrType           = errors.New("unknown packet type")
	ErrAttachments    = errors.New("bad attachment count")
	ErrPayload        = errors.New("invalid payload for packet type")
	ErrPlaceholder    = errors.New("bad binary placeholder")
	ErrUnexpectedData = errors.New("binary data without a packet waiting for it")
	ErrDepth          = fmt.Errorf("payload nested more than %d levels deep", MaxDepth)
)

// DecodeHeader decodes a text message. For BinaryEvent and BinaryAck the returned packet still lacks
// its attachments: the caller collects Want binary messages and calls Complete.
func DecodeHeader(msg []byte) (p Packet, want int, err error) {
	if len(msg) == 0 {
		return p, 0, ErrEmpty
	}
	if msg[0] < '0' || msg[0] > '6' {
		return p, 0, ErrType
	}
	p.Type = Type(msg[0] - '0')
	i := 1
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		j := bytes.IndexByte(msg[i:], '-')
		if j <= 0 {
			return p, 0, ErrAttachments
		}
		n, err := strconv.Atoi(string(msg[i : i+j]))
		if err != nil || n < 1 || n > MaxAttachments {
			return p, 0, ErrAttachments
		}
		want = n
		i += j + 1
	}
	p.Nsp = "/"
	if i < len(msg) && msg[i] == '/' {
		j := bytes.IndexByte(msg[i:], ',')
		if j < 0 {
			p.Nsp = string(msg[i:])
			i = len(msg)
		} else {
			p.Nsp = string(msg[i : i+j])
			i += j + 1
		}
	}
	start := i
	for i < len(msg) && msg[i] >= '0' && msg[i] <= '9' {
		i++
	}
	if i > start {
		id, err := strconv.ParseUint(string(msg[start:i]), 10, 63)
		if err != nil {
			return p, 0, fmt.Errorf("ack id: %w", err)
		}
		p.ID, p.HasID = id, true
	}
	if i < len(msg) {
		p.Data = msg[i:]
	}
	if err := checkPayload(p); err != nil {
		return p, 0, err
	}
	return p, want, nil
}

// checkPayload applies socket.io-parser's rules on which payload each packet type may carry.
func checkPayload(p Packet) error {
	data := bytes.TrimSpace(p.Data)
	if !depthWithin(data, MaxDepth) {
		return ErrDepth
	}
	switch p.Type {
	case Connect:
		if len(data) == 0 || (data[0] == '{' && json.Valid(data)) {
			return nil
		}
	case Disconnect:
		if len(data) == 0 {
			return nil
		}
	case ConnectError:
		if len(data) > 0 && (data[0] == '{' || data[0] == '"') && json.Valid(data) {
			return nil
		}
	case Event, BinaryEvent:
		var args []json.RawMessage
		if json.Unmarshal(data, &args) == nil && len(args) > 0 && len(args[0]) > 0 && args[0][0] == '"' {
			return nil
		}
	case Ack, BinaryAck:
		if p.HasID && len(data) > 0 && data[0] == '[' && json.Valid(data) {
			return nil
		}
	}
	return ErrPayload
}

// depthWithin reports whether the arrays and objects of JSON text nest at most max levels deep. It
// only counts brackets outside strings: whether the text is valid JSON is checked elsewhere.
func depthWithin(data []byte, max int) bool {
	depth := 0
	inString, escaped := false, false
	for _, b := range data {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
		case b == '"':
			inString = true
		case b == '[' || b == '{':
			if depth++; depth > max {
				return false
			}
		case b == ']' || b == '}':
			depth--
		}
	}
	return true
}

// Complete attaches the binary messages of a BinaryEvent or BinaryAck and checks that every
// placeholder points at one of them.
func (p *Packet) Complete(attachments [][]byte) error {
	p.Attachments = attachments
	var v any
	if err := json.Unmarshal(p.Data, &v); err != nil {
		return ErrPayload
	}
	return checkPlaceholders(v, len(attachments))
}

func checkPlaceholders(v any, n int) error {
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			if err := checkPlaceholders(e, n); err != nil {
				return err
			}
		}
	case map[string]any:
		if ph, ok := v["_placeholder"].(bool); ok && ph {
			num, ok := v["num"].(float64)
			if !ok || num < 0 || int(num) >= n || float64(int(num)) != num {
				return ErrPlaceholder
			}
			return nil
		}
		for _, e := range v {
			if err := checkPlaceholders(e, n); err != nil {
				return err
			}
		}
	}
	return nil
}

// AppendHeader appends the text header of p (everything before the JSON payload).
func AppendHeader(dst []byte, p *Packet) []byte {
	t := p.Type
	if len(p.Attachments) > 0 {
		switch t {
		case Event:
			t = BinaryEvent
		case Ack:
			t = BinaryAck
		}
	}
	dst = append(dst, byte('0'+t))
	if t == BinaryEvent || t == BinaryAck {
		dst = strconv.AppendInt(dst, int64(len(p.Attachments)), 10)
		dst = append(dst, '-')
	}
	if p.Nsp != "" && p.Nsp != "/" {
		dst = append(dst, p.Nsp...)
		dst = append(dst, ',')
	}
	if p.HasID {
		dst = strconv.AppendUint(dst, p.ID, 10)
	}
	return dst
}

// Encode returns the text message of p; its attachments follow as binary messages.
func (p *Packet) Encode() []byte {
	if p.Offset == "" {
		b := AppendHeader(make([]byte, 0, 16+len(p.Data)), p)
		return append(b, p.Data...)
	}
	b := AppendHeader(make([]byte, 0, 20+len(p.Data)+len(p.Offset)), p)
	return AppendOffset(b, p.Data, p.Offset)
}

// AppendOffset appends the JSON array data with offset added as its last element (a JSON string).
func AppendOffset(dst []byte, data json.RawMessage, offset string) []byte {
	data = bytes.TrimRight(data, " \t\r\n")
	if len(data) < 2 || data[len(data)-1] != ']' {
		return append(dst, data...) // not an array: nothing to stamp (never the case for an event)
	}
	dst = append(dst, data[:len(data)-1]...)
	if len(bytes.TrimSpace(data[1:len(data)-1])) > 0 {
		dst = append(dst, ',')
	}
	if plainString(offset) {
		dst = append(dst, '"')
		dst = append(dst, offset...)
		dst = append(dst, '"')
	} else {
		q, _ := json.Marshal(offset)
		dst = append(dst, q...)
	}
	return append(dst, ']')
}

// plainString reports whether s can be written as a JSON string without escapes (offsets always
// can: digits, letters and a separator).
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// Args splits an event or ack payload into its arguments (for an event, the name comes first).
func Args(data json.RawMessage) ([]json.RawMessage, error) {
	var args []json.RawMessage
	if err := json.Unmarshal(data, &args); err != nil {
		return nil, ErrPayload
	}
	return args, nil
}

// AppendArray appends a JSON array of already-encoded values.
func AppendArray(dst []byte, values ...json.RawMessage) []byte {
	dst = append(dst, '[')
	for i, v := range values {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, v...)
	}
	return append(dst, ']')
}
