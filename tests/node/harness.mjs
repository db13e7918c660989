// Harness of the end-to-end suite: starts the server under test (chorus's binary, or the Node
// reference server when E2E_TARGET=reference), connects stock socket.io-client sockets and raw
// WebSockets, and cleans every one of them up even when a test fails.
//
//   CHORUS_BIN        chorus binary (default ./chorus at the repo root)
//   E2E_TARGET        "chorus" (default) or "reference"
//   E2E_SERVER_LOGS   1: copy the servers' output to this process's stderr
//   E2E_RUN_CHORUS_ONLY  1: run the chorus-only tests against the reference too (to see how Node behaves)

import { spawn } from "node:child_process";
import http from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, afterEach } from "node:test";
import { io } from "socket.io-client";
import WebSocket from "ws";

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const target = process.env.E2E_TARGET === "reference" ? "reference" : "chorus";
export const isReference = target === "reference";

/** Value for node:test's `skip` option on tests of chorus-only features: skipped against the reference only. */
export const chorusOnly = isReference && process.env.E2E_RUN_CHORUS_ONLY !== "1" ? "chorus-only feature: not checked against the Node reference server (E2E_TARGET=reference)" : false;

/** Client options per transport: websocket only, polling only, and polling upgraded to websocket. */
export const TRANSPORTS = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"] },
  upgrade: { transports: ["polling", "websocket"] },
};

const STARTUP_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 3_000;
const MAX_CAPTURED_CHARS = 64 * 1024;

const servers = new Set();
const clients = new Set();
const tempDirs = new Set();

let uniqueCounter = 0;
/** A name no other test of this process uses (rooms, events). */
export const unique = (prefix = "r") => `${prefix}-${process.pid}-${++uniqueCounter}`;

/**
 * Starts the server under test on 127.0.0.1 with a free port.
 * @param {{env?: Record<string,string>, args?: string[], namespaces?: string[], config?: string}} [opts]
 *   env: CHORUS_* variables; args: chorus flags (ignored by the reference server, which has no
 *   flags); namespaces: besides "/", exact names or patterns with "*" (chorus: a -config file;
 *   reference: CHORUS_NAMESPACES); config: a whole YAML configuration file (chorus only; instead of
 *   namespaces).
 * @returns {Promise<{url: string, port: number, proc: import("node:child_process").ChildProcess,
 *   logs: object[], exited: Promise<{code: number|null, signal: string|null}>, stop: () => Promise<void>}>}
 */
