// The chorus demo page: rooms with live chat, a live dashboard of the server's stats (the
// chorus:stats room) and a connection indicator, all on chorus-client.js (the client module this
// page shows off). Plain DOM, no framework. Text that came from a user or the server is only ever
// put on the page with textContent.
//
// Query parameters: transport=websocket|polling forces one transport; ns=/chat picks the namespace;
// room=R joins R at once; name=N sets the name; maxAttempts, reconnectDelay, reconnectDelayMax and
// ackTimeout (ms) set the client's options; persist=0 keeps unsent messages in memory only
// (otherwise in sessionStorage, so that a reload sends them).

const MAX_MESSAGES = 500;
const CHART_POINTS = 60;
const STATS_ROOM = "chorus:stats";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  attempt: $("attempt"),
  queued: $("queued"),
  reason: $("reason"),
  reconnectButton: $("reconnect-button"),
  transportSelect: $("transport-select"),
  roomForm: $("room-form"),
  roomInput: $("room-input"),
  joinButton: $("join-button"),
  leaveButton: $("leave-button"),
  rooms: $("rooms"),
  currentRoom: $("current-room"),
  messageForm: $("message-form"),
  nameInput: $("name-input"),
  messageInput: $("message-input"),
  sendButton: $("send-button"),
  messages: $("messages"),
  error: $("error"),
  statsNode: $("stats-node"),
  statsConnections: $("stats-connections"),
  statsRate: $("stats-rate"),
  statsMessages: $("stats-messages"),
  statsUptime: $("stats-uptime"),
  statsChart: $("stats-chart"),
  statsAge: $("stats-age"),
};

const params = new URLSearchParams(location.search);
const joined = new Set(); // chat rooms this page joined, in order (the stats room is not shown)
let current = null; // the room "Send" publishes to
let chorus = null; // the client, once the module has loaded
const own = new Map(); // id → <li> of this page's messages still waiting for their ack
const confirmed = new Set(); // rooms the server has acknowledged joining in the current session

function el(tag, className, text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.textContent = text;
  return node;
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = "";
  ui.error.hidden = true;
}

const formatError = (err) => (err.code ? `${err.code}: ${err.message}` : err.message);

function numberParam(name) {
  const v = Number(params.get(name));
  return params.has(name) && Number.isFinite(v) && v >= 0 ? v : undefined;
}

// options builds the client's options from the query string; unset ones keep the module's defaults.
function options() {
  const transport = params.get("transport");
  const opts = {
    transports: transport === "polling" || transport === "websocket" ? [transport] : undefined,
    maxAttempts: numberParam("maxAttempts"),
    reconnectionDelay: numberParam("reconnectDelay"),
    reconnectionDelayMax: numberParam("reconnectDelayMax"),
    ackTimeout: numberParam("ackTimeout"),
    storage: params.get("persist") === "0" ? null : globalThis.sessionStorage,
    hooks: {
      any: (name, detail) => console.debug("[chorus]", name, JSON.stringify(detail, (k, v) => (v instanceof Error ? `${v.name}: ${v.message}` : v))),
      joined: ({ room }) => {
        confirmed.add(room);
        renderRooms();
      },
    },
  };
  return Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined));
}

// --- connection indicator -------------------------------------------------------------------

function renderState(s) {
  const st = ui.status;
  st.dataset.state = s.status;
  st.dataset.attempt = String(s.attempt);
  st.dataset.queued = String(s.queued);
  st.dataset.transport = s.transport ?? "";
  st.textContent = s.transport ? `${s.status} · ${s.transport}` : s.status;

  const max = Number.isFinite(s.maxAttempts) ? `/${s.maxAttempts}` : "";
  ui.attempt.hidden = s.status !== "reconnecting" || s.attempt === 0;
  ui.attempt.textContent = `attempt ${s.attempt}${max}`;
  ui.queued.hidden = s.queued === 0;
  ui.queued.textContent = `${s.queued} queued`;
  ui.reason.hidden = s.status === "connected" || !s.reason;
  ui.reason.textContent = s.reason ?? "";
  ui.reconnectButton.hidden = s.status !== "offline";
  document.body.classList.toggle("offline", s.status !== "connected");
  if (s.status !== "connected" && confirmed.size > 0) {
    confirmed.clear(); // a new session joins them again
    renderRooms();
  }
  for (const li of own.values()) {
    if (li.dataset.status === "queued" && s.status === "connected") li.dataset.status = "sending";
    if (li.dataset.status === "sending" && s.status !== "connected") li.dataset.status = "queued";
  }
}

