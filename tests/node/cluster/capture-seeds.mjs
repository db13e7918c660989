// Records the messages stock Node peers publish to Redis — socket.io 4.8 with
// @socket.io/redis-adapter 8.3 (two servers, so that requests get answers) and
// @socket.io/redis-emitter 5.1 — and prints them as lines "<kind> <channel> <hex>", the seed
// corpus of chorus's fuzz targets and the fixtures of its codec tests (adapter/testdata/
// node-messages.txt):
//
//   node tests/node/cluster/capture-seeds.mjs > adapter/testdata/node-messages.txt
//
// kind is broadcast, request or response, from the channel the message was published on.

import { createServer } from "node:http";
import { Server } from "socket.io";
import { io as connect } from "socket.io-client";
import { createAdapter } from "@socket.io/redis-adapter";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";
import { startRedis } from "./redis.mjs";

const PREFIX = "seed";
const redis = await startRedis();
const clients = [];
const newClient = async () => {
  const c = createClient({ url: redis.url });
  c.on("error", () => {});
  await c.connect();
  clients.push(c);
  return c;
};

const recorded = [];
const spy = await newClient();
await spy.pSubscribe(`${PREFIX}*`, (message, channel) => recorded.push({ channel: channel.toString(), message }), true);

async function peer() {
  const pub = await newClient();
  const sub = await newClient();
  const http = createServer();
  const io = new Server(http, { adapter: createAdapter(pub, sub, { key: PREFIX, requestsTimeout: 1000 }) });
  await new Promise((r) => http.listen(0, "127.0.0.1", r));
  io.on("connection", (s) => {
    s.data = { user: "u", n: 1, nested: { deep: [1, "two", null] } };
    s.join("room");
  });
  io.on("ping", (arg, cb) => cb({ pong: arg }));
  return { io, http, port: http.address().port };
}

const a = await peer();
const b = await peer();
const sock = connect(`http://127.0.0.1:${b.port}`, { transports: ["websocket"], forceNew: true });
sock.on("question", (arg, cb) => cb(Buffer.from([1, 2, 3]), "second"));
await new Promise((r) => sock.on("connect", r));
await new Promise((r) => setTimeout(r, 100));

const io = a.io;
io.emit("all", 1, "two", { three: [3.5, true, null] });
io.to("room").emit("room", Buffer.from([0, 1, 255]), { bin: Buffer.alloc(300, 7), list: [Buffer.from("x")] });
io.to("room").except(sock.id).emit("except", new Date(0), 2 ** 40, -17, 1.25, "é😀");
io.to(["room", "other"]).volatile.emit("volatile", {});
await io.timeout(1000).emitWithAck("question", "q");
await io.fetchSockets();
io.in("room").socketsJoin(["joined", "also"]);
io.socketsLeave("also");
await io.serverSideEmitWithAck("ping", "p");
io.serverSideEmit("hello", { world: true });
await io.of("/").adapter.allRooms();
io.in("nobody").disconnectSockets(true);

const emitter = new Emitter(await newClient(), { key: PREFIX });
emitter.to("room").emit("fromEmitter", Buffer.from("emitter"), { a: 1 });
emitter.emit("emitterAll");
emitter.of("/admin").except("x").emit("nsp", 1);
emitter.in("room").socketsJoin("e");
emitter.socketsLeave("e");
emitter.in("nobody").disconnectSockets();
emitter.serverSideEmit("emitterHello", 1, "two");

await new Promise((r) => setTimeout(r, 300));
for (const { channel, message } of recorded) {
  const kind = channel.startsWith(`${PREFIX}-request#`) ? "request" : channel.startsWith(`${PREFIX}-response#`) ? "response" : "broadcast";
  process.stdout.write(`${kind} ${channel} ${Buffer.from(message).toString("hex")}\n`);
}

sock.close();
for (const p of [a, b]) {
  p.io.close();
}
for (const c of clients) await c.quit().catch(() => {});
await redis.close();
