// Shared parts of the fault scenarios of tests/reliability (issue 9, scenarios 1–3): a cluster of
// real processes (redis-server, chorus binaries on fixed loopback ports so that one can be
// restarted where nginx expects it, nginx in front with the README's sticky configuration), a
// fleet of stock socket.io-client sockets connecting through nginx from distinct loopback
// addresses (so that nginx spreads them over the nodes) with the client's default reconnection
// rules, publishers, and the bookkeeping that says what was sent, acknowledged, delivered, lost or
// duplicated. Every wait is bounded in time and every loop in count.
//
//   CHAOS_LONG=1   the issue's sizes (2 000 clients; make chaos-long); otherwise the short form
//                  that `make test` runs

import { readFileSync } from "node:fs";
import { createClient } from "redis";
import { io } from "socket.io-client";
import { startServer, unique, waitFor } from "../node/harness.mjs";
import { freePort, startRedis } from "../node/cluster/redis.mjs";
import { startNginx } from "../node/cluster/nginx.mjs";

export const LONG = process.env.CHAOS_LONG === "1";

/** short in `make test`, long with CHAOS_LONG=1. */
export const size = (short, long) => (LONG ? long : short);

/** Resident set size of a process in MB, or 0 once it is gone. */
export function rssMB(pid) {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) / 1024;
  } catch {
    return 0;
  }
}

/** Samples the RSS of the processes pids() names every intervalMs; peak() gives the largest per name. */
export function rssSampler(pids, intervalMs = 250) {
  const peaks = {};
  const sample = () => {
    for (const [name, pid] of Object.entries(pids())) {
      if (pid) peaks[name] = Math.max(peaks[name] ?? 0, rssMB(pid));
    }
  };
  sample();
  const timer = setInterval(sample, intervalMs);
  timer.unref();
  return {
    peaks: () => (sample(), Object.fromEntries(Object.entries(peaks).map(([k, v]) => [k, Math.round(v * 10) / 10]))),
    stop: () => clearInterval(timer),
  };
}

/**
 * Starts redis-server, `nodes` chorus binaries on fixed ports in one cluster (mode "pubsub" or
 * "streams") and nginx in front. Each node can be killed, drained (SIGTERM) and started again on
 * its port. env adds CHORUS_* settings.
 */
export async function startCluster({ mode = "streams", nodes: count = 2, persist = false, env = {}, workerConnections = 8192 } = {}) {
  const redis = await startRedis({ persist });
  const prefix = unique("chaos");
  const nodeEnv = {
    CHORUS_REDIS_URL: redis.url,
    CHORUS_REDIS_PREFIX: prefix,
    CHORUS_REDIS_MODE: mode,
    // nginx is the one proxy: the client's address comes from X-Forwarded-For, so that the
    // per-address limits apply to the clients, not to nginx.
    CHORUS_TRUSTED_PROXIES: "127.0.0.1",
    ...env,
  };
  const ports = [];
  for (let i = 0; i < count; i++) ports.push(await freePort());
  const nodes = [];
  const start = async (i) => {
    const server = await startServer({ env: nodeEnv, args: ["-addr", `127.0.0.1:${ports[i]}`] });
    server.index = i;
    nodes[i] = server;
    return server;
  };
  for (let i = 0; i < count; i++) await start(i);
  const nginx = await startNginx(
    ports.map((p) => `127.0.0.1:${p}`),
    { workerConnections },
  );
  const cluster = {
    redis,
    nginx,
    nodes,
    ports,
    prefix,
    mode,
    /** Waits until every running node says Redis is up (/readyz X-Chorus-Redis). */
    async redisUp(timeout = 20_000) {
      await waitFor(
        async () => {
          for (const n of nodes) {
            if (!n || n.proc.exitCode !== null || n.proc.signalCode !== null) continue;
            const res = await fetch(`${n.url}/readyz`, { signal: AbortSignal.timeout(2000) }).catch(() => null);
            if (res?.headers.get("x-chorus-redis") !== "up") return false;
          }
          return true;
        },
        { timeout, interval: 50, message: "every node connected to Redis" },
      );
    },
    /** Kills node i with SIGKILL and waits for it to exit. */
    async kill(i) {
      const n = nodes[i];
      n.proc.kill("SIGKILL");
      await n.exited;
    },
    /** Sends SIGTERM to node i (it drains over CHORUS_DRAIN_TIMEOUT) and waits for it to exit. */
    async drain(i, timeout = 60_000) {
      const n = nodes[i];
      n.proc.kill("SIGTERM");
      let timer;
      const done = await Promise.race([n.exited.then(() => true), new Promise((r) => (timer = setTimeout(() => r(false), timeout)))]);
      clearTimeout(timer);
      if (!done) throw new Error(`node ${i} did not exit within ${timeout} ms of SIGTERM`);
      return n.exited;
    },
    /** Starts node i again on its port. */
    restart: (i) => start(i),
    pids: () => Object.fromEntries([...nodes.map((n, i) => [`chorus${i}`, n?.proc.exitCode === null ? n.proc.pid : 0]), ["redis", redis.pid], ["nginx", nginx.pid]]),
    async close() {
      await nginx.stop();
      await Promise.all(nodes.map((n) => n.stop()));
      await redis.close();
    },
  };
  return cluster;
}

