package api

import (
	"encoding/json"
	"testing"

	"github.com/chorus-rt/chorus/adapter"
)

func TestAckJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   adapter.Value
		want string
	}{
		{"plain", adapter.Value{JSON: json.RawMessage(`{"a":[1,2.5e300,"x"]}`)}, `{"a":[1,2.5e300,"x"]}`},
		{"empty", adapter.Value{}, `null`},
		{"binary", adapter.Value{
			JSON:        json.RawMessage(`{"img":{"_placeholder":true,"num":1},"list":[{"_placeholder":true,"num":0},12345678901234567890]}`),
			Attachments: [][]byte{{0, 1, 2}, []byte("hi")},
		}, `{"img":"aGk=","list":["AAEC",12345678901234567890]}`},
		{"top-level binary", adapter.Value{JSON: json.RawMessage(`{"_placeholder":true,"num":0}`), Attachments: [][]byte{{255}}}, `"/w=="`},
		{"placeholder out of range kept", adapter.Value{JSON: json.RawMessage(`{"_placeholder":true,"num":3}`), Attachments: [][]byte{{1}}}, `{"_placeholder":true,"num":3}`},
	}
	for _, tc := range tests {
		if got := string(ackJSON(tc.in)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}
