// Connection-state recovery on one node (docs/protocol.md "Connection-state recovery"), with the
// stock socket.io-client and no custom client code: the transport is dropped as in the socket.io
// docs' recovery tests (socket.io.engine.close()), or by a TCP proxy standing for the network.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { ack, chorusOnly, connect, httpRequest, nextEvent, record, startServer, TRANSPORTS, unique, waitFor } from "./harness.mjs";
import { startProxy } from "./cluster/proxy.mjs";

const KEY = "recovery-key";
const T = { timeout: 30_000 };

/** The first argument of every `event` a recorded socket received (the offset comes after it). */
const payloads = (events, event = "m") => events.filter((e) => e.event === event).map((e) => e.args[0]);

/** Drops the socket's transport as a network blip would (the client keeps its session) and waits until it is disconnected. */
async function drop(socket) {
  const gone = nextEvent(socket, "disconnect");
  socket.io.engine.close();
  await gone;
}

/** Reconnects a dropped socket (as its Manager would after a delay) and resolves once connected. */
async function reconnect(socket) {
  const back = nextEvent(socket, "connect");
  socket.connect();
  await back;
}

function api(server) {
  const headers = { authorization: `Bearer ${KEY}`, "content-type": "application/json" };
  return {
    async emit(body) {
      const res = await httpRequest(`${server.url}/api/v1/emit`, { method: "POST", headers, body: JSON.stringify(body) });
      assert.equal(res.status, 202, res.text);
    },
    async sockets(room) {
      const res = await httpRequest(`${server.url}/api/v1/sockets?room=${encodeURIComponent(room)}`, { headers });
      assert.equal(res.status, 200, res.text);
      return res.json.sockets.map((s) => s.id);
    },
    async disconnect(body) {
      const res = await httpRequest(`${server.url}/api/v1/disconnect`, { method: "POST", headers, body: JSON.stringify(body) });
      assert.equal(res.status, 202, res.text);
    },
  };
}

