// Package adapter keeps room membership for a namespace and routes broadcasts to its sockets. Memory
// is the single-node adapter; Redis connects chorus to a cluster of Socket.IO servers and also
// forwards broadcasts and cluster operations to the other nodes, in one of two modes: classic
// pub/sub (Node's @socket.io/redis-adapter) or Redis Streams (@socket.io/redis-streams-adapter).
// Every adapter also does connection-state recovery (Recovery, recovery.go): Memory and the
// pub/sub adapter keep the packets and sessions in this process's memory, the streams adapter in
// Redis, so that a client recovers its session on any node.
//
// # The Redis wire format
//
// Redis speaks the classic (pub/sub) format of Node's @socket.io/redis-adapter 8.3, so chorus
// nodes, Node socket.io 4.x servers with that adapter and @socket.io/redis-emitter 5.x share one
// cluster. It follows these files:
//
//   - socketio/socket.io-redis-adapter, tag 8.3.0: lib/index.ts (RedisAdapter: channels,
//     onmessage, onrequest, onresponse, broadcast, broadcastWithAck, fetchSockets, addSockets,
//     delSockets, disconnectSockets, serverSideEmit, serverCount) and lib/util.ts (PUBSUB NUMSUB);
//   - socketio/socket.io-adapter 2.5 (the version socket.io 4.8 uses): lib/in-memory-adapter.ts
//     (BroadcastOptions, BroadcastFlags, apply, broadcastWithAck);
//   - socketio/socket.io-redis-emitter, tag 5.1.0: lib/index.ts (uid "emitter", requests without uid);
//   - notepack.io 3.0.1 (the msgpack codec both use): lib/encode.js, lib/decode.js.
//
// Channels, for prefix P (Node's `key` option, CHORUS_REDIS_PREFIX, default "socket.io") and
// namespace N (e.g. "/"):
//
//	P#N#          broadcasts to the whole namespace, or to several rooms
//	P#N#R#        broadcasts to exactly one room R
//	P-request#N#  requests (every node subscribes: PUBSUB NUMSUB on it is the server count)
//	P-response#N# responses (Node's default, publishOnSpecificResponseChannel false)
//	P-response#N#UID#  responses for one node (subscribed, as Node does; chorus answers on the common one)
//
// Each node subscribes with PSUBSCRIBE "P#N#*" (chorus escapes glob characters of P and N) and
// SUBSCRIBE to the request and both response channels, over one connection for all namespaces.
// A node's uid is random; a node ignores broadcasts and requests that carry its own uid, and, as
// Node does, does not even decode a broadcast on a room's channel when none of its sockets is in
// that room.
//
// A broadcast is msgpack (notepack.io) of the array [uid, packet, opts]:
//
//	packet = {type: 2, data: [event, ...args], nsp: N}   the decoded Socket.IO packet: EVENT even with
//	                                                      binary; Buffers are msgpack bin
//	opts   = {rooms: [...], except: [...], flags: {...}}  rooms and except as arrays; flags are
//	                                                      BroadcastFlags (volatile, compress, local, timeout)
//
// chorus keeps a packet's data as JSON with placeholders {"_placeholder":true,"num":i} and the
// binary attachments apart (internal/protocol.Packet). It converts exactly, both ways (codec.go):
// a placeholder becomes the msgpack bin of its attachment, and a bin becomes a placeholder with the
// next attachment, in the order they appear (socket.io-parser's deconstructPacket). Numbers become
// msgpack integers when they have no fraction and float64 otherwise, as notepack encodes a
// JavaScript number; msgpack timestamps (Dates) become ISO strings, as JSON.stringify writes them.
// A packet of type other than EVENT (2) or BINARY_EVENT (5), or whose data is not [string, ...],
// is dropped as malformed; so are rooms that are not strings.
//
// Requests (on P-request#N#) are JSON objects, except BROADCAST, which is msgpack; a message is
// JSON when its first byte is '{'. Types (lib/index.ts, enum RequestType):
//
//	0 SOCKETS                {uid, requestId, type, rooms}            → {requestId, sockets: [id]}
//	1 ALL_ROOMS              {uid, requestId, type}                   → {requestId, rooms: [room]}
//	2 REMOTE_JOIN            {uid, type, opts: {rooms, except}, rooms}     no response
//	3 REMOTE_LEAVE           {uid, type, opts: {rooms, except}, rooms}     no response
//	4 REMOTE_DISCONNECT      {uid, type, opts: {rooms, except}, close}     no response
//	  (2-4 without opts, from older nodes: {uid, requestId, type, sid, room | close} → {requestId})
//	5 REMOTE_FETCH           {uid, requestId, type, opts: {rooms, except}}
//	                         → {requestId, sockets: [{id, handshake, rooms, data}]}
//	6 SERVER_SIDE_EMIT       {uid, type, data: [event, ...args]}           no response
//	                         {uid, requestId, type, data}             → {type: 6, requestId, data: reply}
//	7 BROADCAST (msgpack)    {uid, requestId, type, packet, opts: {rooms, except, flags: {timeout}}}
//	                         → {type: 8, requestId, clientCount}      (JSON, BROADCAST_CLIENT_COUNT)
//	                         → {type: 9, requestId, packet: ack}      (msgpack, BROADCAST_ACK, one per
//	                                                                   client ack: its first argument)
//
// The emitter sends 2, 3, 4 and 6 without uid (6 with uid "emitter") and broadcasts with uid
// "emitter". Requests that wait for answers expect one per other node: PUBSUB NUMSUB on the request
// channel, minus one. The server count is that NUMSUB.
//
// Where chorus differs from Node, on its own side only: it applies its own REMOTE_JOIN, _LEAVE and
// _DISCONNECT locally at once (Node applies them when they come back from Redis), so they also work
// for local sockets while Redis is down; it ignores requests carrying its own uid; and a request
// that not every node answers in time returns what did arrive with ErrTimeout instead of failing.
//
// # The Redis Streams wire format
//
// With RedisOptions.Streams (CHORUS_REDIS_MODE=streams) chorus speaks @socket.io/redis-streams-adapter
// 0.3.1 (lib/adapter.ts, lib/util.ts) on top of socket.io-adapter 2.5's ClusterAdapter
// (lib/cluster-adapter.ts), with Node's defaults: streamName and channelPrefix are both the prefix
// P (CHORUS_REDIS_PREFIX), one stream (streamCount 1), sessionKeyPrefix "sio:session:". Messages
// are ClusterMessage {uid, nsp, type, data}; types (MessageType):
//
//	3 BROADCAST           data {packet: {type: 2, data: [event, ...args], nsp}, opts: {rooms, except, flags}}
//	                      with requestId (and flags.timeout): a broadcast with acks
//	4 SOCKETS_JOIN        data {opts, rooms}
//	5 SOCKETS_LEAVE       data {opts, rooms}
//	6 DISCONNECT_SOCKETS  data {opts, close}
//	7 FETCH_SOCKETS       data {opts, requestId}           → 8 {requestId, sockets: [{id, handshake, rooms, data}]}
//	9 SERVER_SIDE_EMIT    data {packet: [event, ...args]} (+ requestId) → 10 {requestId, packet: reply}
//	                      a broadcast with acks        → 11 {requestId, clientCount}, 12 {requestId, packet: ack}
//	101 (chorus only)     data {pid}: "end the socket holding this session, its client is here";
//	                      Node's adapters ignore types they do not know
//
// BROADCAST without requestId, 4, 5 and 6 are entries of the stream P, added with
// XADD P MAXLEN ~ <CHORUS_REDIS_STREAM_MAXLEN, default 10000> * uid <uid> nsp <N> type <"3"> data <d>,
// where d is JSON.stringify(data), or base64 of its msgpack (@msgpack/msgpack) when the packet
// holds binary (Buffers as bin); a reader tells them apart by the first character ('{').
// Everything else is msgpack of the whole message, PUBLISHed on P#N# (the public channel, which
// every node subscribes: PUBSUB NUMSUB on it is the server count) or, for responses, on
// P#N#<requester uid># (the requester's private channel). Every node reads the stream with XREAD
// BLOCK from its end when it started, ignoring its own entries' decoding (see below) and
// applying the others'.
//
// Recovery: a recoverable broadcast's offset is its entry id ("1700000000000-0"), appended by
// every node as its packet's last argument. A session is SET sio:session:<pid>
// <base64 of msgpack {sid, pid, rooms, data, from}> PX <max disconnection>; "from" is chorus's
// (Session.From), Node ignores it. Restoring takes the key (MULTI GET DEL) and reads the stream
// after the offset with XRANGE, keeping the namespace's BROADCASTs that reach the session's rooms.
//
// Live sessions (chorus only; streams_live.go): while a socket is connected its session is in
// Redis too, under the same key, with one more field, "node": the uid of the node it is live on
// (SET when it connects or recovers and when its rooms change, expiry max disconnection + 2
// refresh intervals, pushed forward by PEXPIRE every refresh interval, a quarter of the window
// and at most 30 s). When its connection drops, the released session (no "node") overwrites it;
// when it leaves on purpose the key is deleted. So a client of a node that died without a word
// (SIGKILL) recovers elsewhere. A chorus restore that finds a live session checks that its node
// is alive (PUBSUB NUMSUB of its private channel) and if so asks it to let the socket go (type
// 101) and waits up to 775 ms for the released session; a dead node's live session is restored
// at once. Node's adapter restores a live session like any other.
// chorus differs from Node, on its own side only: it also recovers a client that sends no
// offset, or whose offset was trimmed while nothing it should have received was (From moves
// forward at each heartbeat the client answers); it refuses a session some of whose packets were
// trimmed (Node replays what is left); it never replays volatile broadcasts (Node's restore does);
// it delivers its own broadcasts when its reader reaches them, in stream order, rather than when
// XADD returns, so that each socket gets packets in offset order; and when a session is not in
// Redis it asks the other nodes (type 101) to end the socket that still holds it, then waits a
// little for it.
//
// # Delivery, order and outages
//
// A broadcast is delivered locally at once and queued for Redis; one goroutine publishes the queue
// in order, in pipelines, so broadcasts from one goroutine reach every node in the order they were
// made. The queue is bounded (16384 messages, 64 MiB): when Redis is slow or down and it is full,
// a message is dropped and counted (RedisStatus.Dropped) — local delivery never waits for Redis.
// After a failure go-redis re-dials and resubscribes; chorus retries with backoff from 50 ms to 1 s,
// so cross-node delivery resumes within about a second of Redis answering again. Messages queued
// during an outage are published when it ends (they reach only the nodes that have resubscribed
// by then: in the reliability runs, none); a pipeline that failed is not sent again (it may have
// partly gone out, and a message must not be published twice), except its session writes (SET,
// DEL, PEXPIRE), which are. Messages from Redis that do not decode are dropped and counted
// (RedisStatus.Malformed), never a crash.
//
// A publish (Committer, commit.go) is acknowledged to its client when the pipeline that carried
// its PUBLISH or XADD has returned: Committed, or LocalOnly when Redis could not take it (the
// client's ack then says local: true).
//
// In streams mode a broadcast reaches this node's sockets when the stream reader reaches its entry
// (a round trip to Redis later, as in Node, which waits for XADD), so that the stream's order is
// every socket's order. While Redis is unreachable, or when the queue is full, broadcasts are
// delivered to this node's sockets at once, as Node does when its XADD fails, with a local offset
// of the namespace's outage log (streams_outage.go), from which this node's clients recover them;
// an entry the reader has not reached 5 s after its XADD is delivered anyway. A
// restore while Redis is unreachable waits for it (RecoveryOptions.OutageWait). A restore whose
// offset the stream no longer holds because Redis lost the stream (a restart without
// persistence: the stream ends before the offset, or the offset is gone from a stream never
// trimmed) gives a new session rather than one with a gap.
//
// # Deduplication keys
//
// Besides pub/sub, chorus keeps one key per publish that carried an id, so that a retry reaching
// any node is recognised (Node's adapters have no counterpart):
//
//	P#dedup#[N,R,ID]   <uid of the claiming node>, PX <CHORUS_DEDUP_WINDOW>
//
// where [N,R,ID] is the JSON array of the namespace, the room and the client's id (unambiguous
// whatever the strings hold), e.g. socket.io#dedup#["/","lobby","5f0c…"]. A publish with an id
// is one EVAL (commit.go): if the key exists it is a duplicate; otherwise the script PUBLISHes
// the broadcast (pub/sub) or XADDs its entry with one more field, claimed "1" (streams; Node
// ignores it), and only then SETs the key, so that no claim ever exists without its broadcast.
// A node whose reader meets its own claimed entry that it has not delivered (the script ran but
// the reply was lost) delivers it then. Redis expires the keys at the end of the window.
package adapter
