// Cluster end to end (issue 4): chorus binaries with CHORUS_REDIS_URL on a redis-server this suite
// starts, stock socket.io-client sockets, a stock Node socket.io 4.8 server with
// @socket.io/redis-adapter 8.3 and a @socket.io/redis-emitter 5.1 on the same Redis.
// chorus → Node cluster operations are covered from Go (adapter/node_interop_test.go), where the
// chorus side can call them.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";
import { ack, binToHex, chorusOnly, connect, httpRequest, nextEvent, record, startServer, TRANSPORTS, unique, waitFor } from "./harness.mjs";
import { startRedis } from "./cluster/redis.mjs";

const T = { timeout: 30_000 };
const KEY = "cluster-test-key";

describe("cluster over Redis", { skip: chorusOnly }, () => {
  let redis;
  let prefix;
  let chorusA;
  let chorusB;
  const redisClients = [];

  const redisClient = async () => {
    const c = createClient({ url: redis.url });
    c.on("error", () => {});
    await c.connect();
    redisClients.push(c);
    return c;
  };

  before(async () => {
    redis = await startRedis();
    prefix = unique("e2e");
    const env = { CHORUS_REDIS_URL: redis.url, CHORUS_REDIS_PREFIX: prefix, CHORUS_LOG_LEVEL: "debug", CHORUS_API_KEY: KEY };
    [chorusA, chorusB] = await Promise.all([startServer({ env }), startServer({ env })]);
    // Both nodes subscribed: each request channel has two subscribers.
    const probe = await redisClient();
    await waitFor(async () => {
      const res = await probe.sendCommand(["PUBSUB", "NUMSUB", `${prefix}-request#/#`]);
      return Number(res[1]) === 2;
    }, { message: "both chorus nodes subscribed" });
  });

  after(async () => {
    for (const c of redisClients) await c.quit().catch(() => {});
    await chorusA?.stop();
    await chorusB?.stop();
    await redis?.close();
  });

  test("/readyz reports Redis", T, async () => {
    const res = await httpRequest(`${chorusA.url}/readyz`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-chorus-redis"), "up");
    assert.match(res.text, /^ok\nredis: up since /);
  });

  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    test(`publish crosses nodes, binary included (${name})`, T, async () => {
      const room = unique();
      const [sender, receiver] = await Promise.all([connect(chorusA.url, opts), connect(chorusB.url, opts)]);
      assert.deepEqual(await ack(receiver, "join", room), { ok: true });
      const got = nextEvent(receiver, "chat");
      const blob = Buffer.from([0, 1, 2, 250, 255]);
      assert.deepEqual(await ack(sender, "publish", { room, event: "chat", data: { text: "hi", blob, list: [1, blob] } }), { ok: true });
      const [data] = await got;
      assert.deepEqual(binToHex(data), binToHex({ text: "hi", blob, list: [1, blob] }));
    });
  }

  test("a 2000-message burst arrives complete and in order on the other node", T, async () => {
    const room = unique();
    const [sender, receiver] = await Promise.all([connect(chorusA.url, TRANSPORTS.websocket), connect(chorusB.url, TRANSPORTS.websocket)]);
    assert.deepEqual(await ack(receiver, "join", room), { ok: true });
    const seen = [];
    receiver.on("n", (i) => seen.push(i));
    for (let i = 0; i < 2000; i++) sender.emit("publish", { room, event: "n", data: i });
    await waitFor(() => seen.length >= 2000, { timeout: 20_000, message: "2000 messages on node B" });
    assert.deepEqual(seen, Array.from({ length: 2000 }, (_, i) => i));
  });

  test("the HTTP API of one node emits to, lists and disconnects sockets of every node", T, async () => {
    const room = unique();
    const headers = { authorization: `Bearer ${KEY}`, "content-type": "application/json" };
    const [c1, c2] = await Promise.all([connect(chorusA.url, TRANSPORTS.websocket), connect(chorusB.url, TRANSPORTS.polling)]);
    for (const c of [c1, c2]) assert.deepEqual(await ack(c, "join", room), { ok: true });

    const got = nextEvent(c2, "fromAPI");
    const emitted = await httpRequest(`${chorusA.url}/api/v1/emit`, { method: "POST", headers, body: JSON.stringify({ rooms: [room], event: "fromAPI", data: 1 }) });
    assert.equal(emitted.status, 202, emitted.text);
    assert.deepEqual(await got, [1]);

    const listed = await httpRequest(`${chorusB.url}/api/v1/sockets?namespace=/&room=${encodeURIComponent(room)}`, { headers });
    assert.equal(listed.status, 200, listed.text);
    assert.equal(listed.json.complete, true);
    assert.deepEqual(listed.json.sockets, [c1, c2].map((c) => ({ id: c.id, rooms: [c.id, room].sort(), data: {} })).sort((a, b) => (a.id < b.id ? -1 : 1)));

    const gone = nextEvent(c1, "disconnect");
    const res = await httpRequest(`${chorusB.url}/api/v1/disconnect`, { method: "POST", headers, body: JSON.stringify({ sockets: [c1.id] }) });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.json, { ok: true, complete: true });
    assert.deepEqual((await gone)[0], "io server disconnect");
    assert.equal(c2.connected, true);
  });

  describe("with a Node socket.io server and @socket.io/redis-adapter", () => {
    let io;
    let http;
    let nodeURL;

    before(async () => {
      http = createServer();
      io = new Server(http, { adapter: createAdapter(await redisClient(), await redisClient(), { key: prefix, requestsTimeout: 3000 }) });
      io.on("connection", (s) => s.join(s.handshake.auth.rooms ?? []));
      await new Promise((r) => http.listen(0, "127.0.0.1", r));
      nodeURL = `http://127.0.0.1:${http.address().port}`;
      await waitFor(async () => (await io.of("/").adapter.serverCount()) === 3, { message: "Node sees three servers" });
    });
    after(() => io?.close());

    test("room broadcasts both ways", T, async () => {
      const room = unique();
      const chorusClient = await connect(chorusA.url, TRANSPORTS.websocket);
      const nodeClient = await connect(nodeURL, { ...TRANSPORTS.websocket, auth: { rooms: [room] } });
      assert.deepEqual(await ack(chorusClient, "join", room), { ok: true });

      // chorus client → Node's client.
      const toNode = nextEvent(nodeClient, "fromChorus");
      assert.deepEqual(await ack(chorusClient, "publish", { room, event: "fromChorus", data: { bin: Buffer.from([9, 8]) } }), { ok: true });
      assert.deepEqual(binToHex((await toNode)[0]), { bin: { $bin: "0908" } });

      // Node's server → chorus client (one room: the room's own channel; two rooms: the namespace's).
      const toChorus = nextEvent(chorusClient, "fromNode");
      io.to(room).emit("fromNode", 1, Buffer.from("x"), { deep: [null, true] });
      assert.deepEqual(binToHex(await toChorus), [1, { $bin: "78" }, { deep: [null, true] }]);
      const toChorus2 = nextEvent(chorusClient, "twoRooms");
      io.to([room, unique()]).except(unique()).emit("twoRooms", "y");
      assert.deepEqual(await toChorus2, ["y"]);
    });

    test("Node's fetchSockets, socketsJoin and disconnectSockets act on chorus sockets", T, async () => {
      const room = unique();
      const joined = unique();
      const [c1, c2] = await Promise.all([connect(chorusA.url, TRANSPORTS.websocket), connect(chorusB.url, TRANSPORTS.polling)]);
      assert.deepEqual(await ack(c1, "join", room), { ok: true });
      assert.deepEqual(await ack(c2, "join", room), { ok: true });

      const sockets = await io.in(room).fetchSockets();
      assert.deepEqual(sockets.map((s) => s.id).sort(), [c1.id, c2.id].sort());
      for (const s of sockets) {
        assert.ok(s.rooms.has(room) && s.rooms.has(s.id), `rooms of ${s.id}: ${[...s.rooms]}`);
        assert.equal(s.handshake.query.EIO, "4");
        assert.deepEqual(s.data, {});
      }

      io.in(room).socketsJoin(joined);
      // A broadcast to the new room reaches them once they are in it.
      const events = [record(c1), record(c2)];
      await waitFor(() => {
        io.to(joined).emit("inJoined");
        return events.every((ev) => ev.some((e) => e.event === "inJoined"));
      }, { interval: 50, message: "chorus sockets joined the room Node asked for" });

      const gone = [nextEvent(c1, "disconnect"), nextEvent(c2, "disconnect")];
      io.in(joined).disconnectSockets();
      assert.deepEqual((await Promise.all(gone)).map(([reason]) => reason), ["io server disconnect", "io server disconnect"]);
    });
  });

  describe("with @socket.io/redis-emitter", () => {
    let emitter;
    before(async () => {
      emitter = new Emitter(await redisClient(), { key: prefix });
    });

    test("to(room).emit, emit, socketsJoin, socketsLeave, serverSideEmit, disconnectSockets reach chorus", T, async () => {
      const room = unique();
      const joined = unique();
      const [c1, c2] = await Promise.all([connect(chorusA.url, TRANSPORTS.websocket), connect(chorusB.url, TRANSPORTS.upgrade)]);
      assert.deepEqual(await ack(c1, "join", room), { ok: true });
      const ev1 = record(c1);
      const ev2 = record(c2);

      emitter.to(room).emit("toRoom", Buffer.from([1, 2, 3]), "s");
      emitter.emit("toAll", { n: 1 });
      await waitFor(() => ev1.some((e) => e.event === "toAll") && ev2.some((e) => e.event === "toAll"), { message: "emit to all" });
      assert.deepEqual(ev1.map((e) => [e.event, binToHex(e.args)]), [["toRoom", [{ $bin: "010203" }, "s"]], ["toAll", [{ n: 1 }]]]);
      assert.deepEqual(ev2.map((e) => e.event), ["toAll"]);

      emitter.in(room).socketsJoin(joined);
      await waitFor(() => {
        emitter.to(joined).emit("inJoined");
        return ev1.some((e) => e.event === "inJoined");
      }, { interval: 50, message: "socketsJoin" });

      emitter.in(room).socketsLeave(joined);
      // Once c1 has left, a broadcast to the room no longer reaches it: a marker to everyone,
      // sent after, comes first.
      await waitFor(async () => {
        ev1.length = 0;
        emitter.to(joined).emit("stillIn");
        emitter.emit("marker");
        await waitFor(() => ev1.some((e) => e.event === "marker"));
        return !ev1.some((e) => e.event === "stillIn");
      }, { interval: 50, message: "socketsLeave" });

      emitter.serverSideEmit("fromEmitter", 1, "two");
      await waitFor(() => [chorusA, chorusB].every((s) => s.logs.some((l) => l.msg === "server-side event without a handler ignored" && l.event === "fromEmitter")), {
        message: "both nodes received the emitter's serverSideEmit",
      });

      // close: true closes the connection; as in Node, the socket is told first.
      const gone = nextEvent(c1, "disconnect");
      emitter.in(room).disconnectSockets(true);
      const [reason] = await gone;
      assert.equal(reason, "io server disconnect");
      await waitFor(() => c1.io.engine.readyState === "closed", { message: "c1's connection closed" });
      assert.equal(c2.connected, true);
      assert.ok(![chorusA, chorusB].some((s) => s.logs.some((l) => l.msg === "malformed redis message ignored")), "no malformed message");
    });
  });
});
