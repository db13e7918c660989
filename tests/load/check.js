'use strict';

// node check.js NAME REPORT.json — reads one artillery JSON report (artillery run --output),
// prints the key figures of scenario NAME and one "PASS NAME" or "FAIL NAME: why" line, and
// exits 0 or 1.
//
// Tolerance: each kind of failure may reach LOAD_MAX_FAILED_PCT percent (default 0.1) of the
// attempts of that kind, rounded down; so 0 failures are allowed under 1 000 attempts. Kinds:
//   failed virtual users and errors (of users created), acks that were not { ok: true } (of
//   emits sent), unexpected disconnects (of users created), HTTP answers other than 202 (of
//   requests), fan-out messages lost or out of order (of messages delivered).
// Always a failure: no user created, users left unfinished, no ack answered, or (fan-out) no
// message delivered.

const fs = require('node:fs');

const [name, file] = process.argv.slice(2);
if (!name || !file) {
  console.error('usage: node check.js NAME REPORT.json');
  process.exit(2);
}
const pct = Number(process.env.LOAD_MAX_FAILED_PCT ?? '0.1');
if (!Number.isFinite(pct) || pct < 0) {
  console.error(`LOAD_MAX_FAILED_PCT must be a number ≥ 0, not ${process.env.LOAD_MAX_FAILED_PCT}`);
  process.exit(2);
}

const { counters = {}, summaries = {} } = JSON.parse(fs.readFileSync(file, 'utf8')).aggregate;
const n = (key) => counters[key] || 0;
const sumPrefix = (prefix) =>
  Object.entries(counters)
    .filter(([k]) => k.startsWith(prefix))
    .reduce((acc, [, v]) => acc + v, 0);
const listPrefix = (prefix) =>
  Object.entries(counters)
    .filter(([k]) => k.startsWith(prefix))
    .map(([k, v]) => `${k.slice(prefix.length)} ${v}`)
    .join(', ');
const allowed = (attempts) => Math.floor((attempts * pct) / 100);
const ms = (key) => {
  const s = summaries[key];
  return s ? `p50 ${s.p50} p95 ${s.p95} p99 ${s.p99} max ${s.max} ms (n=${s.count})` : 'none';
};

const problems = [];
const limit = (what, failed, attempts) => {
  if (failed > allowed(attempts)) {
    problems.push(`${what}: ${failed} of ${attempts} (allowed ${allowed(attempts)})`);
  }
};

// Virtual users.
const created = n('vusers.created');
const completed = n('vusers.completed');
const vuFailed = n('vusers.failed');
const errors = sumPrefix('errors.');
console.log(`  users        ${created} created, ${completed} completed, ${vuFailed} failed`);
console.log(`  errors       ${errors}${errors ? ` (${listPrefix('errors.')})` : ''}`);
if (created === 0) problems.push('no virtual user was created');
if (completed + vuFailed !== created) {
  problems.push(`${created - completed - vuFailed} virtual users did not finish`);
}
limit('failed virtual users', vuFailed, created);
limit('errors', errors, created);

// Acks (socketio-v3 scenarios).
const sent = n('engine.socketio.emit');
if (sent > 0 || n('vusers.created_by_name.listener') > 0) {
  const ok = n('chorus.ack.ok');
  const timedOut = n('chorus.ack.timeout');
  const cut = n('chorus.ack.disconnected');
  const refused = sumPrefix('chorus.ack.refused.');
  const unanswered = sent - ok - timedOut - cut - refused;
  console.log(
    `  acks         ${sent} sent, ${ok} ok, ${timedOut} timed out, ${cut} cut by a disconnect, ` +
      `${refused} refused${refused ? ` (${listPrefix('chorus.ack.refused.')})` : ''}` +
      `${unanswered ? `, ${unanswered} never settled` : ''}`,
  );
  console.log(`  ack latency  ${ms('chorus.ack_ms')}`);
  for (const key of Object.keys(summaries).filter((k) => k.startsWith('chorus.ack_ms.')).sort()) {
    console.log(`    ${key.slice('chorus.ack_ms.'.length).padEnd(10)} ${ms(key)}`);
  }
  console.log(`  connect      ${ms('chorus.connect_ms')}`);
  if (ok === 0) problems.push('no ack was answered');
  limit('acks not ok', sent - ok, sent);
  const dropped = sumPrefix('chorus.disconnect.');
  console.log(`  disconnects  ${dropped} unexpected${dropped ? ` (${listPrefix('chorus.disconnect.')})` : ''}`);
  limit('unexpected disconnects', dropped, created);
}

// HTTP API (fan-out emitters).
const requests = n('http.requests');
if (requests > 0) {
  const accepted = n('http.codes.202');
  const other = Object.keys(counters)
    .filter((k) => k.startsWith('http.codes.') && k !== 'http.codes.202')
    .map((k) => `${k.slice('http.codes.'.length)} ${counters[k]}`);
  console.log(
    `  http emits   ${requests} sent, ${accepted} answered 202${other.length ? `, others: ${other.join(', ')}` : ''}`,
  );
  console.log(`  http latency ${ms('http.response_time')}`);
  limit('HTTP emits not answered 202', requests - accepted, requests);
}

// Fan-out deliveries.
const listeners = n('vusers.created_by_name.listener');
if (listeners > 0) {
  const delivered = n('chorus.fanout.delivered');
  const lost = n('chorus.fanout.lost');
  const outOfOrder = n('chorus.fanout.out_of_order');
  const malformed = n('chorus.fanout.malformed');
  const empty = n('chorus.fanout.listener_got_nothing');
  const per = summaries['chorus.fanout.per_listener'];
  console.log(
    `  fan-out      ${delivered} delivered to ${listeners} listeners` +
      `${per ? ` (per listener min ${per.min}, median ${per.median}, max ${per.max})` : ''}, ` +
      `${lost} lost, ${outOfOrder} out of order, ${malformed} malformed, ${empty} listeners got nothing`,
  );
  console.log(`  delivery     ${ms('chorus.fanout.delivery_ms')}`);
  if (delivered === 0) problems.push('no fan-out message was delivered');
  limit('fan-out messages lost, out of order or malformed', lost + outOfOrder + malformed, delivered);
  limit('listeners that got nothing', empty, listeners);
}

if (problems.length === 0) {
  console.log(`PASS ${name}  (tolerance ${pct}% of attempts per kind of failure)`);
} else {
  console.log(`FAIL ${name}: ${problems.join('; ')}  (tolerance ${pct}% of attempts per kind of failure)`);
  process.exit(1);
}
