package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/chorus-rt/chorus/adapter"
)

// The cluster-wide routes: they act on the sockets of every node (with the Redis adapter) through
// the namespace's cluster operations. "complete" is false when some node did not answer in time or
// Redis could not be reached; what did arrive (at least this node's part) is still answered.

type socketJSON struct {
	ID    string          `json:"id"`
	Rooms []string        `json:"rooms"`
	Data  json.RawMessage `json:"data"`
}

// sockets answers GET /api/v1/sockets?namespace=/&room=R: the sockets of the namespace (in room R
// if given) on every node.
func sockets(o Options, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
		return
	}
	q := r.URL.Query()
	nsp := q.Get("namespace")
	if nsp == "" {
		nsp = "/"
	}
	var opts adapter.BroadcastOptions
	if q.Has("room") {
		opts.Rooms = []string{q.Get("room")}
	}
	n, release, ok := resolve(o, w, nsp, opts.Rooms)
	if !ok {
		return
	}
	defer release()
	found, err := n.FetchSockets(r.Context(), opts)
	complete := !partial(o, err, "sockets")
	out := make([]socketJSON, 0, len(found))
	for _, s := range found {
		rs := slices.Clone(s.Rooms)
		slices.Sort(rs)
		out = append(out, socketJSON{ID: s.ID, Rooms: rs, Data: s.Data})
	}
	slices.SortFunc(out, func(a, b socketJSON) int { return strings.Compare(a.ID, b.ID) })
	writeJSON(w, http.StatusOK, map[string]any{"sockets": out, "complete": complete})
}

// partial reports whether err means that only part of the cluster answered; any other error is
// logged (the part that arrived is answered all the same).
func partial(o Options, err error, what string) bool {
	if err == nil {
		return false
	}
	if !errors.Is(err, adapter.ErrTimeout) && !errors.Is(err, adapter.ErrUnavailable) && o.Logger != nil {
		o.Logger.Error("cluster request failed", "route", what, "err", err)
	}
	return true
}

type disconnectRequest struct {
	Namespace string   `json:"namespace"`
	Rooms     []string `json:"rooms"`
	Users     []string `json:"users"`
	Sockets   []string `json:"sockets"`
	Close     bool     `json:"close"`
}

// disconnect answers POST /api/v1/disconnect {namespace, rooms, sockets, close}: the sockets in any
// of rooms, and those with the given ids, are disconnected on every node; with close their whole
// connections are closed.
func disconnect(o Options, w http.ResponseWriter, r *http.Request) {
	req := disconnectRequest{Namespace: "/"}
	if !decodePost(o, w, r, &req) {
		return
	}
	// A socket id is a room of its own, and a user has a personal room: all select by room.
	targets, ok := withUsers(w, append(append([]string(nil), req.Rooms...), req.Sockets...), req.Users)
	if !ok {
		return
	}
	if len(targets) == 0 {
		WriteError(w, http.StatusBadRequest, "invalid_target", "give rooms or sockets to disconnect (never the whole namespace by default)")
		return
	}
	n, release, found := resolve(o, w, req.Namespace, targets)
	if !found {
		return
	}
	defer release()
	err := n.DisconnectSockets(r.Context(), adapter.BroadcastOptions{Rooms: targets}, req.Close)
	writeJSON(w, http.StatusAccepted, map[string]bool{"ok": true, "complete": !partial(o, err, "disconnect")})
}
