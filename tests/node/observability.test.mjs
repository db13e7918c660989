// Observability (issue 7): /metrics scraped while stock socket.io-client traffic moves it, the
// listener of its own (CHORUS_METRICS_ADDR), and the lifecycle log lines. Chorus-only.

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { TRANSPORTS, ack, chorusOnly, connect, connectRefused, httpRequest, nextEvent, startServer, unique, waitFor } from "./harness.mjs";

const T = { timeout: 20_000, skip: chorusOnly };
const KEY = "metrics-test-key";

/** Parses Prometheus' text format: Map of `name{labels}` (as exposed) → number. */
export function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

export async function scrape(base) {
  const res = await httpRequest(`${base}/metrics`);
  assert.equal(res.status, 200, `GET ${base}/metrics`);
  assert.match(res.headers.get("content-type"), /^text\/plain/);
  return parseMetrics(res.text);
}

/** Waits until every series in want has its value; fails with what was there. */
async function waitMetrics(base, want, message) {
  let last;
  try {
    await waitFor(async () => {
      last = await scrape(base);
      return Object.entries(want).every(([k, v]) => last.get(k) === v);
    }, { timeout: 5_000, interval: 25, message });
  } catch (err) {
    const got = Object.fromEntries(Object.keys(want).map((k) => [k, last?.get(k)]));
    assert.deepEqual(got, want, `${message}: ${err.message}`);
  }
  return last;
}

describe("Prometheus metrics", () => {
  test("sockets, connections, events, bytes, broadcasts, refusals and the HTTP API move with the traffic", T, async () => {
    const server = await startServer({ env: { CHORUS_API_KEY: KEY }, namespaces: ["/tenant-*"] });
    const nsp = `${server.url}/tenant-acme`;
    const before = await scrape(server.url);
    assert.equal(before.get('chorus_sockets{namespace="/tenant-*",transport="websocket"}'), undefined, "no namespace created yet");
    assert.ok(before.has("go_goroutines"), "Go runtime metrics");
    assert.ok(before.has("process_resident_memory_bytes"), "process metrics");
    assert.equal(before.get('chorus_sessions{transport="polling"}'), 0);

    const ws = await connect(nsp, TRANSPORTS.websocket);
    const polling = await connect(nsp, TRANSPORTS.polling);
    const upgraded = await connect(nsp, TRANSPORTS.upgrade);
    if (upgraded.io.engine.transport.name !== "websocket") await nextEvent(upgraded.io.engine, "upgrade");
    const room = unique("secret");
    for (const s of [ws, polling, upgraded]) assert.deepEqual(await ack(s, "join", room), { ok: true });
    const got = nextEvent(polling, "whisper");
    assert.deepEqual(await ack(ws, "publish", { room, event: "whisper", data: "x".repeat(1000) }), { ok: true });
    await got;
    const api = await httpRequest(`${server.url}/api/v1/emit`, {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ namespace: "/tenant-acme", rooms: [room], event: "news" }),
    });
    assert.equal(api.status, 202);
    await connectRefused(`${server.url}/nope`, TRANSPORTS.websocket);

    const ns = 'namespace="/tenant-*"';
    const m = await waitMetrics(server.url, {
      [`chorus_sockets{${ns},transport="websocket"}`]: 2,
      [`chorus_sockets{${ns},transport="polling"}`]: 1,
      [`chorus_connections_total{${ns},transport="websocket"}`]: 1,
      [`chorus_connections_total{${ns},transport="polling"}`]: 2,
      [`chorus_events_received_total{${ns}}`]: 4, // three joins and a publish
      [`chorus_broadcasts_total{${ns}}`]: 2, // the publish and the HTTP emit
      [`chorus_broadcast_recipients_sum{${ns}}`]: 5, // 2 (not the sender) + 3
      [`chorus_events_sent_total{${ns}}`]: 5,
      'chorus_upgrades_total': 1,
      'chorus_handshakes_refused_total{reason="invalid_namespace"}': 1,
      'chorus_http_requests_total{code="202",route="/api/v1/emit"}': 1,
    }, "after the traffic");
    assert.ok(m.get("chorus_received_bytes_total") > 1000, "the 1000-byte publish counts as bytes in");
    assert.ok(m.get("chorus_sent_bytes_total") > 2000, "and reaches two members: bytes out");
    for (const key of m.keys()) {
      for (const chosen of ["acme", room, "whisper", "news", "nope"]) {
        assert.ok(!key.includes(chosen), `series ${key} holds ${chosen}, which a client chose`);
      }
    }

    polling.io.engine.close(); // the connection goes: "transport close"
    ws.disconnect(); // the socket leaves: "client namespace disconnect"
    await waitMetrics(server.url, {
      [`chorus_sockets{${ns},transport="polling"}`]: 0,
      [`chorus_sockets{${ns},transport="websocket"}`]: 1,
      [`chorus_disconnections_total{${ns},reason="client namespace disconnect"}`]: 1,
      [`chorus_disconnections_total{${ns},reason="transport close"}`]: 1,
    }, "after two clients left");
  });

  test("CHORUS_METRICS_ADDR moves /metrics to a listener of its own", T, async () => {
    const server = await startServer({ env: { CHORUS_METRICS_ADDR: "127.0.0.1:0" } });
    const line = await waitFor(() => server.logs.find((l) => l.msg === "metrics listening"), { message: "metrics listening log line" });
    assert.equal((await httpRequest(`${server.url}/metrics`)).status, 404, "not on the main port any more");
    const m = await scrape(`http://${line.addr}`);
    assert.ok(m.has('chorus_sessions{transport="websocket"}'));
    assert.equal((await httpRequest(`http://${line.addr}/`)).status, 404, "the metrics listener serves only /metrics");
  });
});

