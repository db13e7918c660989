// docs/protocol.md "Namespaces": "/" plus the configured ones, exact or with "*"; each namespace
// has its own rooms, on the client protocol and on the HTTP API.

import { before, test } from "node:test";
import assert from "node:assert/strict";
import { ack, connect, connectRefused, httpRequest, record, startServer, unique, waitFor } from "./harness.mjs";

const KEY = "ns-key";
const T = { timeout: 15_000 };
const ws = { transports: ["websocket"] };

let server;
before(async () => {
  server = await startServer({ namespaces: ["/chat", "/tenant-*"], env: { CHORUS_API_KEY: KEY } });
});

const emit = (body) =>
  httpRequest(`${server.url}/api/v1/emit`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });

test("configured namespaces accept connections, others get connect_error", T, async () => {
  for (const nsp of ["/", "/chat", "/tenant-a", "/tenant-b42"]) {
    const s = await connect(`${server.url}${nsp}`, ws);
    assert.deepEqual(await ack(s, "join", unique()), { ok: true }, `join in ${nsp}`);
  }
  for (const nsp of ["/chat2", "/tenant", "/other"]) {
    const err = await connectRefused(`${server.url}${nsp}`, ws);
    assert.equal(err.message, "Invalid namespace", nsp);
  }
});

test("rooms of the same name in different namespaces are separate", T, async () => {
  const room = unique();
  const rootA = await connect(server.url, ws);
  const rootB = await connect(server.url, ws);
  const chatA = await connect(`${server.url}/chat`, ws);
  const chatB = await connect(`${server.url}/chat`, { transports: ["polling"] });
  const tenant = await connect(`${server.url}/tenant-x`, ws);
  const [evRootA, evChatB, evTenant] = [rootA, chatB, tenant].map(record);
  for (const s of [rootA, rootB, chatA, chatB, tenant]) assert.deepEqual(await ack(s, "join", room), { ok: true });

  assert.deepEqual(await ack(chatA, "publish", { room, event: "inChat", data: 1 }), { ok: true });
  await waitFor(() => evChatB.length === 1, { message: "the other /chat member got it" });
  assert.deepEqual(evChatB.map((e) => [e.event, e.args]), [["inChat", [1]]]);

  // Through the HTTP API, to /chat and to the pattern namespace.
  assert.equal((await emit({ namespace: "/chat", rooms: [room], event: "apiChat", data: 2 })).status, 202);
  assert.equal((await emit({ namespace: "/tenant-x", rooms: [room], event: "apiTenant", data: 3 })).status, 202);
  await waitFor(() => evChatB.length === 2 && evTenant.length === 1, { message: "API emits arrived" });
  assert.deepEqual(evChatB.at(-1).args, [2]);
  assert.deepEqual(evTenant.map((e) => [e.event, e.args]), [["apiTenant", [3]]]);

  // Nothing crossed into "/": the first thing rootA gets is rootB's publish.
  assert.deepEqual(await ack(rootB, "publish", { room, event: "inRoot", data: 4 }), { ok: true });
  await waitFor(() => evRootA.length > 0, { message: "rootA got the / publish" });
  assert.deepEqual(evRootA.map((e) => e.event), ["inRoot"]);
});

test("the HTTP API knows the configured namespaces", T, async () => {
  assert.equal((await emit({ namespace: "/chat", event: "x" })).status, 202);
  const unused = await emit({ namespace: "/tenant-nobody-yet", event: "x" });
  assert.equal(unused.status, 202, `a namespace matching a pattern, nobody connected: ${unused.text}`);
  for (const namespace of ["/nope", "/chat2", "chat", ""]) {
    const res = await emit({ namespace, event: "x" });
    assert.equal(res.status, 400, `${JSON.stringify(namespace)}: ${res.text}`);
    assert.equal(res.json?.error?.code, "unknown_namespace", `${JSON.stringify(namespace)}: ${res.text}`);
  }
});