/** The loopback address of client i: 127.1.a.b, one per client, so that nginx spreads them. */
export const clientAddress = (i) => `127.1.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`;

/**
 * A receiving client: a stock socket.io-client socket through nginx with the default reconnection
 * rules (exponential backoff from 1 s, randomizationFactor 0.5, at most 5 s), that joins its room
 * whenever it connects without recovering its session (the rule docs/protocol.md gives), and
 * records every connection, disconnection and message.
 */
export function receiver(url, i, room, opts = {}) {
  const socket = io(url, { transports: ["websocket"], forceNew: true, localAddress: clientAddress(i), ...opts });
  const r = {
    i,
    room,
    socket,
    connects: [], // {at, recovered, id}
    disconnects: [], // {at, reason}
    attempts: [], // {at, n}: the client's reconnection attempts (after its backoff and jitter)
    got: new Map(), // "pub:seq" -> times received
    gotAt: new Map(), // "pub:seq" -> when first received
    joinedAt: 0, // the last time it (re)joined its room with a new session
    errors: 0,
  };
  socket.on("connect", () => {
    const at = Date.now();
    r.connects.push({ at, recovered: socket.recovered, id: socket.id });
    if (!socket.recovered) {
      // A new session: the client joins its room again (bounded retries).
      const join = async (attempt) => {
        try {
          const res = await socket.timeout(10_000).emitWithAck("join", room);
          if (res?.ok) r.joinedAt = Date.now();
          else r.errors++;
        } catch {
          if (attempt < 5 && socket.connected) return join(attempt + 1);
          r.errors++;
        }
      };
      join(0);
    }
  });
  socket.on("disconnect", (reason) => r.disconnects.push({ at: Date.now(), reason }));
  socket.io.on("reconnect_attempt", (n) => r.attempts.push({ at: Date.now(), n }));
  socket.io.on("reconnect_error", (err) => {
    r.lastError = `${err.message}${err.description?.message ? `: ${err.description.message}` : ""}`;
    r.failedAttempts = (r.failedAttempts ?? 0) + 1;
  });
  socket.on("connect_error", () => r.errors++);
  socket.on("m", (m) => {
    const key = `${m.p}:${m.s}`;
    const n = r.got.get(key) ?? 0;
    r.got.set(key, n + 1);
    if (n === 0) r.gotAt.set(key, Date.now());
  });
  return r;
}

/**
 * A publisher: a stock client through nginx publishing {p, s, at} to its room every intervalMs.
 * reliable: each message has an id and the socket uses the client's retries (retries, ackTimeout),
 * and a message refused with `unavailable` is sent again with the same id (every 250 ms, at most
 * 2 minutes); messages go one at a time, in order. Otherwise: no id, no retries, one ack each (10 s).
 * Every message's outcome is recorded: ok, local (delivered on the publisher's node only),
 * duplicate, unavailable refusals, failed (an error ack or no ack).
 */
