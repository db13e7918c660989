// The catalogue of bad input (issue 6, point 8) against the built binary: every case of
// tests/badinput/catalogue.json (whose "about" describes its fields) is sent as raw Engine.IO /
// Socket.IO frames over WebSocket and long-polling, each run from a client address of its own
// (X-Forwarded-For from a trusted proxy). For each: what the case expects (a close with its logged
// reason and WebSocket code, a coded ack, a connect_error, an HTTP status), then the process still
// serves, and a control client (the stock socket.io-client) in the same room receives the next
// control message and nothing else. internal/app/badinput_test.go runs the same catalogue in-process
// and also checks that the goroutines come back to their baseline after every case.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { chorusOnly, repoRoot, startServer, waitFor } from "./harness.mjs";

const cat = JSON.parse(readFileSync(path.join(repoRoot, "tests/badinput/catalogue.json"), "utf8"));
const WAIT_MS = 5_000;

function b64url(s) {
  return Buffer.from(s).toString("base64url");
}

/** An HS256 token for sub, expiring ttlSeconds from now. */
function mint(sub, ttlSeconds) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds }));
  const sig = crypto.createHmac("sha256", cat.env.CHORUS_JWT_SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

const tokens = { TOKEN: mint("catalogue", 3600), TOKEN_OTHER: mint("someone-else", 3600), TOKEN_EXPIRED: mint("catalogue", -3600) };

/** Replaces the catalogue's macros ($TOKEN…, $SID, $R(s,n)). */
function expand(s, sid = "", index = 0) {
  return s.replace(/\$(TOKEN_OTHER|TOKEN_EXPIRED|TOKEN|SID|N)|\$R\(([^,]*?),(\d+)\)/g, (_, name, rep, n) => {
    if (name === "SID") return sid;
    if (name === "N") return String(index);
    if (name) return tokens[name];
    return rep.repeat(Number(n));
  });
}

const hex = (s) => Buffer.from(expand(s).replaceAll(" ", ""), "hex");

/** The Engine.IO packets a case sends: {data: string|Buffer, binary}. */
function packets(c) {
  const out = [];
  for (let i = 0; i < Math.max(c.repeat ?? 1, 1); i++) {
    for (const item of c.send ?? []) {
      if (typeof item === "string") out.push({ data: expand(item, "", i), binary: false });
      else if (item.textHex) out.push({ data: hex(item.textHex), binary: false });
      else out.push({ data: hex(item.binary), binary: true });
    }
  }
  return out;
}

function transportsOf(c) {
  if (c.transports) return c.transports;
  return c.level === "none" ? ["http"] : ["websocket", "polling"];
}

let server;
let receiver;
const received = [];
let seq = 0;

/**
 * One HTTP request without keep-alive; resolves with {status, body (Buffer), socket (for a 101)}.
 * A server that answers and closes while the body is still being written (413) still resolves with
 * its answer.
 */
function request({ method = "GET", path: p, headers = {}, body, chunked = false }) {
  return new Promise((resolve, reject) => {
    let answered;
    const req = http.request({ host: "127.0.0.1", port: server.port, path: p, method, headers, agent: false });
    req.setTimeout(10_000, () => req.destroy(new Error(`${method} ${p.slice(0, 80)}: no answer within 10 s`)));
    req.on("response", (res) => {
      const chunks = [];
      answered = { status: res.statusCode, body: Buffer.alloc(0) };
      res.on("data", (d) => chunks.push(d));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
      res.on("error", () => resolve(answered));
    });
    req.on("upgrade", (res, socket) => resolve({ status: res.statusCode, body: Buffer.alloc(0), socket }));
    req.on("error", (err) => (answered ? resolve(answered) : reject(err)));
    if (body === undefined) {
      req.end();
    } else if (chunked) {
      for (let i = 0; i < body.length; i += 4096) req.write(body.slice(i, i + 4096));
      req.end();
    } else {
      req.setHeader("Content-Length", Buffer.byteLength(body));
      req.end(body);
    }
  });
}

/** Splits a polling payload into packets. */
function splitPayload(buf) {
  return buf
    .toString("utf8")
    .split("\x1e")
    .map((p) => (p.startsWith("b") ? { data: Buffer.from(p.slice(1), "base64"), binary: true } : { data: p, binary: false }));
}

/** A session over WebSocket. */
async function wsSession(addr) {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/socket.io/?EIO=4&transport=websocket`, { headers: { "X-Forwarded-For": addr } });
  const queue = [];
  let wake = () => {};
  ws.on("message", (data, isBinary) => {
    queue.push(isBinary ? { data, binary: true } : { data: data.toString("utf8"), binary: false });
    wake();
  });
  ws.on("error", () => {}); // the close says enough
  const closed = new Promise((resolve) => ws.once("close", (code) => resolve(code)));
  closed.then(() => wake());
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  const s = {
    ws,
    closed,
    async next(ms = WAIT_MS) {
      const deadline = Date.now() + ms;
      while (queue.length === 0) {
        if (ws.readyState === WebSocket.CLOSED) throw new Error("the WebSocket closed");
        if (Date.now() >= deadline) throw new Error(`nothing within ${ms} ms`);
        await new Promise((resolve) => {
          const t = setTimeout(resolve, deadline - Date.now());
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
      return queue.shift();
    },
    async send(pkts) {
      for (const p of pkts) {
        if (ws.readyState !== WebSocket.OPEN) break; // closed by the server during a flood
        ws.send(p.data, { binary: p.binary });
      }
      return 200;
    },
    async waitClosed(ms = WAIT_MS) {
      let t;
      const code = await Promise.race([closed, new Promise((resolve) => (t = setTimeout(() => resolve("timeout"), ms)))]);
      clearTimeout(t);
      if (code === "timeout") throw new Error(`the WebSocket is still open after ${ms} ms`);
      return code;
    },
    close() {
      ws.terminate();
    },
  };
  const open = await s.next();
  assert.match(String(open.data), /^0\{/, "open packet");
  s.id = JSON.parse(String(open.data).slice(1)).sid;
  return s;
}

/** A session over long-polling. */
async function pollSession(addr) {
  const headers = { "X-Forwarded-For": addr };
  const open = await request({ path: "/socket.io/?EIO=4&transport=polling", headers });
  assert.equal(open.status, 200, `handshake: ${open.body}`);
  const pkts = splitPayload(open.body);
  const id = JSON.parse(String(pkts[0].data).slice(1)).sid;
  const url = `/socket.io/?EIO=4&transport=polling&sid=${id}`;
  const queue = pkts.slice(1);
  let closed = false;
  const post = async (body, chunked = false) =>
    (await request({ method: "POST", path: url, headers: { ...headers, "Content-Type": "text/plain;charset=UTF-8" }, body, chunked })).status;
  const get = () => request({ path: url, headers });
  return {
    id,
    url,
    post,
    async next(ms = WAIT_MS) {
      const deadline = Date.now() + ms;
      while (queue.length === 0) {
        if (Date.now() >= deadline) throw new Error(`nothing within ${ms} ms`);
        const res = await get();
        if (res.status !== 200) throw new Error(`GET answered ${res.status} ${res.body}`);
        queue.push(...splitPayload(res.body));
      }
      return queue.shift();
    },
    async send(pkts) {
      const body = pkts.map((p) => (p.binary ? "b" + Buffer.from(p.data).toString("base64") : p.data));
      const parts = body.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p)));
      const joined = Buffer.concat(parts.flatMap((p, i) => (i > 0 ? [Buffer.from([0x1e]), p] : [p])));
      return post(joined);
    },
    async waitClosed(ms = WAIT_MS) {
      if (queue.some((p) => p.data === "1")) return 0;
      const deadline = Date.now() + ms;
      while (Date.now() < deadline) {
        const res = await get();
        if (res.status !== 200) return 0; // the session is gone
        if (splitPayload(res.body).some((p) => p.data === "1")) return 0;
      }
      throw new Error(`the session is still open after ${ms} ms`);
    },
    async close() {
      if (closed) return;
      closed = true;
      if ((await post("1").catch(() => 0)) === 200) await get().catch(() => {}); // a noop: the session ends now
    },
  };
}

/** The first packet from the session that match accepts (others, such as pings, are skipped). */
async function nextMatching(s, match, what) {
  const seen = [];
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    let p;
    try {
      p = await s.next(Math.max(1, deadline - Date.now()));
    } catch (err) {
      throw new Error(`no ${what}: ${err.message}; got ${JSON.stringify(seen).slice(0, 500)}`);
    }
    if (match(p)) return p;
    seen.push(String(p.data).slice(0, 200));
  }
}

/** Parses a Socket.IO packet in an Engine.IO message: {type, nsp, id, data} or null. */
function sio(p) {
  if (p.binary) return null;
  const m = /^4(\d)(?:\d+-)?(\/[^,]*,)?(\d+)?(.*)$/s.exec(p.data);
  if (!m) return null;
  return { type: Number(m[1]), nsp: m[2] ? m[2].slice(0, -1) : "/", id: m[3] === undefined ? undefined : Number(m[3]), data: m[4] };
}

async function exchange(s, text, match, what) {
  await s.send([{ data: text, binary: false }]);
  return nextMatching(s, match, what);
}

const connected = (p) => typeof p.data === "string" && p.data.startsWith('40{"sid"');

async function waitLog(pred, message) {
  await waitFor(() => server.logs.some(pred), { timeout: WAIT_MS, message });
}

async function runHTTP(c, addr, sid = "") {
  const h = c.http;
  const n = Math.max(h.count ?? 1, 1);
  const headers = { "X-Forwarded-For": addr };
  if (h.websocket) {
    Object.assign(headers, { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==" });
  }
  for (const [k, v] of Object.entries(h.headers ?? {})) headers[k] = expand(v, sid);
  const results = await Promise.all(
    Array.from({ length: n }, () => request({ method: h.method ?? "GET", path: "/socket.io/?" + expand(h.query, sid), headers })),
  );
  let matched = 0;
  for (const [i, res] of results.entries()) {
    res.socket?.destroy();
    const text = res.body.toString("utf8");
    if (res.status === 200 && text.startsWith("0{")) {
      // A session the flood opened: closed again.
      const opened = JSON.parse(text.slice(1)).sid;
      await request({ method: "POST", path: `/socket.io/?EIO=4&transport=polling&sid=${opened}`, body: "1" });
    }
    if (res.status === c.expect.status) {
      matched++;
      if (c.expect.errorCode !== undefined) assert.equal(JSON.parse(text).code, c.expect.errorCode, `request ${i}: ${text}`);
    } else if (n === 1 || (res.status !== 200 && res.status !== 101)) {
      assert.fail(`request ${i} answered ${res.status} ${text.slice(0, 200)}, want ${c.expect.status}`);
    }
  }
  assert.ok(matched >= (c.expect.atLeast ?? n), `${matched} of ${n} requests answered ${c.expect.status}, want at least ${c.expect.atLeast ?? n}`);
}

async function run(c, transport, addr) {
  if (c.level === "none") return runHTTP(c, addr);
  const s = transport === "websocket" ? await wsSession(addr) : await pollSession(addr);
  try {
    if (c.level !== "engine") {
      await exchange(s, `40{"token":"${tokens.TOKEN}"}`, connected, "CONNECT");
      await exchange(s, '429000["join","catalogue"]', (p) => p.data === '439000[{"ok":true}]', "join ack");
    }
    let status = 200;
    if (c.http) {
      await runHTTP(c, addr, s.id);
    } else if (c.wsBytes) {
      s.ws._socket.write(hex(c.wsBytes));
    } else if (c.bodyShort) {
      status = 0; // a body that never ends gets no answer
      const body = expand(c.body);
      await new Promise((resolve, reject) => {
        const sock = net.connect(server.port, "127.0.0.1", () => {
          sock.end(
            `POST ${s.url} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: ${addr}\r\nContent-Type: text/plain\r\n` +
              `Content-Length: ${Buffer.byteLength(body) + c.bodyShort}\r\n\r\n${body}`,
          );
          resolve();
        });
        sock.on("error", reject);
      });
    } else if (c.body !== undefined) {
      status = await s.post(expand(c.body), c.chunked);
    } else {
      status = await s.send(packets(c));
    }
    if (c.hangup) s.close();
    if (transport === "polling" && !c.http && status !== 0) assert.equal(status, c.expect.status ?? 200, "the POST's status");

    const e = c.expect;
    if (e.close) {
      if (!c.hangup) {
        const code = await s.waitClosed();
        if (e.wsCode) assert.equal(code, e.wsCode, "WebSocket close code");
      }
      await waitLog((l) => l.msg === "engine close" && l.conn === s.id && l.reason === e.close, `engine close of ${s.id} with reason ${e.close}`);
      return;
    }
    if (e.ack) {
      const p = await nextMatching(s, (p) => sio(p)?.type === 3 && sio(p).id === e.ack.id, `ack ${e.ack.id}`);
      const [a] = JSON.parse(sio(p).data);
      if (e.ack.code) assert.equal(a.error?.code, e.ack.code, `ack ${p.data.slice(0, 300)}`);
      else assert.deepEqual(a, { ok: true });
    }
    if (e.connectError) {
      const nsp = expand(e.connectError.nsp);
      const p = await nextMatching(s, (p) => sio(p)?.type === 4 && sio(p).nsp === nsp, `connect_error of ${nsp.slice(0, 50)}`);
      const got = JSON.parse(sio(p).data);
      assert.equal(got.message, e.connectError.message);
      assert.equal(got.data?.code, e.connectError.code);
    }
    // Nothing closed: the session still works.
    if (c.level === "engine") await exchange(s, `40{"token":"${tokens.TOKEN}"}`, connected, "CONNECT");
    else await exchange(s, '429001["join","catalogue"]', (p) => p.data === '439001[{"ok":true}]', "join ack");
    assert.ok(!server.logs.some((l) => l.msg === "engine close" && l.conn === s.id), "the session was closed");
  } finally {
    await s.close();
  }
}

/** Emits the next control message (HTTP API) and checks the receiver gets it after exactly `delivers` others. */
async function control(delivers) {
  seq++;
  const res = await request({
    method: "POST",
    path: "/api/v1/emit",
    headers: { Authorization: `Bearer ${cat.env.CHORUS_API_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ rooms: ["catalogue"], event: "control", data: seq }),
  });
  assert.equal(res.status, 202, `control emit: ${res.body}`);
  const i = await waitFor(
    () => {
      const at = received.findIndex((e) => e.event === "control" && e.args[0] === seq);
      return at >= 0 ? at + 1 : 0;
    },
    { timeout: WAIT_MS, message: `control message ${seq}` },
  );
  const others = received.splice(0, i).length - 1;
  assert.equal(others, delivers, "messages of the case the control client received");
}

