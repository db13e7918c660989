// Reference server: stock Node socket.io 4.8 speaking exactly chorus's client protocol
// (docs/protocol.md). The end-to-end suite runs against it (E2E_TARGET=reference) to check
// the tests themselves against Node's behaviour, and the benchmarks use it as the baseline.
//
// Configuration comes from the environment, with chorus's names:
//
//   CHORUS_ADDR           host:port to listen on (port 0 picks a free port)   default 127.0.0.1:3000
//   CHORUS_API_KEY        Bearer key of POST /api/v1/emit; empty disables the API (401)   default ""
//   CHORUS_PING_INTERVAL  Go duration ("25s", "300ms")                        default 25s
//   CHORUS_PING_TIMEOUT   Go duration                                         default 20s
//   CHORUS_MAX_PAYLOAD    bytes: largest WebSocket message, polling POST body and API body   default 1000000
//   CHORUS_TRANSPORTS     comma-separated: polling,websocket                  default polling,websocket
//   CHORUS_NAMESPACES     comma-separated extra namespaces, exact ("/chat") or with "*" ("/tenant-*");
//                         stands in for the namespaces section of chorus's configuration file
//   CHORUS_REDIS_URL      joins a cluster through @socket.io/redis-adapter 8.3 (redis://host:port)   default "" (one node)
//   CHORUS_REDIS_PREFIX   the adapter's key prefix                            default socket.io
//
// Once listening it prints one JSON line to stderr: {"msg":"listening","addr":"127.0.0.1:PORT"}.
// SIGTERM and SIGINT close the server and exit 0 (no drain window: that is chorus's own feature).

import http from "node:http";
import { Server } from "socket.io";
import * as sioParser from "socket.io-parser";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const RESERVED_EVENTS = new Set([
  "connect",
  "connect_error",
  "disconnect",
  "disconnecting",
  "newListener",
  "removeListener",
]);
const MAX_ROOM_BYTES = 128;

// ---------------------------------------------------------------------------------------------
// Configuration

const DURATION_UNITS = { ns: 1e-6, us: 1e-3, "µs": 1e-3, "μs": 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 };

/** Parses a Go duration string ("300ms", "1m30s", "1.5s") into milliseconds. */
function parseGoDuration(text) {
  const s = String(text).trim();
  if (s === "0") return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/gy;
  let total = 0;
  let matched = 0;
  let m;
  while ((m = re.exec(s)) !== null) {
    total += Number(m[1]) * DURATION_UNITS[m[2]];
    matched = re.lastIndex;
  }
  if (s === "" || matched !== s.length) throw new Error(`invalid duration ${JSON.stringify(text)}`);
  return total;
}

function loadConfig(env) {
  const errors = [];
  const pick = (name, def, parse) => {
    const raw = env[name];
    if (raw === undefined || raw === "") return def;
    try {
      return parse(raw);
    } catch (err) {
      errors.push(`${name}: ${err.message}`);
      return def;
    }
  };
  const positiveInt = (raw) => {
    if (!/^\d+$/.test(raw) || Number(raw) <= 0) throw new Error(`not a positive integer: ${JSON.stringify(raw)}`);
    return Number(raw);
  };
  const cfg = {
    addr: pick("CHORUS_ADDR", "127.0.0.1:3000", (raw) => {
      const i = raw.lastIndexOf(":");
      const port = Number(raw.slice(i + 1));
      if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`not host:port: ${raw}`);
      return { host: raw.slice(0, i).replace(/^\[|\]$/g, "") || "0.0.0.0", port };
    }),
    apiKey: env.CHORUS_API_KEY ?? "",
    redisURL: env.CHORUS_REDIS_URL ?? "",
    redisPrefix: env.CHORUS_REDIS_PREFIX || "socket.io",
    pingInterval: pick("CHORUS_PING_INTERVAL", 25_000, parseGoDuration),
    pingTimeout: pick("CHORUS_PING_TIMEOUT", 20_000, parseGoDuration),
    maxPayload: pick("CHORUS_MAX_PAYLOAD", 1_000_000, positiveInt),
    transports: pick("CHORUS_TRANSPORTS", ["polling", "websocket"], (raw) => {
      const list = raw.split(",").map((t) => t.trim()).filter(Boolean);
      for (const t of list) if (t !== "polling" && t !== "websocket") throw new Error(`unknown transport ${t}`);
      if (list.length === 0) throw new Error("no transport");
      return list;
    }),
    namespaces: pick("CHORUS_NAMESPACES", [], (raw) => {
      const list = raw.split(",").map((n) => n.trim()).filter(Boolean);
      for (const n of list) if (!n.startsWith("/")) throw new Error(`namespace must start with "/": ${n}`);
      return list;
    }),
  };
  if (errors.length) throw new Error(`invalid configuration:\n  ${errors.join("\n  ")}`);
  return cfg;
}

