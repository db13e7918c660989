package adapter

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
)

// This file converts between the two forms a Socket.IO value takes: chorus's (JSON in which binary
// parts are placeholders {"_placeholder":true,"num":i}, plus the attachments they point to) and
// Node's in Redis (the decoded value, msgpack-encoded by notepack.io, Buffers as msgpack bin). The
// conversions follow notepack.io 3.0.1 (lib/encode.js, lib/decode.js) and socket.io-parser's
// deconstructPacket / reconstructPacket, so that a value makes the round trip chorus → Redis → Node
// (and back) unchanged, binary included.

// maxDepth bounds the nesting of a value decoded from Redis.
const maxDepth = 200

var (
	errMalformed = errors.New("malformed msgpack")
	errTruncated = fmt.Errorf("%w: truncated", errMalformed)
	errDepth     = fmt.Errorf("%w: nested more than %d levels", errMalformed, maxDepth)
)

// msgpackToJSON converts the msgpack value that spans all of b to JSON. Bin values (and ext type 0,
// notepack's old ArrayBuffer) become placeholders numbered in the order they appear, their bytes
// the returned attachments; timestamps become ISO strings as JSON.stringify writes a Date; other
// ext values become [type, <binary>] as notepack decodes them; undefined (fixext 0) is null in an
// array and leaves its key out of a map.
func msgpackToJSON(b []byte) (json.RawMessage, [][]byte, error) {
	c := mpReader{in: b, out: make([]byte, 0, len(b)+len(b)/4+16)}
	undefined, err := c.value(0)
	if err != nil {
		return nil, nil, err
	}
	if undefined {
		c.out = append(c.out, "null"...)
	}
	if c.pos != len(b) {
		return nil, nil, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(b)-c.pos)
	}
	return c.out, c.atts, nil
}

type mpReader struct {
	in   []byte
	pos  int
	out  []byte
	atts [][]byte
}

func (c *mpReader) take(n int) ([]byte, error) {
	if n < 0 || len(c.in)-c.pos < n {
		return nil, errTruncated
	}
	b := c.in[c.pos : c.pos+n : c.pos+n]
	c.pos += n
	return b, nil
}

// length reads a big-endian unsigned length of size bytes (1, 2 or 4).
func (c *mpReader) length(size int) (int, error) {
	b, err := c.take(size)
	if err != nil {
		return 0, err
	}
	switch size {
	case 1:
		return int(b[0]), nil
	case 2:
		return int(binary.BigEndian.Uint16(b)), nil
	default:
		return int(binary.BigEndian.Uint32(b)), nil
	}
}

