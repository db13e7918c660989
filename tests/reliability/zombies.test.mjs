// Zombies and half-open connections (issue 9, point 6): a client that vanishes without a FIN is
// found by the heartbeat within ping interval + ping timeout and cleaned up, on both transports. The
// client is a stock socket.io-client in a process of its own, frozen with SIGSTOP: its socket stays
// open, nothing answers the pings (WebSocket) and nothing polls any more (long-polling).

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import readline from "node:readline";
import { chorusOnly, httpRequest, repoRoot, startServer, waitFor } from "../node/harness.mjs";

const PING_INTERVAL_MS = 1000;
const PING_TIMEOUT_MS = 1000;
// Timers fire late on a busy 2-core machine; the bound is still well below what a missing
// heartbeat rule would give (never).
const SLACK_MS = 1500;
const KEY = "reliability-key";

/** Starts client.mjs and resolves with {proc, sid, pings()} once it is connected. */
async function spawnClient(url, transport) {
  const proc = spawn(process.execPath, [path.join(repoRoot, "tests/reliability/client.mjs"), url, transport], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = readline.createInterface({ input: proc.stdout });
  const sid = await new Promise((resolve, reject) => {
    // Starting a Node process and connecting takes a while on a loaded machine.
    const timer = setTimeout(() => reject(new Error("the client did not connect within 20 s")), 20_000);
    lines.once("line", (line) => {
      clearTimeout(timer);
      resolve(JSON.parse(line).sid);
    });
    proc.once("exit", (code) => reject(new Error(`the client exited with ${code} before connecting`)));
  });
  let pings = 0;
  lines.on("line", (line) => (pings = JSON.parse(line).pings ?? pings));
  return { proc, sid, pings: () => pings };
}

async function socketIDs(url) {
  const res = await httpRequest(`${url}/api/v1/sockets`, { headers: { authorization: `Bearer ${KEY}` } });
  assert.equal(res.status, 200, res.text);
  return res.json.sockets.map((s) => s.id);
}

for (const transport of ["websocket", "polling"]) {
  test(`a frozen ${transport} client is dropped within ping interval + timeout`, { skip: chorusOnly }, async (t) => {
    const server = await startServer({
      env: { CHORUS_PING_INTERVAL: `${PING_INTERVAL_MS}ms`, CHORUS_PING_TIMEOUT: `${PING_TIMEOUT_MS}ms`, CHORUS_API_KEY: KEY },
    });
    const { proc, sid, pings } = await spawnClient(server.url, transport);
    t.after(() => proc.kill("SIGKILL"));
    // Heartbeats pass while the client is alive: it is not dropped for being idle.
    await waitFor(() => pings() >= 3, { timeout: 4 * (PING_INTERVAL_MS + PING_TIMEOUT_MS), message: "three heartbeats" });
    assert.ok((await socketIDs(server.url)).includes(sid), "the live client was dropped");

    proc.kill("SIGSTOP");
    const frozenAt = Date.now();
    const bound = PING_INTERVAL_MS + PING_TIMEOUT_MS + SLACK_MS;
    const entry = await waitFor(() => server.logs.find((l) => l.msg === "disconnect" && l.sid === sid), {
      timeout: bound + 3000,
      message: `no disconnect logged for ${sid}`,
    });
    const after = Date.now() - frozenAt;
    assert.equal(entry.reason, "ping timeout");
    t.diagnostic(`${transport}: dropped ${after} ms after the client froze (ping interval + timeout: ${PING_INTERVAL_MS + PING_TIMEOUT_MS} ms)`);
    assert.ok(after <= bound, `dropped ${after} ms after the client froze, want at most ${bound} ms`);
    assert.ok(!(await socketIDs(server.url)).includes(sid), "the socket is still listed");
  });
}