// --- rooms ----------------------------------------------------------------------------------

function renderRooms() {
  const items = [...joined].map((room) => {
    const button = el("button", "room", room);
    button.type = "button";
    button.setAttribute("aria-pressed", String(room === current));
    button.addEventListener("click", () => {
      current = room;
      ui.roomInput.value = room;
      renderRooms();
    });
    const li = document.createElement("li");
    li.dataset.room = room;
    li.dataset.joined = String(confirmed.has(room));
    li.append(button);
    return li;
  });
  ui.rooms.replaceChildren(...items);
  ui.currentRoom.textContent = current ?? "(join a room first)";
  ui.sendButton.disabled = current === null;
}

async function join(room) {
  if (room === "") return;
  joined.add(room); // shown at once; the client joins when it can, and again after reconnecting
  current = room;
  renderRooms();
  try {
    await chorus.join(room);
    clearError();
  } catch (err) {
    joined.delete(room);
    if (current === room) current = [...joined][0] ?? null;
    renderRooms();
    showError(`join ${room}: ${formatError(err)}`);
  }
}

async function leave(room) {
  joined.delete(room);
  if (current === room) current = [...joined][0] ?? null;
  renderRooms();
  try {
    await chorus.leave(room);
  } catch (err) {
    showError(`leave ${room}: ${formatError(err)}`);
  }
}

// --- chat -----------------------------------------------------------------------------------