export function publisher(url, p, room, { reliable = false, intervalMs = 100, address } = {}) {
  const opts = reliable ? { retries: 30, ackTimeout: 2000 } : {};
  const socket = io(url, { transports: ["websocket"], forceNew: true, localAddress: address, ...opts });
  const pub = {
    p,
    room,
    socket,
    reliable,
    sent: [], // {s, at, outcome, ackAt, refusals}
    running: false,
    connects: [],
    disconnects: [],
    attempts: [],
  };
  socket.on("connect", () => pub.connects.push({ at: Date.now(), recovered: socket.recovered, id: socket.id }));
  socket.on("disconnect", (reason) => pub.disconnects.push({ at: Date.now(), reason }));
  socket.io.on("reconnect_attempt", (n) => pub.attempts.push({ at: Date.now(), n }));
  socket.io.on("reconnect_error", (err) => (pub.lastError = `${err.message}${err.description?.message ? `: ${err.description.message}` : ""}`));
  const runId = unique("run");
  const publishOne = async (entry) => {
    const data = { p, s: entry.s, at: entry.at };
    if (!reliable) {
      try {
        const res = await socket.timeout(10_000).emitWithAck("publish", { room, event: "m", data });
        entry.outcome = res?.ok ? (res.local ? "local" : "ok") : `error:${res?.error?.code}`;
      } catch {
        entry.outcome = "failed";
      }
      entry.ackAt = Date.now();
      return;
    }
    const id = `${runId}-${entry.s}`;
    const deadline = Date.now() + 120_000;
    for (;;) {
      let res;
      try {
        res = await socket.emitWithAck("publish", { room, event: "m", data, id });
      } catch {
        entry.outcome = "failed"; // the client gave up after its retries
        break;
      }
      if (res?.ok) {
        entry.outcome = res.local ? "local" : res.duplicate ? "duplicate" : "ok";
        break;
      }
      if (res?.error?.code === "unavailable" && Date.now() < deadline) {
        entry.refusals++;
        await new Promise((r) => setTimeout(r, 250));
        continue;
      }
      entry.outcome = `error:${res?.error?.code}`;
      break;
    }
    entry.ackAt = Date.now();
  };
  let loop;
  pub.start = () => {
    pub.running = true;
    loop = (async () => {
      let next = Date.now();
      const inflight = new Set();
      while (pub.running) {
        next += intervalMs;
        const entry = { s: pub.sent.length, at: Date.now(), outcome: undefined, ackAt: 0, refusals: 0 };
        pub.sent.push(entry);
        if (reliable) {
          await publishOne(entry); // in order, one at a time
        } else {
          const pr = publishOne(entry);
          inflight.add(pr);
          pr.then(() => inflight.delete(pr));
        }
        const wait = next - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        else next = Date.now();
      }
      await Promise.all(inflight);
    })();
  };
  /** Stops publishing and waits (bounded) for every outcome. */
  pub.stop = async (timeout = 150_000) => {
    pub.running = false;
    let timer;
    await Promise.race([loop, new Promise((r) => (timer = setTimeout(r, timeout)))]);
    clearTimeout(timer);
  };
  return pub;
}

/**
 * What Redis holds and did, for the cost of live sessions and committed publishes: the session
 * keys and their memory, used memory, and the calls of the commands chorus sends.
 */
export async function redisStats(url) {
  const c = createClient({ url });
  c.on("error", () => {});
  await c.connect();
  try {
    const keys = await c.keys("sio:session:*");
    let sessionBytes = 0;
    for (const k of keys.slice(0, 100)) sessionBytes += (await c.memoryUsage(k)) ?? 0;
    const info = (await c.info("memory")) + (await c.info("commandstats"));
    const num = (name) => Number(new RegExp(`^${name}:(\\d+)`, "m").exec(info)?.[1] ?? 0);
    const calls = {};
    for (const cmd of ["set", "pexpire", "del", "get", "eval", "xadd", "xread", "xrange", "publish", "multi", "pubsub"]) {
      calls[cmd] = Number(new RegExp(`^cmdstat_${cmd}:calls=(\\d+)`, "m").exec(info)?.[1] ?? 0);
    }
    return {
      sessions: keys.length,
      bytesPerSession: keys.length ? Math.round(sessionBytes / Math.min(keys.length, 100)) : 0,
      usedMemoryMB: Math.round(num("used_memory") / 1e5) / 10,
      calls,
    };
  } finally {
    await c.quit().catch(() => {});
  }
}