describe("connection-state recovery on one node", { skip: chorusOnly }, () => {
  let server;
  let http;
  before(async () => {
    server = await startServer({ env: { CHORUS_API_KEY: KEY } });
    http = api(server);
  });

  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    test(`a dropped client gets its id, rooms and every missed event back, in order, once; volatile ones are not replayed (${name})`, T, async () => {
      const room = unique();
      const [a, b] = await Promise.all([connect(server.url, opts), connect(server.url, TRANSPORTS.websocket)]);
      if (name === "upgrade") await waitFor(() => a.io.engine.transport.name === "websocket", { message: "upgraded" });
      const events = record(a);
      assert.deepEqual(await ack(a, "join", room), { ok: true });
      assert.deepEqual(await ack(b, "publish", { room, event: "m", data: 0 }), { ok: true });
      await waitFor(() => payloads(events).length === 1, { message: "first event" });
      const id = a.id;
      assert.equal(typeof events[0].offset, "string", "a recoverable event carries its offset as last argument");

      await drop(a);
      for (let i = 1; i <= 5; i++) assert.deepEqual(await ack(b, "publish", { room, event: "m", data: i }), { ok: true });
      await http.emit({ rooms: [room], event: "m", data: "api-room" });
      await http.emit({ rooms: [room], event: "m", data: "volatile", volatile: true });
      await http.emit({ rooms: [id], event: "m", data: "api-socket" });
      for (let i = 6; i <= 200; i++) b.emit("publish", { room, event: "m", data: i });
      assert.deepEqual(await ack(b, "publish", { room, event: "m", data: 201 }), { ok: true });

      await reconnect(a);
      assert.equal(a.recovered, true);
      assert.equal(a.id, id);
      assert.deepEqual(await http.sockets(room), [id], "the room is back");
      assert.deepEqual(await ack(b, "publish", { room, event: "m", data: "live" }), { ok: true });
      await waitFor(() => payloads(events).includes("live"), { message: "the live event after recovery" });
      const want = [0, 1, 2, 3, 4, 5, "api-room", "api-socket", ...Array.from({ length: 196 }, (_, i) => i + 6), "live"];
      assert.deepEqual(payloads(events), want);

      // Twice in a row: the replayed events carried their offsets, so nothing comes again.
      await drop(a);
      assert.deepEqual(await ack(b, "publish", { room, event: "m", data: "second" }), { ok: true });
      await reconnect(a);
      assert.equal(a.recovered, true);
      assert.equal(a.id, id);
      await waitFor(() => payloads(events).includes("second"), { message: "the event missed the second time" });
      assert.deepEqual(await ack(b, "publish", { room, event: "m", data: "end" }), { ok: true });
      await waitFor(() => payloads(events).includes("end"), { message: "the last live event" });
      assert.deepEqual(payloads(events), [...want, "second", "end"]);
    });

    test(`a client that reconnects before it received any event recovers, and gets what it missed (${name})`, T, async () => {
      const room = unique();
      const [a, b] = await Promise.all([connect(server.url, opts), connect(server.url, TRANSPORTS.websocket)]);
      const events = record(a);
      assert.deepEqual(await ack(a, "join", room), { ok: true });
      const id = a.id;
      await drop(a); // no event received: the client sends {pid} without an offset
      assert.deepEqual(await ack(b, "publish", { room, event: "m", data: 1 }), { ok: true });
      assert.deepEqual(await ack(b, "publish", { room, event: "m", data: 2 }), { ok: true });
      await reconnect(a);
      assert.equal(a.recovered, true);
      assert.equal(a.id, id);
      await waitFor(() => payloads(events).length === 2, { message: "the two missed events" });
      assert.deepEqual(payloads(events), [1, 2]);
    });
  }

  test("the client's own Manager reconnecting at once, before anything was received, recovers", T, async () => {
    const room = unique();
    const a = await connect(server.url, { ...TRANSPORTS.websocket, reconnection: true, reconnectionDelay: 0, randomizationFactor: 0 });
    const b = await connect(server.url, TRANSPORTS.websocket);
    const events = record(a);
    assert.deepEqual(await ack(a, "join", room), { ok: true });
    const id = a.id;
    const back = nextEvent(a, "connect");
    a.io.engine.close();
    await back;
    assert.equal(a.recovered, true);
    assert.equal(a.id, id);
    assert.deepEqual(await ack(b, "publish", { room, event: "m", data: "after" }), { ok: true });
    await waitFor(() => payloads(events).length === 1, { message: "the room is back" });
    assert.deepEqual(payloads(events), ["after"]);
  });

  for (const name of ["websocket", "polling"]) {
    test(`a client whose connection went dead unnoticed by the server recovers, events lost in it included (${name})`, T, async () => {
      const proxy = await startProxy(server.port);
      try {
        const room = unique();
        // agent: false: a new TCP connection per polling request, none kept in a pool that the
        // black hole would swallow.
        const a = await connect(proxy.url, { ...TRANSPORTS[name], agent: false });
        const b = await connect(server.url, TRANSPORTS.websocket);
        const events = record(a);
        assert.deepEqual(await ack(a, "join", room), { ok: true });
        assert.deepEqual(await ack(b, "publish", { room, event: "m", data: 0 }), { ok: true });
        await waitFor(() => payloads(events).length === 1, { message: "first event" });
        const id = a.id;
        proxy.blackhole(); // bytes stop flowing; neither end notices
        assert.deepEqual(await ack(b, "publish", { room, event: "m", data: "lost" }), { ok: true });
        await drop(a); // the client gives up on the connection
        if (name === "websocket") {
          // Its close packet went into the hole: the server still holds the socket. (Over polling
          // the close is a request of its own, on a new connection, which the server gets.)
          assert.deepEqual(await http.sockets(room), [id], "the server still has the old socket");
        }
        await reconnect(a);
        assert.equal(a.recovered, true);
        assert.equal(a.id, id);
        await waitFor(() => payloads(events).length === 2, { message: "the event lost in the black hole" });
        assert.deepEqual(payloads(events), [0, "lost"]);
        assert.deepEqual(await http.sockets(room), [id]);
      } finally {
        await proxy.close();
      }
    });
  }

  test("a socket the server disconnected starts a new session", T, async () => {
    const a = await connect(server.url, TRANSPORTS.websocket);
    const id = a.id;
    const gone = nextEvent(a, "disconnect");
    await http.disconnect({ sockets: [id], close: true });
    assert.equal((await gone)[0], "io server disconnect");
    await reconnect(a);
    assert.equal(a.recovered, false);
    assert.notEqual(a.id, id);
  });

  test("a socket that disconnected itself starts a new session", T, async () => {
    const a = await connect(server.url, TRANSPORTS.websocket);
    const id = a.id;
    a.disconnect();
    await reconnect(a);
    assert.equal(a.recovered, false);
    assert.notEqual(a.id, id);
  });
});

