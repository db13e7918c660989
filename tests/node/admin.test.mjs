// The Socket.IO Admin UI's protocol (@socket.io/admin-ui 0.5, its instrument() in dist/index.js):
// a stock socket.io-client plays the UI on the /admin namespace, on one chorus node and on two
// nodes sharing a real redis-server. Chorus-only (the reference server is not instrumented).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { TRANSPORTS, ack, chorusOnly, connect, connectRefused, httpRequest, nextEvent, startServer, unique, waitFor } from "./harness.mjs";
import { startRedis } from "./cluster/redis.mjs";

const T = { timeout: 20_000, skip: chorusOnly };
const USER = "admin";
const PASSWORD = "correct horse battery staple";
const CREDENTIALS = { CHORUS_ADMIN_USERNAME: USER, CHORUS_ADMIN_PASSWORD: PASSWORD };

/**
 * An Admin UI stand-in: the stock client on /admin with the UI's options, recording every event
 * the UI listens to. find(event, pred) waits for one.
 */
async function adminUI(url, auth = { username: USER, password: PASSWORD }, opts = {}) {
  const events = [];
  const socket = await connect(`${url}/admin`, { auth, withCredentials: true, ...opts }, {
    onSocket: (s) => s.onAny((event, ...args) => events.push({ event, args })),
  });
  const find = (event, pred = () => true, what = event) =>
    waitFor(() => events.find((e) => e.event === event && pred(...e.args)), { message: `admin got ${what}` });
  return { socket, events, find };
}

describe("Admin UI: off", () => {
  test("without credentials there is no /admin namespace and no /admin/ page", T, async () => {
    const server = await startServer();
    const err = await connectRefused(`${server.url}/admin`, { auth: { username: USER, password: PASSWORD } });
    assert.equal(err.message, "Invalid namespace");
    assert.equal((await httpRequest(`${server.url}/admin/`)).status, 404);
  });

  test("one credential alone is a configuration error", T, async () => {
    await assert.rejects(startServer({ env: { CHORUS_ADMIN_USERNAME: USER } }), /set both CHORUS_ADMIN_USERNAME and CHORUS_ADMIN_PASSWORD/);
  });
});

