// The demo page and its client module (web/static/) in Debian's chromium, headless, against the
// chorus binary: two pages chat; chorus is stopped and started again on the same port while one
// page keeps sending, and every message arrives once, in order; WebSocket and polling-only; the
// dashboard's stats; giving up after the maximum of attempts; a lost acknowledgement. Screenshots go
// to test-artifacts/browser/ (printed as test diagnostics).

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { startServer, unique } from "../node/harness.mjs";
import { openDemo, received, screenshot, sendChat, waitPage, waitState } from "./browser.mjs";

const T = { timeout: 90_000 };
const NODE_ID = "browser-node-1";
// Fast reconnection: 200 ms doubling up to 1 s, so that a restart takes seconds; enough attempts
// that a page never gives up during one.
const FAST = "reconnectDelay=200&reconnectDelayMax=1000&maxAttempts=60";

const demoURL = (server, { room, name, transport, extra = "" }) => {
  const q = new URLSearchParams({ room, name });
  if (transport) q.set("transport", transport);
  return `${server.url}/?${q}&${FAST}${extra ? `&${extra}` : ""}`;
};

/** Waits until page shows room as joined on the server (after every new session too). */
const joined = (page, room) =>
  waitPage(page, (r) => document.querySelector(`#rooms li[data-room="${CSS.escape(r)}"]`)?.dataset.joined === "true", room, `room ${room} joined`);

/** Waits until page has received exactly the given ids (others' messages), and returns them. */
async function receivedIds(page, ids, what) {
  await waitPage(page, (n) => document.querySelectorAll('[data-testid="message"][data-own="false"]').length >= n, ids.length, `${ids.length} messages received (${what})`);
  return (await received(page)).map((m) => m.id);
}

/** Waits until every message page sent is acknowledged (none queued or sending). */
const allAcked = (page) =>
  waitPage(
    page,
    () => document.getElementById("status").dataset.queued === "0" && !document.querySelector('[data-own="true"]:not([data-status="sent"])'),
    null,
    "every sent message acknowledged",
  );

async function chorus(args = []) {
  return startServer({ env: { CHORUS_NODE_ID: NODE_ID }, args: ["-drain-timeout", "0s", ...args] });
}

for (const transport of ["websocket", "polling"]) {
  describe(`demo over ${transport}`, () => {
    test("two pages chat through chorus; the dashboard shows the node's stats", T, async (t) => {
      const server = await chorus();
      const room = unique("lobby");
      const alice = await openDemo(demoURL(server, { room, name: "alice", transport }), { label: "alice" });
      const bob = await openDemo(demoURL(server, { room, name: "bob", transport }), { label: "bob" });
      await joined(alice, room);
      await joined(bob, room);
      for (const p of [alice, bob]) {
        assert.equal(await p.getByTestId("status").getAttribute("data-transport"), transport);
      }

      const hi = await sendChat(alice, "hi bob");
      assert.deepEqual(await receivedIds(bob, [hi], "alice → bob"), [hi]);
      const hello = await sendChat(bob, "hello alice");
      assert.deepEqual(await receivedIds(alice, [hello], "bob → alice"), [hello]);
      assert.deepEqual(await received(bob), [{ id: hi, text: "hi bob" }]);

      // The dashboard: pushed every second by the server, two connections, this node.
      for (const p of [alice, bob]) {
        await waitPage(p, (id) => document.getElementById("stats-node").textContent === id, NODE_ID, "node id on the dashboard");
        await waitPage(p, () => document.getElementById("stats-connections").textContent === "2", null, "2 connections on the dashboard");
        await waitPage(p, () => Number(document.getElementById("stats-messages").textContent) >= 2, null, "2 messages counted");
      }
      t.diagnostic(`screenshot: ${await screenshot(alice, `chat-${transport}-alice`)}`);
      t.diagnostic(`screenshot: ${await screenshot(bob, `chat-${transport}-bob`)}`);
      await alice.context().close();
      await bob.context().close();
    });

    test("chorus restarts while a page keeps sending: reconnecting, then connected; each message once, in order", T, async (t) => {
      let server = await chorus();
      const room = unique("restart");
      const sender = await openDemo(demoURL(server, { room, name: "sender", transport }), { label: "sender" });
      const reader = await openDemo(demoURL(server, { room, name: "reader", transport }), { label: "reader" });
      await joined(sender, room);
      await joined(reader, room);
      const before = [await sendChat(sender, "before 1"), await sendChat(sender, "before 2")];
      await allAcked(sender);
      assert.deepEqual(await receivedIds(reader, before, "before the restart"), before);

      // Stop chorus; the sender keeps sending while it tries to reconnect.
      await server.stop();
      await waitState(sender, "reconnecting");
      await waitPage(sender, () => Number(document.getElementById("status").dataset.attempt) >= 1, null, "a reconnection attempt shown");
      const offline = [];
      for (let i = 1; i <= 5; i++) offline.push(await sendChat(sender, `offline ${i}`));
      await waitPage(sender, () => document.getElementById("queued").textContent === "5 queued", null, "5 queued on the indicator");
      assert.equal(await sender.getByTestId("queued").isVisible(), true);
      assert.match(await sender.getByTestId("attempt").textContent(), /^attempt \d+\/60$/);
      t.diagnostic(`screenshot: ${await screenshot(sender, `restart-${transport}-sender-reconnecting`)}`);

      // The reader must be back in the room before the sender's queue goes out (chorus keeps no
      // history for a member that is away): the sender's network is off while chorus starts again
      // and the reader rejoins, then on.
      await sender.context().setOffline(true);
      server = await chorus(["-addr", `127.0.0.1:${server.port}`]);
      await waitState(reader, "connected");
      await joined(reader, room);
      await sender.context().setOffline(false);
      await waitState(sender, "connected");
      await allAcked(sender);
      // A last message: the reader gets it after any copy of an earlier one, so once it is there,
      // what the reader shows is final.
      const last = await sendChat(sender, "after");
      await allAcked(sender);
      const want = [...before, ...offline, last];
      const got = await receivedIds(reader, want, "after the restart");
      assert.deepEqual(got, want, "every message once, in the order sent");
      t.diagnostic(`screenshot: ${await screenshot(sender, `restart-${transport}-sender-connected`)}`);
      t.diagnostic(`screenshot: ${await screenshot(reader, `restart-${transport}-reader`)}`);
      await sender.context().close();
      await reader.context().close();
    });
  });
}

