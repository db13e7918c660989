// The client protocol of docs/protocol.md over each transport: connect, upgrade, join / leave /
// publish, binary, refused requests, namespaces.

import { before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  TRANSPORTS,
  ack,
  binToHex,
  connect,
  connectRefused,
  nextEvent,
  rawWebSocket,
  record,
  startServer,
  unique,
  waitFor,
} from "./harness.mjs";

const RESERVED = ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"];
const OK = { ok: true };
const T = { timeout: 15_000 };

let server;
before(async () => {
  server = await startServer();
});

/** Asserts an ack is {ok:false, error:{code, message}} with one of the codes. */
function assertRefused(reply, codes, what) {
  const allowed = [codes].flat();
  assert.equal(reply?.ok, false, `${what}: expected a refusal, got ${JSON.stringify(reply)}`);
  assert.ok(allowed.includes(reply.error?.code), `${what}: code ${JSON.stringify(reply.error?.code)}, want ${allowed.join(" or ")}`);
  assert.equal(typeof reply.error.message, "string", `${what}: error.message must be a string`);
}

/** Waits until `events` holds an event named `name`; returns the list of events received until then. */
async function waitForEvent(events, name, what) {
  await waitFor(() => events.some((e) => e.event === name), { message: `${what}: "${name}" received` });
  return events;
}