// describe turns any value another client may have published into text.
function describe(value) {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function addMessage(data, { mine = false, room = "" } = {}) {
  const obj = data !== null && typeof data === "object" ? data : {};
  const text = typeof obj.text === "string" ? obj.text : describe(data);
  const from = typeof obj.from === "string" && obj.from !== "" ? obj.from : "anonymous";
  const at = new Date(obj.at ?? NaN);

  const li = el("li", mine ? "message own" : "message");
  li.dataset.testid = "message";
  li.dataset.own = String(mine);
  if (typeof obj.id === "string") li.dataset.msgId = obj.id;
  const meta = el("div", "meta");
  meta.append(el("span", "from", mine ? `${from} (you)` : from));
  if (room) meta.append(el("span", "to", `to ${room}`));
  if (!Number.isNaN(at.getTime())) {
    const time = el("time", "at", at.toLocaleTimeString());
    time.dateTime = at.toISOString();
    meta.append(time);
  }
  meta.append(el("span", "state"));
  li.append(meta, el("p", "text", text), el("p", "note"));
  ui.messages.append(li);
  while (ui.messages.childElementCount > MAX_MESSAGES) ui.messages.firstElementChild.remove();
  ui.messages.scrollTop = ui.messages.scrollHeight;
  return li;
}

// send publishes one chat message as a critical message: shown at once, queued while offline,
// retried with its id until chorus acknowledges it.
async function send(room, text) {
  const id = crypto.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  const data = { id, text, from: ui.nameInput.value.trim() || "anonymous", at: Date.now() };
  const li = addMessage(data, { mine: true, room });
  li.dataset.status = chorus.state.status === "connected" ? "sending" : "queued";
  own.set(id, li);
  try {
    const res = await chorus.sendCritical(room, "chat", data, { id });
    li.dataset.status = "sent";
    li.dataset.attempts = String(res.attempts);
    if (res.duplicate) li.dataset.duplicate = "true";
    li.querySelector(".state").textContent = res.attempts > 1 ? `✓ after ${res.attempts} tries` : "✓";
  } catch (err) {
    li.dataset.status = "failed";
    li.querySelector(".note").textContent = `not delivered: ${formatError(err)}`;
    showError(`publish to ${room}: ${formatError(err)}`);
  } finally {
    own.delete(id);
  }
}

// --- dashboard ------------------------------------------------------------------------------

const rates = [];

function formatUptime(seconds) {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return h > 0 ? `${h} h ${m} min` : m > 0 ? `${m} min ${s} s` : `${s} s`;
}

function renderStats(st) {
  if (st === null || typeof st !== "object") return;
  ui.statsNode.textContent = String(st.node ?? "?");
  ui.statsConnections.textContent = String(st.connections ?? "?");
  ui.statsRate.textContent = String(st.messages_per_second ?? "?");
  ui.statsMessages.textContent = String(st.messages ?? "?");
  ui.statsUptime.textContent = Number.isFinite(st.uptime_seconds) ? formatUptime(st.uptime_seconds) : "?";
  ui.statsAge.textContent = `updated ${new Date(st.at ?? Date.now()).toLocaleTimeString()}`;
  ui.statsChart.dataset.updated = String(st.at ?? "");

  rates.push(Number(st.messages_per_second) || 0);
  while (rates.length > CHART_POINTS) rates.shift();
  const top = Math.max(1, ...rates);
  const bars = rates.map((r) => {
    const bar = el("span", "bar");
    bar.style.height = `${Math.max(2, (r / top) * 100)}%`; // CSSOM, allowed by the page's CSP
    bar.title = `${r} messages/s`;
    return bar;
  });
  ui.statsChart.replaceChildren(...bars);
  ui.statsChart.setAttribute("aria-label", `Messages per second, last minute; now ${rates.at(-1)}, peak ${top}`);
}

// --- wiring ---------------------------------------------------------------------------------

ui.nameInput.value = params.get("name") ?? `guest-${Math.random().toString(36).slice(2, 6)}`;
ui.transportSelect.value = params.get("transport") ?? "";
ui.transportSelect.addEventListener("change", () => {
  const next = new URL(location.href);
  if (ui.transportSelect.value) next.searchParams.set("transport", ui.transportSelect.value);
  else next.searchParams.delete("transport");
  location.assign(next);
});
ui.reconnectButton.addEventListener("click", () => chorus.reconnect());
ui.roomForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  join(ui.roomInput.value.trim());
});
ui.leaveButton.addEventListener("click", () => leave(ui.roomInput.value.trim()));
ui.messageForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = ui.messageInput.value;
  if (current === null || text.trim() === "") return;
  ui.messageInput.value = "";
  send(current, text);
});
renderRooms();

// The module imports socket.io-client, which chorus serves from node_modules: without `npm ci` on
// the server the import fails, and the page says so instead of staying "connecting".
try {
  const { connect } = await import("/chorus-client.js");
  // A leading "//" would make the URL's rest another host: keep exactly one slash.
  const ns = "/" + (params.get("ns") ?? "").replace(/^\/+/, "");
  chorus = connect(ns, options());
} catch (err) {
  renderState({ status: "offline", attempt: 0, queued: 0, transport: null, reason: `the client module did not load (the server may need \`npm ci\`): ${err.message}` });
  ui.reconnectButton.hidden = true;
  for (const b of [ui.joinButton, ui.leaveButton, ui.sendButton]) b.disabled = true;
}
if (chorus !== null) {
  globalThis.chorusDemo = { client: chorus }; // for the browser console and the browser tests
  chorus.subscribe(renderState);
  chorus.on("chat", (data) => addMessage(data));
  chorus.on("chorus:stats", renderStats);
  chorus.join(STATS_ROOM).catch((err) => {
    ui.statsAge.textContent = `no server stats: ${formatError(err)}`;
  });
  if (params.get("room")) join(params.get("room"));
}
