// A WebSocket proxy for the delivery tests: it relays Engine.IO-over-WebSocket frames between a
// client and the current backend, and lets the test decide, frame by frame, what the network does
// to the server's frames: pass them, drop them (a lost ack), or drop them and cut the connection
// (the client reconnects, through the proxy, to whatever backend is current then).

import http from "node:http";
import { WebSocket, WebSocketServer } from "ws";

/**
 * Starts the proxy on a free 127.0.0.1 port.
 * @param {{target: string, onClientFrame?: (frame: string) => void,
 *   onServerFrame?: (frame: string) => "pass"|"drop"|"cut"}} opts target: the backend's base URL
 *   (http://127.0.0.1:port); frames are text frames as strings (binary frames always pass).
 * @returns {Promise<{url: string, setTarget: (url: string) => void, connections: () => number, close: () => Promise<void>}>}
 */
export async function startWsProxy({ target, onClientFrame = () => {}, onServerFrame = () => "pass" }) {
  let current = target;
  const pairs = new Set();
  const server = http.createServer((req, res) => {
    res.writeHead(400, { "content-type": "text/plain" });
    res.end("this proxy relays WebSocket connections only\n");
  });
  const wss = new WebSocketServer({ server });

  wss.on("connection", (client, req) => {
    const upstream = new WebSocket(current.replace(/^http/, "ws") + req.url);
    const early = []; // client frames sent before the backend connection opened
    const pair = {
      cut() {
        client.terminate();
        upstream.terminate();
      },
    };
    pairs.add(pair);
    const done = () => {
      pairs.delete(pair);
      pair.cut();
    };
    client.on("close", done);
    upstream.on("close", done);
    client.on("error", done);
    upstream.on("error", done);
    upstream.on("open", () => {
      for (const [data, binary] of early.splice(0)) upstream.send(data, { binary });
    });
    client.on("message", (data, binary) => {
      if (!binary) onClientFrame(data.toString());
      if (upstream.readyState === WebSocket.OPEN) upstream.send(data, { binary });
      else early.push([data, binary]);
    });
    upstream.on("message", (data, binary) => {
      const verdict = binary ? "pass" : onServerFrame(data.toString());
      if (verdict === "cut") return pair.cut();
      if (verdict === "drop") return;
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary });
    });
  });

  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    setTarget(url) {
      current = url;
    },
    connections: () => pairs.size,
    async close() {
      for (const p of pairs) p.cut();
      wss.close();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Follows the publishes a client sends through the proxy and decides the fate of their acks.
 * schedule maps a message's `data` (its index) to the verdicts for the acks of its successive
 * attempts, e.g. {3: ["drop"], 7: ["cut", "drop"]}; every other ack passes. Returns the proxy's
 * frame hooks and `dropped`, the number of acks not delivered so far.
 */
export function ackSchedule(schedule) {
  const byAckId = new Map(); // ack id of a publish packet → message index
  const attempts = new Map(); // message index → acks seen so far
  const state = {
    dropped: 0,
    onClientFrame(frame) {
      const m = /^42(\d+)(\[.*)$/s.exec(frame); // "4" message, "2" event, ack id, [name, arg]
      if (!m) return;
      const [event, arg] = JSON.parse(m[2]);
      if (event === "publish") byAckId.set(Number(m[1]), arg.data);
    },
    onServerFrame(frame) {
      const m = /^43(\d+)\[/.exec(frame); // "4" message, "3" ack, ack id
      if (!m || !byAckId.has(Number(m[1]))) return "pass";
      const index = byAckId.get(Number(m[1]));
      const n = attempts.get(index) ?? 0;
      attempts.set(index, n + 1);
      const verdict = schedule[index]?.[n] ?? "pass";
      if (verdict !== "pass") state.dropped++;
      return verdict;
    },
  };
  return state;
}