describe("lifecycle logs", () => {
  test("start, connect, upgrade, disconnect, refused handshakes, the HTTP API and stop: one JSON line each", T, async () => {
    const server = await startServer({ env: { CHORUS_API_KEY: KEY } });
    const start = server.logs.find((l) => l.msg === "listening");
    assert.equal(typeof start.version, "string");
    assert.equal(typeof start.pid, "number");

    const socket = await connect(server.url, TRANSPORTS.upgrade);
    if (socket.io.engine.transport.name !== "websocket") await nextEvent(socket.io.engine, "upgrade");
    const sid = socket.id;
    socket.disconnect();
    await connectRefused(`${server.url}/nope`, TRANSPORTS.websocket);
    const refused = await httpRequest(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { origin: "https://evil.example" } });
    assert.equal(refused.status, 403);
    await httpRequest(`${server.url}/api/v1/emit`, { method: "POST", headers: { authorization: "Bearer wrong" }, body: "{}" });

    const find = (pred, what) => waitFor(() => server.logs.find(pred), { message: what });
    const connectLine = await find((l) => l.msg === "connect" && l.sid === sid, "connect");
    assert.deepEqual([connectLine.nsp, connectLine.transport], ["/", "polling"]);
    assert.equal(typeof connectLine.conn, "string");
    const upgrade = await find((l) => l.msg === "upgrade" && l.conn === connectLine.conn, "upgrade");
    assert.equal(upgrade.transport, "websocket");
    const disconnect = await find((l) => l.msg === "disconnect" && l.sid === sid, "disconnect");
    assert.deepEqual([disconnect.nsp, disconnect.transport, disconnect.reason], ["/", "websocket", "client namespace disconnect"]);
    assert.equal(typeof disconnect.duration, "number", "the connection's duration");
    await find((l) => l.msg === "handshake refused" && l.reason === "invalid_namespace" && l.nsp === "/nope", "refused namespace");
    const origin = await find((l) => l.msg === "handshake refused" && l.reason === "origin", "refused origin");
    assert.deepEqual([origin.origin, origin.transport], ["https://evil.example", "polling"]);
    const access = await find((l) => l.msg === "http request", "the API's access log");
    assert.deepEqual([access.method, access.route, access.status], ["POST", "/api/v1/emit", 401]);
    assert.equal(typeof access.duration, "number");
    for (const l of server.logs) assert.equal(l.raw, undefined, `every line is JSON: ${l.raw}`);

    await server.stop();
    const stopped = server.logs.find((l) => l.msg === "stopped");
    assert.ok(stopped, "a stopped line");
    assert.equal(stopped.version, start.version);
    assert.equal(typeof stopped.uptime, "number");
  });
});
