// A stock Node peer for chorus's cluster tests (adapter/node_interop_test.go): a socket.io 4.8
// server with @socket.io/redis-adapter 8.3 on REDIS_URL / PREFIX, two stock socket.io-client
// sockets connected to it, and a @socket.io/redis-emitter 5.1. It is driven by JSON lines on stdin
// ({id, op, ...}) and answers each with a JSON line on stdout ({id, result} or {id, error}); its
// first line is {ready: true, clients: {name: socket id}}.
//
// Binary values travel in JSON as {"$bin": "<hex>"} both ways.

import { createServer } from "node:http";
import readline from "node:readline";
import { Server } from "socket.io";
import { io as connect } from "socket.io-client";
import { createAdapter } from "@socket.io/redis-adapter";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";

const { REDIS_URL, PREFIX } = process.env;
if (!REDIS_URL || !PREFIX) throw new Error("REDIS_URL and PREFIX are required");

const redisClients = [];
async function redisClient() {
  const c = createClient({ url: REDIS_URL });
  c.on("error", () => {});
  await c.connect();
  redisClients.push(c);
  return c;
}

const toWire = (v) => {
  if (Buffer.isBuffer(v)) return { $bin: v.toString("hex") };
  if (v instanceof ArrayBuffer) return { $bin: Buffer.from(v).toString("hex") };
  if (ArrayBuffer.isView(v)) return { $bin: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("hex") };
  if (Array.isArray(v)) return v.map(toWire);
  if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toWire(x)]));
  return v;
};
const fromWire = (v) => {
  if (Array.isArray(v)) return v.map(fromWire);
  if (v !== null && typeof v === "object") {
    if (typeof v.$bin === "string") return Buffer.from(v.$bin, "hex");
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fromWire(x)]));
  }
  return v;
};

const http = createServer();
const io = new Server(http, { adapter: createAdapter(await redisClient(), await redisClient(), { key: PREFIX, requestsTimeout: 3000 }) });
await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
const port = http.address().port;

const serverSide = []; // server-side events received from other nodes
io.on("hello", (...args) => serverSide.push({ event: "hello", args: toWire(args) }));
io.on("emitterHello", (...args) => serverSide.push({ event: "emitterHello", args: toWire(args) }));
io.on("ping", (arg, cb) => cb({ pong: "node", arg }));
io.on("connection", (socket) => {
  socket.data = { node: true, name: socket.handshake.auth.name };
  socket.join(socket.handshake.auth.rooms ?? []);
});

const clients = {}; // name → {socket, events}
for (const [name, rooms] of [["n1", ["team"]], ["n2", ["other"]]]) {
  const socket = connect(`http://127.0.0.1:${port}`, { transports: ["websocket"], forceNew: true, reconnection: false, auth: { name, rooms } });
  const entry = { socket, events: [], disconnected: null };
  socket.onAny((event, ...args) => {
    const last = args[args.length - 1];
    if (typeof last === "function") {
      args.pop();
      last(`ack-node-${name}`);
    }
    entry.events.push({ event, args: toWire(args) });
  });
  socket.on("disconnect", (reason) => (entry.disconnected = reason));
  clients[name] = entry;
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
}
const emitter = new Emitter(await redisClient(), { key: PREFIX });

const target = (op) => {
  let t = io;
  if (op.rooms?.length) t = t.to(op.rooms);
  if (op.except?.length) t = t.except(op.except);
  return t;
};
const emitterTarget = (op) => {
  let t = emitter;
  if (op.rooms?.length) t = t.to(op.rooms);
  if (op.except?.length) t = t.except(op.except);
  return t;
};

const ops = {
  state() {
    const out = {};
    for (const [name, { socket, events, disconnected }] of Object.entries(clients)) {
      const server = io.of("/").sockets.get(socket.id);
      out[name] = { id: socket.id, events, disconnected, rooms: server ? [...server.rooms] : null };
    }
    return { clients: out, serverSide };
  },
  async serverCount() {
    return io.of("/").adapter.serverCount();
  },
  async fetchSockets(op) {
    const sockets = await target(op).fetchSockets();
    return sockets.map((s) => ({ id: s.id, rooms: [...s.rooms], data: s.data, query: s.handshake.query }));
  },
  socketsJoin(op) {
    target(op).socketsJoin(op.join);
  },
  socketsLeave(op) {
    target(op).socketsLeave(op.leave);
  },
  disconnectSockets(op) {
    target(op).disconnectSockets(op.close);
  },
  emit(op) {
    target(op).emit(op.event, ...fromWire(op.args ?? []));
  },
  async emitWithAck(op) {
    return toWire(await target(op).timeout(op.timeout ?? 2000).emitWithAck(op.event, ...fromWire(op.args ?? [])));
  },
  serverSideEmit(op) {
    io.serverSideEmit(op.event, ...(op.args ?? []));
  },
  async serverSideEmitWithAck(op) {
    return io.serverSideEmitWithAck(op.event, ...(op.args ?? []));
  },
  emitterEmit(op) {
    emitterTarget(op).emit(op.event, ...fromWire(op.args ?? []));
  },
  emitterSocketsJoin(op) {
    emitterTarget(op).socketsJoin(op.join);
  },
  emitterSocketsLeave(op) {
    emitterTarget(op).socketsLeave(op.leave);
  },
  emitterDisconnectSockets(op) {
    emitterTarget(op).disconnectSockets(op.close);
  },
  emitterServerSideEmit(op) {
    emitter.serverSideEmit(op.event, ...(op.args ?? []));
  },
  async close() {
    for (const { socket } of Object.values(clients)) socket.close();
    io.close();
    for (const c of redisClients) await c.quit().catch(() => {});
    return true;
  },
};

const send = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
send({ ready: true, port, clients: Object.fromEntries(Object.entries(clients).map(([n, c]) => [n, c.socket.id])) });

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", async (line) => {
  const op = JSON.parse(line);
  try {
    const result = await ops[op.op](op);
    send({ id: op.id, result: result ?? null });
    if (op.op === "close") process.exit(0);
  } catch (err) {
    send({ id: op.id, error: String(err?.message ?? err), responses: toWire(err?.responses) });
  }
});
rl.on("close", () => process.exit(0));
