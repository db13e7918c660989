package engine

import (
	"encoding/base64"
	"errors"
	"fmt"
)

// Engine.IO v4 packet types, as the digit that starts a text packet.
const (
	typeOpen    = '0'
	typeClose   = '1'
	typePing    = '2'
	typePong    = '3'
	typeMessage = '4'
	typeUpgrade = '5'
	typeNoop    = '6'
)

// recordSeparator joins the packets of one HTTP long-polling payload.
const recordSeparator = 0x1e

// Packet is an outgoing Engine.IO message packet. Data is never modified after it is queued, so one
// Packet (and its Data) may be queued on many connections at once: that is how a broadcast is encoded
// once for all its recipients.
type Packet struct {
	Data   []byte
	Binary bool
}

// frame is a packet of any type in a connection's output queue.
type frame struct {
	typ    byte // one of the type* constants
	data   []byte
	binary bool
}

var (
	errEmptyPacket   = errors.New("empty packet")
	errUnknownPacket = errors.New("unknown packet type")
)

// decodePayload splits a long-polling POST body into packets. It decodes the whole body before
// anything is handled, so a malformed payload is refused as a whole.
func decodePayload(body []byte) ([]frame, error) {
	var out []frame
	for len(body) > 0 {
		end := len(body)
		for i, b := range body {
			if b == recordSeparator {
				end = i
				break
			}
		}
		f, err := decodeText(body[:end])
		if err != nil {
			return nil, fmt.Errorf("packet %d: %w", len(out), err)
		}
		out = append(out, f)
		if end == len(body) {
			break
		}
		body = body[end+1:]
		if len(body) == 0 {
			return nil, errEmptyPacket // a trailing separator
		}
	}
	if len(out) == 0 {
		return nil, errEmptyPacket
	}
	return out, nil
}

// decodeText decodes one packet of a polling payload or of a WebSocket text frame.
func decodeText(p []byte) (frame, error) {
	if len(p) == 0 {
		return frame{}, errEmptyPacket
	}
	if p[0] == 'b' {
		data, err := base64.StdEncoding.DecodeString(string(p[1:]))
		if err != nil {
			return frame{}, fmt.Errorf("binary packet: %w", err)
		}
		return frame{typ: typeMessage, data: data, binary: true}, nil
	}
	if p[0] < typeOpen || p[0] > typeNoop {
		return frame{}, errUnknownPacket
	}
	return frame{typ: p[0], data: p[1:]}, nil
}

// appendPayload encodes frames as a long-polling response body.
func appendPayload(dst []byte, frames []frame) []byte {
	for i, f := range frames {
		if i > 0 {
			dst = append(dst, recordSeparator)
		}
		if f.binary {
			dst = append(dst, 'b')
			dst = base64.StdEncoding.AppendEncode(dst, f.data)
			continue
		}
		dst = append(dst, f.typ)
		dst = append(dst, f.data...)
	}
	return dst
}
