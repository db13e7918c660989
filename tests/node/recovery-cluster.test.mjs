// Connection-state recovery across nodes (CHORUS_REDIS_MODE=streams): two chorus binaries and a
// stock Node socket.io 4.8 server with @socket.io/redis-streams-adapter 0.3 on one redis-server
// this suite starts. Stock socket.io-client sockets reach the servers through a TCP proxy that
// stands for the network and the load balancer: the test drops the client's connection and sends
// its reconnection to another node.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import { createClient } from "redis";
import { ack, binToHex, chorusOnly, connect, httpRequest, nextEvent, record, startServer, TRANSPORTS, unique, waitFor } from "./harness.mjs";
import { startRedis } from "./cluster/redis.mjs";
import { startProxy } from "./cluster/proxy.mjs";

const T = { timeout: 30_000 };
const KEY = "recovery-cluster-key";

/** The first argument of every `event` received (the offset comes after it). */
const payloads = (events, event = "m") => events.filter((e) => e.event === event).map((e) => e.args[0]);
/** The offset (last argument) of every `event` received. */
const offsets = (events, event = "m") => events.filter((e) => e.event === event).map((e) => e.offset);

/** Stream entry ids compare as (ms, seq). */
function idLess(x, y) {
  const [xm, xs] = x.split("-").map(BigInt);
  const [ym, ys] = y.split("-").map(BigInt);
  return xm < ym || (xm === ym && xs < ys);
}

async function drop(socket) {
  const gone = nextEvent(socket, "disconnect");
  socket.io.engine.close();
  await gone;
}

async function reconnect(socket) {
  const back = nextEvent(socket, "connect");
  socket.connect();
  await back;
}

