// Runs nginx (the Debian package) in front of chorus nodes, on a free 127.0.0.1 port, with its
// configuration, pid and logs in a temporary directory. nginxConfig is the configuration the README
// documents: sticky by client address, WebSocket upgrades passed through.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { freePort } from "./redis.mjs";

/**
 * The nginx configuration for chorus nodes at upstreams (host:port), listening on listen.
 * Long-polling needs every request of an Engine.IO session on the node that opened it, so the
 * upstream is sticky: `hash $remote_addr consistent` (ip_hash would do too; behind another proxy
 * hash on X-Forwarded-For instead). A handshake that a node refuses because it drains (503) or
 * cannot take (connection refused, after a crash) goes to the next node (proxy_next_upstream).
 * max_fails=0: nginx's passive health check counts a failure until a later request to that node
 * *completes*, and a WebSocket request completes only when the connection closes, so a node that
 * had failed once got one new connection per fail_timeout after it was back, and when the other
 * node went down nginx answered 502 "no live upstreams" to everyone (tests/reliability, rolling
 * restart). A refused connection is cheap to retry; proxy_connect_timeout bounds a silent one.
 */
export function nginxConfig({ listen, upstreams, dir, workerConnections = 4096 }) {
  const asRoot = process.getuid?.() === 0;
  return `# chorus behind nginx: sticky sessions for long-polling, WebSocket upgrades passed through.
${asRoot ? "user root;\n" : ""}worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
worker_rlimit_nofile ${2 * workerConnections};
events { worker_connections ${workerConnections}; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;

  map $http_upgrade $connection_upgrade {
    default upgrade;
    ''      close;
  }

  upstream chorus {
    hash $remote_addr consistent;   # sticky: a client's requests all go to one node
${upstreams.map((u) => `    server ${u} max_fails=0;`).join("\n")}
  }

  server {
    listen ${listen};
    location / {
      proxy_pass http://chorus;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;              # long-polling answers go out at once
      proxy_read_timeout 75s;           # longer than CHORUS_PING_INTERVAL + CHORUS_PING_TIMEOUT
      proxy_next_upstream error timeout http_503;  # a draining or dead node: the next one
      proxy_connect_timeout 2s;
    }
  }
}
`;
}

function listening(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

/**
 * Starts nginx in front of upstreams; resolves with {url, port, pid, stop()}. workerConnections
 * bounds the connections of its one worker: each proxied client takes two.
 */
export async function startNginx(upstreams, { workerConnections } = {}) {
  if (spawnSync("nginx", ["-v"]).error) {
    throw new Error("nginx is not installed (Debian: apt-get install -y nginx; .ci/run installs it without starting its service)");
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), "chorus-nginx-"));
  let lastErr;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const conf = path.join(dir, "nginx.conf");
    writeFileSync(conf, nginxConfig({ listen: `127.0.0.1:${port}`, upstreams, dir, workerConnections }));
    const proc = spawn("nginx", ["-p", dir, "-e", path.join(dir, "error.log"), "-c", conf], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    proc.stdout.on("data", (c) => (output += c));
    proc.stderr.on("data", (c) => (output += c));
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    let gone = false;
    exited.then(() => (gone = true));
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && !gone && !(await listening(port))) await new Promise((r) => setTimeout(r, 20));
    if (!gone && (await listening(port))) {
      process.on("exit", () => proc.kill("SIGKILL"));
      return {
        port,
        url: `http://127.0.0.1:${port}`,
        pid: proc.pid,
        /** nginx's error log so far (warnings and errors: upstreams it could not reach). */
        errorLog() {
          try {
            return readFileSync(path.join(dir, "error.log"), "utf8");
          } catch {
            return "";
          }
        },
        async stop() {
          if (proc.exitCode === null && proc.signalCode === null) {
            proc.kill("SIGQUIT"); // graceful: workers finish, then exit
            const timer = setTimeout(() => proc.kill("SIGKILL"), 3000);
            await exited;
            clearTimeout(timer);
          }
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    proc.kill("SIGKILL");
    await exited;
    let log = "";
    try {
      log = readFileSync(path.join(dir, "error.log"), "utf8");
    } catch {
      // no log
    }
    lastErr = new Error(`nginx did not start on port ${port}: ${output}${log}`);
  }
  rmSync(dir, { recursive: true, force: true });
  throw lastErr;
}