export async function startServer({ env = {}, args = [], namespaces = [], config } = {}) {
  // Only the CHORUS_* variables the test asks for: nothing inherited from the caller's shell.
  const childEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("CHORUS_")));
  Object.assign(childEnv, env);
  let cmd;
  let cmdArgs;
  if (isReference) {
    cmd = process.execPath;
    cmdArgs = [path.join(repoRoot, "tests/reference/server.mjs")];
    childEnv.CHORUS_ADDR = "127.0.0.1:0";
    if (namespaces.length) childEnv.CHORUS_NAMESPACES = namespaces.join(",");
  } else {
    cmd = path.resolve(repoRoot, process.env.CHORUS_BIN || "./chorus");
    cmdArgs = ["-addr", "127.0.0.1:0", "-log-format", "json", ...args];
    if (namespaces.length && config === undefined) {
      // Namespaces come only from the configuration file (docs/configuration.md).
      config = `namespaces:\n${namespaces.map((n) => `  - name: ${JSON.stringify(n)}\n`).join("")}`;
    }
    if (config !== undefined) {
      const dir = mkdtempSync(path.join(os.tmpdir(), "chorus-e2e-"));
      tempDirs.add(dir);
      const file = path.join(dir, "chorus.yaml");
      writeFileSync(file, config);
      cmdArgs.push("-config", file);
    }
  }

  const proc = spawn(cmd, cmdArgs, { cwd: repoRoot, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  const logs = [];
  let captured = "";
  const exited = new Promise((resolve) => {
    proc.once("exit", (code, signal) => resolve({ code, signal }));
    proc.once("error", (err) => resolve({ code: null, signal: null, error: err }));
  });
  const server = { proc, logs, exited, stop: () => stopServer(server) };
  servers.add(server);

  let onListening;
  const listening = new Promise((resolve) => (onListening = resolve));
  const consume = (stream, name) => {
    let partial = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      if (process.env.E2E_SERVER_LOGS === "1") process.stderr.write(chunk);
      captured = (captured + chunk).slice(-MAX_CAPTURED_CHARS);
      partial += chunk;
      const lines = partial.split("\n");
      partial = lines.pop();
      for (const line of lines) {
        if (line.trim() === "") continue;
        let entry;
        try {
          entry = JSON.parse(line);
        } catch {
          entry = { raw: line, stream: name };
        }
        logs.push(entry);
        if (entry && entry.msg === "listening" && typeof entry.addr === "string") onListening(entry.addr);
      }
    });
  };
  consume(proc.stderr, "stderr");
  consume(proc.stdout, "stdout");

  let timer;
  const outcome = await Promise.race([
    listening.then((addr) => ({ addr })),
    exited.then((e) => ({ exited: e })),
    new Promise((resolve) => (timer = setTimeout(() => resolve({ timeout: true }), STARTUP_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
  if (!outcome.addr) {
    await stopServer(server);
    const why = outcome.timeout
      ? `no {"msg":"listening"} JSON line within ${STARTUP_TIMEOUT_MS} ms`
      : outcome.exited.error
        ? `could not start: ${outcome.exited.error.message}`
        : `exited with code ${outcome.exited.code} signal ${outcome.exited.signal} before listening`;
    throw new Error(`${target} server (${cmd} ${cmdArgs.join(" ")}): ${why}\n--- captured output ---\n${captured}`);
  }
  const port = Number(outcome.addr.slice(outcome.addr.lastIndexOf(":") + 1));
  server.port = port;
  server.url = `http://127.0.0.1:${port}`;
  return server;
}

async function stopServer(server) {
  const { proc } = server;
  if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) {
    proc.kill("SIGTERM");
    let timer;
    const gone = await Promise.race([
      server.exited.then(() => true),
      new Promise((resolve) => (timer = setTimeout(() => resolve(false), STOP_GRACE_MS))),
    ]);
    clearTimeout(timer);
    if (!gone) {
      proc.kill("SIGKILL");
      await server.exited;
    }
  }
  servers.delete(server);
}

/** Closes every client socket the test opened. Registered for every test by this module. */
export function closeClients() {
  for (const c of clients) {
    try {
      c.close();
    } catch {
      // already closed
    }
  }
  clients.clear();
}

afterEach(closeClients);
after(async () => {
  closeClients();
  await Promise.all([...servers].map(stopServer));
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});
// Last resort if the test process dies without running its hooks.
process.on("exit", () => {
  for (const s of servers) s.proc.kill("SIGKILL");
});

/**
 * Opens a stock socket.io-client socket (own Manager, no reconnection unless asked) and resolves
 * once it is connected; rejects with the connect_error, or after timeoutMs. onSocket(socket) runs
 * right after the socket is created.
 */
export function connect(url, opts = {}, { timeoutMs = 5_000, onSocket } = {}) {
  const socket = io(url, { forceNew: true, reconnection: false, timeout: timeoutMs, ...opts });
  clients.add(socket);
  onSocket?.(socket); // before any event: lets a test watch the engine from the start
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`connect to ${url} (${JSON.stringify(opts)}) timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const onConnect = () => {
      cleanup();
      resolve(socket);
    };
    const onError = (err) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
    };
    socket.on("connect", onConnect);
    socket.on("connect_error", onError);
  });
}

/** Opens a socket that must be refused: resolves with the connect_error, rejects if it connects. */
export async function connectRefused(url, opts = {}, { timeoutMs = 5_000 } = {}) {
  try {
    const socket = await connect(url, opts, { timeoutMs });
    socket.close();
  } catch (err) {
    if (/timed out/.test(err.message)) throw err;
    return err;
  }
  throw new Error(`connection to ${url} was accepted, expected connect_error`);
}

/** Emits with an acknowledgement and resolves with the server's reply (socket.timeout().emitWithAck). */
export function ack(socket, event, ...args) {
  return socket.timeout(5_000).emitWithAck(event, ...args);
}

/**
 * Waits until predicate() is truthy, checking every intervalMs, at most timeoutMs.
 * Resolves with the predicate's value; rejects with `message` (or a default) on timeout.
 */
export async function waitFor(predicate, { timeout = 5_000, interval = 10, message } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() >= deadline) {
      throw new Error(`waitFor: ${message ?? predicate.toString()} not true within ${timeout} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(interval, Math.max(1, deadline - Date.now()))));
  }
}

/**
 * Splits the arguments a stock socket.io-client listener gets into the event's own and its
 * connection-state recovery offset: when the server gave the socket a pid (recovery on, the
 * client's private `_pid`), each recoverable event carries its offset as one more, last, string
 * argument (docs/protocol.md). Reserved events are left alone.
 */
export function splitOffset(socket, event, args) {
  const reserved = event === "connect" || event === "connect_error" || event === "disconnect";
  if (!reserved && socket?._pid && args.length > 1 && typeof args.at(-1) === "string") {
    return { args: args.slice(0, -1), offset: args.at(-1) };
  }
  return { args, offset: undefined };
}