describe("Admin UI: one node", () => {
  let server;
  before(async () => {
    server = await startServer({ env: { ...CREDENTIALS, CHORUS_API_KEY: "k" } });
  });

  test("serves the stock UI's built files at /admin/", T, async () => {
    const page = await httpRequest(`${server.url}/admin/`);
    assert.equal(page.status, 200);
    assert.match(page.text, /<title>Socket.IO Admin UI<\/title>/);
    const script = page.text.match(/src="(js\/app\.[0-9a-f]+\.js)"/)[1];
    const js = await httpRequest(`${server.url}/admin/${script}`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get("content-type"), /javascript/);
    assert.equal((await httpRequest(`${server.url}/admin/js/`)).status, 404, "no directory listing");
    assert.equal((await httpRequest(`${server.url}/admin/../go.mod`)).status, 404);
    const bare = await fetch(`${server.url}/admin`, { redirect: "manual" });
    assert.equal(bare.status, 301);
    assert.equal(bare.headers.get("location"), "/admin/");
  });

  test("refuses wrong or missing credentials with the message the UI shows", T, async () => {
    for (const auth of [{ username: USER, password: "wrong" }, { username: "root", password: PASSWORD }, {}, { sessionId: "forged" }]) {
      const err = await connectRefused(`${server.url}/admin`, { auth });
      assert.equal(err.message, "invalid credentials", JSON.stringify(auth));
      assert.equal(err.data?.code, "invalid_credentials");
    }
  });

  test("greets the UI: session, config, server stats, then every socket with its rooms and handshake", T, async () => {
    const room = unique();
    const member = await connect(server.url, { ...TRANSPORTS.websocket, query: { app: "test" } });
    assert.deepEqual(await ack(member, "join", room), { ok: true });

    const ui = await adminUI(server.url);
    const [session] = (await ui.find("session")).args;
    assert.equal(typeof session, "string");
    const [config] = (await ui.find("config")).args;
    for (const f of ["JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS"]) {
      assert.ok(config.supportedFeatures.includes(f), `feature ${f}`);
    }
    const [stats] = (await ui.find("server_stats")).args;
    assert.equal(typeof stats.serverId, "string");
    assert.equal(typeof stats.uptime, "number");
    assert.ok(stats.clientsCount >= 2);
    assert.ok(stats.namespaces.some((n) => n.name === "/" && n.socketsCount >= 1));

    const [sockets] = (await ui.find("all_sockets")).args;
    const s = sockets.find((x) => x.id === member.id);
    assert.ok(s, "the member is listed");
    assert.equal(s.nsp, "/");
    assert.equal(s.transport, "websocket");
    assert.equal(typeof s.clientId, "string");
    assert.deepEqual(s.rooms.sort(), [member.id, room].sort());
    assert.deepEqual(s.data, {}, "the admin bookkeeping (_admin) is not shown as data");
    assert.equal(s.handshake.query.app, "test");
    assert.equal(s.handshake.headers.host, new URL(server.url).host);
    assert.equal(s.handshake.address, "127.0.0.1");
    assert.equal(s.handshake.auth, undefined, "auth (credentials) never leaves the node");
    const me = sockets.find((x) => x.id === ui.socket.id);
    assert.equal(me?.nsp, "/admin", "the admin socket itself is listed, as in Node");
    assert.equal(me.handshake.auth, undefined, "the admin's password is not shown");

    // The session id logs in again without the password (the UI keeps it in localStorage).
    const again = await adminUI(server.url, { sessionId: session });
    await again.find("config");
    assert.equal(again.events.some((e) => e.event === "session"), false, "no new session for a valid one");
  });

  test("follows sockets live: connected, upgraded, rooms joined and left, disconnected", T, async () => {
    const ui = await adminUI(server.url);
    await ui.find("all_sockets");
    const room = unique();
    const s = await connect(server.url, TRANSPORTS.upgrade);
    const id = s.id;
    const [connected] = (await ui.find("socket_connected", (x) => x.id === id)).args;
    assert.equal(connected.nsp, "/");
    assert.equal(connected.transport, "polling");
    assert.deepEqual(connected.rooms, [id]);
    await ui.find("socket_updated", (x) => x.id === id && x.transport === "websocket", "the upgrade");
    assert.deepEqual(await ack(s, "join", room), { ok: true });
    await ui.find("room_joined", (nsp, r, sid) => nsp === "/" && r === room && sid === id);
    assert.deepEqual(await ack(s, "join", room), { ok: true }); // already a member: no second event
    assert.deepEqual(await ack(s, "leave", room), { ok: true });
    await ui.find("room_left", (nsp, r, sid) => r === room && sid === id);
    assert.equal(ui.events.filter((e) => e.event === "room_joined" && e.args[1] === room).length, 1);
    assert.deepEqual(await ack(s, "join", room), { ok: true });
    s.disconnect();
    const [, , reason, ts] = (await ui.find("socket_disconnected", (nsp, sid) => sid === id)).args;
    assert.equal(reason, "client namespace disconnect");
    assert.ok(!Number.isNaN(Date.parse(ts)));
    await ui.find("room_left", (nsp, r, sid) => r === room && sid === id && ui.events.filter((e) => e.event === "room_left" && e.args[1] === room).length === 2, "room left on disconnect");
    await ui.find("room_left", (nsp, r, sid) => r === id && sid === id, "own room left on disconnect");
    // Live events are off by default: the joins above were not forwarded.
    assert.equal(ui.events.some((e) => e.event === "event_received"), false);
  });

  test("the UI's actions: join, leave, emit, disconnect (namespace only, then the connection)", T, async () => {
    const ui = await adminUI(server.url);
    const room = unique();
    const [a, b] = await Promise.all([connect(server.url, TRANSPORTS.websocket), connect(server.url, TRANSPORTS.websocket)]);

    ui.socket.emit("join", "/", room, a.id);
    await ui.find("room_joined", (nsp, r, sid) => r === room && sid === a.id);
    const got = nextEvent(a, "hello");
    assert.deepEqual(await ack(b, "publish", { room, event: "hello", data: 1 }), { ok: true });
    assert.deepEqual(await got, [1], "a joined for real");

    ui.socket.emit("emit", "/", room, "from-admin", { n: 2 });
    assert.deepEqual(await nextEvent(a, "from-admin"), [{ n: 2 }]);

    ui.socket.emit("leave", "/", room, a.id);
    await ui.find("room_left", (nsp, r, sid) => r === room && sid === a.id);

    ui.socket.emit("_disconnect", "/", false, a.id);
    assert.equal((await nextEvent(a, "disconnect"))[0], "io server disconnect");
    // With close, the whole connection goes too; the client is told, as Node tells it.
    const closed = nextEvent(b.io.engine, "close");
    ui.socket.emit("_disconnect", "/", true, b.id);
    assert.equal((await nextEvent(b, "disconnect"))[0], "io server disconnect");
    await closed;
  });

  test("server_stats carry the aggregated connections and bytes the dashboard charts", T, async () => {
    const ui = await adminUI(server.url);
    const s = await connect(server.url, TRANSPORTS.websocket);
    assert.deepEqual(await ack(s, "join", unique()), { ok: true });
    s.io.engine.close();
    const has = (type, pred = () => true) => (st) => st.aggregatedEvents.some((e) => e.type === type && e.count > 0 && pred(e));
    await waitFor(() => ui.events.some((e) => e.event === "server_stats" && has("rawConnection")(e.args[0])), { timeout: 6_000, message: "rawConnection" });
    await waitFor(() => ui.events.some((e) => e.event === "server_stats" && has("rawDisconnection", (x) => x.subType === "transport close")(e.args[0])), { timeout: 6_000, message: "rawDisconnection" });
    for (const type of ["bytesIn", "bytesOut", "packetsIn", "packetsOut"]) {
      assert.ok(ui.events.some((e) => e.event === "server_stats" && has(type)(e.args[0])), type);
    }
    const sample = ui.events.find((e) => e.event === "server_stats" && e.args[0].aggregatedEvents.length).args[0].aggregatedEvents[0];
    assert.equal(sample.timestamp % 1000, 0, "timestamps on the second, as in Node");
  });
});

