// Behind a load balancer (issue 4, point 8): Redis, three chorus nodes and nginx with sticky routing
// (tests/node/cluster/nginx.mjs, the configuration the README documents), all on loopback. Stock
// clients connect through nginx from different loopback addresses, so that they land on different
// nodes, over long-polling, WebSocket and polling upgraded to WebSocket; room broadcasts cross nodes.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { ack, chorusOnly, connect, httpRequest, nextEvent, startServer, TRANSPORTS, unique, waitFor } from "./harness.mjs";
import { startRedis } from "./cluster/redis.mjs";
import { startNginx } from "./cluster/nginx.mjs";

const T = { timeout: 60_000 };
const KEY = "nginx-test-key";
const CLIENTS = 9;

describe("three chorus nodes behind nginx", { skip: chorusOnly }, () => {
  let redis;
  let nodes;
  let nginx;
  const agents = [];

  before(async () => {
    redis = await startRedis();
    const env = { CHORUS_REDIS_URL: redis.url, CHORUS_REDIS_PREFIX: unique("nginx"), CHORUS_API_KEY: KEY };
    nodes = await Promise.all([1, 2, 3].map(() => startServer({ env })));
    nginx = await startNginx(nodes.map((n) => `127.0.0.1:${n.port}`));
    // Every node subscribed before clients come.
    await waitFor(async () => {
      const res = await httpRequest(`${nodes[0].url}/readyz`);
      return res.headers.get("x-chorus-redis") === "up";
    });
  });

  after(async () => {
    await nginx?.stop();
    await Promise.all((nodes ?? []).map((n) => n.stop()));
    await redis?.close();
    for (const a of agents) a.destroy();
  });

  /** The node a socket is connected to: the one that logged its connect. */
  const nodeOf = (id) => nodes.findIndex((n) => n.logs.some((l) => l.msg === "connect" && l.sid === id));

  /** A client connected through nginx from loopback address 127.0.0.<host>. */
  const clientFrom = (host, opts) => {
    const localAddress = `127.0.0.${host}`;
    const agent = new http.Agent({ keepAlive: true, localAddress });
    agents.push(agent);
    return connect(nginx.url, { ...opts, agent, localAddress });
  };

  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    test(`room broadcasts cross nodes through nginx (${name})`, T, async () => {
      const room = unique();
      const clients = await Promise.all(Array.from({ length: CLIENTS }, (_, i) => clientFrom(10 + i, opts)));
      for (const c of clients) assert.deepEqual(await ack(c, "join", room), { ok: true });
      await waitFor(() => clients.every((c) => nodeOf(c.id) >= 0), { message: "every client's node known" });
      const spread = new Set(clients.map((c) => nodeOf(c.id)));
      assert.ok(spread.size >= 2, `clients from ${CLIENTS} addresses all landed on node ${[...spread]}`);

      // Each client publishes three messages at once; every other client gets all of them, each
      // sender's in order (senders on different nodes interleave as they may).
      const PER = 3;
      const got = clients.map((c) => {
        const seen = [];
        c.on("chat", (d) => seen.push(d));
        return seen;
      });
      await Promise.all(
        clients.map(async (c, i) => {
          for (let k = 0; k < PER; k++) c.emit("publish", { room, event: "chat", data: { from: i, k } });
          assert.deepEqual(await ack(c, "publish", { room, event: "chat", data: { from: i, k: PER } }), { ok: true });
        }),
      );
      await waitFor(() => got.every((seen) => seen.length === (CLIENTS - 1) * (PER + 1)), { timeout: 10_000, message: "every message everywhere" });
      for (const [i, seen] of got.entries()) {
        for (const j of clients.keys()) {
          const fromJ = seen.filter((d) => d.from === j).map((d) => d.k);
          assert.deepEqual(fromJ, j === i ? [] : [0, 1, 2, 3], `client ${i} (node ${nodeOf(clients[i].id)}) from client ${j} (node ${nodeOf(clients[j].id)})`);
        }
      }

      // The HTTP API through nginx, whichever node answers, sees every node's sockets.
      const listed = await httpRequest(`${nginx.url}/api/v1/sockets?room=${encodeURIComponent(room)}`, { headers: { authorization: `Bearer ${KEY}` } });
      assert.equal(listed.status, 200, listed.text);
      assert.deepEqual(listed.json.sockets.map((s) => s.id).sort(), clients.map((c) => c.id).sort());
    });
  }

  test("a broadcast from the HTTP API through nginx reaches clients on every node", T, async () => {
    const room = unique();
    const clients = await Promise.all(Array.from({ length: CLIENTS }, (_, i) => clientFrom(40 + i, TRANSPORTS.upgrade)));
    for (const c of clients) assert.deepEqual(await ack(c, "join", room), { ok: true });
    const all = clients.map((c) => nextEvent(c, "news"));
    const res = await httpRequest(`${nginx.url}/api/v1/emit`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ rooms: [room], event: "news", data: "hello" }),
    });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(await Promise.all(all), clients.map(() => ["hello"]));
  });
});
