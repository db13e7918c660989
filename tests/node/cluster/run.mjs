// make cluster: Redis, three chorus nodes and nginx with sticky routing, all on loopback, until
// Ctrl-C. Open the printed URL in several browsers (or point clients at it) and watch rooms span the
// nodes.
//
//   CHORUS_BIN   chorus binary (default ./chorus)
//   NODES        number of chorus nodes (default 3)
//   API_KEY      CHORUS_API_KEY of the nodes (default "dev-key")

import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startRedis } from "./redis.mjs";
import { startNginx } from "./nginx.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const bin = path.resolve(root, process.env.CHORUS_BIN || "./chorus");
const count = Number(process.env.NODES || 3);
const apiKey = process.env.API_KEY || "dev-key";

function startChorus(redisURL, i) {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, CHORUS_REDIS_URL: redisURL, CHORUS_API_KEY: apiKey };
    const proc = spawn(bin, ["-addr", "127.0.0.1:0", "-log-format", "json"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`chorus node ${i} did not start`)), 10_000);
    const onData = (chunk) => {
      buf += chunk;
      for (const line of buf.split("\n")) {
        try {
          const entry = JSON.parse(line);
          if (entry.msg === "listening") {
            clearTimeout(timer);
            resolve({ proc, addr: entry.addr });
          }
          if (entry.level === "WARN" || entry.level === "ERROR" || entry.msg?.startsWith("redis")) {
            process.stderr.write(`node ${i}: ${line}\n`);
          }
        } catch {
          // partial line
        }
      }
      buf = buf.slice(buf.lastIndexOf("\n") + 1);
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", onData);
    proc.once("exit", (code) => reject(new Error(`chorus node ${i} exited with ${code}`)));
  });
}

const redis = await startRedis();
const nodes = [];
for (let i = 0; i < count; i++) nodes.push(await startChorus(redis.url, i + 1));
const nginx = await startNginx(nodes.map((n) => n.addr));
console.log(`redis   ${redis.url}`);
nodes.forEach((n, i) => console.log(`chorus  node ${i + 1} http://${n.addr}`));
console.log(`nginx   ${nginx.url}   ← connect here (sticky by client address)`);
console.log(`API     curl -H 'Authorization: Bearer ${apiKey}' '${nginx.url}/api/v1/sockets'`);
console.log("Ctrl-C stops everything.");

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await nginx.stop();
  for (const n of nodes) n.proc.kill("SIGTERM");
  await Promise.all(nodes.map((n) => new Promise((r) => (n.proc.exitCode !== null ? r() : n.proc.once("exit", r)))));
  await redis.close();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
