// Package admin is the server side of the stock Socket.IO Admin UI (@socket.io/admin-ui 0.5), in
// Go: what that package's instrument() does in Node (its dist/index.js), on chorus's namespaces.
//
// The UI connects to the "/admin" namespace with auth {username, password} (or a {sessionId} it
// got before), and then receives:
//
//   - "session" (a session id to reconnect with), "config" ({supportedFeatures}) and "all_sockets"
//     (every socket of every namespace on every node: fetchSockets through the adapter);
//   - "server_stats" from every node every 2 s (its id, uptime, Engine.IO clients, namespaces, and
//     the aggregated connection / byte counts the dashboard charts);
//   - "socket_connected", "socket_updated", "socket_disconnected", "room_joined", "room_left" as they
//     happen on any node, and "event_received" / "event_sent" when live events are enabled.
//
// It sends "join", "leave", "_disconnect" and "emit" (nsp, …, filter), which act on every node
// through the adapter (SocketsJoin, SocketsLeave, DisconnectSockets, Broadcast).
//
// Everything it emits is a broadcast in the /admin namespace, so with the Redis adapter each node's
// events and stats reach the admin sockets of every node, as in Node. Every node must enable it
// with the same credentials to appear in the server list.
package admin

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/chorus-rt/chorus/adapter"
	"github.com/chorus-rt/chorus/internal/metrics"
	"github.com/chorus-rt/chorus/internal/sio"
	"github.com/chorus-rt/chorus/rooms"
)

// NamespaceName is the namespace the Admin UI connects to (its default).
const NamespaceName = "/admin"

const (
	// statsInterval is how often each node sends its server_stats (as in Node).
	statsInterval = 2 * time.Second
	// sessionTTL is how long a session id the UI got stays valid (Node's RedisStore default).
	sessionTTL = 24 * time.Hour
	// fetchTimeout bounds the collection of all_sockets across the cluster.
	fetchTimeout = 10 * time.Second
	// namespacesEvent asks the other nodes' admins for their namespaces (server-side emit).
	namespacesEvent = "chorus:admin:namespaces"
	// CodeInvalidCredentials is the connect_error code of a refused admin; its message is the one
	// the UI recognises, "invalid credentials".
	CodeInvalidCredentials = "invalid_credentials"
)

// Options configures Register.
type Options struct {
	// Username and Password are the credentials the UI must present; both are required.
	Username, Password string
	// Events also sends the UI every event sockets send and are sent with Conn.Emit
	// (event_received / event_sent, its Events page). It costs a broadcast per event.
	Events bool
	// ServerID names this node in the UI's server list; "" means hostname#pid.
	ServerID string
	// Totals returns this node's running Engine.IO totals, for the dashboard's charts; nil sends
	// no aggregated events.
	Totals func() metrics.Totals
	// Logger receives the admin actions; nil discards them.
	Logger *slog.Logger
}

// Admin is the server side of the Admin UI on one chorus node.
type Admin struct {
	opts     Options
	srv      *sio.Server
	nsp      *sio.Namespace
	log      *slog.Logger
	key      []byte // signs session ids
	hostname string
	start    time.Time
	features []string

	mu   sync.Mutex
	prev metrics.Totals // totals at the last server_stats
}

// Register installs the /admin namespace on srv and makes the Admin the server's sio.Monitor.
// Call it before serving. The stats it sends every statsInterval stop when srv drains or closes.
func Register(srv *sio.Server, o Options) *Admin {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	host, _ := os.Hostname()
	if o.ServerID == "" {
		o.ServerID = host + "#" + strconv.Itoa(os.Getpid())
	}
	key := sha256.Sum256([]byte("chorus admin session\x00" + o.Username + "\x00" + o.Password))
	a := &Admin{
		opts: o, srv: srv, nsp: srv.Namespace(NamespaceName), log: o.Logger, key: key[:],
		hostname: host, start: time.Now(),
		// ALL_EVENTS is what makes the UI show its sockets, rooms and clients pages; the events of
		// sockets themselves (event_received / event_sent) flow only with Options.Events.
		features: []string{"EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS"},
	}
	if o.Totals != nil {
		a.prev = o.Totals()
	}
	a.nsp.Use(a.authenticate)
	a.nsp.OnConnect(a.onAdminConnect)
	a.nsp.HandleMessage("join", a.join)
	a.nsp.HandleMessage("leave", a.leave)
	a.nsp.HandleMessage("_disconnect", a.disconnect)
	a.nsp.HandleMessage("emit", a.emit)
	a.nsp.OnServerSide(namespacesEvent, func(_ []json.RawMessage, ack func(any)) {
		if ack != nil {
			ack(a.namespaceNames())
		}
	})
	srv.SetMonitor(a)
	time.AfterFunc(statsInterval, a.tick)
	return a
}

