// The stock Socket.IO Admin UI in a real browser (playwright-core driving Debian's chromium, never a
// downloaded browser): chorus serves the UI at /admin/, the page logs in, and it shows the sockets
// of two chorus nodes that share a redis-server, and both servers. Screenshots go to
// tests/artifacts/ (gitignored); docs/admin-ui.png in the README is the dashboard's.
//
//   CHROMIUM                  the browser to drive (default: `which chromium`; Debian: apt-get install -y chromium)
//   UPDATE_DOCS_SCREENSHOT=1  also write the dashboard's screenshot to docs/admin-ui.png

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { TRANSPORTS, ack, chorusOnly, connect, repoRoot, startServer, unique } from "../node/harness.mjs";
import { startRedis } from "../node/cluster/redis.mjs";

const USER = "admin";
const PASSWORD = "browser-test-password";
const ARTIFACTS = path.join(repoRoot, "tests/artifacts");

function chromiumPath() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  try {
    return execFileSync("which", ["chromium"], { encoding: "utf8" }).trim();
  } catch {
    throw new Error("chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it): the Admin UI is tested in a real browser");
  }
}

/**
 * The UI loads a web font and its icon font from CDNs. The tests run offline: the icons come from
 * the @mdi/font package npm installed (the same files), the web font is refused (the page falls
 * back to a system font). chorus serves the UI itself unchanged.
 */
async function offlineCDNs(page) {
  const mdi = path.join(repoRoot, "node_modules/@mdi/font");
  await page.route(/^https:\/\/cdn\.jsdelivr\.net\/npm\/@mdi\/font@[^/]+\/(.*)$/, (route) => {
    const rel = new URL(route.request().url()).pathname.replace(/^\/npm\/@mdi\/font@[^/]+\//, "");
    const file = path.join(mdi, path.normalize(rel));
    if (!file.startsWith(mdi) || !existsSync(file)) return route.abort();
    const type = { ".css": "text/css", ".woff2": "font/woff2", ".woff": "font/woff", ".ttf": "font/ttf" }[path.extname(file)] ?? "application/octet-stream";
    return route.fulfill({ status: 200, contentType: type, body: readFileSync(file) });
  });
  await page.route(/^https:\/\/fonts\.(googleapis|gstatic)\.com\//, (route) => route.abort());
}

describe("Admin UI in chromium", { skip: chorusOnly }, () => {
  let redis;
  let a;
  let b;
  let browser;
  before(async () => {
    const executablePath = chromiumPath();
    redis = await startRedis();
    const env = {
      CHORUS_ADMIN_USERNAME: USER,
      CHORUS_ADMIN_PASSWORD: PASSWORD,
      CHORUS_REDIS_URL: redis.url,
      CHORUS_REDIS_PREFIX: unique("browser"),
    };
    [a, b] = await Promise.all([startServer({ env }), startServer({ env })]);
    browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
    mkdirSync(ARTIFACTS, { recursive: true });
  });
  after(async () => {
    await browser?.close();
    await a?.stop();
    await b?.stop();
    await redis?.close();
  });

  test("opens /admin/, logs in, and lists the sockets of both nodes and both servers", { timeout: 60_000 }, async () => {
    const lobby = "lobby";
    const onA = await Promise.all([connect(a.url, TRANSPORTS.websocket), connect(a.url, TRANSPORTS.upgrade)]);
    const onB = await Promise.all([connect(b.url, TRANSPORTS.polling), connect(b.url, TRANSPORTS.websocket)]);
    for (const s of [...onA, ...onB]) assert.deepEqual(await ack(s, "join", lobby), { ok: true });
    assert.deepEqual(await ack(onB[0], "join", "team-b"), { ok: true });

    const context = await browser.newContext({ viewport: { width: 1400, height: 860 } });
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    await offlineCDNs(page);
    await page.goto(`${a.url}/admin/`);

    // The connection dialog: chorus's URL and the credentials.
    const dialog = page.locator(".v-dialog--active");
    await dialog.getByLabel("Server URL").fill(a.url);
    await dialog.getByLabel("Username").fill(USER);
    await dialog.getByLabel("Password").fill(PASSWORD);
    await dialog.getByRole("button", { name: "Connect" }).click();
    await dialog.waitFor({ state: "hidden", timeout: 10_000 });

    // The server list shows both nodes (their ids are hostname#pid) once each has sent its stats.
    await page.goto(`${a.url}/admin/#/servers`);
    for (const server of [a, b]) {
      await page.getByText(`${os.hostname()}#${server.proc.pid}`, { exact: true }).waitFor({ timeout: 10_000 });
    }
    await page.screenshot({ path: path.join(ARTIFACTS, "admin-ui-servers.png") });

    // The sockets page (namespace "/") shows the sockets of both nodes.
    await page.goto(`${a.url}/admin/#/sockets`);
    for (const s of [...onA, ...onB]) await page.getByText(s.id, { exact: true }).waitFor({ timeout: 10_000 });
    await page.screenshot({ path: path.join(ARTIFACTS, "admin-ui-sockets.png") });

    // The rooms page shows the shared room with all four members.
    await page.goto(`${a.url}/admin/#/rooms`);
    await page.getByText(lobby, { exact: true }).waitFor({ timeout: 10_000 });
    await page.getByText("team-b", { exact: true }).waitFor({ timeout: 10_000 });
    await page.screenshot({ path: path.join(ARTIFACTS, "admin-ui-rooms.png") });

    // The dashboard: both servers healthy, the clients by transport, the charts. It is the README's
    // picture: UPDATE_DOCS_SCREENSHOT=1 writes it to docs/admin-ui.png too.
    await page.goto(`${a.url}/admin/#/`);
    await page.locator(".v-card", { hasText: "Servers" }).getByText("100.0 %").waitFor({ timeout: 10_000 });
    const shot = await page.screenshot({ path: path.join(ARTIFACTS, "admin-ui-dashboard.png") });
    if (process.env.UPDATE_DOCS_SCREENSHOT === "1") writeFileSync(path.join(repoRoot, "docs/admin-ui.png"), shot);

    assert.deepEqual(problems, [], "no errors in the page");
    await context.close();
  });
});