describe("connection-state recovery with a short window and fast heartbeats", { skip: chorusOnly }, () => {
  // Events are kept for max_disconnection + ping interval + ping timeout = 4 s here.
  const env = {
    CHORUS_API_KEY: KEY,
    CHORUS_RECOVERY_MAX_DISCONNECTION: "2s",
    CHORUS_PING_INTERVAL: "1s",
    CHORUS_PING_TIMEOUT: "1s",
  };
  let server;
  before(async () => {
    server = await startServer({ env });
  });

  test("clients connected for more than 10 s, whose last event is no longer kept, recover (websocket and polling)", T, async () => {
    const room = unique();
    const noise = unique();
    const b = await connect(server.url, TRANSPORTS.websocket);
    const clients = await Promise.all([connect(server.url, TRANSPORTS.websocket), connect(server.url, TRANSPORTS.polling)]);
    const logs = clients.map(record);
    for (const c of clients) assert.deepEqual(await ack(c, "join", room), { ok: true });
    assert.deepEqual(await ack(b, "publish", { room, event: "m", data: "first" }), { ok: true });
    await waitFor(() => logs.every((l) => payloads(l).length === 1), { message: "first event on both" });
    const ids = clients.map((c) => c.id);

    // 11 s of traffic in another room: the log drops everything older than 4 s, the clients'
    // offset ("first") included.
    const started = Date.now();
    let n = 0;
    while (Date.now() - started < 11_000) {
      assert.deepEqual(await ack(b, "publish", { room: noise, event: "noise", data: n++ }), { ok: true });
      await new Promise((r) => setTimeout(r, 100));
    }
    await Promise.all(clients.map(drop));
    assert.deepEqual(await ack(b, "publish", { room, event: "m", data: "missed" }), { ok: true });
    await Promise.all(clients.map(reconnect));
    for (const [i, c] of clients.entries()) {
      assert.equal(c.recovered, true, `client ${i} recovered`);
      assert.equal(c.id, ids[i]);
    }
    await waitFor(() => logs.every((l) => payloads(l).length === 2), { message: "the missed event on both" });
    for (const l of logs) assert.deepEqual(payloads(l), ["first", "missed"]);
  });

  test("after the window the client gets a new session, without its rooms or what it missed", T, async () => {
    const room = unique();
    const [a, b] = await Promise.all([connect(server.url, TRANSPORTS.websocket), connect(server.url, TRANSPORTS.websocket)]);
    const events = record(a);
    assert.deepEqual(await ack(a, "join", room), { ok: true });
    const id = a.id;
    await drop(a);
    assert.deepEqual(await ack(b, "publish", { room, event: "m", data: "too late" }), { ok: true });
    await new Promise((r) => setTimeout(r, 2_500)); // the 2 s window passes
    await reconnect(a);
    assert.equal(a.recovered, false);
    assert.notEqual(a.id, id);
    assert.deepEqual(await ack(b, "publish", { room, event: "m", data: "not a member" }), { ok: true });
    assert.deepEqual(await ack(a, "join", unique()), { ok: true }); // a round trip after the publish
    assert.deepEqual(payloads(events), []);
  });
});

describe("connection-state recovery per namespace", { skip: chorusOnly }, () => {
  let server;
  before(async () => {
    server = await startServer({
      config: "namespaces:\n  - name: /live\n    recovery: {max_disconnection: 1m}\n  - name: /plain\n  - name: /t-*\n    recovery: {}\n",
    });
  });

  test("a namespace with recovery configured recovers (a pattern's too); one without does not", T, async () => {
    const live = await connect(`${server.url}/live`, TRANSPORTS.websocket);
    const dynamic = await connect(`${server.url}/t-42`, TRANSPORTS.websocket);
    const plain = await connect(`${server.url}/plain`, TRANSPORTS.websocket);
    const ids = [live.id, dynamic.id, plain.id];
    for (const s of [live, dynamic, plain]) await drop(s);
    for (const s of [live, dynamic, plain]) await reconnect(s);
    assert.equal(live.recovered, true);
    assert.equal(live.id, ids[0]);
    assert.equal(dynamic.recovered, true);
    assert.equal(dynamic.id, ids[1]);
    assert.ok(!plain.recovered, "no recovery on /plain");
    assert.notEqual(plain.id, ids[2]);
  });
});

describe("recovery turned off for /", { skip: chorusOnly }, () => {
  let server;
  before(async () => {
    server = await startServer({ env: { CHORUS_RECOVERY: "false" } });
  });
  after(() => server?.stop());

  test("CHORUS_RECOVERY=false: events carry no offset and a dropped client starts afresh", T, async () => {
    const room = unique();
    const [a, b] = await Promise.all([connect(server.url, TRANSPORTS.websocket), connect(server.url, TRANSPORTS.websocket)]);
    const raw = [];
    a.onAny((...args) => raw.push(args));
    assert.deepEqual(await ack(a, "join", room), { ok: true });
    assert.deepEqual(await ack(b, "publish", { room, event: "m", data: 1 }), { ok: true });
    await waitFor(() => raw.length === 1, { message: "the event" });
    assert.deepEqual(raw, [["m", 1]], "no offset argument");
    const id = a.id;
    await drop(a);
    await reconnect(a);
    assert.ok(!a.recovered);
    assert.notEqual(a.id, id);
  });
});
