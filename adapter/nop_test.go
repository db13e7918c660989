package adapter_test

import (
	"context"
	"encoding/json"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/protocol"
)

// nopLocal is a namespace without sockets for cluster operations: it does nothing.
type nopLocal struct{}

func (nopLocal) DeliverWithAck(context.Context, *protocol.Packet, []string, func(adapter.Value)) int {
	return 0
}
func (nopLocal) DescribeLocal([]string) []adapter.SocketInfo                       { return nil }
func (nopLocal) JoinLocal(_, _ []string)                                           {}
func (nopLocal) LeaveLocal(_, _ []string)                                          {}
func (nopLocal) DisconnectLocal([]string, bool)                                    {}
func (nopLocal) OnServerSideEmit(string, []json.RawMessage, func(json.RawMessage)) {}
func (nopLocal) ReleaseSession(string)                                             {}