// value converts one value; undefined reports notepack's undefined (nothing was written).
func (c *mpReader) value(depth int) (undefined bool, err error) {
	if depth > maxDepth {
		return false, errDepth
	}
	b, err := c.take(1)
	if err != nil {
		return false, err
	}
	code := b[0]
	switch {
	case code <= 0x7f:
		c.out = strconv.AppendInt(c.out, int64(code), 10)
		return false, nil
	case code >= 0xe0:
		c.out = strconv.AppendInt(c.out, int64(int8(code)), 10)
		return false, nil
	case code <= 0x8f:
		return false, c.mapValue(int(code&0x0f), depth)
	case code <= 0x9f:
		return false, c.array(int(code&0x0f), depth)
	case code <= 0xbf:
		return false, c.str(int(code & 0x1f))
	}
	switch code {
	case 0xc0:
		c.out = append(c.out, "null"...)
	case 0xc2:
		c.out = append(c.out, "false"...)
	case 0xc3:
		c.out = append(c.out, "true"...)
	case 0xc4, 0xc5, 0xc6:
		n, err := c.length(1 << (code - 0xc4))
		if err != nil {
			return false, err
		}
		return false, c.bin(n)
	case 0xc7, 0xc8, 0xc9:
		n, err := c.length(1 << (code - 0xc7))
		if err != nil {
			return false, err
		}
		return c.ext(n, false)
	case 0xca:
		b, err := c.take(4)
		if err != nil {
			return false, err
		}
		c.float(float64(math.Float32frombits(binary.BigEndian.Uint32(b))))
	case 0xcb:
		b, err := c.take(8)
		if err != nil {
			return false, err
		}
		c.float(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case 0xcc, 0xcd, 0xce, 0xcf:
		b, err := c.take(1 << (code - 0xcc))
		if err != nil {
			return false, err
		}
		var v uint64
		for _, x := range b {
			v = v<<8 | uint64(x)
		}
		c.out = strconv.AppendUint(c.out, v, 10)
	case 0xd0, 0xd1, 0xd2, 0xd3:
		n := 1 << (code - 0xd0)
		b, err := c.take(n)
		if err != nil {
			return false, err
		}
		var v uint64
		for _, x := range b {
			v = v<<8 | uint64(x)
		}
		shift := uint(64 - 8*n)
		c.out = strconv.AppendInt(c.out, int64(v<<shift)>>shift, 10)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8:
		return c.ext(1<<(code-0xd4), true)
	case 0xd9, 0xda, 0xdb:
		n, err := c.length(1 << (code - 0xd9))
		if err != nil {
			return false, err
		}
		return false, c.str(n)
	case 0xdc, 0xdd:
		n, err := c.length(2 << (code - 0xdc))
		if err != nil {
			return false, err
		}
		return false, c.array(n, depth)
	case 0xde, 0xdf:
		n, err := c.length(2 << (code - 0xde))
		if err != nil {
			return false, err
		}
		return false, c.mapValue(n, depth)
	default: // 0xc1 is never used
		return false, fmt.Errorf("%w: byte 0x%02x", errMalformed, code)
	}
	return false, nil
}

func (c *mpReader) str(n int) error {
	b, err := c.take(n)
	if err != nil {
		return err
	}
	c.out = appendJSONString(c.out, b)
	return nil
}

func (c *mpReader) bin(n int) error {
	b, err := c.take(n)
	if err != nil {
		return err
	}
	c.placeholder(b)
	return nil
}

func (c *mpReader) placeholder(b []byte) {
	c.out = append(c.out, `{"_placeholder":true,"num":`...)
	c.out = strconv.AppendInt(c.out, int64(len(c.atts)), 10)
	c.out = append(c.out, '}')
	c.atts = append(c.atts, b)
}

func (c *mpReader) array(n, depth int) error {
	if n > len(c.in)-c.pos { // every element takes at least one byte
		return errTruncated
	}
	c.out = append(c.out, '[')
	for i := range n {
		if i > 0 {
			c.out = append(c.out, ',')
		}
		undefined, err := c.value(depth + 1)
		if err != nil {
			return err
		}
		if undefined {
			c.out = append(c.out, "null"...)
		}
	}
	c.out = append(c.out, ']')
	return nil
}

func (c *mpReader) mapValue(n, depth int) error {
	if n > (len(c.in)-c.pos)/2 { // every entry takes at least two bytes
		return errTruncated
	}
	c.out = append(c.out, '{')
	first := true
	for range n {
		mark := len(c.out)
		if !first {
			c.out = append(c.out, ',')
		}
		if err := c.key(depth + 1); err != nil {
			return err
		}
		c.out = append(c.out, ':')
		undefined, err := c.value(depth + 1)
		if err != nil {
			return err
		}
		if undefined { // JSON.stringify leaves the key out
			c.out = c.out[:mark]
			continue
		}
		first = false
	}
	c.out = append(c.out, '}')
	return nil
}

// key writes a map key as the string JavaScript makes of it: strings (and bin, as Buffer#toString
// does) as they are, numbers, booleans and null as String() writes them. Arrays, maps and ext
// values as keys are refused.
func (c *mpReader) key(depth int) error {
	b, err := c.take(1)
	if err != nil {
		return err
	}
	code := b[0]
	c.pos--
	var n, size int
	switch {
	case code >= 0xa0 && code <= 0xbf:
		n, size = int(code&0x1f), 0
	case code >= 0xd9 && code <= 0xdb:
		size = 1 << (code - 0xd9)
	case code >= 0xc4 && code <= 0xc6:
		size = 1 << (code - 0xc4)
	case code <= 0x7f || code >= 0xe0 || code == 0xc0 || code == 0xc2 || code == 0xc3 ||
		(code >= 0xca && code <= 0xd3):
		mark := len(c.out)
		if _, err := c.value(depth); err != nil {
			return err
		}
		s := string(c.out[mark:])
		c.out = appendJSONString(c.out[:mark], []byte(s))
		return nil
	default:
		return fmt.Errorf("%w: map key of type 0x%02x", errMalformed, code)
	}
	c.pos++
	if size > 0 {
		if n, err = c.length(size); err != nil {
			return err
		}
	}
	return c.str(n)
}

// ext converts an ext value of n data bytes (fixed: a fixext, whose header has no length).
func (c *mpReader) ext(n int, fixed bool) (undefined bool, err error) {
	t, err := c.take(1)
	if err != nil {
		return false, err
	}
	typ := int8(t[0])
	data, err := c.take(n)
	if err != nil {
		return false, err
	}
	switch {
	case fixed && n == 1 && typ == 0: // notepack's undefined
		return true, nil
	case !fixed && typ == 0: // notepack's old ArrayBuffer
		c.placeholder(data)
	case fixed && n == 8 && typ == 0: // notepack's old Date: milliseconds as int32 hi, uint32 lo
		ms := float64(int32(binary.BigEndian.Uint32(data)))*(1<<32) + float64(binary.BigEndian.Uint32(data[4:]))
		c.date(ms)
	case typ == -1 && fixed && n == 4: // timestamp 32
		c.date(float64(binary.BigEndian.Uint32(data)) * 1e3)
	case typ == -1 && fixed && n == 8: // timestamp 64
		hi, lo := binary.BigEndian.Uint32(data), binary.BigEndian.Uint32(data[4:])
		s := float64(hi&3)*(1<<32) + float64(lo)
		c.date(s*1e3 + float64(hi>>2)/1e6)
	case typ == -1 && !fixed && n == 12: // timestamp 96
		ns := binary.BigEndian.Uint32(data)
		s := float64(int32(binary.BigEndian.Uint32(data[4:])))*(1<<32) + float64(binary.BigEndian.Uint32(data[8:]))
		c.date(s*1e3 + float64(ns)/1e6)
	default:
		c.out = append(c.out, '[')
		c.out = strconv.AppendInt(c.out, int64(typ), 10)
		c.out = append(c.out, ',')
		c.placeholder(data)
		c.out = append(c.out, ']')
	}
	return false, nil
}

// float writes f as JSON.stringify does: NaN and infinities become null. encoding/json formats
// floats as ECMAScript's Number#toString.
func (c *mpReader) float(f float64) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		c.out = append(c.out, "null"...)
		return
	}
	b, _ := json.Marshal(f)
	c.out = append(c.out, b...)
}