// credentials is the UI's handshake auth.
type credentials struct {
	Username  string `json:"username"`
	Password  string `json:"password"`
	SessionID string `json:"sessionId"`
}

func parseAuth(auth json.RawMessage) credentials {
	var c credentials
	json.Unmarshal(auth, &c) // anything else is no credentials
	return c
}

// authenticate admits a valid session id or the configured credentials, compared in constant time.
func (a *Admin) authenticate(_ context.Context, _ *sio.Handshake, auth json.RawMessage) error {
	c := parseAuth(auth)
	if c.SessionID != "" && a.validSession(c.SessionID) {
		return nil
	}
	if a.matches(c.Username, c.Password) {
		return nil
	}
	return &sio.Error{Code: CodeInvalidCredentials, Message: "invalid credentials"}
}

// matches compares hashes, so that neither the content nor the length of the secrets leaks through
// timing, and checks both before answering.
func (a *Admin) matches(username, password string) bool {
	hu, wu := sha256.Sum256([]byte(username)), sha256.Sum256([]byte(a.opts.Username))
	hp, wp := sha256.Sum256([]byte(password)), sha256.Sum256([]byte(a.opts.Password))
	return subtle.ConstantTimeCompare(hu[:], wu[:])&subtle.ConstantTimeCompare(hp[:], wp[:]) == 1
}

// newSession returns a session id: its expiry and an HMAC of it under a key derived from the
// credentials. Every node with the same credentials accepts it; changing them revokes it.
func (a *Admin) newSession() string {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+sha256.Size), uint64(time.Now().Add(sessionTTL).Unix()))
	mac := hmac.New(sha256.New, a.key)
	mac.Write(b)
	return base64.RawURLEncoding.EncodeToString(mac.Sum(b))
}

func (a *Admin) validSession(id string) bool {
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil || len(b) != 8+sha256.Size {
		return false
	}
	mac := hmac.New(sha256.New, a.key)
	mac.Write(b[:8])
	if !hmac.Equal(mac.Sum(nil), b[8:]) {
		return false
	}
	return time.Now().Unix() < int64(binary.BigEndian.Uint64(b[:8]))
}

// onAdminConnect greets an admin socket as instrument() does: session, config, this node's stats at
// once (the others' follow within statsInterval), then every socket of the cluster.
func (a *Admin) onAdminConnect(c *sio.Conn) {
	if cred := parseAuth(c.Handshake().Auth); cred.SessionID == "" || !a.validSession(cred.SessionID) {
		c.Emit("session", a.newSession())
	}
	c.Emit("config", map[string][]string{"supportedFeatures": a.features})
	c.Emit("server_stats", a.stats(false))
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
		defer cancel()
		c.Emit("all_sockets", a.allSockets(ctx, a.srv.Namespaces()))
		// Namespaces created from a pattern on other nodes only (a tenant with nobody here): once
		// the other nodes have named theirs, the list is sent again with their sockets. A node that
		// does not answer (a Node server) costs only the wait for this second list.
		more, release := a.remoteNamespaces(ctx)
		if len(more) > 0 {
			c.Emit("all_sockets", a.allSockets(ctx, a.srv.Namespaces()))
		}
		release()
	}()
}

// namespaceNames returns the names of this node's namespaces.
func (a *Admin) namespaceNames() []string {
	var names []string
	for _, n := range a.srv.Namespaces() {
		names = append(names, n.Name())
	}
	return names
}

// remoteNamespaces asks the other nodes for their namespaces and makes here, from this node's
// patterns, those it does not have (so that fetchSockets can reach them); it returns those, held
// until release is called (a dynamic namespace nobody uses here is removed then).
func (a *Admin) remoteNamespaces(ctx context.Context) (added []string, release func()) {
	replies, err := a.nsp.ServerSideEmitWithAck(ctx, namespacesEvent)
	if err != nil {
		a.log.Debug("admin: some nodes did not name their namespaces", "err", err)
	}
	have := make(map[string]bool)
	for _, name := range a.namespaceNames() {
		have[name] = true
	}
	var releases []func()
	for _, r := range replies {
		var names []string
		json.Unmarshal(r, &names)
		for _, name := range names {
			if have[name] {
				continue
			}
			have[name] = true
			if _, rel, ok := a.srv.Acquire(name); ok {
				added = append(added, name)
				releases = append(releases, rel)
			}
		}
	}
	return added, func() {
		for _, rel := range releases {
			rel()
		}
	}
}