// ---------------------------------------------------------------------------------------------
// Parser: stock socket.io-parser drops the connection on an event named like a reserved one.
// chorus answers such an event with reserved_event and keeps the connection, so the decoder
// hands it on under a private symbol instead of throwing.

const RESERVED_EVENT = Symbol("reserved event");

class Decoder extends sioParser.Decoder {
  decodeString(str) {
    this.reservedName = undefined;
    const packet = super.decodeString(str);
    if (this.reservedName !== undefined) {
      const isEvent = packet.type === sioParser.PacketType.EVENT || packet.type === sioParser.PacketType.BINARY_EVENT;
      packet.data[0] = isEvent ? RESERVED_EVENT : this.reservedName;
    }
    return packet;
  }

  tryParse(str) {
    const value = super.tryParse(str);
    if (Array.isArray(value) && typeof value[0] === "string" && RESERVED_EVENTS.has(value[0])) {
      this.reservedName = value[0];
      value[0] = 0; // a placeholder the stock validation accepts; decodeString puts the symbol in
    }
    return value;
  }
}

const parser = { ...sioParser, Decoder };

// ---------------------------------------------------------------------------------------------
// Client protocol: join / leave / publish

const ok = { ok: true };
const fail = (code, message) => ({ ok: false, error: { code, message } });
const ROOM_ERROR = fail("invalid_room", `room must be a non-empty string of at most ${MAX_ROOM_BYTES} bytes`);

/** Returns an error reply for a bad room, or undefined when it is valid. */
function checkRoom(room) {
  if (room === undefined || room === null || room === "") return ROOM_ERROR;
  if (typeof room !== "string") return fail("invalid_argument", "room must be a string");
  if (Buffer.byteLength(room, "utf8") > MAX_ROOM_BYTES) return ROOM_ERROR;
  return undefined;
}

const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !Buffer.isBuffer(v) && !(v instanceof ArrayBuffer);

const handlers = {
  join(socket, [room]) {
    const bad = checkRoom(room);
    if (bad) return bad;
    socket.join(room);
    return ok;
  },
  leave(socket, [room]) {
    const bad = checkRoom(room);
    if (bad) return bad;
    socket.leave(room);
    return ok;
  },
  publish(socket, [req]) {
    if (!isPlainObject(req)) return fail("invalid_argument", "publish takes an object {room, event, data}");
    const bad = checkRoom(req.room);
    if (bad) return bad;
    if (typeof req.event !== "string" || req.event === "") {
      return fail("invalid_argument", "event must be a non-empty string");
    }
    if (RESERVED_EVENTS.has(req.event)) return fail("reserved_event", `"${req.event}" is a reserved event name`);
    socket.to(req.room).emit(req.event, req.data);
    return ok;
  },
};

function onConnection(socket) {
  // One listener for every event keeps the per-socket order: it runs synchronously, in the
  // order packets were decoded.
  socket.onAny((event, ...args) => {
    let ack;
    if (typeof event === "function") {
      ack = event; // "42N[]" has no event name at all
      event = undefined;
    } else if (typeof args[args.length - 1] === "function") {
      ack = args.pop();
    }
    let reply;
    if (event === RESERVED_EVENT) {
      reply = fail("reserved_event", "event name is reserved");
    } else if (typeof event === "string" && Object.hasOwn(handlers, event)) {
      try {
        reply = handlers[event](socket, args);
      } catch {
        reply = fail("internal", "internal error");
      }
    } else {
      reply = fail("unknown_event", "unknown event");
    }
    if (ack) ack(reply);
  });
}

// ---------------------------------------------------------------------------------------------
// Namespaces

function namespaceMatcher(names) {
  const exact = new Set(["/"]);
  const patterns = [];
  for (const n of names) {
    if (n.includes("*")) {
      const escaped = n.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&"));
      patterns.push(new RegExp(`^${escaped.join(".*")}$`));
    } else {
      exact.add(n);
    }
  }
  return { exact, patterns, matches: (n) => exact.has(n) || patterns.some((re) => re.test(n)) };
}

// ---------------------------------------------------------------------------------------------
// HTTP: health and the backend API