before(async () => {
  if (chorusOnly) return;
  server = await startServer({ env: cat.env, namespaces: cat.namespaces ?? [] });
  receiver = io(server.url, { forceNew: true, reconnection: false, transports: ["websocket"], auth: { token: tokens.TOKEN } });
  receiver.onAny((event, ...args) => received.push({ event, args }));
  await new Promise((resolve, reject) => {
    receiver.once("connect", resolve);
    receiver.once("connect_error", reject);
  });
  assert.deepEqual(await receiver.timeout(WAIT_MS).emitWithAck("join", "catalogue"), { ok: true });
});

after(() => receiver?.close());

let runs = 0;
for (const [i, c] of cat.cases.entries()) {
  for (const [j, transport] of transportsOf(c).entries()) {
    const addr = `10.${1 + j}.${Math.floor(i / 250)}.${1 + (i % 250)}`;
    runs++;
    test(`bad input (${transport}): ${c.name}`, { skip: chorusOnly, timeout: 30_000 }, async () => {
      await run(c, transport, addr);
      assert.equal(server.proc.exitCode, null, "chorus exited");
      const health = await request({ path: "/healthz" });
      assert.equal(health.status, 200, "/healthz");
      await control(c.expect.delivers ?? 0);
    });
  }
}

test(`the catalogue: ${cat.cases.length} cases, ${runs} runs`, { skip: chorusOnly }, () => {
  assert.ok(cat.cases.length >= 100);
});
