// The browser client module (web/static/chorus-client.js) run in Node against the chorus binary:
// one connection per server, the backoff schedule and its limit, the state store, critical messages
// queued while offline and sent in order, rooms joined again after a restart, the storage of the
// queue. The browser suite (tests/browser) drives the same module through the demo page.

import { describe, test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { chorusOnly, connect as connectStock, ack, record, startServer, unique, waitFor } from "./harness.mjs";
import { connect, DEFAULTS, STATES, ChorusError } from "../../web/static/chorus-client.js";

const T = { timeout: 30_000, skip: chorusOnly };
// Fast reconnection, so that the tests take seconds; the schedule's shape is the same.
const FAST = { reconnectionDelay: 100, reconnectionDelayMax: 400, randomizationFactor: 0, ackTimeout: 2_000 };

const opened = new Set();
function client(url, opts) {
  const c = connect(url, opts);
  opened.add(c);
  return c;
}
afterEach(() => {
  for (const c of opened) c.close();
  opened.clear();
});

/** Records every state a client goes through (statuses only, consecutive duplicates dropped). */
function statuses(c) {
  const seen = [];
  c.subscribe((s) => {
    if (seen.at(-1) !== s.status) seen.push(s.status);
  });
  return seen;
}

const until = (c, status, timeout = 10_000) =>
  waitFor(() => c.state.status === status, { timeout, message: `state ${status} (now ${JSON.stringify(c.state)})` });

describe("chorus-client.js", () => {
  test("defaults: 1 s doubling up to 30 s with jitter, 10 attempts", () => {
    assert.deepEqual(
      [DEFAULTS.reconnectionDelay, DEFAULTS.reconnectionDelayMax, DEFAULTS.randomizationFactor, DEFAULTS.maxAttempts],
      [1000, 30000, 0.5, 10],
    );
    assert.deepEqual(STATES, ["connecting", "connected", "reconnecting", "offline"]);
  });

  test("one client per server and namespace, and one connection per server", T, async () => {
    const server = await startServer({ namespaces: ["/chat"] });
    const a = client(server.url, FAST);
    const b = client(server.url + "/", { maxAttempts: 1 }); // same server: the first options stay
    const chat = client(server.url + "/chat", FAST);
    assert.equal(a, b, "connect() with the same server returns the same client");
    assert.notEqual(a, chat);
    assert.equal(b.options.maxAttempts, DEFAULTS.maxAttempts);
    await until(a, "connected");
    await until(chat, "connected");
    assert.equal(a.socket.io, chat.socket.io, "both namespaces share one socket.io Manager");
    assert.equal(a.socket.io.engine.id, chat.socket.io.engine.id, "…and one Engine.IO session");

    // The stats room counts connections on the node: one for both clients.
    await a.join("chorus:stats");
    const [stats] = await new Promise((resolve) => a.on("chorus:stats", (...args) => resolve(args)));
    assert.equal(stats.connections, 1);
    assert.match(stats.node, /.+-\d+$/, "default node id is <hostname>-<pid>");
  });

  test("backoff doubles up to the cap, then the client gives up and reports offline", T, async () => {
    const server = await startServer();
    const url = server.url;
    await server.stop(); // nothing listens on the port now
    const c = client(url, { ...FAST, maxAttempts: 5 });
    const seen = statuses(c);
    const attempts = [];
    const reasons = [];
    c.subscribe((s) => s.attempt > 0 && attempts.at(-1)?.n !== s.attempt && attempts.push({ n: s.attempt, at: Date.now() }));
    c.subscribe((s) => s.status === "offline" && reasons.push(s.reason));
    await until(c, "offline");
    assert.deepEqual(seen, ["connecting", "reconnecting", "offline"]);
    assert.deepEqual(attempts.map((a) => a.n), [1, 2, 3, 4, 5]);
    assert.deepEqual(reasons, ["gave up after 5 attempts"]);
    // Gaps between attempts: 200, 400, 400, 400 ms (the first delay, 100 ms, precedes attempt 1).
    const gaps = attempts.slice(1).map((a, i) => a.at - attempts[i].at);
    const want = [200, 400, 400, 400];
    gaps.forEach((g, i) => assert.ok(g >= want[i] - 20 && g < want[i] + 300, `gap ${i + 1} = ${g} ms, want about ${want[i]} (all: ${gaps})`));

    // Critical messages wait while offline; a reconnect() once chorus is back sends them in order.
    const sent = [1, 2, 3].map((n) => c.sendCritical("r", "chat", { n }));
    assert.equal(c.state.queued, 3);
    const back = await startServer({ args: ["-addr", `127.0.0.1:${server.port}`] });
    const peer = await connectStock(back.url);
    assert.deepEqual(await ack(peer, "join", "r"), { ok: true });
    const got = record(peer);
    c.reconnect();
    const results = await Promise.all(sent);
    assert.deepEqual(results.map((r) => r.duplicate), [false, false, false]);
    await waitFor(() => got.length === 3, { message: "3 messages at the peer" });
    assert.deepEqual(got.map((e) => e.args[0].n), [1, 2, 3]);
    assert.equal(c.state.queued, 0);
    assert.equal(c.state.status, "connected");
  });

  test("a restart: reconnecting, then connected by itself, rooms joined again, the queue sent", T, async () => {
    let server = await startServer();
    const room = unique("room");
    const c = client(server.url, FAST);
    const seen = statuses(c);
    await c.join(room);
    const fromPeer = [];
    c.on("chat", (d) => fromPeer.push(d));
    assert.equal((await c.sendCritical(room, "chat", { n: 0 })).duplicate, false);

    await server.stop();
    await until(c, "reconnecting");
    const sent = [1, 2, 3, 4, 5].map((n) => c.sendCritical(room, "chat", { n }));
    await waitFor(() => c.state.queued === 5 && c.state.attempt >= 1, { message: "5 queued while reconnecting" });

    server = await startServer({ args: ["-addr", `127.0.0.1:${server.port}`] });
    // Back by itself. (Which of the client's flush and a peer's join comes first is not known here:
    // order and exactly-once at a receiver are checked above, with the client offline until the
    // peer is in, and in the browser suite.)
    await until(c, "connected");
    await Promise.all(sent);
    // unsubscribe: a function that no longer hears about changes.
    let calls = 0;
    const counter = () => calls++;
    c.subscribe(counter);
    c.unsubscribe(counter);
    await c.sendCritical(room, "chat", { n: 6 });
    assert.equal(calls, 1, "called once on subscribe, then never");
    const peer = await connectStock(server.url);
    assert.deepEqual(await ack(peer, "join", room), { ok: true });
    // The client joined the room again by itself: the peer's message reaches it.
    assert.deepEqual(await ack(peer, "publish", { room, event: "chat", data: { from: "peer" } }), { ok: true });
    await waitFor(() => fromPeer.length === 1, { message: "the peer's message reaches the client" });
    assert.deepEqual(seen.slice(0, 4), ["connecting", "connected", "reconnecting", "connected"]);
    assert.equal(c.state.queued, 0);
  });

  test("a refused message rejects with the server's code; the queue goes on", T, async () => {
    const server = await startServer();
    const c = client(server.url, FAST);
    const peer = await connectStock(server.url);
    assert.deepEqual(await ack(peer, "join", "ok-room"), { ok: true });
    const got = record(peer);
    const bad = c.sendCritical("chorus:stats", "chat", { forged: true });
    const good = c.sendCritical("ok-room", "chat", { n: 1 });
    await assert.rejects(bad, (err) => err instanceof ChorusError && err.code === "forbidden");
    assert.equal((await good).duplicate, false);
    await waitFor(() => got.length === 1);
    await assert.rejects(c.join("chorus:nope"), { code: "forbidden" });
    assert.deepEqual(c.rooms, []);
    assert.equal(c.send("publish", { room: "ok-room", event: "chat", data: { n: 2 } }), true);
    await waitFor(() => got.length === 2, { message: "fire-and-forget send arrives" });
  });

  test("the queue kept in a storage is sent by the next client of the server", T, async () => {
    const server = await startServer();
    const url = server.url;
    await server.stop();
    const store = new Map();
    const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v), removeItem: (k) => store.delete(k) };
    const first = client(url, { ...FAST, maxAttempts: 1, storage, maxQueue: 2 });
    const pending = [1, 2].map((n) => first.sendCritical("kept", "chat", { n }));
    await assert.rejects(first.sendCritical("kept", "chat", { n: 3 }), { code: "queue_full" });
    await until(first, "offline");
    first.close();
    for (const p of pending) await assert.rejects(p, { code: "closed" });
    assert.equal(store.size, 1);
    assert.deepEqual(JSON.parse([...store.values()][0]).map((m) => m.data.n), [1, 2]);

    const back = await startServer({ args: ["-addr", `127.0.0.1:${server.port}`] });
    const peer = await connectStock(back.url);
    assert.deepEqual(await ack(peer, "join", "kept"), { ok: true });
    const got = record(peer);
    const acked = [];
    const second = client(url, { ...FAST, storage, hooks: { acked: (d) => acked.push(d.id) } });
    assert.equal(second.state.queued, 2, "the stored messages are queued at once");
    await waitFor(() => got.length === 2 && second.state.queued === 0, { message: "stored messages sent" });
    assert.deepEqual(got.map((e) => e.args[0].n), [1, 2]);
    assert.equal(acked.length, 2);
    assert.equal(store.size, 0, "the storage is emptied once every message is acknowledged");
  });

  test("hooks see the lifecycle; a refused handshake is offline at once", T, async () => {
    const server = await startServer();
    const events = [];
    const c = client(server.url + "/nope", { ...FAST, hooks: { any: (name, d) => events.push(name) } });
    await until(c, "offline");
    assert.match(c.state.reason, /Invalid namespace/);
    assert.ok(events.includes("error") && events.includes("offline"), `hooks: ${events}`);
  });
});
