package namespaces

import (
	"context"
	"log/slog"
	"math"
	"time"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/rooms"
)

// StatsEvent is the event the members of rooms.StatsRoom receive, with one Stats argument.
const StatsEvent = "chorus:stats"

// Stats is one node's figures as the members of rooms.StatsRoom receive them (docs/protocol.md).
type Stats struct {
	// Node names the node (CHORUS_NODE_ID).
	Node string `json:"node"`
	// Connections is the number of open client connections (Engine.IO sessions) on the node,
	// whatever their namespaces.
	Connections int `json:"connections"`
	// MessagesPerSecond is the number of messages the node broadcast (client publishes and HTTP
	// API emits, not these stats) since the previous tick, divided by the seconds between them,
	// to one decimal.
	MessagesPerSecond float64 `json:"messages_per_second"`
	// Messages is the number of such messages since the node started.
	Messages uint64 `json:"messages"`
	// UptimeSeconds is how long the node has been running, in whole seconds.
	UptimeSeconds int64 `json:"uptime_seconds"`
	// At is when the figures were taken, in Unix milliseconds.
	At int64 `json:"at"`
}

// StatsOptions configures RunStats.
type StatsOptions struct {
	// Node names the node in every Stats.
	Node string
	// Interval is the time between two Stats; 0 means one second.
	Interval time.Duration
	// Logger receives a debug line when a Stats cannot be encoded; nil discards it.
	Logger *slog.Logger
}

// RunStats sends the node's Stats, once per interval, to the local members of rooms.StatsRoom in
// every namespace of srv, until ctx is done. It runs on its own goroutine, away from every client's
// reader; a tick with nobody in the room anywhere costs one membership lookup per namespace and sends
// nothing. The stats are volatile (a socket that cannot take them at once skips a tick) and local:
// each node of a cluster reports itself to its own clients, and none of it goes through Redis.
func RunStats(ctx context.Context, srv *sio.Server, opts StatsOptions) {
	interval := opts.Interval
	if interval <= 0 {
		interval = time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var own uint64 // the stats' own broadcasts, which Emitted counts too
	prev, prevAt := srv.Emitted(), start
	room := []string{rooms.StatsRoom}
	bcast := adapter.BroadcastOptions{Rooms: room, Local: true, Volatile: true}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			var targets []*sio.Namespace
			for _, n := range srv.Namespaces() {
				if len(n.Adapter().Sockets(room)) > 0 {
					targets = append(targets, n)
				}
			}
			messages := srv.Emitted() - own
			if len(targets) == 0 {
				prev, prevAt = messages, now
				continue
			}
			st := Stats{
				Node:          opts.Node,
				Connections:   srv.Sessions(),
				Messages:      messages,
				UptimeSeconds: int64(now.Sub(start) / time.Second),
				At:            now.UnixMilli(),
			}
			if secs := now.Sub(prevAt).Seconds(); secs > 0 {
				st.MessagesPerSecond = math.Round(float64(messages-prev)/secs*10) / 10
			}
			for _, n := range targets {
				if err := n.Emit(bcast, StatsEvent, st); err != nil {
					log.Debug("stats not sent", "nsp", n.Name(), "err", err)
					continue
				}
				own++
			}
			prev, prevAt = messages, now
		}
	}
}