describe("demo", () => {
  test("the transport toggle reloads the page over polling only", T, async () => {
    const server = await chorus();
    const page = await openDemo(`${server.url}/?${FAST}`, { label: "toggle" });
    await page.getByTestId("transport-select").selectOption("polling");
    await page.waitForURL(/transport=polling/);
    await waitState(page, "connected");
    assert.equal(await page.getByTestId("status").getAttribute("data-transport"), "polling");
    // Polling only: no WebSocket was opened by the reloaded page.
    assert.equal(await page.evaluate(() => globalThis.chorusDemo.client.socket.io.engine.transport.name), "polling");
    await page.context().close();
  });

  test("after the maximum of attempts the page says offline; Reconnect now connects again", T, async (t) => {
    let server = await chorus();
    const page = await openDemo(`${server.url}/?reconnectDelay=100&reconnectDelayMax=200&maxAttempts=3`, { label: "giveup" });
    await server.stop();
    await waitState(page, "offline");
    assert.equal(await page.getByTestId("reason").textContent(), "gave up after 3 attempts");
    assert.equal(await page.getByTestId("reconnect-button").isVisible(), true);
    t.diagnostic(`screenshot: ${await screenshot(page, "offline-gave-up")}`);

    server = await chorus(["-addr", `127.0.0.1:${server.port}`]);
    await page.getByTestId("reconnect-button").click();
    await waitState(page, "connected");
    assert.equal(await page.getByTestId("reconnect-button").isVisible(), false);
    await page.context().close();
  });

  test("a page that goes away leaves at once (pagehide teardown)", T, async () => {
    const server = await chorus();
    const watcher = await openDemo(`${server.url}/?${FAST}`, { label: "watcher" });
    const leaver = await openDemo(`${server.url}/?${FAST}&transport=polling`, { label: "leaver" });
    await waitPage(watcher, () => document.getElementById("stats-connections").textContent === "2", null, "2 connections");
    // Polling: nothing tells chorus the page is gone but the client's own goodbye (otherwise the
    // session would stay until the ping timeout, 45 s).
    await leaver.goto("about:blank");
    await waitPage(watcher, () => document.getElementById("stats-connections").textContent === "1", null, "1 connection after the page left", 5_000);
    await watcher.context().close();
    await leaver.context().close();
  });

  test("a lost acknowledgement: the page sends the message again with its id, and the reader gets it once", T, async (t) => {
    const server = await chorus();
    const room = unique("lostack");
    const url = (name) => demoURL(server, { room, name, transport: "websocket", extra: "ackTimeout=3000" });
    const reader = await openDemo(url("reader"), { label: "reader" });
    // Between the sender's page and chorus: the acknowledgement of the first publish of a message
    // marked "lose my ack" is dropped and the connection cut, as when a network fails after chorus
    // broadcast the message but before its ack reached the page.
    let lost = 0;
    const loseAck = (page) =>
      page.routeWebSocket(/\/socket\.io\//, (ws) => {
        const upstream = ws.connectToServer();
        const publishes = new Map(); // packet ack id → message text
        ws.onMessage((m) => {
          const p = typeof m === "string" && /^42(\d+)\["publish",(.*)\]$/.exec(m);
          if (p) publishes.set(p[1], JSON.parse(p[2]).data?.text);
          upstream.send(m);
        });
        upstream.onMessage((m) => {
          const a = typeof m === "string" && /^43(\d+)\[/.exec(m);
          if (a && publishes.get(a[1]) === "lose my ack" && lost === 0) {
            lost++;
            ws.close({ code: 4000, reason: "ack lost" });
            upstream.close();
            return;
          }
          ws.send(m);
        });
      });
    const sender = await openDemo(url("sender"), { label: "sender", setup: loseAck });
    await joined(sender, room);
    await joined(reader, room);

    const first = await sendChat(sender, "lose my ack");
    await waitPage(sender, (id) => document.querySelector(`[data-msg-id="${id}"]`)?.dataset.status === "sent", first, "the message acknowledged after the retry", 20_000);
    assert.equal(lost, 1, "one ack was dropped");
    const li = sender.locator(`[data-msg-id="${first}"]`);
    assert.equal(await li.getAttribute("data-attempts"), "2", "sent twice");
    assert.equal(await li.getAttribute("data-duplicate"), "true", "chorus recognised the retry");
    const last = await sendChat(sender, "after");
    await allAcked(sender);
    assert.deepEqual(await receivedIds(reader, [first, last], "lost ack"), [first, last], "the reader got the message once");
    t.diagnostic(`screenshot: ${await screenshot(sender, "lost-ack-sender")}`);
    await sender.context().close();
    await reader.context().close();
  });
});
