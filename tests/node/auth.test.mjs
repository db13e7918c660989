// Token authentication (issue 6, points 1–3) with the stock client: JWTs from the handshake's
// auth.token or an Authorization header on every transport, connect_error codes, personal rooms
// reached by the HTTP API across two nodes, expiry and refresh. The tokens are minted here with
// node:crypto. chorus-only: skipped when E2E_TARGET=reference.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { createClient } from "redis";
import { TRANSPORTS, ack, chorusOnly, connect, connectRefused, httpRequest, nextEvent, startServer, unique, waitFor } from "./harness.mjs";
import { startRedis } from "./cluster/redis.mjs";

const SECRET = "e2e-secret-0123456789abcdef0123456789";
const KEY = "auth-test-key";
const T = { timeout: 20_000, skip: chorusOnly };

/** An HS256 JWT of claims (exp defaults to an hour from now). */
export function jwt(claims, secret = SECRET) {
  const b64u = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64u({ alg: "HS256", typ: "JWT" })}.${b64u({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

const apiEmit = (url, body) =>
  httpRequest(`${url}/api/v1/emit`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });

/** The value of a series on the server's /metrics (0 when absent). */
async function metric(url, series) {
  const res = await httpRequest(`${url}/metrics`);
  assert.equal(res.status, 200, res.text);
  const line = res.text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

describe("JWT handshakes", { skip: chorusOnly }, () => {
  let server;
  before(async () => {
    server = await startServer({ env: { CHORUS_JWT_SECRET: SECRET, CHORUS_API_KEY: KEY } });
  });

  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    test(`auth.token and the Authorization header are accepted (${name})`, T, async () => {
      const a = await connect(server.url, { ...opts, auth: { token: jwt({ sub: "alice" }) } });
      const b = await connect(server.url, { ...opts, extraHeaders: { Authorization: `Bearer ${jwt({ sub: "alice" })}` } });
      assert.ok(a.connected && b.connected);
      const got = [a, b].map((s) => nextEvent(s, "hello"));
      const res = await apiEmit(server.url, { users: ["alice"], event: "hello", data: name });
      assert.equal(res.status, 202, res.text);
      for (const [data] of await Promise.all(got)) assert.equal(data, name);
    });

    test(`refusals carry data.code (${name})`, T, async () => {
      const cases = [
        [{}, "unauthorized"],
        [{ auth: { token: jwt({ sub: "alice", exp: Math.floor(Date.now() / 1000) - 60 }) } }, "token_expired"],
        [{ auth: { token: jwt({ sub: "alice" }, "another-secret-0123456789abcdef0123") } }, "invalid_token"],
        [{ auth: { token: jwt({ sub: "alice", nbf: Math.floor(Date.now() / 1000) + 3600 }) } }, "token_not_valid_yet"],
        [{ auth: { token: jwt({ exp: Math.floor(Date.now() / 1000) + 60 }) } }, "invalid_token"], // no sub
      ];
      for (const [extra, code] of cases) {
        const err = await connectRefused(server.url, { ...opts, ...extra });
        assert.equal(err.data?.code, code, `${JSON.stringify(extra).slice(0, 80)}: ${err.message}`);
      }
    });
  }

  test("a token for other namespaces gets forbidden_namespace", T, async () => {
    const err = await connectRefused(server.url, { ...TRANSPORTS.websocket, auth: { token: jwt({ sub: "alice", namespaces: ["/admin"] }) } });
    assert.equal(err.data?.code, "forbidden_namespace");
  });

  test("nobody joins another user's room", T, async () => {
    const alice = await connect(server.url, { ...TRANSPORTS.websocket, auth: { token: jwt({ sub: "alice" }) } });
    assert.deepEqual(await ack(alice, "join", "user:bob"), { ok: false, error: { code: "forbidden", message: 'joining "user:bob" is not allowed in /' } });
    assert.deepEqual(await ack(alice, "join", "user:alice"), { ok: true });
  });

  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    test(`at exp the socket is disconnected with token_expired unless it refreshed (${name})`, { ...T, timeout: 30_000 }, async () => {
      const exp = Math.floor(Date.now() / 1000) + 2;
      const token = jwt({ sub: "carol", exp });
      const stale = await connect(server.url, { ...opts, auth: { token } });
      const fresh = await connect(server.url, { ...opts, auth: { token } });
      const why = nextEvent(stale, "chorus:disconnect", 10_000);
      const gone = nextEvent(stale, "disconnect", 10_000);

      const later = Math.floor(Date.now() / 1000) + 3600;
      assert.deepEqual(await ack(fresh, "refresh", { token: jwt({ sub: "carol", exp: later }) }), { ok: true, exp: later });
      const mismatch = await ack(fresh, "refresh", { token: jwt({ sub: "mallory" }) });
      assert.equal(mismatch.error?.code, "subject_mismatch");

      const [info] = await why;
      assert.equal(info.code, "token_expired");
      const [reason] = await gone;
      const at = Date.now();
      assert.equal(reason, "io server disconnect");
      assert.ok(at >= exp * 1000 - 50 && at <= exp * 1000 + 1500, `disconnected ${at - exp * 1000} ms after exp`);

      // Past the old exp, the refreshed socket still works.
      assert.deepEqual(await ack(fresh, "join", unique()), { ok: true });
      assert.ok(fresh.connected);
    });
  }

  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    test(`a recovered socket passes auth again and is back in its personal room (${name})`, T, async () => {
      const ok = 'chorus_recoveries_total{namespace="/",result="success"}';
      const failed = 'chorus_recoveries_total{namespace="/",result="failure"}';
      const [ok0, failed0] = [await metric(server.url, ok), await metric(server.url, failed)];
      const user = unique();
      const s = await connect(server.url, { ...opts, auth: { token: jwt({ sub: user }) } });
      const id = s.id;
      let gone = nextEvent(s, "disconnect");
      s.io.engine.close(); // a network blip: the client keeps its session
      await gone;
      const res = await apiEmit(server.url, { users: [user], event: "hello", data: "missed" });
      assert.equal(res.status, 202, res.text);
      const missed = nextEvent(s, "hello");
      const back = nextEvent(s, "connect");
      s.connect(); // the stock client sends its token with {pid, offset}
      await back;
      assert.equal(s.recovered, true);
      assert.equal(s.id, id);
      assert.equal((await missed)[0], "missed");
      assert.equal(await metric(server.url, ok), ok0 + 1);
      const live = nextEvent(s, "hello");
      assert.equal((await apiEmit(server.url, { users: [user], event: "hello", data: "live" })).status, 202);
      assert.equal((await live)[0], "live");

      // Reconnecting as another user starts a new session: none of the first user's rooms or events.
      gone = nextEvent(s, "disconnect");
      s.io.engine.close();
      await gone;
      assert.equal((await apiEmit(server.url, { users: [user], event: "hello", data: "not for the other" })).status, 202);
      const other = unique();
      s.auth = { token: jwt({ sub: other }) };
      const again = nextEvent(s, "connect");
      s.connect();
      await again;
      assert.equal(s.recovered, false);
      assert.notEqual(s.id, id);
      assert.equal(await metric(server.url, failed), failed0 + 1);
      const first = await httpRequest(`${server.url}/api/v1/sockets?room=${encodeURIComponent(`user:${user}`)}`, { headers: { authorization: `Bearer ${KEY}` } });
      assert.equal(first.status, 200, first.text);
      assert.deepEqual(first.json.sockets, []);
      const seen = [];
      s.on("hello", (d) => seen.push(d));
      const mine = nextEvent(s, "hello");
      assert.equal((await apiEmit(server.url, { users: [other], event: "hello", data: "mine" })).status, 202);
      await mine;
      assert.deepEqual(seen, ["mine"]);

      // With a token that no longer verifies, the session is not handed over.
      gone = nextEvent(s, "disconnect");
      s.io.engine.close();
      await gone;
      s.auth = { token: jwt({ sub: user }, "another-secret-0123456789abcdef0123") };
      const refused = nextEvent(s, "connect_error");
      s.connect();
      const [err] = await refused;
      assert.equal(err.data?.code, "invalid_token");
      assert.equal(s.connected, false);
      s.close();
    });
  }
});

