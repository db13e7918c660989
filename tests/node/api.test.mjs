// docs/protocol.md "Backend HTTP API" (POST /api/v1/emit) and "Health".

import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { ack, chunkedPost, connect, httpRequest, record, startServer, unique, waitFor } from "./harness.mjs";

const KEY = "test-key-0123456789";
const MAX_PAYLOAD = 2000;
const T = { timeout: 15_000 };

describe("with an API key", () => {
  let server;
  before(async () => {
    server = await startServer({ env: { CHORUS_API_KEY: KEY, CHORUS_MAX_PAYLOAD: String(MAX_PAYLOAD) } });
  });

  const emit = (body, { key = KEY, method = "POST", contentType = "application/json" } = {}) => {
    const headers = { "content-type": contentType };
    if (key !== null) headers.authorization = `Bearer ${key}`;
    const text = typeof body === "string" || body === undefined ? body : JSON.stringify(body);
    return httpRequest(`${server.url}/api/v1/emit`, { method, headers, body: text });
  };

  /** Asserts an API error: status, JSON {error:{code, message}}. */
  function assertError(res, status, code, what) {
    assert.equal(res.status, status, `${what}: status (body ${res.text.slice(0, 200)})`);
    assert.equal(res.json?.error?.code, code, `${what}: error code (body ${res.text.slice(0, 200)})`);
    assert.equal(typeof res.json.error.message, "string", `${what}: error message`);
  }

  test("emit reaches room members, the whole namespace, and skips `except`", T, async () => {
    const r1 = unique();
    const r2 = unique();
    const [b, c, d] = await Promise.all([1, 2, 3].map(() => connect(server.url, { transports: ["websocket"] })));
    const [evB, evC, evD] = [b, c, d].map(record);
    assert.deepEqual(await ack(b, "join", r1), { ok: true });
    assert.deepEqual(await ack(c, "join", r1), { ok: true });
    assert.deepEqual(await ack(c, "join", r2), { ok: true });

    const toRoom = await emit({ rooms: [r1], event: "news", data: { n: 1 } });
    assert.equal(toRoom.status, 202, toRoom.text);
    assert.deepEqual(toRoom.json, { ok: true });
    const skip = await emit({ namespace: "/", rooms: [r1], except: [r2], event: "notC", data: [1, "two"] });
    assert.equal(skip.status, 202, skip.text);
    const all = await emit({ event: "all", data: "everyone" });
    assert.equal(all.status, 202, all.text);

    const names = (ev) => ev.map((e) => e.event);
    await waitFor(() => [evB, evC, evD].every((ev) => ev.some((e) => e.event === "all")), { message: "every client got 'all'" });
    assert.deepEqual(evB.map((e) => [e.event, e.args]), [["news", [{ n: 1 }]], ["notC", [[1, "two"]]], ["all", ["everyone"]]]);
    assert.deepEqual(names(evC), ["news", "all"], "C is in an except room");
    assert.deepEqual(names(evD), ["all"], "D is in no room");

    const noData = await emit({ rooms: [r1], event: "bare" });
    assert.equal(noData.status, 202, noData.text);
    await waitFor(() => evB.some((e) => e.event === "bare"), { message: "B got 'bare'" });
    assert.deepEqual(evB.at(-1).args, [null], "data defaults to null");

    const volatile = await emit({ rooms: [r1], event: "vol", data: 1, volatile: true });
    assert.equal(volatile.status, 202, volatile.text);
  });

  test("a body just under the limit is accepted", T, async () => {
    const body = JSON.stringify({ rooms: [unique()], event: "big", data: "x".repeat(MAX_PAYLOAD - 200) });
    assert.ok(body.length < MAX_PAYLOAD);
    const res = await emit(body);
    assert.equal(res.status, 202, res.text);
  });

  test("errors", T, async () => {
    const good = { rooms: [unique()], event: "x", data: 1 };
    assertError(await emit(good, { key: null }), 401, "unauthorized", "no Authorization");
    assertError(await emit(good, { key: "wrong" }), 401, "unauthorized", "wrong key");
    assertError(await emit(good, { key: `${KEY}x` }), 401, "unauthorized", "key with a suffix");
    assertError(await emit("{not json"), 400, "bad_json", "broken JSON");
    assertError(await emit(""), 400, "bad_json", "empty body");
    assertError(await emit("[1,2]"), 400, "bad_json", "a JSON array");
    assertError(await emit({ rooms: "lobby", event: "x" }), 400, "bad_json", "rooms not an array");
    assertError(await emit({ rooms: [unique()] }), 400, "invalid_event", "missing event");
    assertError(await emit({ event: "" }), 400, "invalid_event", "empty event");
    for (const event of ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"]) {
      assertError(await emit({ event }), 400, "invalid_event", `reserved event ${event}`);
    }
    assertError(await emit({ namespace: "/no-such-namespace", event: "x" }), 400, "unknown_namespace", "unknown namespace");
    const big = JSON.stringify({ event: "x", data: "y".repeat(MAX_PAYLOAD) });
    assertError(await emit(big), 413, "payload_too_large", `body of ${big.length} bytes`);
    assertError(await emit(undefined, { method: "GET" }), 405, "method_not_allowed", "GET");
    assertError(await emit(undefined, { method: "DELETE" }), 405, "method_not_allowed", "DELETE");
  });

  test("refused emits reach nobody", T, async () => {
    const room = unique();
    const b = await connect(server.url, { transports: ["websocket"] });
    const evB = record(b);
    assert.deepEqual(await ack(b, "join", room), { ok: true });
    assert.equal((await emit({ rooms: [room], event: "x" }, { key: "wrong" })).status, 401);
    assert.equal((await emit({ rooms: [room], event: "disconnect" })).status, 400);
    assert.equal((await emit(JSON.stringify({ rooms: [room], event: "x", data: "y".repeat(MAX_PAYLOAD) }))).status, 413);
    assert.equal((await emit({ rooms: [room], event: "marker" })).status, 202);
    await waitFor(() => evB.length > 0, { message: "B got the marker" });
    assert.deepEqual(evB.map((e) => e.event), ["marker"]);
  });

  test("a chunked body over the limit gets 413 and emits nothing", T, async () => {
    const room = unique();
    const b = await connect(server.url, { transports: ["websocket"] });
    const evB = record(b);
    assert.deepEqual(await ack(b, "join", room), { ok: true });
    // Valid JSON whose first bytes would make sense to a reader that stops at the limit.
    const body = JSON.stringify({ rooms: [room], event: "chunked", data: "z".repeat(MAX_PAYLOAD * 5) });
    const headers = { authorization: `Bearer ${KEY}`, "content-type": "application/json" };
    const res = await chunkedPost(server.port, "/api/v1/emit", body, { headers, chunkSize: 256 });
    assert.equal(res.status, 413, `chunked body of ${body.length} bytes: ${res.text.slice(0, 200)}`);
    assert.equal(JSON.parse(res.text).error?.code, "payload_too_large");
    assert.equal((await emit({ rooms: [room], event: "marker" })).status, 202);
    await waitFor(() => evB.length > 0, { message: "B got the marker" });
    assert.deepEqual(evB.map((e) => e.event), ["marker"]);
  });

  test("healthz and readyz answer 200", T, async () => {
    for (const path of ["/healthz", "/readyz"]) {
      const res = await httpRequest(`${server.url}${path}`);
      assert.equal(res.status, 200, `${path}: ${res.text}`);
    }
  });
});

describe("without an API key", () => {
  let server;
  before(async () => {
    server = await startServer();
  });

  test("every API call is 401: the API is disabled", T, async () => {
    const url = `${server.url}/api/v1/emit`;
    const body = JSON.stringify({ event: "x", data: 1 });
    const calls = [
      ["POST without key", { method: "POST", body }],
      ["POST with a key", { method: "POST", body, headers: { authorization: "Bearer anything" } }],
      ["POST with an empty key", { method: "POST", body, headers: { authorization: "Bearer " } }],
      ["GET", { method: "GET" }],
    ];
    for (const [what, init] of calls) {
      const res = await httpRequest(url, init);
      assert.equal(res.status, 401, `${what}: ${res.text}`);
      assert.equal(res.json?.error?.code, "unauthorized", `${what}: ${res.text}`);
    }
  });

  test("healthz and readyz answer 200", T, async () => {
    for (const path of ["/healthz", "/readyz"]) {
      const res = await httpRequest(`${server.url}${path}`);
      assert.equal(res.status, 200, `${path}: ${res.text}`);
    }
  });
});