/** Publish acks: how long they took (ms from the publish to its final ack), p50 / p99 / max. */
/**
 * What the publishes became: per room, the keys (`p:s`) of the messages acked ok or duplicate;
 * how many were sent; counts by outcome; the refusals re-sent; and the publishes acked local.
 * `missing(r)` lists the acked keys receiver r has not got.
 */
export function tally(publishers) {
  const acked = new Map(); // room -> keys
  const outcomes = {};
  const local = []; // {p, key, at}
  let sent = 0;
  let refusals = 0;
  for (const p of publishers) {
    const keys = acked.get(p.room) ?? [];
    for (const e of p.sent) {
      sent++;
      refusals += e.refusals ?? 0;
      outcomes[e.outcome] = (outcomes[e.outcome] ?? 0) + 1;
      const key = `${p.p}:${e.s}`;
      if (e.outcome === "ok" || e.outcome === "duplicate") keys.push(key);
      if (e.outcome === "local") local.push({ p, key, at: e.at });
    }
    acked.set(p.room, keys);
  }
  const missing = (r) => (acked.get(r.room) ?? []).filter((k) => !r.got.has(k));
  return { acked, sent, outcomes, refusals, local, missing };
}

export function ackLatency(publishers) {
  const d = publishers.flatMap((p) => p.sent.filter((e) => e.ackAt).map((e) => e.ackAt - e.at));
  return { p50: quantile(d, 0.5), p99: quantile(d, 0.99), max: d.length ? Math.max(...d) : NaN };
}

/** Waits until every socket is connected. */
export async function allConnected(clients, timeout, message = "every client connected") {
  await waitFor(() => clients.every((c) => c.socket.connected), { timeout, interval: 50 }).catch(() => {
    const out = clients.filter((c) => !c.socket.connected);
    const why = {};
    for (const c of out) {
      const k = `${c.lastError ?? "no error"} (engine ${c.socket.io.engine?.readyState ?? "none"}, manager ${c.socket.io._readyState})`;
      why[k] = (why[k] ?? 0) + 1;
    }
    const attempts = out.map((c) => c.attempts?.length ?? 0);
    throw new Error(`${message}: ${out.length} of ${clients.length} not connected after ${timeout} ms; ${JSON.stringify(why)}; their attempts: ${Math.min(...attempts)}–${Math.max(...attempts)}`);
  });
}

/**
 * Connections per time bucket: the largest number of `times` (ms) falling in any bucketMs-wide
 * window (sliding, so that a burst is not split between two buckets), and the span they cover.
 */
export function peakRate(times, bucketMs = 1000) {
  const t = [...times].sort((a, b) => a - b);
  let peak = 0;
  for (let i = 0, j = 0; i < t.length; i++) {
    while (t[i] - t[j] >= bucketMs) j++;
    peak = Math.max(peak, i - j + 1);
  }
  return { peak, first: t[0], last: t.at(-1), span: t.length ? t.at(-1) - t[0] : 0 };
}

/** Percentile of a list of numbers. */
export function quantile(values, q) {
  const s = [...values].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : NaN;
}

/** Closes every socket of the fleet. */
export function closeAll(clients) {
  for (const c of clients) c.socket.close();
}

/** The node (index) whose log has a connect of socket id, or -1. Several when it moved. */
export function nodesOf(cluster, id, logsByNode) {
  const out = [];
  for (const [i, logs] of logsByNode.entries()) if (logs.some((l) => l.msg === "connect" && l.sid === id)) out.push(i);
  return out;
}
