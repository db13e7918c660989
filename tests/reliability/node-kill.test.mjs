// Scenario 2 of issue 9: a chorus node is killed with SIGKILL under load. Two nodes in Redis
// Streams mode behind nginx; receivers in rooms spread over both nodes, reliable publishers (an id
// per message, the client's retries) publishing steadily. One node is killed: its clients
// reconnect through nginx to the other node with the client's backoff and jitter (spread out, not
// all at once), recover their sessions (same id, rooms, missed events), and no message the server
// acknowledged is lost or delivered twice.
//
//   make build && CHORUS_BIN=./chorus node --test tests/reliability/node-kill.test.mjs
//   CHAOS_LONG=1 ... for the sizes (2 000 clients)

import { test } from "node:test";
import assert from "node:assert/strict";
import { chorusOnly, waitFor } from "../node/harness.mjs";
import { LONG, ackLatency, tally, allConnected, clientAddress, closeAll, peakRate, publisher, quantile, receiver, redisStats, rssSampler, size, startCluster } from "./chaos.mjs";

const CLIENTS = size(200, 2000);
const ROOMS = size(10, 20);
const PUBLISH_MS = size(100, 250); // each publisher, one per room
const KILLED = 0;

test(`a node killed with SIGKILL under load: ${CLIENTS} clients reconnect to the other node, recover, lose nothing acknowledged`, { skip: chorusOnly, timeout: size(120_000, 600_000) }, async (t) => {
  const cluster = await startCluster({ mode: "streams" });
  const rss = rssSampler(cluster.pids);
  const receivers = [];
  const publishers = [];
  t.after(async () => {
    rss.stop();
    closeAll([...receivers, ...publishers]);
    await cluster.close();
  });
  await cluster.redisUp();
  const stats0 = await redisStats(cluster.redis.url);

  for (let i = 0; i < CLIENTS; i++) receivers.push(receiver(cluster.nginx.url, i, `room-${i % ROOMS}`));
  for (let k = 0; k < ROOMS; k++) publishers.push(publisher(cluster.nginx.url, k, `room-${k}`, { reliable: true, intervalMs: PUBLISH_MS, address: clientAddress(CLIENTS + k) }));
  const all = [...receivers, ...publishers];
  await allConnected(all, size(30_000, 120_000));
  await waitFor(() => receivers.every((r) => r.joinedAt > 0), { timeout: 30_000, message: "every receiver in its room" });

  // Which node each client is on, from the nodes' logs.
  const onNode = (id, n) => cluster.nodes[n].logs.some((l) => l.msg === "connect" && l.sid === id);
  const victims = receivers.filter((r) => onNode(r.socket.id, KILLED));
  const victimPubs = publishers.filter((p) => onNode(p.socket.id, KILLED));
  t.diagnostic(`${victims.length} receivers and ${victimPubs.length} publishers on the node to kill, ${receivers.length - victims.length} on the other`);
  assert.ok(victims.length >= CLIENTS / 5 && victims.length <= (CLIENTS * 4) / 5, `nginx put ${victims.length} of ${CLIENTS} on one node`);

  const stats1 = await redisStats(cluster.redis.url);
  const loadedAt = Date.now();
  for (const p of publishers) p.start();
  await new Promise((r) => setTimeout(r, size(3000, 10_000)));
  const stats2 = await redisStats(cluster.redis.url);
  const loadMs = Date.now() - loadedAt;

  const killedAt = Date.now();
  await cluster.kill(KILLED);
  // Every client of the killed node notices, then every client is connected again (to the
  // survivor), then the load goes on a while.
  await waitFor(() => [...victims, ...victimPubs].every((c) => c.disconnects.some((d) => d.at >= killedAt)), {
    timeout: 10_000,
    message: "the killed node's clients disconnected",
  });
  await allConnected(all, size(30_000, 120_000), "every client back after the kill");
  const backAt = Date.now();
  await new Promise((r) => setTimeout(r, size(3000, 10_000)));
  await Promise.all(publishers.map((p) => p.stop()));

  // Every message acknowledged to its room's receivers, exactly once.
  const { acked, sent, outcomes, missing } = tally(publishers);
  await waitFor(() => receivers.every((r) => missing(r).length === 0), { timeout: size(20_000, 60_000), interval: 200, message: "every acknowledged message delivered" }).catch(() => {});

  let lost = 0;
  let dup = 0;
  let delivered = 0;
  let expected = 0;
  const lostBy = [];
  for (const r of receivers) {
    const keys = acked.get(r.room);
    expected += keys.length;
    const m = missing(r);
    lost += m.length;
    if (m.length) lostBy.push(`${r.i}: ${m.slice(0, 5).join(",")}${m.length > 5 ? "…" : ""} (${r.connects.map((c) => (c.recovered ? "R" : "N")).join("")})`);
    for (const [, n] of r.got) {
      delivered += n;
      if (n > 1) dup += n - 1;
    }
  }
  const reconnects = victims.map((r) => r.connects.find((c) => c.at > killedAt)).filter(Boolean);
  const recovered = reconnects.filter((c) => c.recovered).length;
  const delays = reconnects.map((c) => c.at - killedAt);
  // When the clients tried (after their backoff and jitter), and when they were connected again.
  const attempts = victims.map((r) => r.attempts.find((a) => a.at > killedAt)).filter(Boolean);
  const tries100 = peakRate(attempts.map((a) => a.at), 100);
  const rate100 = peakRate(reconnects.map((c) => c.at), 100);
  const rate1s = peakRate(reconnects.map((c) => c.at), 1000);
  const failedAttempts = victims.reduce((n, r) => n + r.attempts.filter((a) => a.at > killedAt).length, 0) - attempts.length;
  const peaks = rss.peaks();
  t.diagnostic(`published ${sent} (${JSON.stringify(outcomes)}); deliveries expected ${expected}, delivered ${delivered}, lost ${lost}, duplicated ${dup}`);
  t.diagnostic(`killed node's clients: ${reconnects.length} of ${victims.length} reconnected, ${recovered} recovered; after the kill: first ${Math.min(...delays)} ms, p50 ${quantile(delays, 0.5)} ms, p99 ${quantile(delays, 0.99)} ms, last ${Math.max(...delays)} ms; all back ${backAt - killedAt} ms`);
  t.diagnostic(`first reconnection attempts: ${attempts.length} over ${tries100.span} ms, at most ${tries100.peak} in 100 ms; attempts that failed: ${failedAttempts}`);
  t.diagnostic(`reconnections: at most ${rate100.peak} in 100 ms, ${rate1s.peak} in 1 s (of ${reconnects.length} over ${rate1s.span} ms)`);
  t.diagnostic(`peak RSS MB: ${JSON.stringify(peaks)}${LONG ? " (long form)" : ""}`);
  t.diagnostic(`publish acks (publish to final ack): ${JSON.stringify(ackLatency(publishers))} ms`);
  const delta = (a, b) => Object.fromEntries(Object.keys(b.calls).map((k) => [k, b.calls[k] - a.calls[k]]).filter(([, v]) => v));
  t.diagnostic(
    `live sessions: ${stats1.sessions} keys of ${stats1.bytesPerSession} B in Redis (used memory ${stats0.usedMemoryMB} → ${stats1.usedMemoryMB} MB); ` +
      `Redis calls to connect and join ${CLIENTS + ROOMS} clients: ${JSON.stringify(delta(stats0, stats1))}; during ${loadMs} ms of load: ${JSON.stringify(delta(stats1, stats2))}`,
  );

  assert.equal(outcomes.failed ?? 0, 0, "publishes that never got an ack");
  assert.deepEqual(Object.keys(outcomes).filter((o) => o.startsWith("error")), [], "publishes refused");
  assert.equal(reconnects.length, victims.length, "every client of the killed node reconnected");
  assert.equal(recovered, victims.length, "every client of the killed node recovered its session");
  assert.deepEqual(lostBy.slice(0, 10), [], `${lost} acknowledged deliveries lost`);
  assert.equal(dup, 0, "deliveries duplicated");
  // Backoff with jitter: the clients try again spread over the randomization window (0.5–1.5 s
  // for the first attempt), not all at once, and so they arrive.
  assert.equal(attempts.length, victims.length, "every client of the killed node tried again");
  assert.ok(tries100.span >= 500, `reconnection attempts within ${tries100.span} ms`);
  assert.ok(tries100.peak <= Math.max(30, victims.length / 4), `${tries100.peak} of ${victims.length} reconnection attempts within 100 ms`);
  assert.ok(rate1s.span >= 500, `reconnections within ${rate1s.span} ms`);
});