for (const [transport, opts] of Object.entries(TRANSPORTS)) {
  describe(`over ${transport}`, () => {
    test("connects", T, async () => {
      let upgraded;
      const socket = await connect(server.url, opts, {
        onSocket: (s) => {
          upgraded = new Promise((resolve) => s.io.engine.once("upgrade", resolve));
        },
      });
      assert.ok(socket.connected);
      assert.equal(typeof socket.id, "string");
      const engine = socket.io.engine;
      if (transport === "upgrade") {
        let timer;
        await Promise.race([
          upgraded,
          new Promise((_, reject) => (timer = setTimeout(() => reject(new Error("no upgrade event within 5 s")), 5_000))),
        ]);
        clearTimeout(timer);
        assert.equal(engine.transport.name, "websocket", "transport after the upgrade event");
        assert.deepEqual(await ack(socket, "join", unique()), OK, "a request after the upgrade");
      } else {
        assert.equal(engine.transport.name, opts.transports[0]);
        assert.deepEqual(await ack(socket, "join", unique()), OK);
        assert.equal(engine.transport.name, opts.transports[0], "no upgrade when one transport is allowed");
      }
    });

    test("a request sent right on connect is answered", T, async () => {
      // Emitted from inside the connect handler, before anything else can happen on the socket.
      const CLIENTS = 20;
      const replies = await Promise.all(
        Array.from({ length: CLIENTS }, () => {
          let reply;
          return connect(server.url, opts, {
            onSocket: (s) => s.once("connect", () => (reply = s.timeout(5_000).emitWithAck("join", unique()))),
          }).then(() => reply);
        }),
      );
      assert.deepEqual(replies, Array(CLIENTS).fill(OK));
    });

    test("join, publish to the other members only, leave", T, async () => {
      const room = unique();
      const onlyB = unique();
      const [a, b, c] = await Promise.all([1, 2, 3].map(() => connect(server.url, opts)));
      const [evA, evB, evC] = [a, b, c].map(record);
      for (const s of [a, b, c]) assert.deepEqual(await ack(s, "join", room), OK);
      assert.deepEqual(await ack(b, "join", onlyB), OK);

      assert.deepEqual(await ack(a, "publish", { room, event: "chat", data: { text: "hi", n: 1 } }), OK);
      await waitForEvent(evB, "chat", "B");
      await waitForEvent(evC, "chat", "C");
      for (const ev of [evB, evC]) {
        assert.deepEqual(ev, [{ event: "chat", args: [{ text: "hi", n: 1 }], at: ev[0].at }], "one chat with the single data argument");
      }

      // The sender is a member but gets nothing: B's later publish reaches A first.
      assert.deepEqual(await ack(b, "publish", { room, event: "fromB", data: 2 }), OK);
      await waitForEvent(evA, "fromB", "A");
      assert.deepEqual(evA.map((e) => e.event), ["fromB"], "the sender must not receive its own publish");

      // Leaving stops delivery (checked with a later publish to a room B is still in).
      assert.deepEqual(await ack(b, "leave", room), OK);
      assert.deepEqual(await ack(b, "leave", unique()), OK, "leaving a room one is not in is not an error");
      evB.length = 0;
      evC.length = 0;
      assert.deepEqual(await ack(a, "publish", { room, event: "afterLeave", data: 3 }), OK);
      assert.deepEqual(await ack(a, "publish", { room: onlyB, event: "marker", data: 4 }), OK);
      await waitForEvent(evB, "marker", "B");
      assert.deepEqual(evB.map((e) => [e.event, e.args]), [["marker", [4]]], "B left the room: only the marker");
      await waitForEvent(evC, "afterLeave", "C");
      assert.deepEqual(evC.map((e) => [e.event, e.args]), [["afterLeave", [3]]]);
    });

    test("binary data round-trips through publish", T, async () => {
      const room = unique();
      const [a, b] = await Promise.all([connect(server.url, opts), connect(server.url, opts)]);
      const evB = record(b);
      for (const s of [a, b]) assert.deepEqual(await ack(s, "join", room), OK);

      const ab = new Uint8Array([9, 8, 7, 0, 255]).buffer;
      const nested = {
        a: { b: Buffer.from([0, 1, 2, 254, 255]) },
        list: [Buffer.from("xyz"), ab, Buffer.from([42])],
        deep: { x: [{ y: new Uint8Array([1, 2, 3]).buffer }] },
        big: randomBytes(64 * 1024),
        text: "mixed é 漢字",
        n: 42,
      };
      const cases = [
        ["buffer", Buffer.from([1, 2, 3, 0, 250])],
        ["arraybuffer", ab],
        ["nested", nested],
        ["arrayOfBuffers", [Buffer.from("one"), Buffer.from("two"), new Uint8Array([3]).buffer]],
      ];
      for (const [event, data] of cases) {
        assert.deepEqual(await ack(a, "publish", { room, event, data }), OK, `publish ${event}`);
      }
      await waitFor(() => evB.length >= cases.length, { message: `B received ${cases.length} binary events` });
      assert.deepEqual(evB.map((e) => e.event), cases.map(([event]) => event));
      for (const [i, [event, data]] of cases.entries()) {
        assert.equal(evB[i].args.length, 1, `${event}: one argument`);
        assert.deepEqual(binToHex(evB[i].args[0]), binToHex(data), `${event}: same bytes and shape`);
      }
      // Binary values arrive as binary, not as JSON objects.
      const got = evB[2].args[0];
      assert.ok(Buffer.isBuffer(got.a.b) || got.a.b instanceof ArrayBuffer, "nested buffer arrives as binary");
    });

    test("refused requests change nothing and keep the connection", T, async () => {
      const room = unique();
      const [a, b] = await Promise.all([connect(server.url, opts), connect(server.url, opts)]);
      const [evA, evB] = [a, b].map(record);
      for (const s of [a, b]) assert.deepEqual(await ack(s, "join", room), OK);

      const refused = [
        // join / leave: the doc's table makes a non-string room invalid_argument, its message invalid_room.
        ["join", [42], ["invalid_room", "invalid_argument"]],
        ["join", [""], "invalid_room"],
        ["join", [], "invalid_room"],
        ["join", ["x".repeat(129)], "invalid_room"],
        ["join", ["é".repeat(64) + "x"], "invalid_room"], // 65 characters, 129 bytes
        ["leave", [""], "invalid_room"],
        ["leave", ["x".repeat(129)], "invalid_room"],
        ["publish", ["lobby"], "invalid_argument"],
        ["publish", [42], "invalid_argument"],
        ["publish", [null], "invalid_argument"],
        ["publish", [[room, "chat", 1]], "invalid_argument"],
        ["publish", [{ room, data: 1 }], "invalid_argument"],
        ["publish", [{ room, event: 5, data: 1 }], "invalid_argument"],
        ["publish", [{ event: "chat", data: 1 }], "invalid_room"],
        ["publish", [{ room: "", event: "chat", data: 1 }], "invalid_room"],
        ["publish", [{ room: "x".repeat(129), event: "chat", data: 1 }], "invalid_room"],
        ...RESERVED.map((event) => ["publish", [{ room, event, data: 1 }], "reserved_event"]),
        ["no_such_event", [1], "unknown_event"],
        ["no_such_event", [], "unknown_event"],
      ];
      // Every case is tried, then every mismatch reported at once.
      const mismatches = [];
      for (const [event, args, codes] of refused) {
        const what = `${event}(${JSON.stringify(args).slice(0, 60)})`;
        try {
          assertRefused(await ack(a, event, ...args), codes, what);
        } catch (err) {
          mismatches.push(err.message);
        }
        assert.ok(a.connected, `${what}: connection still up`);
      }
      assert.deepEqual(mismatches, [], "refusals with the wrong code");
      // An unknown event without an ack is ignored.
      a.emit("no_such_event", { x: 1 });

      // Boundaries that are fine: 128 bytes, in ASCII and in two-byte characters.
      assert.deepEqual(await ack(a, "join", "x".repeat(128)), OK, "128-byte room");
      assert.deepEqual(await ack(a, "join", "é".repeat(64)), OK, "128-byte room of 64 characters");

      // Nothing was broadcast: the next publish is the first thing B gets.
      assert.deepEqual(await ack(a, "publish", { room, event: "after", data: "ok" }), OK);
      await waitForEvent(evB, "after", "B");
      assert.deepEqual(evB.map((e) => [e.event, e.args]), [["after", ["ok"]]], "refused publishes broadcast nothing");
      // A is still in the room.
      assert.deepEqual(await ack(b, "publish", { room, event: "toA", data: 1 }), OK);
      await waitForEvent(evA, "toA", "A");
      assert.deepEqual(evA.map((e) => e.event), ["toA"]);
      assert.ok(a.connected && b.connected);
    });

    test("unknown namespace gets connect_error", T, async () => {
      const err = await connectRefused(`${server.url}/no-such-namespace`, opts);
      assert.equal(err.message, "Invalid namespace");
    });
  });
}

