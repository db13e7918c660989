package rooms_test

import (
	"strings"
	"testing"

	"github.com/chorus-rt/chorus/rooms"
)

func TestMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, pattern, s string
		want             bool
	}{
		{"exact", "lobby", "lobby", true},
		{"exact mismatch", "lobby", "lobby2", false},
		{"prefix star", "team-*", "team-a", true},
		{"star matches empty", "team-*", "team-", true},
		{"star matches slash", "/tenant-*", "/tenant-a/b", true},
		{"prefix mismatch", "team-*", "teams", false},
		{"suffix star", "*-log", "audit-log", true},
		{"middle star", "a*z", "abcz", true},
		{"middle star mismatch", "a*z", "abcy", false},
		{"two stars backtrack", "*a*b", "xaxxab", true},
		{"only star", "*", "", true},
		{"empty pattern", "", "", true},
		{"empty pattern, text", "", "x", false},
	}
	for _, tc := range tests {
		if got := rooms.Match(tc.pattern, tc.s); got != tc.want {
			t.Errorf("%s: Match(%q, %q) = %v, want %v", tc.name, tc.pattern, tc.s, got, tc.want)
		}
	}
}

func TestPolicy(t *testing.T) {
	t.Parallel()
	open := rooms.Policy{}
	closed := rooms.Policy{Join: []string{}, Publish: []string{}}
	some := rooms.Policy{Join: []string{"lobby", "team-*"}, Publish: []string{"team-*"}}
	tests := []struct {
		name          string
		p             rooms.Policy
		room          string
		join, publish bool
	}{
		{"nil lists allow all", open, "anything", true, true},
		{"empty lists allow none", closed, "anything", false, false},
		{"exact join only", some, "lobby", true, false},
		{"pattern both", some, "team-x", true, true},
		{"neither", some, "other", false, false},
	}
	for _, tc := range tests {
		if got := tc.p.CanJoin(tc.room); got != tc.join {
			t.Errorf("%s: CanJoin(%q) = %v", tc.name, tc.room, got)
		}
		if got := tc.p.CanPublish(tc.room); got != tc.publish {
			t.Errorf("%s: CanPublish(%q) = %v", tc.name, tc.room, got)
		}
	}
}

// Personal rooms: nobody joins another user's, whatever the patterns say; a user is in their own;
// publishing into another user's room takes a pattern that itself starts with "user:". Grants add to
// the policy.
func TestPersonalRoomsAndGrants(t *testing.T) {
	t.Parallel()
	open := rooms.Policy{}
	closed := rooms.Policy{Join: []string{}, Publish: []string{}}
	everything := rooms.Policy{Join: []string{"*"}, Publish: []string{"*"}}
	alice := rooms.Grant{User: "alice"}
	agent := rooms.Grant{User: "agent", Join: []string{"user:*", "*"}, Publish: []string{"user:*"}}
	vip := rooms.Grant{User: "bob", Join: []string{"vip-*"}, Publish: []string{"vip-lounge"}}
	tests := []struct {
		name          string
		p             rooms.Policy
		g             rooms.Grant
		room          string
		join, publish bool
	}{
		{"anonymous, another's room, open policy", open, rooms.Grant{}, "user:alice", false, false},
		{"anonymous, another's room, * policy", everything, rooms.Grant{}, "user:alice", false, false},
		{"own room", closed, alice, "user:alice", true, true},
		{"another user's room", open, alice, "user:bob", false, false},
		{"another user's room under a * policy", everything, alice, "user:bob", false, false},
		{"a grant of user:* publishes but never joins", closed, agent, "user:alice", false, true},
		{"a policy of user:* publishes too", rooms.Policy{Publish: []string{"user:*"}}, alice, "user:bob", false, true},
		{"prefix of one's own name is another room", open, alice, "user:alice2", false, false},
		{"grant adds to a closed policy", closed, vip, "vip-lounge", true, true},
		{"grant pattern", closed, vip, "vip-bar", true, false},
		{"not granted", closed, vip, "lobby", false, false},
		{"open policy still open with a grant", open, vip, "lobby", true, true},
	}
	for _, tc := range tests {
		if got := tc.p.JoinAllowed(tc.room, tc.g); got != tc.join {
			t.Errorf("%s: JoinAllowed(%q) = %v", tc.name, tc.room, got)
		}
		if got := tc.p.PublishAllowed(tc.room, tc.g); got != tc.publish {
			t.Errorf("%s: PublishAllowed(%q) = %v", tc.name, tc.room, got)
		}
	}
	if rooms.UserRoom("42") != "user:42" || !rooms.IsUserRoom("user:42") || rooms.IsUserRoom("users") {
		t.Error("UserRoom / IsUserRoom")
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		room string
		ok   bool
	}{{"", false}, {"a", true}, {strings.Repeat("x", 128), true}, {strings.Repeat("x", 129), false}, {strings.Repeat("é", 64), true}, {strings.Repeat("é", 64) + "x", false}} {
		if err := rooms.ValidateName(tc.room); (err == nil) != tc.ok {
			t.Errorf("ValidateName(%d bytes) = %v", len(tc.room), err)
		}
	}
}

// FuzzMatch checks Match against a simple recursive definition.
func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{{"team-*", "team-a"}, {"*a*b", "xaxxab"}, {"a*", "b"}, {"**", ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 16 || len(s) > 32 {
			return
		}
		if got, want := rooms.Match(pattern, s), naive(pattern, s); got != want {
			t.Fatalf("Match(%q, %q) = %v, want %v", pattern, s, got, want)
		}
	})
}

// naive is the textbook definition of the match, memoised: the plain recursion takes exponential
// time on a pattern of many stars (the fuzzer's "***************w" hung it; Match itself is linear
// in practice and quadratic at worst).
func naive(p, s string) bool {
	memo := make(map[[2]int]bool)
	var match func(i, j int) bool
	match = func(i, j int) bool {
		if v, ok := memo[[2]int{i, j}]; ok {
			return v
		}
		var v bool
		switch {
		case i == len(p):
			v = j == len(s)
		case p[i] == '*':
			v = match(i+1, j) || (j < len(s) && match(i, j+1))
		default:
			v = j < len(s) && p[i] == s[j] && match(i+1, j+1)
		}
		memo[[2]int{i, j}] = v
		return v
	}
	return match(0, 0)
}