function sendJSON(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

const apiError = (res, status, code, message) => sendJSON(res, status, { error: { code, message } });

function readBody(req, limit) {
  return new Promise((resolve) => {
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > limit) {
      req.resume();
      resolve({ tooLarge: true });
      return;
    }
    const chunks = [];
    let size = 0;
    let done = false;
    req.on("data", (chunk) => {
      if (done) return;
      size += chunk.length;
      if (size > limit) {
        done = true;
        resolve({ tooLarge: true });
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (!done) {
        done = true;
        resolve({ body: Buffer.concat(chunks) });
      }
    });
    req.on("error", () => {
      if (!done) {
        done = true;
        resolve({ aborted: true });
      }
    });
  });
}

const isStringArray = (v) => Array.isArray(v) && v.every((s) => typeof s === "string");

async function handleEmit(req, res, cfg, io, namespaces) {
  const auth = req.headers.authorization ?? "";
  if (cfg.apiKey === "" || auth !== `Bearer ${cfg.apiKey}`) {
    return apiError(res, 401, "unauthorized", "missing or wrong API key");
  }
  if (req.method !== "POST") {
    res.setHeader("allow", "POST");
    return apiError(res, 405, "method_not_allowed", "use POST");
  }
  const { body, tooLarge, aborted } = await readBody(req, cfg.maxPayload);
  if (aborted) return undefined;
  if (tooLarge) {
    res.setHeader("connection", "close");
    return apiError(res, 413, "payload_too_large", `body is larger than ${cfg.maxPayload} bytes`);
  }
  let msg;
  try {
    msg = JSON.parse(body.toString("utf8"));
  } catch {
    return apiError(res, 400, "bad_json", "body is not valid JSON");
  }
  if (!isPlainObject(msg)) return apiError(res, 400, "bad_json", "body must be a JSON object");
  const { namespace = "/", rooms = [], except = [], event, data = null, volatile = false } = msg;
  if (typeof namespace !== "string" || !isStringArray(rooms) || !isStringArray(except) || typeof volatile !== "boolean") {
    return apiError(res, 400, "bad_json", "body does not have the shape {namespace, rooms, except, event, data, volatile}");
  }
  if (event !== undefined && typeof event !== "string") return apiError(res, 400, "bad_json", "event must be a string");
  if (!event || RESERVED_EVENTS.has(event)) {
    return apiError(res, 400, "invalid_event", "event must be a non-empty, non-reserved name");
  }
  if (!namespaces.matches(namespace)) return apiError(res, 400, "unknown_namespace", `no namespace ${namespace}`);
  const nsp = io._nsps.get(namespace);
  if (nsp) {
    // A pattern namespace nobody connected to yet has no members: nothing to send.
    let op = rooms.length ? nsp.to(rooms) : nsp;
    if (except.length) op = op.except(except);
    if (volatile) op = op.volatile;
    op.emit(event, data);
  }
  return sendJSON(res, 202, { ok: true });
}

// ---------------------------------------------------------------------------------------------

async function main() {
  let cfg;
  try {
    cfg = loadConfig(process.env);
  } catch (err) {
    process.stderr.write(`${JSON.stringify({ msg: "config", level: "ERROR", err: err.message })}\n`);
    process.exit(2);
  }
  const namespaces = namespaceMatcher(cfg.namespaces);

  const httpServer = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz" || path === "/readyz") return sendJSON(res, 200, { status: "ok" });
    if (path === "/api/v1/emit") {
      handleEmit(req, res, cfg, io, namespaces).catch(() => {
        if (!res.headersSent) apiError(res, 500, "internal", "internal error");
      });
      return undefined;
    }
    if (path.startsWith("/api/")) {
      if (cfg.apiKey === "" || req.headers.authorization !== `Bearer ${cfg.apiKey}`) {
        return apiError(res, 401, "unauthorized", "missing or wrong API key");
      }
      return apiError(res, 404, "not_found", "not found");
    }
    return apiError(res, 404, "not_found", "not found");
  });

  const io = new Server(httpServer, {
    parser,
    pingInterval: cfg.pingInterval,
    pingTimeout: cfg.pingTimeout,
    maxHttpBufferSize: cfg.maxPayload,
    transports: cfg.transports,
    serveClient: false,
  });
  if (cfg.redisURL !== "") {
    // Two connections, as the adapter's documentation sets it up: one publishes, one subscribes.
    const pub = createClient({ url: cfg.redisURL });
    const sub = pub.duplicate();
    for (const c of [pub, sub]) c.on("error", (err) => process.stderr.write(`${JSON.stringify({ msg: "redis", level: "ERROR", err: err.message })}\n`));
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub, { key: cfg.redisPrefix }));
  }

  io.of("/").on("connection", onConnection);
  for (const name of namespaces.exact) if (name !== "/") io.of(name).on("connection", onConnection);
  for (const re of namespaces.patterns) io.of(re).on("connection", onConnection);

  httpServer.listen(cfg.addr.port, cfg.addr.host, () => {
    const { address, port } = httpServer.address();
    const host = address.includes(":") ? `[${address}]` : address;
    process.stderr.write(`${JSON.stringify({ msg: "listening", addr: `${host}:${port}` })}\n`);
  });
  httpServer.on("error", (err) => {
    process.stderr.write(`${JSON.stringify({ msg: "listen failed", level: "ERROR", err: err.message })}\n`);
    process.exit(1);
  });

  const shutdown = () => {
    io.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
}

await main();