// date writes a JavaScript Date of ms milliseconds as JSON.stringify does: its ISO string, or null
// for an invalid date.
func (c *mpReader) date(ms float64) {
	const maxMs = 8.64e15
	ms = math.Trunc(ms)
	if math.IsNaN(ms) || math.Abs(ms) > maxMs {
		c.out = append(c.out, "null"...)
		return
	}
	t := time.UnixMilli(int64(ms)).UTC()
	c.out = append(c.out, '"')
	switch y := t.Year(); {
	case y >= 0 && y <= 9999:
		c.out = t.AppendFormat(c.out, "2006-01-02T15:04:05.000Z")
	default:
		sign := byte('+')
		if y < 0 {
			sign, y = '-', -y
		}
		c.out = append(c.out, sign)
		c.out = append(c.out, fmt.Sprintf("%06d", y)...)
		c.out = t.AppendFormat(c.out, "-01-02T15:04:05.000Z")
	}
	c.out = append(c.out, '"')
}

// appendJSONString appends s (UTF-8, invalid bytes replaced by U+FFFD as Buffer#toString does) as a
// JSON string.
func appendJSONString(dst []byte, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for len(s) > 0 {
		b := s[0]
		if b < utf8.RuneSelf {
			switch {
			case b == '"' || b == '\\':
				dst = append(dst, '\\', b)
			case b >= 0x20:
				dst = append(dst, b)
			case b == '\n':
				dst = append(dst, '\\', 'n')
			case b == '\r':
				dst = append(dst, '\\', 'r')
			case b == '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			s = s[1:]
			continue
		}
		r, size := utf8.DecodeRune(s)
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, "\ufffd"...)
		} else {
			dst = append(dst, s[:size]...)
		}
		s = s[size:]
	}
	return append(dst, '"')
}

// jsonToMsgpack encodes the JSON value js onto enc as notepack.io would encode the value
// JSON.parse makes of it, keys in their order. When atts is not nil, placeholders (objects whose
// _placeholder is true) become bin values of the attachments they point to, as reconstructPacket
// puts the Buffers back; a placeholder pointing nowhere is an error.
func jsonToMsgpack(enc *msgpack.Encoder, js []byte, atts [][]byte) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	v, err := readJSON(dec, 0)
	if err != nil {
		return err
	}
	if _, err := dec.Token(); err == nil {
		return errors.New("json: more than one value")
	}
	return v.encode(enc, atts)
}

