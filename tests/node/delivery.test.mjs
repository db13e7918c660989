// Delivery guarantees on one node (docs/protocol.md): effectively-once publish with the stock
// client's `retries` and `ackTimeout` while acks are lost, and acknowledged emits from the HTTP API.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { ack, chorusOnly, connect, httpRequest, startServer, TRANSPORTS, unique, waitFor } from "./harness.mjs";
import { ackSchedule, startWsProxy } from "./wsproxy.mjs";

const KEY = "delivery-key";
const T = { timeout: 30_000 };
const N = 40;
// The stock client's at-least-once settings: each publish is re-sent until an ack arrives.
const RETRY = { retries: 10, ackTimeout: 400 };

/**
 * Makes `socket` lose the acks of its publishes as the network would: the ack packet never reaches
 * the socket. schedule maps a message's index (its `data`) to how many of its acks are lost in a
 * row. Returns {count}: the number of acks lost so far.
 */
function loseAcks(socket, schedule) {
  const lost = { count: 0 };
  const byAckId = new Map(); // ack id of each publish sent → the message's index
  const attempts = new Map(); // message index → acks received so far
  const send = socket.packet;
  socket.packet = function (packet) {
    if (packet.data?.[0] === "publish" && packet.id !== undefined) byAckId.set(packet.id, packet.data[1].data);
    return send.call(this, packet);
  };
  const onack = socket.onack;
  socket.onack = function (packet) {
    const index = byAckId.get(packet.id);
    const n = attempts.get(index) ?? 0;
    attempts.set(index, n + 1);
    if (n < (schedule[index] ?? 0)) {
      lost.count++;
      return; // lost: the client times out and sends the publish again
    }
    return onack.call(this, packet);
  };
  return lost;
}

/** Publishes messages 0..n-1 with `socket` (ids from makeId, or none) and returns their final acks. */
function publishAll(socket, room, n, makeId) {
  return Promise.all(
    Array.from({ length: n }, (_, i) => {
      const req = { room, event: "m", data: i };
      if (makeId) req.id = makeId(i);
      return socket.emitWithAck("publish", req); // each attempt waits ackTimeout, not a timeout() of its own
    }),
  );
}

/** Receivers of `room`: sockets on each transport, recording the "m" messages they get. */
async function receivers(url, room) {
  const out = [];
  for (const opts of [TRANSPORTS.websocket, TRANSPORTS.polling]) {
    const socket = await connect(url, opts);
    assert.deepEqual(await ack(socket, "join", room), { ok: true });
    const got = [];
    socket.on("m", (i) => got.push(i));
    out.push(got);
  }
  return out;
}

const range = (n) => Array.from({ length: n }, (_, i) => i);

describe("effectively-once publish", { skip: chorusOnly }, () => {
  let server;
  before(async () => {
    server = await startServer({ env: { CHORUS_API_KEY: KEY } });
  });

  // Acks lost for messages 3 (once), 10 (twice in a row), 17, 25 and 39 (the last).
  const schedule = { 3: 1, 10: 2, 17: 1, 25: 1, 39: 1 };
  const lostTotal = Object.values(schedule).reduce((a, b) => a + b, 0);

  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    test(`with retries and lost acks, every receiver gets each message once, in order (${name})`, T, async () => {
      const room = unique();
      const got = await receivers(server.url, room);
      const sender = await connect(server.url, { ...opts, ...RETRY });
      const lost = loseAcks(sender, schedule);
      const run = randomUUID();
      const acks = await publishAll(sender, room, N, (i) => `${run}-${i}`);
      assert.equal(lost.count, lostTotal, "acks lost by the client");
      for (const [i, a] of acks.entries()) {
        // The ack that finally arrived for a message whose first ack was lost is a retry's. (Any
        // other message is {ok:true}, or a duplicate too if a slow ack made the client retry.)
        if (schedule[i]) assert.deepEqual(a, { ok: true, duplicate: true }, `final ack of message ${i}`);
        else assert.equal(a.ok, true, `final ack of message ${i}`);
      }
      for (const g of got) {
        await waitFor(() => g.length >= N, { message: `${N} messages` });
      }
      // A marker after everything: nothing else arrives.
      const marker = await connect(server.url, TRANSPORTS.websocket);
      assert.deepEqual(await ack(marker, "publish", { room, event: "m", data: "end" }), { ok: true });
      for (const g of got) {
        await waitFor(() => g.at(-1) === "end", { message: "the marker" });
        assert.deepEqual(g, [...range(N), "end"]);
      }
    });
  }

  test("the same lost acks without ids deliver some messages twice (what ids prevent)", T, async () => {
    const room = unique();
    const [got] = await receivers(server.url, room);
    const sender = await connect(server.url, { ...TRANSPORTS.websocket, ...RETRY });
    loseAcks(sender, schedule);
    await publishAll(sender, room, N, null);
    await waitFor(() => got.length >= N + lostTotal, { message: "every retry delivered" });
    assert.deepEqual(got.filter((i) => schedule[i]), [3, 3, 10, 10, 10, 17, 17, 25, 25, 39, 39]);
  });

  test("acks lost with the connection: the client reconnects and re-sends, each message once", T, async () => {
    const room = unique();
    const got = await receivers(server.url, room);
    // Message 5's ack is lost as the connection drops; 12's twice in a row; 20's is dropped once
    // (ackTimeout), then lost with the connection.
    const fate = ackSchedule({ 5: ["cut"], 12: ["cut", "cut"], 20: ["drop", "cut"] });
    const proxy = await startWsProxy({ target: server.url, ...fate });
    after(() => proxy.close());
    const sender = await connect(proxy.url, { ...TRANSPORTS.websocket, ...RETRY, reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 100 });
    let reconnects = 0;
    sender.io.on("reconnect", () => reconnects++);
    const run = randomUUID();
    const acks = await publishAll(sender, room, N, (i) => `${run}-${i}`);
    assert.equal(fate.dropped, 5);
    assert.ok(reconnects >= 4, `reconnected ${reconnects} times`);
    for (const i of [5, 12, 20]) assert.deepEqual(acks[i], { ok: true, duplicate: true }, `final ack of message ${i}`);
    for (const g of got) {
      await waitFor(() => g.length >= N, { message: `${N} messages` });
    }
    const marker = await connect(server.url, TRANSPORTS.websocket);
    assert.deepEqual(await ack(marker, "publish", { room, event: "m", data: "end" }), { ok: true });
    for (const g of got) {
      await waitFor(() => g.at(-1) === "end", { message: "the marker" });
      assert.deepEqual(g, [...range(N), "end"]);
    }
  });

  test("ids: scoped by room, refused unless a string of 1-64 bytes", T, async () => {
    const [r1, r2] = [unique(), unique()];
    const sender = await connect(server.url, TRANSPORTS.websocket);
    const id = randomUUID();
    assert.deepEqual(await ack(sender, "publish", { room: r1, event: "m", data: 1, id }), { ok: true });
    assert.deepEqual(await ack(sender, "publish", { room: r1, event: "m", data: 1, id }), { ok: true, duplicate: true });
    assert.deepEqual(await ack(sender, "publish", { room: r2, event: "m", data: 1, id }), { ok: true });
    for (const bad of ["", "x".repeat(65), 7, { id }, [id], true]) {
      const res = await ack(sender, "publish", { room: r1, event: "m", data: 1, id: bad });
      assert.equal(res.ok, false, `id ${JSON.stringify(bad)}`);
      assert.equal(res.error.code, "invalid_id", `id ${JSON.stringify(bad)}`);
    }
    assert.deepEqual(await ack(sender, "publish", { room: r1, event: "m", data: 1, id: "é".repeat(32) }), { ok: true }); // 64 bytes
  });
});