describe("recovery across nodes with Redis Streams", { skip: chorusOnly }, () => {
  let redis;
  let prefix;
  let chorusA;
  let chorusB;
  let io; // the Node server
  let nodeHTTP;
  let nodePort;
  const redisClients = [];

  const redisClient = async () => {
    const c = createClient({ url: redis.url });
    c.on("error", () => {});
    await c.connect();
    redisClients.push(c);
    return c;
  };
  const headers = { authorization: `Bearer ${KEY}`, "content-type": "application/json" };
  const apiEmit = async (server, body) => {
    const res = await httpRequest(`${server.url}/api/v1/emit`, { method: "POST", headers, body: JSON.stringify(body) });
    assert.equal(res.status, 202, res.text);
  };
  /**
   * Waits until the stream holds the broadcast of event with data: each node adds its entries
   * after it acked the publish, so what another node adds next may otherwise come before it.
   */
  const inStream = async (data, event = "m") => {
    const c = redisClients[0];
    const needle = `[${JSON.stringify(event)},${JSON.stringify(data)}`;
    await waitFor(async () => {
      const entries = await c.xRevRange(prefix, "+", "-", { COUNT: 50 });
      return entries.some((e) => e.message.data?.includes(needle));
    }, { message: `${needle} in the stream` });
  };

  before(async () => {
    redis = await startRedis();
    prefix = unique("streams");
    const env = { CHORUS_REDIS_URL: redis.url, CHORUS_REDIS_PREFIX: prefix, CHORUS_REDIS_MODE: "streams", CHORUS_API_KEY: KEY };
    [chorusA, chorusB] = await Promise.all([startServer({ env }), startServer({ env })]);

    // The Node server: chorus's join / publish on a stock socket.io with the streams adapter (its
    // streamName and channelPrefix are chorus's prefix) and connection-state recovery.
    nodeHTTP = createServer();
    io = new Server(nodeHTTP, {
      adapter: createAdapter(await redisClient(), { streamName: prefix, channelPrefix: prefix }),
      connectionStateRecovery: { maxDisconnectionDuration: 2 * 60 * 1000 },
    });
    io.on("connection", (socket) => {
      socket.on("join", (room, cb) => {
        socket.join(room);
        cb?.({ ok: true });
      });
      socket.on("publish", ({ room, event, data }, cb) => {
        socket.to(room).emit(event, data);
        cb?.({ ok: true });
      });
    });
    await new Promise((r) => nodeHTTP.listen(0, "127.0.0.1", r));
    nodePort = nodeHTTP.address().port;
    const probe = await redisClient();
    await waitFor(async () => Number((await probe.sendCommand(["PUBSUB", "NUMSUB", `${prefix}#/#`]))[1]) === 3, {
      message: "three servers subscribed",
    });
  });

  after(async () => {
    io?.close();
    for (const c of redisClients) await c.quit().catch(() => {});
    await chorusA?.stop();
    await chorusB?.stop();
    await redis?.close();
  });

  for (const name of ["websocket", "polling"]) {
    test(`a client dropped on chorus A recovers on chorus B: id, rooms, every missed event once, in stream order (${name})`, T, async () => {
      const proxy = await startProxy(chorusA.port);
      try {
        const room = unique();
        const a = await connect(proxy.url, { ...TRANSPORTS[name], agent: false });
        const sender = await connect(chorusB.url, TRANSPORTS.websocket);
        const events = record(a);
        assert.deepEqual(await ack(a, "join", room), { ok: true });
        assert.deepEqual(await ack(sender, "publish", { room, event: "m", data: 0 }), { ok: true });
        await waitFor(() => payloads(events).length === 1, { message: "first event" });
        const id = a.id;

        proxy.retarget(chorusB.port);
        await drop(a);
        for (let i = 1; i <= 3; i++) assert.deepEqual(await ack(sender, "publish", { room, event: "m", data: i }), { ok: true });
        await inStream(3);
        await apiEmit(chorusA, { rooms: [room], event: "m", data: "api-A" });
        await apiEmit(chorusA, { rooms: [room], event: "m", data: "volatile", volatile: true });
        await apiEmit(chorusB, { rooms: [id], event: "m", data: "to-the-socket" });
        io.to(room).emit("m", "from-node");
        await inStream("from-node");

        await reconnect(a);
        assert.equal(a.recovered, true);
        assert.equal(a.id, id);
        assert.deepEqual(await ack(sender, "publish", { room, event: "m", data: "live" }), { ok: true });
        await waitFor(() => payloads(events).includes("live"), { message: "the live event on B" });
        const got = payloads(events);
        assert.deepEqual(got.slice(0, 4), [0, 1, 2, 3]);
        assert.deepEqual(got.slice(4, -1).sort(), ["api-A", "from-node", "to-the-socket"]);
        assert.equal(got.at(-1), "live");
        const ids = offsets(events);
        for (let i = 1; i < ids.length; i++) assert.ok(idLess(ids[i - 1], ids[i]), `offsets in stream order: ${ids}`);
        const listed = await httpRequest(`${chorusA.url}/api/v1/sockets?room=${encodeURIComponent(room)}`, { headers });
        assert.deepEqual(listed.json.sockets.map((s) => s.id), [id], "the room is back, on B");
      } finally {
        await proxy.close();
      }
    });
  }

  test("a client whose connection to chorus A went dead unnoticed recovers on chorus B, the event lost in it included", T, async () => {
    const proxy = await startProxy(chorusA.port);
    try {
      const room = unique();
      const a = await connect(proxy.url, TRANSPORTS.websocket);
      const sender = await connect(chorusB.url, TRANSPORTS.websocket);
      const events = record(a);
      assert.deepEqual(await ack(a, "join", room), { ok: true });
      assert.deepEqual(await ack(sender, "publish", { room, event: "m", data: 0 }), { ok: true });
      await waitFor(() => payloads(events).length === 1, { message: "first event" });
      const id = a.id;
      proxy.blackhole(); // neither the client nor A notices
      assert.deepEqual(await ack(sender, "publish", { room, event: "m", data: "lost" }), { ok: true });
      await inStream("lost");
      proxy.retarget(chorusB.port);
      await drop(a);
      await reconnect(a); // B asks A to let the session go
      assert.equal(a.recovered, true);
      assert.equal(a.id, id);
      await waitFor(() => payloads(events).length === 2, { message: "the event lost in the dead connection" });
      assert.deepEqual(payloads(events), [0, "lost"]);
    } finally {
      await proxy.close();
    }
  });

  test("a client that received nothing before its drop recovers on the other chorus node", T, async () => {
    const proxy = await startProxy(chorusB.port);
    try {
      const room = unique();
      const a = await connect(proxy.url, TRANSPORTS.websocket);
      const sender = await connect(chorusA.url, TRANSPORTS.websocket);
      const events = record(a);
      assert.deepEqual(await ack(a, "join", room), { ok: true });
      const id = a.id;
      proxy.retarget(chorusA.port);
      await drop(a);
      assert.deepEqual(await ack(sender, "publish", { room, event: "m", data: "missed" }), { ok: true });
      await reconnect(a);
      assert.equal(a.recovered, true);
      assert.equal(a.id, id);
      await waitFor(() => payloads(events).length === 1, { message: "the missed event" });
      assert.deepEqual(payloads(events), ["missed"]);
    } finally {
      await proxy.close();
    }
  });

  test("a client dropped on the Node server recovers on chorus", T, async () => {
    const proxy = await startProxy(nodePort);
    try {
      const room = unique();
      const a = await connect(proxy.url, TRANSPORTS.websocket);
      const sender = await connect(chorusA.url, TRANSPORTS.websocket);
      const events = record(a);
      assert.deepEqual(await ack(a, "join", room), { ok: true });
      io.in(a.id).fetchSockets().then(([s]) => (s.data = { from: "node" }));
      assert.deepEqual(await ack(sender, "publish", { room, event: "m", data: 0 }), { ok: true });
      await waitFor(() => payloads(events).length === 1, { message: "first event, through Node" });
      const id = a.id;
      proxy.retarget(chorusB.port);
      await drop(a);
      await waitFor(async () => (await redisClients[0].exists(`sio:session:${a._pid}`)) === 1, { message: "Node kept the session" });
      assert.deepEqual(await ack(sender, "publish", { room, event: "m", data: 1 }), { ok: true });
      await inStream(1);
      io.to(room).emit("m", 2);
      await inStream(2);
      await reconnect(a);
      assert.equal(a.recovered, true, "recovered on chorus from Node's session");
      assert.equal(a.id, id);
      await waitFor(() => payloads(events).length === 3, { message: "the missed events" });
      assert.deepEqual(payloads(events), [0, 1, 2]);
      const listed = await httpRequest(`${chorusB.url}/api/v1/sockets?room=${encodeURIComponent(room)}`, { headers });
      assert.deepEqual(listed.json.sockets.map((s) => [s.id, s.data]), [[id, { from: "node" }]], "rooms and data from Node's session");
    } finally {
      await proxy.close();
    }
  });

  test("a client dropped on chorus recovers on the Node server", T, async () => {
    const proxy = await startProxy(chorusA.port);
    try {
      const room = unique();
      const a = await connect(proxy.url, TRANSPORTS.websocket);
      const sender = await connect(chorusB.url, TRANSPORTS.websocket);
      const events = record(a);
      assert.deepEqual(await ack(a, "join", room), { ok: true });
      assert.deepEqual(await ack(sender, "publish", { room, event: "m", data: 0 }), { ok: true });
      await waitFor(() => payloads(events).length === 1, { message: "first event" });
      const id = a.id;
      proxy.retarget(nodePort);
      await drop(a);
      await waitFor(async () => (await redisClients[0].exists(`sio:session:${a._pid}`)) === 1, { message: "chorus kept the session" });
      assert.deepEqual(await ack(sender, "publish", { room, event: "m", data: 1 }), { ok: true });
      await inStream(1);
      await apiEmit(chorusA, { rooms: [id], event: "m", data: 2 });
      await inStream(2);
      await reconnect(a);
      assert.equal(a.recovered, true, "recovered on Node from chorus's session");
      assert.equal(a.id, id);
      await waitFor(() => payloads(events).length === 3, { message: "the missed events, replayed by Node" });
      assert.deepEqual(payloads(events), [0, 1, 2]);
      const [s] = await io.in(room).fetchSockets();
      assert.equal(s?.id, id, "Node restored the room");
    } finally {
      await proxy.close();
    }
  });

  test("broadcasts cross between chorus and Node both ways, binary included", T, async () => {
    const room = unique();
    const c = await connect(chorusA.url, TRANSPORTS.websocket);
    const n = await connect(`http://127.0.0.1:${nodePort}`, TRANSPORTS.websocket);
    for (const s of [c, n]) assert.deepEqual(await ack(s, "join", room), { ok: true });
    const [atNode, atChorus] = [record(n), record(c)];
    assert.deepEqual(await ack(c, "publish", { room, event: "fromChorus", data: { bin: Buffer.from([1, 2, 3]), n: 1.5 } }), { ok: true });
    await waitFor(() => atNode.length === 1, { message: "chorus → Node" });
    assert.deepEqual(binToHex(atNode[0].args), [{ bin: { $bin: "010203" }, n: 1.5 }]);
    assert.match(atNode[0].offset, /^\d+-\d+$/, "Node stamps it with its stream id");
    assert.deepEqual(await ack(n, "publish", { room, event: "fromNode", data: { bin: Buffer.from("hi") } }), { ok: true });
    await waitFor(() => atChorus.length === 1, { message: "Node → chorus" });
    assert.deepEqual(binToHex(atChorus[0].args), [{ bin: { $bin: "6869" } }]);
    assert.ok(idLess(atNode[0].offset, atChorus[0].offset), "one stream, one order"); // (a stream id each)
    const toChorus2 = nextEvent(c, "serverSide");
    io.to(room).emit("serverSide", [1, "two"]);
    assert.deepEqual((await toChorus2)[0], [1, "two"]);
  });

  test("cluster operations between chorus and Node", T, async () => {
    const room = unique();
    const c = await connect(chorusB.url, TRANSPORTS.websocket);
    const n = await connect(`http://127.0.0.1:${nodePort}`, TRANSPORTS.websocket);
    for (const s of [c, n]) assert.deepEqual(await ack(s, "join", room), { ok: true });

    // Node → chorus: fetchSockets, socketsJoin, disconnectSockets.
    const fetched = await io.in(room).fetchSockets();
    assert.deepEqual(fetched.map((s) => s.id).sort(), [c.id, n.id].sort());
    const joined = unique();
    io.in(c.id).socketsJoin(joined);
    const listJoined = () => httpRequest(`${chorusA.url}/api/v1/sockets?room=${encodeURIComponent(joined)}`, { headers });
    await waitFor(async () => (await listJoined()).json.sockets.some((s) => s.id === c.id), { message: "chorus socket joined" });

    // chorus → Node: the HTTP API lists, emits to and disconnects Node's sockets.
    const listed = await httpRequest(`${chorusA.url}/api/v1/sockets?room=${encodeURIComponent(room)}`, { headers });
    assert.equal(listed.json.complete, true);
    assert.deepEqual(listed.json.sockets.map((s) => s.id).sort(), [c.id, n.id].sort());
    const got = nextEvent(n, "fromAPI");
    await apiEmit(chorusA, { rooms: [room], event: "fromAPI", data: "x" });
    assert.equal((await got)[0], "x");
    const gone = nextEvent(n, "disconnect");
    const res = await httpRequest(`${chorusA.url}/api/v1/disconnect`, { method: "POST", headers, body: JSON.stringify({ sockets: [n.id] }) });
    assert.equal(res.status, 202, res.text);
    assert.equal((await gone)[0], "io server disconnect");

    const goneC = nextEvent(c, "disconnect");
    io.in(c.id).disconnectSockets();
    assert.equal((await goneC)[0], "io server disconnect");
  });
});
