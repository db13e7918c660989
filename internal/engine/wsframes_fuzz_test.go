package engine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// frameSink is the connection of a wsConn under fuzzing: what the server writes (pongs) is dropped,
// and reads come from a fixed input.
type frameSink struct {
	net.Conn
	in io.Reader
}

func (s frameSink) Read(p []byte) (int, error)       { return s.in.Read(p) }
func (s frameSink) Write(p []byte) (int, error)      { return len(p), nil }
func (s frameSink) SetWriteDeadline(time.Time) error { return nil }

// parseOutcome is what one of the two WebSocket readers made of an input: the Engine.IO packets it
// delivered, then how it stopped.
type parseOutcome struct {
	frames []frame
	end    string // "more" (waiting for input), "close" (close frame), "too big", "bad frame", "bad packet"
}

func (o parseOutcome) String() string {
	var b bytes.Buffer
	for _, f := range o.frames {
		fmt.Fprintf(&b, "[%c %q bin=%v] ", f.typ, f.data, f.binary)
	}
	return b.String() + o.end
}

func endOf(err error) string {
	switch {
	case err == nil:
		return "more"
	case errors.Is(err, errEOF):
		return "close"
	case errors.Is(err, errMessageTooBig):
		return "too big"
	case errors.Is(err, errPacket):
		return "bad packet"
	}
	return "bad frame"
}

// parseInChunks runs the netpoll reader's parser (wsConn.parse) over in, handed over in pieces cut
// at cuts, as reads of a socket would, and returns what it delivered.
func parseInChunks(in []byte, cuts []int, max int64) parseOutcome {
	w := &wsConn{conn: frameSink{}}
	var out parseOutcome
	prev := 0
	for _, cut := range append(slices.Clone(cuts), len(in)) {
		if cut < prev || cut > len(in) {
			continue
		}
		buf := append(w.partial, in[prev:cut]...) // as readAvailable: what was left, then the new bytes
		w.partial = nil
		prev = cut
		frames, err := w.parse(buf, max)
		for _, f := range frames {
			f.data = bytes.Clone(f.data)
			out.frames = append(out.frames, f)
		}
		if err != nil {
			out.end = endOf(err)
			return out
		}
	}
	out.end = "more"
	return out
}

// parseBlocking runs the blocking reader (wsConn.readMessage, used where netpoll is not) over in,
// as readWebSocket does, and returns what it delivered. Input that ends mid-frame is "more".
func parseBlocking(in []byte, max int64) parseOutcome {
	r := bytes.NewReader(in)
	w := &wsConn{conn: frameSink{in: r}}
	w.br = bufio.NewReaderSize(w.conn, readBufSize)
	var out parseOutcome
	for {
		data, binary, err := w.readMessage(max)
		switch {
		case errors.Is(err, io.EOF):
			// A close frame, or the input ran out: which one, the frame that ends where reading
			// stopped says.
			out.end = "more"
			if closeFrameEndsAt(in, len(in)-r.Len()-w.br.Buffered()) {
				out.end = "close"
			}
			return out
		case errors.Is(err, io.ErrUnexpectedEOF):
			out.end = "more"
			return out
		case errors.Is(err, errMessageTooBig):
			out.end = "too big"
			return out
		case err != nil:
			out.end = "bad frame"
			return out
		}
		if binary {
			out.frames = append(out.frames, frame{typ: typeMessage, data: data, binary: true})
			continue
		}
		f, derr := decodeText(data)
		if derr != nil {
			out.end = "bad packet"
			return out
		}
		out.frames = append(out.frames, f)
	}
}

// closeFrameEndsAt reports whether a close frame of in ends at offset at.
func closeFrameEndsAt(in []byte, at int) bool {
	pos := 0
	for pos < at {
		h, n, ok, err := parseFrameHeader(in[pos:])
		if err != nil || !ok || int64(len(in)-pos-n) < h.Length {
			return false
		}
		pos += n + int(h.Length)
		if pos == at {
			return h.OpCode == ws.OpClose
		}
	}
	return false
}