describe("Admin UI: live events", () => {
  test("with CHORUS_ADMIN_EVENTS every event a socket sends is forwarded", T, async () => {
    const server = await startServer({ env: { ...CREDENTIALS, CHORUS_ADMIN_EVENTS: "true" } });
    const ui = await adminUI(server.url);
    const s = await connect(server.url, TRANSPORTS.websocket);
    const room = unique();
    assert.deepEqual(await ack(s, "publish", { room, event: "chat", data: { text: "hi" } }), { ok: true });
    const [nsp, id, args, ts] = (await ui.find("event_received", (n, sid) => sid === s.id)).args;
    assert.equal(nsp, "/");
    assert.equal(id, s.id);
    assert.deepEqual(args, ["publish", { room, event: "chat", data: { text: "hi" } }]);
    assert.ok(!Number.isNaN(Date.parse(ts)));
    assert.equal(ui.events.some((e) => e.event === "event_received" && e.args[0] === "/admin"), false, "the admin's own events are not");
  });
});

describe("Admin UI: two nodes through Redis", { skip: chorusOnly }, () => {
  let redis;
  let a;
  let b;
  before(async () => {
    redis = await startRedis();
    const env = { ...CREDENTIALS, CHORUS_REDIS_URL: redis.url, CHORUS_REDIS_PREFIX: unique("admin") };
    [a, b] = await Promise.all([startServer({ env, namespaces: ["/tenant-*"] }), startServer({ env, namespaces: ["/tenant-*"] })]);
  });
  after(async () => {
    await a?.stop();
    await b?.stop();
    await redis?.close();
  });

  test("one admin sees both servers and the sockets of both, and acts on either", { ...T, timeout: 30_000 }, async () => {
    const [onA, onB] = await Promise.all([connect(a.url, TRANSPORTS.websocket), connect(b.url, TRANSPORTS.polling)]);
    const tenant = await connect(`${b.url}/tenant-${unique("t")}`, TRANSPORTS.websocket); // a namespace only B has
    const ui = await adminUI(a.url);
    // Both nodes report their stats to the admin connected to A.
    const ids = new Set();
    await waitFor(() => {
      for (const e of ui.events) if (e.event === "server_stats") ids.add(e.args[0].serverId);
      return ids.size === 2;
    }, { timeout: 8_000, message: "server_stats from both nodes" });

    // all_sockets lists both nodes' sockets (fetchSockets through the adapter), with their transport.
    const [sockets] = (await ui.find("all_sockets")).args;
    assert.equal(sockets.find((s) => s.id === onA.id)?.transport, "websocket");
    assert.equal(sockets.find((s) => s.id === onB.id)?.transport, "polling", "B's socket, described by B");
    // B's dynamic namespace, which A did not have: A asks B for its namespaces and lists it next.
    const [withTenant] = (await ui.find("all_sockets", (list) => list.some((s) => s.id === tenant.id), "the other node's namespace")).args;
    assert.equal(withTenant.find((s) => s.id === tenant.id).nsp, tenant.nsp);

    // A socket connecting to B shows at once on A's admin.
    const late = await connect(b.url, TRANSPORTS.websocket);
    await ui.find("socket_connected", (s) => s.id === late.id, "B's new socket");

    // Actions from A's admin reach B's sockets.
    const room = unique();
    ui.socket.emit("join", "/", room, onB.id);
    await ui.find("room_joined", (nsp, r, sid) => r === room && sid === onB.id, "B's socket joined, reported by B");
    const got = nextEvent(onB, "cross");
    assert.deepEqual(await ack(onA, "publish", { room, event: "cross", data: "hi" }), { ok: true });
    assert.deepEqual(await got, ["hi"]);
    ui.socket.emit("leave", "/", room, onB.id);
    await ui.find("room_left", (nsp, r, sid) => r === room && sid === onB.id);
    const lateID = late.id; // the client forgets it on disconnect
    ui.socket.emit("_disconnect", "/", false, lateID);
    assert.equal((await nextEvent(late, "disconnect"))[0], "io server disconnect");
    await ui.find("socket_disconnected", (nsp, sid) => sid === lateID);

    // A session from A logs in on B too (every node with the same credentials accepts it).
    const [session] = (await ui.find("session")).args;
    const onBAdmin = await adminUI(b.url, { sessionId: session });
    await onBAdmin.find("config");
  });
});
