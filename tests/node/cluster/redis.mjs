// Starts a redis-server of its own on a free 127.0.0.1 port (no persistence, temporary directory),
// for the cluster suites. A missing redis-server is an error telling how to install it: these
// suites run against a real server, never a mock.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const STARTUP_TIMEOUT_MS = 10_000;

/** A port the kernel just handed out on 127.0.0.1 (free unless someone takes it first). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function ping(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    let data = "";
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(500, () => done(false));
    sock.once("error", () => done(false));
    sock.once("connect", () => sock.write("PING\r\n"));
    sock.on("data", (chunk) => {
      data += chunk;
      if (data.includes("\r\n")) done(data.startsWith("+PONG"));
    });
  });
}

/**
 * Starts redis-server; resolves with {port, url, pid, stop(), restart()}. stop() kills it (SIGKILL,
 * as a crash would) and waits for the process to exit; restart() starts it again on the same port
 * (and the same directory). With persist, every write is appended to an AOF and fsynced before
 * Redis answers (appendfsync always), so a restart after SIGKILL finds every acknowledged write;
 * without it (the default) a restart starts empty.
 */
export async function startRedis({ persist = false } = {}) {
  if (spawnSync("redis-server", ["--version"]).error) {
    throw new Error("redis-server is not installed (Debian: apt-get install -y redis-server; .ci/run installs it): the cluster tests need a real Redis");
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), "chorus-redis-"));
  let proc;
  let exited;
  let port;

  const launch = async () => {
    const durability = persist ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"];
    proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", ...durability, "--dir", dir, "--loglevel", "warning"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    proc.stdout.on("data", (c) => (output += c));
    proc.stderr.on("data", (c) => (output += c));
    exited = new Promise((resolve) => proc.once("exit", resolve));
    let gone = false;
    exited.then(() => (gone = true));
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    while (Date.now() < deadline && !gone) {
      if (await ping(port)) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    proc.kill("SIGKILL");
    await exited;
    throw new Error(`redis-server on port ${port} did not start: ${output}`);
  };

  let lastErr;
  for (let attempt = 0; attempt < 5; attempt++) {
    port = await freePort();
    try {
      await launch();
      lastErr = undefined;
      break;
    } catch (err) {
      lastErr = err;
    }
  }
  if (lastErr) throw lastErr;

  const stop = async () => {
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGKILL");
      await exited;
    }
  };
  const server = {
    port,
    url: `redis://127.0.0.1:${port}`,
    /** The running redis-server's pid (a new one after restart). */
    get pid() {
      return proc.pid;
    },
    stop,
    async restart() {
      await stop();
      await launch();
    },
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  process.on("exit", () => proc?.kill("SIGKILL"));
  return server;
}
