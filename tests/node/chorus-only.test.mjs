// Features of chorus that the Node reference server does not have, or where chorus is stricter
// than Node: drain on SIGTERM, payload limits, malformed polling bodies. Skipped only when
// E2E_TARGET=reference. Authentication is in auth.test.mjs, limits and origins in limits.test.mjs.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  TRANSPORTS,
  ack,
  chorusOnly,
  chunkedPost,
  connect,
  connectRefused,
  httpRequest,
  record,
  startServer,
  unique,
  waitFor,
} from "./harness.mjs";

const T = { timeout: 20_000, skip: chorusOnly };

describe("drain on SIGTERM", () => {
  const DRAIN_MS = 2_000;
  const CLIENTS = 20;

  test("readyz turns 503, new connections are refused, clients leave spread over the window, exit 0", { ...T, timeout: 30_000 }, async (t) => {
    const server = await startServer({ args: ["-drain-timeout", `${DRAIN_MS / 1000}s`] });
    const sockets = await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) => connect(server.url, i % 2 ? TRANSPORTS.polling : TRANSPORTS.websocket)),
    );
    const disconnects = [];
    for (const s of sockets) s.on("disconnect", (reason) => disconnects.push({ at: Date.now(), reason }));
    assert.equal((await httpRequest(`${server.url}/readyz`)).status, 200, "ready before SIGTERM");

    const signalled = Date.now();
    server.proc.kill("SIGTERM");

    await waitFor(async () => (await httpRequest(`${server.url}/readyz`, { timeoutMs: 1_000 }).catch(() => undefined))?.status === 503, {
      timeout: 1_500,
      interval: 20,
      message: "/readyz answers 503 while draining",
    });
    for (const transport of ["websocket", "polling"]) {
      await connectRefused(server.url, { ...TRANSPORTS[transport] }, { timeoutMs: 1_500 });
    }
    // 503, so that a load balancer sends the handshake to another node (README: proxy_next_upstream).
    const handshake = await httpRequest(`${server.url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(handshake.status, 503, `a handshake while draining: ${handshake.status} ${handshake.text}`);
    assert.equal(server.proc.exitCode, null, "the refusals came from the draining server, not from a closed port");
    assert.ok(
      disconnects.length < CLIENTS,
      `not every client should be gone yet ${Date.now() - signalled} ms into a ${DRAIN_MS} ms drain`,
    );

    let timer;
    const exit = await Promise.race([
      server.exited,
      new Promise((resolve) => (timer = setTimeout(() => resolve(undefined), DRAIN_MS + 5_000))),
    ]);
    clearTimeout(timer);
    assert.ok(exit, `chorus still running ${DRAIN_MS + 5_000} ms after SIGTERM`);
    assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, "exit status");

    await waitFor(() => disconnects.length === CLIENTS, { timeout: 2_000, message: `all ${CLIENTS} clients disconnected (${disconnects.length})` });
    const times = disconnects.map((d) => d.at).sort((a, b) => a - b);
    const spread = times.at(-1) - times[0];
    t.diagnostic(`disconnects from +${times[0] - signalled} ms to +${times.at(-1) - signalled} ms after SIGTERM; exit ${exit.code}`);
    assert.ok(
      spread >= DRAIN_MS / 3,
      `disconnects spread over ${spread} ms (first at +${times[0] - signalled} ms, last at +${times.at(-1) - signalled} ms), want at least ${Math.round(DRAIN_MS / 3)} ms`,
    );
    assert.ok(times.at(-1) - signalled <= DRAIN_MS + 2_000, "the last client left within the drain window (+2 s)");
  });
});

describe("payload limits and malformed input", () => {
  const MAX_PAYLOAD = 2000;
  let server;
  const getServer = async () => (server ??= await startServer({ env: { CHORUS_MAX_PAYLOAD: String(MAX_PAYLOAD) } }));

  test("a WebSocket message over CHORUS_MAX_PAYLOAD closes that connection only", T, async () => {
    const { url } = await getServer();
    const room = unique();
    const a = await connect(url, TRANSPORTS.websocket);
    const b = await connect(url, TRANSPORTS.websocket);
    const c = await connect(url, TRANSPORTS.polling);
    const [evB, evC] = [b, c].map(record);
    for (const s of [a, b, c]) assert.deepEqual(await ack(s, "join", room), { ok: true });

    // Under the limit is fine.
    assert.deepEqual(await ack(a, "publish", { room, event: "small", data: "x".repeat(MAX_PAYLOAD - 200) }), { ok: true });
    await waitFor(() => evB.length === 1 && evC.length === 1, { message: "B and C got the small message" });

    const gone = new Promise((resolve) => a.once("disconnect", resolve));
    a.emit("publish", { room, event: "huge", data: "x".repeat(MAX_PAYLOAD * 3) });
    let timer;
    const reason = await Promise.race([gone, new Promise((resolve) => (timer = setTimeout(() => resolve(undefined), 5_000)))]);
    clearTimeout(timer);
    assert.ok(reason, "the sender of an oversize message is disconnected");

    assert.ok(b.connected && c.connected, "other clients stay connected");
    assert.deepEqual(await ack(c, "publish", { room, event: "after", data: 1 }), { ok: true });
    await waitFor(() => evB.some((e) => e.event === "after"), { message: "B got 'after'" });
    assert.deepEqual(evB.map((e) => e.event), ["small", "after"], "the oversize message reached nobody");
    await waitFor(() => server.logs.some((l) => l.msg === "closing connection: input larger than the max payload" && l.transport === "websocket"), {
      message: "the reason is logged",
    });
  });

  test("a chunked polling POST over CHORUS_MAX_PAYLOAD gets 413, closes its session, and none of its events are handled", T, async () => {
    const { url, port } = await getServer();
    const room = unique();
    const b = await connect(url, TRANSPORTS.websocket);
    const evB = record(b);
    assert.deepEqual(await ack(b, "join", room), { ok: true });

    const sid = await rawPollingSession(url);
    const packets = [];
    for (let i = 0, size = 0; size < MAX_PAYLOAD * 20; i++) {
      const p = `42${JSON.stringify(["publish", { room, event: "flood", data: i }])}`;
      packets.push(p);
      size += p.length + 1;
    }
    const body = packets.join("\x1e");
    const res = await chunkedPost(port, `/socket.io/?EIO=4&transport=polling&sid=${sid}`, body, { chunkSize: 512 });
    assert.equal(res.status, 413, `chunked POST of ${body.length} bytes (limit ${MAX_PAYLOAD}): ${res.text.slice(0, 200)}`);

    const c = await connect(url, TRANSPORTS.websocket);
    assert.deepEqual(await ack(c, "publish", { room, event: "after", data: 1 }), { ok: true });
    await waitFor(() => evB.some((e) => e.event === "after"), { message: "B got 'after'" });
    const flood = evB.filter((e) => e.event === "flood").length;
    assert.equal(flood, 0, `${flood} of the ${packets.length} events of the refused POST were handled`);

    // The session is closed: its next poll is refused at once (unknown session), and the reason is logged.
    const next = await httpRequest(`${url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, { timeoutMs: 3_000 });
    assert.equal(next.status, 400, `GET after the oversize POST: ${next.status} ${next.text}`);
    assert.ok(server.logs.some((l) => l.msg === "closing connection: input larger than the max payload" && l.transport === "polling"), "the reason is logged");
    assert.ok(b.connected, "other clients stay connected");
  });

  test("a malformed polling POST gets 400 and closes the session", T, async () => {
    const { url } = await getServer();
    const sid = await rawPollingSession(url);
    const polling = `${url}/socket.io/?EIO=4&transport=polling&sid=${sid}`;
    const res = await httpRequest(polling, { method: "POST", headers: { "content-type": "text/plain;charset=UTF-8" }, body: "garbage" });
    assert.equal(res.status, 400, `POST "garbage": ${res.status} ${res.text}`);

    // A closed session answers the next GET at once: 400 (unknown sid) or a close packet.
    let next;
    try {
      next = await httpRequest(polling, { timeoutMs: 3_000 });
    } catch (err) {
      assert.fail(`GET after the malformed POST hung (${err.name}): the session is still open`);
    }
    assert.ok(next.status === 400 || next.text.split("\x1e").includes("1"), `GET after the malformed POST: ${next.status} ${next.text}`);
  });
});

/** Opens an Engine.IO polling session by hand and connects it to "/"; returns the sid. */
async function rawPollingSession(url) {
  const base = `${url}/socket.io/?EIO=4&transport=polling`;
  const open = await httpRequest(base);
  assert.equal(open.status, 200, `handshake: ${open.text}`);
  assert.ok(open.text.startsWith("0"), `handshake body: ${open.text}`);
  const { sid } = JSON.parse(open.text.slice(1));
  const post = await httpRequest(`${base}&sid=${sid}`, { method: "POST", headers: { "content-type": "text/plain;charset=UTF-8" }, body: "40" });
  assert.equal(post.status, 200, `POST 40: ${post.text}`);
  const connected = await httpRequest(`${base}&sid=${sid}`);
  assert.ok(connected.text.startsWith("40"), `GET after 40: ${connected.text}`);
  return sid;
}