/**
 * Records every event a socket receives: [{event, args, at}], args without the recovery offset,
 * which is in `offset` (not enumerable: deepEqual of entries compares what the application sees).
 */
export function record(socket) {
  const events = [];
  socket.onAny((event, ...args) => {
    const { args: own, offset } = splitOffset(socket, event, args);
    events.push(Object.defineProperty({ event, args: own, at: Date.now() }, "offset", { value: offset, enumerable: false }));
  });
  return events;
}

/**
 * Resolves with the args of the next `event` on an emitter (Node, ws or socket.io-client; for the
 * latter without the recovery offset, see splitOffset), or rejects after timeoutMs. An "error"
 * event rejects too, unless `event` is "error".
 */
export function nextEvent(emitter, event, timeoutMs = 5_000) {
  return new Promise((resolve, reject) => {
    const onEvent = (...args) => {
      cleanup();
      resolve(splitOffset(emitter, event, args).args);
    };
    const onError = (err) => {
      cleanup();
      reject(err);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no "${event}" within ${timeoutMs} ms`));
    }, timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      emitter.off(event, onEvent);
      if (event !== "error") emitter.off("error", onError);
    };
    emitter.on(event, onEvent);
    if (event !== "error") emitter.on("error", onError);
  });
}

/**
 * A raw Engine.IO v4 WebSocket client, for what the stock client cannot do (stop answering pings,
 * send reserved event names). Messages are kept in `messages`; `next(pred)` waits for one.
 */
export async function rawWebSocket(port, { timeoutMs = 5_000 } = {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`);
  clients.add({ close: () => ws.terminate() });
  const messages = [];
  let seen = 0;
  const waiters = new Set();
  const closed = new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: String(reason), at: Date.now() })));
  ws.on("message", (data, isBinary) => {
    messages.push(isBinary ? data : data.toString());
    for (const w of [...waiters]) w();
  });
  ws.on("error", () => {}); // the close event says enough
  closed.then(() => {
    for (const w of [...waiters]) w();
  });
  await nextEvent(ws, "open", timeoutMs);
  const raw = {
    ws,
    messages,
    closed,
    send: (text) => ws.send(text),
    /** Waits for the next message (after the ones already consumed by next) matching pred. */
    next(pred = () => true, ms = timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = () => {
          while (seen < messages.length) {
            const m = messages[seen++];
            if (pred(m)) {
              done();
              resolve(m);
              return;
            }
          }
          if (ws.readyState === WebSocket.CLOSED) {
            done();
            reject(new Error(`raw websocket closed; messages so far: ${JSON.stringify(messages.map(String)).slice(0, 500)}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`raw websocket: no matching message within ${ms} ms; got ${JSON.stringify(messages.map(String)).slice(0, 500)}`));
        }, ms);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };
  return raw;
}

/** Plain HTTP request to the server; resolves with {status, headers, text, json}. */
export async function httpRequest(url, { method = "GET", headers = {}, body, timeoutMs = 5_000 } = {}) {
  const res = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** Replaces every binary value (Buffer, ArrayBuffer, typed array) by {$bin: hex}, for deep comparison. */
export function binToHex(value) {
  if (Buffer.isBuffer(value)) return { $bin: value.toString("hex") };
  if (value instanceof ArrayBuffer) return { $bin: Buffer.from(value).toString("hex") };
  if (ArrayBuffer.isView(value)) return { $bin: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("hex") };
  if (Array.isArray(value)) return value.map(binToHex);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, binToHex(v)]));
  }
  return value;
}

/**
 * POSTs body with Transfer-Encoding: chunked (no Content-Length), chunkSize characters at a time;
 * resolves with the response {status, text}. A connection closed by the server after it answered
 * (e.g. 413 while the body is still being written) still resolves with that answer.
 */
export function chunkedPost(port, path, body, { chunkSize = 1024, headers = {}, timeoutMs = 10_000 } = {}) {
  return new Promise((resolve, reject) => {
    let status;
    let text = "";
    const req = http.request(
      { host: "127.0.0.1", port, path, method: "POST", headers: { "content-type": "text/plain;charset=UTF-8", ...headers } },
      (res) => {
        status = res.statusCode;
        res.setEncoding("utf8");
        res.on("data", (chunk) => (text += chunk));
        res.on("end", () => resolve({ status, text }));
        res.on("error", () => resolve({ status, text }));
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`chunked POST ${path}: no answer within ${timeoutMs} ms`)));
    req.on("error", (err) => {
      if (status !== undefined) resolve({ status, text });
      else reject(err);
    });
    for (let i = 0; i < body.length; i += chunkSize) req.write(body.slice(i, i + chunkSize));
    req.end();
  });
}
