// docs/protocol.md "Order": a burst of publish calls from one client reaches every other member
// complete and in order, over WebSocket and over long-polling.

import { before, test } from "node:test";
import assert from "node:assert/strict";
import { TRANSPORTS, ack, connect, startServer, unique, waitFor } from "./harness.mjs";

const BURST = 5_000;
const BUDGET_MS = 60_000;

let server;
before(async () => {
  server = await startServer();
});

// "upgrade": the burst starts right after connect, so much of it crosses the polling → WebSocket switch.
for (const transport of ["websocket", "polling", "upgrade"]) {
  test(`a burst of ${BURST} publishes arrives complete and in order over ${transport}`, { timeout: BUDGET_MS }, async () => {
    const started = Date.now();
    const opts = TRANSPORTS[transport];
    const room = unique();
    const [a, b, c] = await Promise.all([1, 2, 3].map(() => connect(server.url, opts)));
    for (const s of [a, b, c]) assert.deepEqual(await ack(s, "join", room), { ok: true });

    const received = { b: [], c: [] };
    b.on("seq", (data) => received.b.push(data.n));
    c.on("seq", (data) => received.c.push(data.n));
    let fromSelf = 0;
    a.on("seq", () => fromSelf++);

    // Fire everything without waiting, then collect every ack.
    const ackTimeout = BUDGET_MS - 10_000;
    const acks = [];
    for (let n = 0; n < BURST; n++) {
      acks.push(a.timeout(ackTimeout).emitWithAck("publish", { room, event: "seq", data: { n } }));
    }
    const replies = await Promise.all(acks);
    const notOk = replies.filter((r) => r?.ok !== true);
    assert.equal(notOk.length, 0, `every ack is {ok:true}; first bad: ${JSON.stringify(notOk[0])}`);

    const left = () => BUDGET_MS - 5_000 - (Date.now() - started);
    await waitFor(() => received.b.length >= BURST && received.c.length >= BURST, {
      timeout: Math.max(1_000, left()),
      interval: 50,
      message: `B and C receive ${BURST} (have ${received.b.length} and ${received.c.length})`,
    });
    for (const [name, list] of Object.entries(received)) {
      assert.equal(list.length, BURST, `${name}: exactly ${BURST}, no duplicates`);
      const firstOff = list.findIndex((n, i) => n !== i);
      assert.equal(firstOff, -1, `${name}: in order; position ${firstOff} holds ${list[firstOff]}`);
    }
    assert.equal(fromSelf, 0, "the sender receives none of its own messages");
    assert.ok(a.connected && b.connected && c.connected, "every socket still connected");
  });
}