describe("personal rooms across nodes", { skip: chorusOnly }, () => {
  let redis;
  let nodeA;
  let nodeB;
  before(async () => {
    redis = await startRedis();
    const prefix = unique("auth");
    const env = { CHORUS_REDIS_URL: redis.url, CHORUS_REDIS_PREFIX: prefix, CHORUS_JWT_SECRET: SECRET, CHORUS_API_KEY: KEY };
    [nodeA, nodeB] = await Promise.all([startServer({ env }), startServer({ env })]);
    const probe = createClient({ url: redis.url });
    probe.on("error", () => {});
    await probe.connect();
    await waitFor(async () => Number((await probe.sendCommand(["PUBSUB", "NUMSUB", `${prefix}-request#/#`]))[1]) === 2, {
      message: "both nodes subscribed",
    });
    await probe.quit();
  });
  after(async () => {
    await nodeA?.stop();
    await nodeB?.stop();
    await redis?.close();
  });

  test('POST /api/v1/emit {"users":["42"]} reaches every socket of user 42 on every node, and no one else', T, async () => {
    const as = (sub, url, opts) => connect(url, { ...opts, auth: { token: jwt({ sub }) } });
    const [phone, laptop, tablet, other] = await Promise.all([
      as("42", nodeA.url, TRANSPORTS.websocket),
      as("42", nodeB.url, TRANSPORTS.polling),
      as("42", nodeB.url, TRANSPORTS.upgrade),
      as("7", nodeB.url, TRANSPORTS.websocket),
    ]);
    const seenByOther = [];
    other.on("dm", (d) => seenByOther.push(d));
    const got = [phone, laptop, tablet].map((s) => nextEvent(s, "dm"));
    const res = await apiEmit(nodeA.url, { users: ["42"], event: "dm", data: { text: "hi 42" } });
    assert.equal(res.status, 202, res.text);
    for (const [data] of await Promise.all(got)) assert.deepEqual(data, { text: "hi 42" });

    // User 7 got nothing: a message to 7 afterwards is the first thing it sees.
    const mine = nextEvent(other, "dm");
    assert.equal((await apiEmit(nodeB.url, { users: ["7"], event: "dm", data: "for 7" })).status, 202);
    assert.deepEqual(await mine, ["for 7"]);
    assert.deepEqual(seenByOther, ["for 7"]);
  });
});