// maskFrame builds a masked client frame.
func maskFrame(op ws.OpCode, fin bool, payload []byte) []byte {
	f := ws.NewFrame(op, fin, bytes.Clone(payload))
	f = ws.MaskFrameInPlace(f)
	var b bytes.Buffer
	ws.WriteFrame(&b, f)
	return b.Bytes()
}

// FuzzWebSocketFrames checks the WebSocket input of a session, as it comes off the socket: the
// netpoll parser never panics, delivers the same packets and stops the same way however the input
// is cut into reads (a frame split anywhere, headers included), and agrees with the blocking reader
// used where netpoll is missing: the same packets, the same verdict (close, too big, bad frame or
// bad packet). The seed corpus (real frames, fragments, pings, and the malformed frames of the
// bad-input catalogue) runs in every go test.
func FuzzWebSocketFrames(f *testing.F) {
	seeds := [][]byte{
		maskFrame(ws.OpText, true, []byte(`42["join","a"]`)),
		slices.Concat(maskFrame(ws.OpText, false, []byte(`42["jo`)), maskFrame(ws.OpPing, true, []byte("hi")), maskFrame(ws.OpContinuation, true, []byte(`in","a"]`))),
		slices.Concat(maskFrame(ws.OpText, true, []byte(`451-["b",{"_placeholder":true,"num":0}]`)), maskFrame(ws.OpBinary, true, []byte{1, 2, 3})),
		slices.Concat(maskFrame(ws.OpText, true, []byte("2probe")), maskFrame(ws.OpText, true, []byte("5")), maskFrame(ws.OpClose, true, []byte{3, 232})),
		maskFrame(ws.OpText, true, bytes.Repeat([]byte("x"), 300)),
		maskFrame(ws.OpText, true, []byte("7")),
		maskFrame(ws.OpText, true, nil),
		maskFrame(ws.OpPong, true, nil),
		// The catalogue's malformed frames.
		{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		{0x81, 0x01, '6'},
		{0x83, 0x80, 0, 0, 0, 0},
		{0xc1, 0x81, 0, 0, 0, 0, '6'},
		slices.Concat([]byte{0x89, 0xfe, 0x00, 0x7e, 0, 0, 0, 0}, make([]byte, 126)),
		{0x09, 0x80, 0, 0, 0, 0},
		{0x80, 0x81, 0, 0, 0, 0, '6'},
		{0x01, 0x81, 0, 0, 0, 0, '4', 0x81, 0x81, 0, 0, 0, 0, '6'},
		{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0},
		{0x81, 0x85, 0, 0, 0, 0, '4'},
		{0x81, 0x83, 0, 0, 0, 0, '4', 0xff, 0xfe},
	}
	for i, s := range seeds {
		f.Add(s, []byte{byte(i), 1, 7}, uint16(256))
	}
	f.Fuzz(func(t *testing.T, in, cutBytes []byte, maxPayload uint16) {
		max := int64(maxPayload%2048) + 1
		var cuts []int
		at := 0
		for _, c := range cutBytes {
			at += int(c) + 1
			cuts = append(cuts, at)
		}
		whole := parseInChunks(in, nil, max)
		chunked := parseInChunks(in, cuts, max)
		if whole.String() != chunked.String() {
			t.Fatalf("input %x cut at %v:\nwhole:   %s\nchunked: %s", in, cuts, whole, chunked)
		}
		for _, fr := range whole.frames {
			if int64(len(fr.data)) > max {
				t.Fatalf("a packet of %d bytes passed a max payload of %d", len(fr.data), max)
			}
		}
		blocking := parseBlocking(in, max)
		// The netpoll parser refuses a bad header as soon as its first two bytes are in, the
		// blocking one once it has read the whole header: on input that ends in between, only the
		// netpoll parser has judged it.
		early := whole.end == "bad frame" && blocking.end == "more"
		if early {
			blocking.end = whole.end
		}
		if whole.String() != blocking.String() {
			t.Fatalf("input %x (max %d):\nnetpoll:  %s\nblocking: %s", in, max, whole, blocking)
		}
	})
}
