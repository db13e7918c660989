// Delivery guarantees on two chorus nodes sharing a redis-server: a publish retried on the other
// node after a reconnection is a duplicate (ids live in Redis), and an acknowledged emit from the
// HTTP API of one node collects the acks of stock clients on both.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { ack, chorusOnly, connect, httpRequest, startServer, TRANSPORTS, unique, waitFor } from "./harness.mjs";
import { startRedis } from "./cluster/redis.mjs";
import { ackSchedule, startWsProxy } from "./wsproxy.mjs";

const KEY = "cluster-delivery-key";
const T = { timeout: 30_000 };
const N = 40;

describe("delivery guarantees across two chorus nodes", { skip: chorusOnly }, () => {
  let redis;
  let nodeA;
  let nodeB;

  before(async () => {
    redis = await startRedis();
    const env = { CHORUS_REDIS_URL: redis.url, CHORUS_REDIS_PREFIX: unique("delivery"), CHORUS_API_KEY: KEY };
    [nodeA, nodeB] = await Promise.all([startServer({ env }), startServer({ env })]);
    // Both nodes subscribed: a broadcast from one reaches the other.
    const [a, b] = await Promise.all([connect(nodeA.url, TRANSPORTS.websocket), connect(nodeB.url, TRANSPORTS.websocket)]);
    const room = unique();
    assert.deepEqual(await ack(b, "join", room), { ok: true });
    let heard = false;
    b.on("probe", () => (heard = true));
    await waitFor(async () => {
      await ack(a, "publish", { room, event: "probe", data: 0 });
      return heard;
    }, { message: "node B hears node A", interval: 50 });
    a.close();
    b.close();
  });

  after(async () => {
    await nodeA?.stop();
    await nodeB?.stop();
    await redis?.close();
  });

  test("a publish whose ack was lost, retried on the other node after reconnecting, is delivered once", T, async () => {
    const room = unique();
    const got = [];
    for (const url of [nodeA.url, nodeB.url]) {
      for (const opts of [TRANSPORTS.websocket, TRANSPORTS.polling]) {
        const r = await connect(url, opts);
        assert.deepEqual(await ack(r, "join", room), { ok: true });
        const seen = [];
        r.on("m", (i) => seen.push(i));
        got.push(seen);
      }
    }
    // The sender reaches the nodes through a proxy. At messages 8, 16 and 30 the ack is lost with
    // the connection and the proxy now leads to the other node, where the client reconnects and
    // re-sends the publish; message 23's ack is merely dropped (the client retries after
    // ackTimeout, on the same node).
    const nodes = [nodeA, nodeB];
    let current = 0;
    const fate = ackSchedule({ 8: ["cut"], 16: ["cut"], 23: ["drop"], 30: ["cut"] });
    const proxy = await startWsProxy({
      target: nodeA.url,
      onClientFrame: fate.onClientFrame,
      onServerFrame(frame) {
        const verdict = fate.onServerFrame(frame);
        if (verdict === "cut") proxy.setTarget(nodes[++current % 2].url);
        return verdict;
      },
    });
    after(() => proxy.close());
    const sender = await connect(proxy.url, {
      ...TRANSPORTS.websocket,
      retries: 10,
      ackTimeout: 500,
      reconnection: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 200,
    });
    const run = randomUUID();
    const acks = await Promise.all(range(N).map((i) => sender.emitWithAck("publish", { room, event: "m", data: i, id: `${run}-${i}` })));
    assert.equal(fate.dropped, 4);
    assert.equal(current, 3, "the sender moved from node to node three times");
    for (const i of [8, 16, 23, 30]) assert.deepEqual(acks[i], { ok: true, duplicate: true }, `final ack of message ${i}`);
    for (const seen of got) await waitFor(() => seen.length >= N, { message: `${N} messages` });

    const marker = await connect(nodeA.url, TRANSPORTS.websocket);
    assert.deepEqual(await ack(marker, "publish", { room, event: "m", data: "end" }), { ok: true });
    for (const seen of got) {
      await waitFor(() => seen.at(-1) === "end", { message: "the marker" });
      assert.deepEqual(seen, [...range(N), "end"]);
    }
  });

  test("an id published on one node is a duplicate on the other", T, async () => {
    const room = unique();
    const [a, b, r] = await Promise.all([connect(nodeA.url, TRANSPORTS.websocket), connect(nodeB.url, TRANSPORTS.polling), connect(nodeB.url, TRANSPORTS.websocket)]);
    assert.deepEqual(await ack(r, "join", room), { ok: true });
    const seen = [];
    r.on("m", (d) => seen.push(d));
    const id = randomUUID();
    assert.deepEqual(await ack(a, "publish", { room, event: "m", data: 1, id }), { ok: true });
    assert.deepEqual(await ack(b, "publish", { room, event: "m", data: 1, id }), { ok: true, duplicate: true });
    assert.deepEqual(await ack(b, "publish", { room, event: "m", data: 2 }), { ok: true });
    await waitFor(() => seen.length >= 2);
    assert.deepEqual(seen, [1, 2]);
  });

  test("POST /api/v1/emit with ack_timeout collects acks on both nodes; a silent client times out", T, async () => {
    const room = unique();
    const clients = await Promise.all([
      connect(nodeA.url, TRANSPORTS.websocket),
      connect(nodeA.url, TRANSPORTS.polling),
      connect(nodeB.url, TRANSPORTS.websocket),
      connect(nodeB.url, TRANSPORTS.polling),
    ]);
    const silent = await connect(nodeB.url, TRANSPORTS.websocket);
    for (const c of [...clients, silent]) assert.deepEqual(await ack(c, "join", room), { ok: true });
    clients.forEach((c, i) => c.on("question", (data, cb) => cb({ client: i, data })));
    const heard = [];
    silent.on("question", (data) => heard.push(data)); // never acks

    const emit = (body) =>
      httpRequest(`${nodeA.url}/api/v1/emit`, {
        method: "POST",
        headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
        body: JSON.stringify(body),
        timeoutMs: 10_000,
      });
    const start = Date.now();
    const res = await emit({ rooms: [room], event: "question", data: "q1", ack_timeout: "1s" });
    const took = Date.now() - start;
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.clients, 5);
    assert.equal(res.json.timed_out, 1);
    assert.equal(res.json.complete, true);
    assert.deepEqual(res.json.acks.map((a) => a.client).sort(), [0, 1, 2, 3]);
    assert.ok(res.json.acks.every((a) => a.data === "q1"));
    assert.deepEqual(heard, ["q1"]);
    assert.ok(took >= 980 && took < 5_000, `answered after ${took} ms with a 1s ack_timeout`);

    // Without the silent client, the answer comes with the last ack.
    silent.close();
    await waitFor(async () => {
      const res = await httpRequest(`${nodeA.url}/api/v1/sockets?room=${encodeURIComponent(room)}`, { headers: { authorization: `Bearer ${KEY}` } });
      return res.json?.sockets?.length === 4;
    }, { message: "the silent client is gone" });
    const quick = Date.now();
    const all = await emit({ rooms: [room], event: "question", data: "q2", ack_timeout: "30s" });
    assert.equal(all.status, 200, all.text);
    assert.deepEqual([all.json.clients, all.json.acks.length, all.json.timed_out], [4, 4, 0]);
    assert.ok(Date.now() - quick < 5_000, "waited although every client acked");
  });
});

function range(n) {
  return Array.from({ length: n }, (_, i) => i);
}
