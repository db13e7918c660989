// Browser harness: Debian's chromium (never a downloaded browser) driven by playwright-core, pages of
// the demo app, and screenshots kept as test artifacts under test-artifacts/browser/ (gitignored).
//
//   CHROMIUM_BIN   chromium to drive (default: `command -v chromium`)
//   CHORUS_BIN     chorus binary (tests/node/harness.mjs)

import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after } from "node:test";
import { chromium } from "playwright-core";
import { repoRoot } from "../node/harness.mjs";

export const artifactsDir = path.join(repoRoot, "test-artifacts", "browser");
const LAUNCH_TIMEOUT_MS = 30_000;
/** Bound of every wait on the page. */
export const WAIT_MS = 15_000;

/** Path of the chromium binary: $CHROMIUM_BIN or the one on PATH; throws with what to install. */
export function chromiumPath() {
  if (process.env.CHROMIUM_BIN) return process.env.CHROMIUM_BIN;
  try {
    return execFileSync("sh", ["-c", "command -v chromium"], { encoding: "utf8" }).trim();
  } catch {
    throw new Error("chromium not found: install Debian's package (apt-get install chromium) or set CHROMIUM_BIN");
  }
}

let browser;
/** The one browser of this test file, launched on first use and closed after the file's tests. */
export async function launch() {
  browser ??= await chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    timeout: LAUNCH_TIMEOUT_MS,
    // As root (CI), chromium's sandbox cannot start; the pages are our own.
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  return browser;
}

after(async () => {
  await browser?.close();
});

/**
 * Opens the demo page at url in a fresh browser context (its own storage and network state) and
 * resolves once the page reports the connection state `waitFor` (default connected). The page's
 * console and errors are kept in page.logs. setup(page) runs before the page loads (routes).
 */
export async function openDemo(url, { waitFor = "connected", label = "page", setup } = {}) {
  const b = await launch();
  const context = await b.newContext({ viewport: { width: 1100, height: 760 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.label = label;
  page.logs = [];
  page.on("console", (m) => page.logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (err) => page.logs.push(`pageerror: ${err.message}`));
  await setup?.(page);
  await page.goto(url);
  if (waitFor) await waitState(page, waitFor);
  return page;
}

/** Waits until the page's connection indicator shows state. */
export async function waitState(page, state, timeout = WAIT_MS) {
  try {
    await page.waitForFunction((s) => document.getElementById("status")?.dataset.state === s, state, { timeout });
  } catch (err) {
    const now = await page.locator("#status").evaluate((e) => ({ ...e.dataset, text: e.textContent })).catch(() => "?");
    throw new Error(`${page.label}: state ${state} not reached within ${timeout} ms (now ${JSON.stringify(now)})${await failureShot(page)}\n${page.logs.slice(-20).join("\n")}`, { cause: err });
  }
}

/** Waits until fn(arg) is truthy in the page; fails with message and the page's last logs. */
export async function waitPage(page, fn, arg, message, timeout = WAIT_MS) {
  try {
    return await page.waitForFunction(fn, arg, { timeout });
  } catch (err) {
    throw new Error(`${page.label}: ${message} not true within ${timeout} ms${await failureShot(page)}\n${page.logs.slice(-20).join("\n")}`, { cause: err });
  }
}

// failureShot saves what the page showed when a wait failed; returns " (screenshot: path)".
async function failureShot(page) {
  try {
    return ` (screenshot: ${await screenshot(page, `failure-${page.label}-${Date.now()}`)})`;
  } catch {
    return "";
  }
}

/** Saves a full-page screenshot as test-artifacts/browser/<name>.png and returns its path. */
export async function screenshot(page, name) {
  mkdirSync(artifactsDir, { recursive: true });
  const file = path.join(artifactsDir, `${name.replace(/[^a-z0-9._-]+/gi, "-")}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return path.relative(repoRoot, file);
}

/** Types text into the message box of page and sends it; returns the id the page gave it. */
export async function sendChat(page, text) {
  await page.getByTestId("message-input").fill(text);
  await page.getByTestId("send-button").click();
  const own = page.locator('[data-testid="message"][data-own="true"]').last();
  await own.filter({ hasText: text }).waitFor();
  return own.getAttribute("data-msg-id");
}

/** The chat messages page shows from others: [{id, text}], in order. */
export function received(page) {
  return page.$$eval('[data-testid="message"][data-own="false"]', (items) =>
    items.map((li) => ({ id: li.dataset.msgId ?? null, text: li.querySelector(".text")?.textContent ?? "" })),
  );
}