// jsonValue is a JSON value with its object keys in order.
type jsonValue struct {
	kind byte // 'n' null, 'b' bool, 's' string, 'd' number, 'a' array, 'o' object
	b    bool
	s    string // string, number, or nothing
	kids []jsonValue
	keys []string // object keys, one per kid
}

func readJSON(dec *json.Decoder, depth int) (jsonValue, error) {
	if depth > maxDepth {
		return jsonValue{}, errors.New("json: nested too deep")
	}
	tok, err := dec.Token()
	if err != nil {
		return jsonValue{}, err
	}
	switch t := tok.(type) {
	case nil:
		return jsonValue{kind: 'n'}, nil
	case bool:
		return jsonValue{kind: 'b', b: t}, nil
	case string:
		return jsonValue{kind: 's', s: t}, nil
	case json.Number:
		return jsonValue{kind: 'd', s: string(t)}, nil
	case json.Delim:
		switch t {
		case '[':
			v := jsonValue{kind: 'a'}
			for dec.More() {
				k, err := readJSON(dec, depth+1)
				if err != nil {
					return jsonValue{}, err
				}
				v.kids = append(v.kids, k)
			}
			_, err := dec.Token()
			return v, err
		case '{':
			v := jsonValue{kind: 'o'}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return jsonValue{}, err
				}
				key, _ := kt.(string)
				k, err := readJSON(dec, depth+1)
				if err != nil {
					return jsonValue{}, err
				}
				v.keys = append(v.keys, key)
				v.kids = append(v.kids, k)
			}
			_, err := dec.Token()
			return v, err
		}
	}
	return jsonValue{}, fmt.Errorf("json: unexpected %v", tok)
}

func (v *jsonValue) encode(enc *msgpack.Encoder, atts [][]byte) error {
	switch v.kind {
	case 'n':
		return enc.EncodeNil()
	case 'b':
		return enc.EncodeBool(v.b)
	case 's':
		return enc.EncodeString(v.s)
	case 'd':
		return encodeNumber(enc, v.s)
	case 'a':
		if err := enc.EncodeArrayLen(len(v.kids)); err != nil {
			return err
		}
		for i := range v.kids {
			if err := v.kids[i].encode(enc, atts); err != nil {
				return err
			}
		}
		return nil
	}
	if atts != nil {
		if b, ok, err := v.placeholder(atts); ok || err != nil {
			if err != nil {
				return err
			}
			return enc.EncodeBytes(b)
		}
	}
	// JSON.parse keeps the last of repeated keys, at the place of the first.
	last := make(map[string]int, len(v.keys))
	for i, k := range v.keys {
		last[k] = i
	}
	if err := enc.EncodeMapLen(len(last)); err != nil {
		return err
	}
	for _, k := range v.keys {
		j := last[k]
		if j < 0 {
			continue // written already
		}
		last[k] = -1
		if err := enc.EncodeString(k); err != nil {
			return err
		}
		if err := v.kids[j].encode(enc, atts); err != nil {
			return err
		}
	}
	return nil
}

// placeholder reports whether object v is a placeholder (socket.io-parser: _placeholder === true)
// and returns the attachment it points to.
func (v *jsonValue) placeholder(atts [][]byte) ([]byte, bool, error) {
	isPlaceholder, num := false, -1
	for i, k := range v.keys {
		kid := &v.kids[i]
		switch k {
		case "_placeholder":
			isPlaceholder = kid.kind == 'b' && kid.b
		case "num":
			num = -1
			if kid.kind == 'd' {
				if f, err := strconv.ParseFloat(kid.s, 64); err == nil && f == math.Trunc(f) && f >= 0 && f <= math.MaxInt32 {
					num = int(f)
				}
			}
		}
	}
	if !isPlaceholder {
		return nil, false, nil
	}
	if num < 0 || num >= len(atts) {
		return nil, true, errors.New("placeholder points to no attachment")
	}
	return atts[num], true, nil
}

// encodeNumber encodes a JSON number as notepack encodes the double JSON.parse makes of it: an
// integer in the smallest integer format when it has no fraction, a float64 otherwise.
func encodeNumber(enc *msgpack.Encoder, s string) error {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return enc.EncodeInt(i)
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return enc.EncodeUint(u)
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return err
	}
	if f == math.Trunc(f) && f >= -(1<<63) && f < 1<<63 && !math.IsInf(f, 0) {
		return enc.EncodeInt(int64(f))
	}
	return enc.EncodeFloat64(f)
}
