// Package rooms holds what chorus knows about room names and who may use them: the name rules and the
// per-namespace policy of which rooms clients may join and publish to. It knows nothing of Socket.IO.
package rooms

import (
	"errors"
	"strings"
)

// MaxNameLen is the longest room name, in bytes.
const MaxNameLen = 128

// ErrInvalidName is returned for an empty or too long room name.
var ErrInvalidName = errors.New("room must be a non-empty string of at most 128 bytes")

// ValidateName checks a room name a client sent.
func ValidateName(room string) error {
	if room == "" || len(room) > MaxNameLen {
		return ErrInvalidName
	}
	return nil
}

// Policy says which rooms clients may join and publish to in one namespace. A nil list allows every
// room; an empty, non-nil list allows none.
type Policy struct {
	Join    []string
	Publish []string
}

// CanJoin reports whether a client may join room.
func (p Policy) CanJoin(room string) bool { return allowed(p.Join, room) }

// CanPublish reports whether a client may publish to room.
func (p Policy) CanPublish(room string) bool { return allowed(p.Publish, room) }

func allowed(patterns []string, room string) bool {
	if patterns == nil {
		return true
	}
	for _, pat := range patterns {
		if Match(pat, room) {
			return true
		}
	}
	return false
}

// Match reports whether name matches pattern, in which '*' stands for any run of bytes (including
// none and including '/'); every other byte matches itself. Used for room and namespace patterns.
func Match(pattern, name string) bool {
	// Iterative glob with backtracking to the last star: linear in practice, no recursion.
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// IsPattern reports whether s contains a wildcard.
func IsPattern(s string) bool { return strings.Contains(s, "*") }

// ServerRoomPrefix starts the names of the rooms chorus itself publishes to. Clients cannot publish
// to them, and may join only StatsRoom (under the namespace's policy, like any room).
const ServerRoomPrefix = "chorus:"

// StatsRoom is the room whose members on a node receive that node's stats every second
// (docs/protocol.md, "Server stats").
const StatsRoom = "chorus:stats"

// IsServerRoom reports whether room is reserved for chorus.
func IsServerRoom(room string) bool { return strings.HasPrefix(room, ServerRoomPrefix) }
