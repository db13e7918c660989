// Limits and origins (issue 6, points 4 and 5) with the stock client, on every transport: the
// per-socket event rate, the per-address connection cap and handshake rate, and the origin
// allowlist in production and development mode. chorus-only: skipped when E2E_TARGET=reference.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { TRANSPORTS, ack, chorusOnly, connect, connectRefused, httpRequest, nextEvent, record, startServer, unique, waitFor } from "./harness.mjs";

const T = { timeout: 20_000, skip: chorusOnly };

describe("per-socket event rate", { skip: chorusOnly }, () => {
  let server;
  const getServer = async () => (server ??= await startServer({ env: { CHORUS_RATE_EVENTS: "2", CHORUS_RATE_BURST: "4" } }));

  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    test(`events over the rate get rate_limited and are not handled; abuse disconnects (${name})`, T, async () => {
      const { url } = await getServer();
      const room = unique();
      const [sender, member] = await Promise.all([connect(url, opts), connect(url, opts)]);
      const events = record(member);
      assert.deepEqual(await ack(member, "join", room), { ok: true });
      assert.deepEqual(await ack(sender, "join", room), { ok: true });

      const acks = [];
      for (let i = 0; i < 5; i++) acks.push(await ack(sender, "publish", { room, event: "n", data: i }));
      assert.deepEqual(
        acks.map((a) => a.ok || a.error.code),
        [true, true, true, "rate_limited", "rate_limited"],
      );
      // Only the three accepted publishes arrive.
      await waitFor(() => events.length >= 3, { message: "member got the accepted publishes" });
      const marker = nextEvent(member, "marker");
      const helper = await connect(url, opts);
      assert.deepEqual(await ack(helper, "publish", { room, event: "marker" }), { ok: true });
      await marker;
      assert.deepEqual(events.filter((e) => e.event === "n").map((e) => e.args[0]), [0, 1, 2]);

      // Keep flooding: the sender hears why, then it is disconnected (and does not reconnect).
      const why = nextEvent(sender, "chorus:disconnect");
      const gone = nextEvent(sender, "disconnect");
      for (let i = 0; i < 50 && sender.connected; i++) sender.emit("publish", { room, event: "flood" });
      const [info] = await why;
      assert.equal(info.code, "rate_limited");
      await gone;
      assert.ok(member.connected, "the member is still connected");
      assert.equal(events.filter((e) => e.event === "flood").length, 0, "no flood event was handled");
    });
  }
});

describe("connection limits per address", { skip: chorusOnly }, () => {
  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    test(`past CHORUS_MAX_CONNS_PER_IP new connections are refused until one closes (${name})`, T, async () => {
      const { url } = await startServer({ env: { CHORUS_MAX_CONNS_PER_IP: "2" } });
      const a = await connect(url, opts);
      await connect(url, opts);
      await connectRefused(url, opts, { timeoutMs: 3_000 });
      const res = await httpRequest(`${url}/socket.io/?EIO=4&transport=polling`);
      assert.equal(res.status, 429);
      assert.match(res.text, /too_many_connections/);
      a.close();
      await waitFor(async () => (await httpRequest(`${url}/socket.io/?EIO=4&transport=polling`)).status === 200, {
        message: "a place is free again after a client closed",
      });
    });
  }

  test("past CHORUS_HANDSHAKE_RATE new connections get 429 on both transports", T, async () => {
    const { url, port } = await startServer({ env: { CHORUS_HANDSHAKE_RATE: "0.1", CHORUS_HANDSHAKE_BURST: "2" } });
    await connect(url, TRANSPORTS.websocket);
    await connect(url, TRANSPORTS.polling);
    const res = await httpRequest(`${url}/socket.io/?EIO=4&transport=polling`);
    assert.equal(res.status, 429, res.text);
    assert.match(res.text, /rate_limited/);
    const status = await wsUpgradeStatus(port, {});
    assert.equal(status, 429);
  });
});

/** Opens a raw WebSocket to the Engine.IO endpoint; resolves with the HTTP status (101 if upgraded). */
function wsUpgradeStatus(port, headers) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`, { headers });
    ws.once("open", () => {
      ws.terminate();
      resolve(101);
    });
    ws.once("unexpected-response", (_req, res) => {
      res.resume();
      ws.terminate();
      resolve(res.statusCode);
    });
    ws.once("error", (err) => (err.message.includes("Unexpected server response") ? undefined : reject(err)));
  });
}

describe("origins", { skip: chorusOnly }, () => {
  const polling = (url, origin) => httpRequest(`${url}/socket.io/?EIO=4&transport=polling`, { headers: origin ? { origin } : {} });

  test("production (the default) refuses cross-origin browsers on polling and WebSocket, serves same-origin ones", T, async () => {
    const { url, port } = await startServer();
    const evil = "http://evil.example";
    assert.equal((await polling(url, evil)).status, 403);
    assert.equal(await wsUpgradeStatus(port, { Origin: evil }), 403);
    assert.equal((await polling(url, url)).status, 200, "same origin");
    assert.equal(await wsUpgradeStatus(port, { Origin: url }), 101, "same origin");
    assert.equal((await polling(url)).status, 200, "no Origin (a server-side client)");
  });

  test("CHORUS_CORS_ORIGINS opens the origins it lists, with CORS headers on polling", T, async () => {
    const app = "https://app.example";
    const { url, port } = await startServer({ env: { CHORUS_CORS_ORIGINS: app } });
    const ok = await polling(url, app);
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("access-control-allow-origin"), app);
    assert.equal(ok.headers.get("access-control-allow-credentials"), "true");
    assert.equal(await wsUpgradeStatus(port, { Origin: app }), 101);
    const other = await polling(url, "https://other.example");
    assert.equal(other.status, 403);
    assert.equal(other.headers.get("access-control-allow-origin"), null);
    assert.equal(await wsUpgradeStatus(port, { Origin: "https://other.example" }), 403);
  });

  test("CHORUS_MODE=development lets any origin connect while the list is empty", T, async () => {
    const dev = "http://localhost:5173";
    const { url, port } = await startServer({ env: { CHORUS_MODE: "development" } });
    const res = await polling(url, dev);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("access-control-allow-origin"), dev);
    assert.equal(await wsUpgradeStatus(port, { Origin: dev }), 101);
    // The stock client from that origin connects and works.
    const s = await connect(url, { ...TRANSPORTS.polling, extraHeaders: { Origin: dev } });
    assert.deepEqual(await ack(s, "join", unique()), { ok: true });
  });
});