describe("acknowledged emits from the HTTP API", { skip: chorusOnly }, () => {
  let server;
  before(async () => {
    server = await startServer({ env: { CHORUS_API_KEY: KEY } });
  });
  const emit = (body) =>
    httpRequest(`${server.url}/api/v1/emit`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify(body),
      timeoutMs: 70_000,
    });

  test("ack_timeout: the acks of stock clients, binary as base64, a silent client timed out", T, async () => {
    const room = unique();
    const [ws, polling, silent] = await Promise.all([
      connect(server.url, TRANSPORTS.websocket),
      connect(server.url, TRANSPORTS.polling),
      connect(server.url, TRANSPORTS.websocket),
    ]);
    for (const s of [ws, polling, silent]) assert.deepEqual(await ack(s, "join", room), { ok: true });
    ws.on("question", (data, cb) => cb({ from: "ws", got: data }));
    polling.on("question", (data, cb) => cb(Buffer.from("polling")));
    const silentGot = [];
    silent.on("question", (data) => silentGot.push(data)); // takes the event, never acks

    const start = Date.now();
    const res = await emit({ rooms: [room], event: "question", data: { n: 42 }, ack_timeout: "800ms" });
    const took = Date.now() - start;
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.clients, 3);
    assert.equal(res.json.timed_out, 1);
    assert.equal(res.json.complete, true);
    const acks = [...res.json.acks].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
    assert.deepEqual(acks, [Buffer.from("polling").toString("base64"), { from: "ws", got: { n: 42 } }]);
    assert.deepEqual(silentGot, [{ n: 42 }]);
    assert.ok(took >= 780 && took < 5_000, `answered after ${took} ms with an 800 ms ack_timeout`);

    // Everyone acks: the answer comes as soon as the last ack, not after the timeout.
    silent.removeAllListeners("question");
    silent.on("question", (data, cb) => cb("late but there"));
    const quick = Date.now();
    const all = await emit({ rooms: [room], event: "question", data: 1, ack_timeout: "1m" });
    assert.equal(all.status, 200, all.text);
    assert.deepEqual([all.json.clients, all.json.acks.length, all.json.timed_out], [3, 3, 0]);
    assert.ok(Date.now() - quick < 5_000, "waited although every client acked");
  });

  test("ack_timeout must be a Go duration from 1ns to 1m; without it the API answers 202", T, async () => {
    for (const bad of ["5", "1.5", "2m", "-1s", "0s", "soon", 5, 0, true, {}]) {
      const res = await emit({ event: "x", ack_timeout: bad });
      assert.equal(res.status, 400, `ack_timeout ${JSON.stringify(bad)}: ${res.text}`);
      assert.equal(res.json.error.code, "invalid_ack_timeout", `ack_timeout ${JSON.stringify(bad)}`);
    }
    const plain = await emit({ event: "x" });
    assert.equal(plain.status, 202, plain.text);
    assert.deepEqual(plain.json, { ok: true });
  });
});