// allSockets fetches the sockets of the namespaces nss, on every node.
func (a *Admin) allSockets(ctx context.Context, nss []*sio.Namespace) []socket {
	out := []socket{}
	for _, n := range nss {
		infos, err := n.FetchSockets(ctx, adapter.BroadcastOptions{})
		if err != nil {
			a.log.Debug("admin: some nodes did not answer fetchSockets", "nsp", n.Name(), "err", err)
		}
		for _, si := range infos {
			out = append(out, serialize(n.Name(), si))
		}
	}
	return out
}

// socket is a socket as the UI shows it (instrument()'s serialize).
type socket struct {
	ID        string          `json:"id"`
	ClientID  string          `json:"clientId,omitempty"`
	Transport string          `json:"transport,omitempty"`
	Nsp       string          `json:"nsp"`
	Data      json.RawMessage `json:"data"`
	Handshake json.RawMessage `json:"handshake"`
	Rooms     []string        `json:"rooms"`
}

// adminData is what each socket carries in its data under "_admin" while the Admin UI is on (as in
// Node), so that the UI can tell its client and transport whichever node it lives on.
type adminData struct {
	ClientID  string `json:"clientId"`
	Transport string `json:"transport"`
}

// serialize turns a socket as fetchSockets reports it into the UI's form: client id and transport
// from data._admin (then removed), the address from cf-connecting-ip or x-forwarded-for if present,
// and the handshake without its auth (which holds credentials).
func serialize(nsp string, si adapter.SocketInfo) socket {
	s := socket{ID: si.ID, Nsp: nsp, Data: si.Data, Handshake: si.Handshake, Rooms: si.Rooms}
	if s.Rooms == nil {
		s.Rooms = []string{}
	}
	var data map[string]json.RawMessage
	if json.Unmarshal(si.Data, &data) == nil && data != nil {
		if raw, ok := data["_admin"]; ok {
			var ad adminData
			json.Unmarshal(raw, &ad)
			s.ClientID, s.Transport = ad.ClientID, ad.Transport
			delete(data, "_admin")
			s.Data, _ = json.Marshal(data)
		}
	}
	if len(s.Data) == 0 {
		s.Data = json.RawMessage("{}")
	}
	var hs map[string]json.RawMessage
	if json.Unmarshal(si.Handshake, &hs) == nil && hs != nil {
		delete(hs, "auth")
		var headers map[string]any
		json.Unmarshal(hs["headers"], &headers)
		for _, h := range []string{"cf-connecting-ip", "x-forwarded-for"} {
			if v, ok := headers[h].(string); ok && v != "" {
				hs["address"], _ = json.Marshal(v)
				break
			}
		}
		s.Handshake, _ = json.Marshal(hs)
	}
	if len(s.Handshake) == 0 {
		s.Handshake = json.RawMessage("{}")
	}
	return s
}

// local serializes one of this node's sockets.
func local(c *sio.Conn) socket {
	n := c.Namespace()
	infos := n.DescribeLocal([]string{c.ID()})
	if len(infos) == 0 {
		return socket{ID: c.ID(), Nsp: n.Name(), Data: json.RawMessage("{}"), Handshake: json.RawMessage("{}"), Rooms: c.Rooms()}
	}
	return serialize(n.Name(), infos[0])
}

// broadcast sends an event to every admin socket of the cluster.
func (a *Admin) broadcast(event string, args ...any) {
	if err := a.nsp.Emit(adapter.BroadcastOptions{}, event, args...); err != nil {
		a.log.Error("admin: event not sent", "event", event, "err", err)
	}
}

// now is a timestamp as the UI gets it from Node (a Date in JSON).
func now() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000Z") }

