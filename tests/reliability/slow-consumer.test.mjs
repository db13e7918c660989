// Slow consumers (issue 9, point 5): a client that stops reading while its room gets 1 000
// messages a second. Its output queue is capped (CHORUS_MAX_BUFFERED, 1 MiB by default): once its
// TCP window and the kernel's buffers are full and the queue passes the cap, chorus disconnects it
// with reason slow_consumer. Every other member keeps getting every message, in order, with its
// latency, and the server's memory stays bounded.
//
// The slow client is a stock socket.io-client whose WebSocket's TCP socket is paused (Node stops
// reading it), which is what a stuck browser tab or a client on a saturated link looks like to the
// server.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { ack, chorusOnly, connect, startServer, TRANSPORTS, unique, waitFor } from "../node/harness.mjs";

const RATE = 1000; // messages a second to the room
const PAYLOAD = "x".repeat(4096);
const MAX_FLOOD_MS = 30_000; // bound on the flood: the slow client must be gone well before

function rssMB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]) / 1024;
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

test("a client that stops reading is disconnected as a slow_consumer; the others keep up", { skip: chorusOnly, timeout: 90_000 }, async (t) => {
  const server = await startServer();
  const room = unique("flood");

  // Members that read: two over WebSocket, one over long-polling.
  const readers = [];
  for (const transport of ["websocket", "websocket", "polling"]) {
    const socket = await connect(server.url, TRANSPORTS[transport]);
    assert.deepEqual(await ack(socket, "join", room), { ok: true });
    const got = { transport, seqs: [], delays: [] };
    socket.on("tick", (m) => {
      got.seqs.push(m.seq);
      got.delays.push(Date.now() - m.at);
    });
    readers.push(got);
  }

  // The member that stops reading.
  const slow = await connect(server.url, TRANSPORTS.websocket);
  assert.deepEqual(await ack(slow, "join", room), { ok: true });
  const slowSid = slow.id;
  slow.io.engine.transport.ws._socket.pause();

  const publisher = await connect(server.url, TRANSPORTS.websocket);
  const rss0 = rssMB(server.proc.pid);
  let rssPeak = rss0;

  // Publish at RATE until the slow client is disconnected (plus a second, to see the others carry
  // on), bounded by MAX_FLOOD_MS.
  let seq = 0;
  let goneAt = 0;
  const started = Date.now();
  await new Promise((resolve) => {
    const tick = setInterval(() => {
      const due = Math.floor(((Date.now() - started) * RATE) / 1000);
      while (seq < due) {
        publisher.emit("publish", { room, event: "tick", data: { seq, at: Date.now(), pad: PAYLOAD } });
        seq++;
      }
      rssPeak = Math.max(rssPeak, rssMB(server.proc.pid));
      const logged = server.logs.some((l) => l.msg === "disconnect" && l.sid === slowSid);
      if (logged && goneAt === 0) goneAt = Date.now();
      if ((goneAt && Date.now() - goneAt > 1000) || Date.now() - started > MAX_FLOOD_MS) {
        clearInterval(tick);
        resolve();
      }
    }, 10);
  });
  const sent = seq;

  const entry = server.logs.find((l) => l.msg === "disconnect" && l.sid === slowSid);
  assert.ok(entry, `the slow client was not disconnected within ${MAX_FLOOD_MS} ms (${sent} messages sent)`);
  assert.equal(entry.reason, "slow_consumer");

  // Every reader gets every message, in order.
  for (const r of readers) {
    await waitFor(() => r.seqs.length >= sent, { timeout: 15_000, message: `${r.transport} reader: ${r.seqs.length} of ${sent}` });
    assert.deepEqual(r.seqs, Array.from({ length: sent }, (_, i) => i), `${r.transport} reader: lost or reordered messages`);
    const sorted = [...r.delays].sort((a, b) => a - b);
    const p50 = quantile(sorted, 0.5);
    const p99 = quantile(sorted, 0.99);
    t.diagnostic(`${r.transport} reader: ${sent} messages, latency p50 ${p50} ms, p99 ${p99} ms`);
    assert.ok(p99 < 500, `${r.transport} reader: p99 latency ${p99} ms during the flood`);
  }
  t.diagnostic(
    `slow client disconnected ${goneAt - started} ms into the flood (${RATE}/s of ${PAYLOAD.length} B); chorus RSS ${rss0.toFixed(1)} MB before, ${rssPeak.toFixed(1)} MB at most`,
  );
  assert.ok(rssPeak - rss0 < 64, `chorus RSS grew from ${rss0.toFixed(1)} to ${rssPeak.toFixed(1)} MB`);
});
