// Heartbeat: the configured ping interval and timeout are advertised, a client that stops
// answering pings is closed in time, and clients that answer stay connected.

import { before, test } from "node:test";
import assert from "node:assert/strict";
import { TRANSPORTS, ack, connect, rawWebSocket, startServer, unique } from "./harness.mjs";

const PING_INTERVAL = 300;
const PING_TIMEOUT = 200;
// Generous slack for a loaded 2-core machine; a server that never closes still fails.
const SLACK_MS = 2_500;

let server;
before(async () => {
  server = await startServer({
    env: { CHORUS_PING_INTERVAL: `${PING_INTERVAL}ms`, CHORUS_PING_TIMEOUT: `${PING_TIMEOUT}ms` },
  });
});

for (const transport of ["websocket", "polling"]) {
  test(`the handshake advertises the ping interval and timeout over ${transport}`, { timeout: 10_000 }, async () => {
    const socket = await connect(server.url, TRANSPORTS[transport]);
    // engine.io-client 6.6 keeps the handshake's values as _pingInterval / _pingTimeout.
    const engine = socket.io.engine;
    assert.equal(engine._pingInterval ?? engine.pingInterval, PING_INTERVAL);
    assert.equal(engine._pingTimeout ?? engine.pingTimeout, PING_TIMEOUT);
  });
}

test("a client that stops answering pings is closed within interval + timeout", { timeout: 15_000 }, async () => {
  const raw = await rawWebSocket(server.port);
  const opened = Date.now();
  const open = JSON.parse((await raw.next((m) => typeof m === "string" && m.startsWith("0"))).slice(1));
  assert.equal(open.pingInterval, PING_INTERVAL);
  assert.equal(open.pingTimeout, PING_TIMEOUT);
  raw.send("40");
  await raw.next((m) => typeof m === "string" && m.startsWith("40"));
  // Never answer "2" with "3".
  let timer;
  const closed = await Promise.race([
    raw.closed,
    new Promise((resolve) => (timer = setTimeout(() => resolve(undefined), PING_INTERVAL + PING_TIMEOUT + SLACK_MS))),
  ]);
  clearTimeout(timer);
  const pings = raw.messages.filter((m) => m === "2").length;
  assert.ok(closed, `still open ${PING_INTERVAL + PING_TIMEOUT + SLACK_MS} ms after the handshake (pings seen: ${pings})`);
  const elapsed = closed.at - opened;
  assert.ok(pings >= 1, "the server pinged before closing");
  assert.ok(elapsed >= PING_INTERVAL * 0.8, `closed after ${elapsed} ms, before the first ping was even due`);
});

// Clients that answer must never be dropped. The ping timeout here is longer than above: with
// 200 ms, Node's own server drops a polling client now and then when the 2 cores are busy (the
// pong has to wait for the poll to return and a POST to get through). Spurious timeouts of the
// server's own making do not depend on the length of the timeout, so 1 s still finds them.
const STEADY_INTERVAL = 300;
const STEADY_TIMEOUT = 1_000;
let steady;

for (const transport of ["websocket", "polling", "upgrade"]) {
  test(`clients that answer pings stay connected over ${transport}`, { timeout: 15_000 }, async () => {
    steady ??= await startServer({
      env: { CHORUS_PING_INTERVAL: `${STEADY_INTERVAL}ms`, CHORUS_PING_TIMEOUT: `${STEADY_TIMEOUT}ms` },
    });
    const CLIENTS = 10;
    const WATCH_MS = 3_000;
    const sockets = await Promise.all(Array.from({ length: CLIENTS }, () => connect(steady.url, TRANSPORTS[transport])));
    const disconnects = [];
    let pings = 0;
    for (const s of sockets) {
      s.on("disconnect", (reason) => disconnects.push(reason));
      s.io.engine.on("ping", () => pings++);
    }
    const watchEnd = Date.now() + WATCH_MS;
    await new Promise((resolve) => {
      // Watching for a duration is the point of this test; it ends early on the first disconnect.
      const timer = setTimeout(resolve, WATCH_MS);
      for (const s of sockets) {
        s.on("disconnect", () => {
          clearTimeout(timer);
          resolve();
        });
      }
    });
    assert.deepEqual(disconnects, [], `no disconnects in ${WATCH_MS} ms (left ${watchEnd - Date.now()} ms early)`);
    // Each client sees a ping every interval plus a round trip: allow the round trips to take up to 200 ms.
    const expected = CLIENTS * Math.floor(WATCH_MS / (STEADY_INTERVAL + 200));
    assert.ok(pings >= expected, `pings answered: ${pings}, expected at least ${expected}`);
    for (const s of sockets) assert.deepEqual(await ack(s, "join", unique()), { ok: true });
  });
}