describe("raw packets", () => {
  /** Opens a raw WebSocket session connected to "/": returns the raw client. */
  async function rawSession() {
    const raw = await rawWebSocket(server.port);
    const open = await raw.next((m) => typeof m === "string" && m.startsWith("0"));
    assert.ok(JSON.parse(open.slice(1)).sid, "engine.io open packet has a sid");
    raw.send("40");
    await raw.next((m) => typeof m === "string" && m.startsWith("40"));
    return raw;
  }
  const ackOf = (id) => (m) => typeof m === "string" && m.startsWith(`43${id}[`);
  const ackBody = (m, id) => JSON.parse(m.slice(`43${id}`.length));

  test("an event with a reserved name is refused with reserved_event, connection kept", T, async () => {
    const raw = await rawSession();
    for (const [i, name] of RESERVED.entries()) {
      raw.send(`42${i + 1}${JSON.stringify([name, { x: 1 }])}`);
      const [reply] = ackBody(await raw.next(ackOf(i + 1)), i + 1);
      assertRefused(reply, "reserved_event", `event "${name}"`);
    }
    // The same as a binary event.
    raw.send(`451-20${JSON.stringify(["disconnect", { _placeholder: true, num: 0 }])}`);
    raw.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    assertRefused(ackBody(await raw.next(ackOf(20)), 20)[0], "reserved_event", "binary event \"disconnect\"");
    // Still connected and served.
    raw.send(`4230${JSON.stringify(["join", unique()])}`);
    assert.deepEqual(ackBody(await raw.next(ackOf(30)), 30), [OK]);
  });
});
