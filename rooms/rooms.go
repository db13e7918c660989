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

// UserRoomPrefix starts the personal room of every authenticated user: "user:<sub>".
const UserRoomPrefix = "user:"

// UserRoom returns the personal room of user (the `sub` of the user's token). Every socket the user
// authenticates joins it, so the HTTP API can reach the user on all devices and nodes.
func UserRoom(user string) string { return UserRoomPrefix + user }

// IsUserRoom reports whether room is a personal room.
func IsUserRoom(room string) bool { return strings.HasPrefix(room, UserRoomPrefix) }

// MaxUserLen is the longest user id that fits a personal room name.
const MaxUserLen = MaxNameLen - len(UserRoomPrefix)

// Policy says which rooms clients may join and publish to in one namespace. A nil list allows every
// room; an empty, non-nil list allows none. Personal rooms ("user:…") follow stricter rules that no
// list can loosen: see JoinAllowed and PublishAllowed.
type Policy struct {
	Join    []string
	Publish []string
	// MaxRooms is the most rooms a socket may have joined by its own requests (its own-id room
	// and its personal room do not count); 0 means no limit.
	MaxRooms int
}

// Grant is what one socket's token adds to its namespace's policy: its user (whose personal room it
// is in) and room patterns it may join and publish to besides those of the policy. The zero Grant
// (an anonymous socket) adds nothing; nil and empty lists both grant nothing.
type Grant struct {
	User    string
	Join    []string
	Publish []string
}

// CanJoin reports whether an anonymous client may join room.
func (p Policy) CanJoin(room string) bool { return p.JoinAllowed(room, Grant{}) }

// CanPublish reports whether an anonymous client may publish to room.
func (p Policy) CanPublish(room string) bool { return p.PublishAllowed(room, Grant{}) }

// JoinAllowed reports whether a client with grant g may join room: the policy's patterns or the
// grant's allow it. Nobody may join a personal room: a user's sockets are in their own already
// (joining it again is allowed and changes nothing), and another user's is refused whatever the
// patterns say.
func (p Policy) JoinAllowed(room string, g Grant) bool {
	if IsUserRoom(room) {
		return g.User != "" && room == UserRoom(g.User)
	}
	return allowed(p.Join, room) || granted(g.Join, room)
}

// PublishAllowed reports whether a client with grant g may publish to room: the policy's patterns
// or the grant's allow it. A personal room takes messages from its own user, and from others only
// through a pattern that itself starts with "user:" (e.g. a grant of "user:*" for a support agent):
// "*" or a missing list do not open other users' rooms.
func (p Policy) PublishAllowed(room string, g Grant) bool {
	if IsUserRoom(room) {
		if g.User != "" && room == UserRoom(g.User) {
			return true
		}
		return userPattern(p.Publish, room) || userPattern(g.Publish, room)
	}
	return allowed(p.Publish, room) || granted(g.Publish, room)
}

func allowed(patterns []string, room string) bool {
	if patterns == nil {
		return true
	}
	return granted(patterns, room)
}

func granted(patterns []string, room string) bool {
	for _, pat := range patterns {
		if Match(pat, room) {
			return true
		}
	}
	return false
}

// userPattern reports whether a pattern that starts with the personal-room prefix matches room.
func userPattern(patterns []string, room string) bool {
	for _, pat := range patterns {
		if IsUserRoom(pat) && Match(pat, room) {
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