// clientID is the id the UI groups a connection's sockets by: the start of the Engine.IO session
// id, as in Node (the whole id would let anyone who sees it post to the session).
func clientID(c *sio.Conn) string {
	id := c.ClientID()
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

// Connected implements sio.Monitor.
func (a *Admin) Connected(c *sio.Conn) {
	c.Set("_admin", adminData{ClientID: clientID(c), Transport: c.Transport()})
	a.broadcast("socket_connected", local(c), now())
}

// Upgraded implements sio.Monitor.
func (a *Admin) Upgraded(c *sio.Conn, transport string) {
	c.Set("_admin", adminData{ClientID: clientID(c), Transport: transport})
	a.broadcast("socket_updated", map[string]string{"id": c.ID(), "nsp": c.Namespace().Name(), "transport": transport})
}

// Disconnected implements sio.Monitor: the socket goes first, then its rooms (the order Node's
// events arrive in, which the UI relies on to drop the rooms left empty).
func (a *Admin) Disconnected(c *sio.Conn, reason string, rooms []string) {
	nsp, ts := c.Namespace().Name(), now()
	a.broadcast("socket_disconnected", nsp, c.ID(), reason, ts)
	for _, r := range rooms {
		a.broadcast("room_left", nsp, r, c.ID(), ts)
	}
}

// Joined implements sio.Monitor.
func (a *Admin) Joined(c *sio.Conn, room string) {
	a.broadcast("room_joined", c.Namespace().Name(), room, c.ID(), now())
}

// Left implements sio.Monitor.
func (a *Admin) Left(c *sio.Conn, room string) {
	a.broadcast("room_left", c.Namespace().Name(), room, c.ID(), now())
}

// Event implements sio.Monitor: with live events on, every event of a socket outside /admin.
func (a *Admin) Event(c *sio.Conn, incoming bool, data json.RawMessage) {
	if !a.opts.Events || c.Namespace() == a.nsp {
		return
	}
	name := "event_sent"
	if incoming {
		name = "event_received"
	}
	a.broadcast(name, c.Namespace().Name(), c.ID(), data, now())
}

// serverStats is instrument()'s server_stats.
type serverStats struct {
	ServerID            string           `json:"serverId"`
	Hostname            string           `json:"hostname"`
	PID                 int              `json:"pid"`
	Uptime              float64          `json:"uptime"`
	ClientsCount        int              `json:"clientsCount"`
	PollingClientsCount int              `json:"pollingClientsCount"`
	AggregatedEvents    []aggregated     `json:"aggregatedEvents"`
	Namespaces          []namespaceStats `json:"namespaces"`
}

type aggregated struct {
	Timestamp int64   `json:"timestamp"`
	Type      string  `json:"type"`
	SubType   string  `json:"subType,omitempty"`
	Count     float64 `json:"count"`
}

type namespaceStats struct {
	Name         string `json:"name"`
	SocketsCount int    `json:"socketsCount"`
}

// tick sends this node's stats to every admin socket, and comes back unless the server is draining.
// It runs on a timer: no goroutine waits between ticks.
func (a *Admin) tick() {
	if a.srv.Draining() {
		return
	}
	a.broadcast("server_stats", a.stats(true))
	time.AfterFunc(statsInterval, a.tick)
}

// stats builds this node's server_stats; with aggregate, the counts since the last aggregate call
// (the dashboard's connection and byte charts) are included.
func (a *Admin) stats(aggregate bool) serverStats {
	st := serverStats{
		ServerID: a.opts.ServerID, Hostname: a.hostname, PID: os.Getpid(),
		Uptime: time.Since(a.start).Seconds(), ClientsCount: a.srv.Sessions(),
		AggregatedEvents: []aggregated{}, Namespaces: []namespaceStats{},
	}
	for _, n := range a.srv.Namespaces() {
		st.Namespaces = append(st.Namespaces, namespaceStats{Name: n.Name(), SocketsCount: n.Len()})
	}
	sort.Slice(st.Namespaces, func(i, j int) bool { return st.Namespaces[i].Name < st.Namespaces[j].Name })
	if a.opts.Totals == nil {
		return st
	}
	t := a.opts.Totals()
	st.PollingClientsCount = t.PollingSessions
	if !aggregate {
		return st
	}
	a.mu.Lock()
	prev := a.prev
	a.prev = t
	a.mu.Unlock()
	ts := time.Now().Truncate(time.Second).UnixMilli()
	add := func(typ, sub string, n float64) {
		if n > 0 {
			st.AggregatedEvents = append(st.AggregatedEvents, aggregated{Timestamp: ts, Type: typ, SubType: sub, Count: n})
		}
	}
	add("rawConnection", "", t.Opened-prev.Opened)
	reasons := make([]string, 0, len(t.Closed))
	for r := range t.Closed {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		add("rawDisconnection", r, t.Closed[r]-prev.Closed[r])
	}
	add("packetsIn", "", t.MessagesIn-prev.MessagesIn)
	add("packetsOut", "", t.MessagesOut-prev.MessagesOut)
	add("bytesIn", "", t.BytesIn-prev.BytesIn)
	add("bytesOut", "", t.BytesOut-prev.BytesOut)
	return st
}

// The UI's actions. Each names a namespace and, optionally, a filter: a room or a socket id (every
// socket of the namespace without one). They act on every node through the adapter.

// target decodes an action's namespace (argument 0) and filter (argument i). The namespace is held
// until release is called: a dynamic one only other nodes have is made here for the action.
func (a *Admin) target(m *sio.Message, i int) (n *sio.Namespace, opts adapter.BroadcastOptions, release func(), err error) {
	var name string
	if err := m.Decode(0, &name); err != nil || name == "" {
		return nil, opts, nil, sio.Errorf(sio.CodeInvalidArgument, "namespace must be a string")
	}
	var filter *string
	if err := m.Decode(i, &filter); err != nil {
		return nil, opts, nil, sio.Errorf(sio.CodeInvalidArgument, "filter must be a string")
	}
	n, release, ok := a.srv.Acquire(name)
	if !ok {
		return nil, opts, nil, sio.Errorf(sio.CodeInvalidArgument, "no namespace %s", name)
	}
	if filter != nil && *filter != "" {
		opts.Rooms = []string{*filter}
	}
	return n, opts, release, nil
}

// room decodes the room argument of join and leave.
func room(m *sio.Message) (string, error) {
	var r string
	if err := m.Decode(1, &r); err != nil || rooms.ValidateName(r) != nil {
		return "", sio.Errorf(sio.CodeInvalidArgument, "room must be a string of 1 to %d bytes", rooms.MaxNameLen)
	}
	return r, nil
}

// join: (nsp, room, filter?) makes the sockets join room.
func (a *Admin) join(ctx context.Context, c *sio.Conn, m *sio.Message) (any, error) {
	return a.roomAction(ctx, c, m, "join", (*sio.Namespace).SocketsJoin)
}

// leave: (nsp, room, filter?) makes the sockets leave room.
func (a *Admin) leave(ctx context.Context, c *sio.Conn, m *sio.Message) (any, error) {
	return a.roomAction(ctx, c, m, "leave", (*sio.Namespace).SocketsLeave)
}

// roomAction decodes (nsp, room, filter?) and applies join or leave to the sockets it selects.
func (a *Admin) roomAction(ctx context.Context, c *sio.Conn, m *sio.Message, action string,
	apply func(*sio.Namespace, context.Context, adapter.BroadcastOptions, ...string) error) (any, error) {
	n, opts, release, err := a.target(m, 2)
	if err != nil {
		return nil, err
	}
	defer release()
	r, err := room(m)
	if err != nil {
		return nil, err
	}
	a.log.Info("admin action", "sid", c.ID(), "action", action, "nsp", n.Name(), "room", r, "filter", opts.Rooms)
	return nil, apply(n, ctx, opts, r)
}

// disconnect: (nsp, close, filter?) disconnects the sockets; with close, their connections too.
func (a *Admin) disconnect(ctx context.Context, c *sio.Conn, m *sio.Message) (any, error) {
	n, opts, release, err := a.target(m, 2)
	if err != nil {
		return nil, err
	}
	defer release()
	var closeConn bool
	if err := m.Decode(1, &closeConn); err != nil {
		return nil, sio.Errorf(sio.CodeInvalidArgument, "close must be a boolean")
	}
	a.log.Info("admin action", "sid", c.ID(), "action", "disconnect", "nsp", n.Name(), "close", closeConn, "filter", opts.Rooms)
	return nil, n.DisconnectSockets(ctx, opts, closeConn)
}

// emit: (nsp, filter, event, ...args) broadcasts event to the sockets.
func (a *Admin) emit(_ context.Context, c *sio.Conn, m *sio.Message) (any, error) {
	n, opts, release, err := a.target(m, 1)
	if err != nil {
		return nil, err
	}
	defer release()
	var event string
	if err := m.Decode(2, &event); err != nil || event == "" || sio.IsReserved(event) {
		return nil, sio.Errorf(sio.CodeInvalidArgument, "event must be a non-reserved event name")
	}
	args := make([]any, 0, max(len(m.Args)-3, 0))
	for _, arg := range m.Args[min(3, len(m.Args)):] {
		args = append(args, arg)
	}
	if len(m.Attachments) > 0 {
		return nil, sio.Errorf(sio.CodeInvalidArgument, "binary arguments are not supported")
	}
	a.log.Info("admin action", "sid", c.ID(), "action", "emit", "nsp", n.Name(), "event", event, "filter", opts.Rooms)
	if err := n.Emit(opts, event, args...); err != nil {
		return nil, fmt.Errorf("admin emit: %w", err)
	}
	return nil, nil
}
