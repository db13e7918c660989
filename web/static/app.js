// The chorus demo page: one socket.io connection, rooms, and chat over the chorus client protocol
// (join / leave / publish with acks, see docs/protocol.md). Plain DOM, no framework. Text that
// came from a user or the server is only ever put on the page with textContent.
//
// Query parameters: ?transport=polling (or websocket) forces one transport; ?ns=/chat picks the namespace.

const ACK_TIMEOUT_MS = 5000;
const MAX_MESSAGES = 200;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
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
};

const joined = new Set(); // rooms this socket is in, in the order they were joined
let current = null; // the room "Send" publishes to
let attempt = 0; // the manager's current reconnection attempt, 0 while connected
let socket = null;

// setStatus shows the connection state; data-* attributes carry the same facts for tests.
function setStatus(state, { transport = "", reason = "" } = {}) {
  const s = ui.status;
  s.dataset.state = state;
  s.dataset.transport = transport;
  s.dataset.attempt = String(attempt);
  const details = [transport, attempt > 0 && `attempt ${attempt}`, reason].filter(Boolean);
  s.textContent = details.length ? `${state} (${details.join(", ")})` : state;
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = "";
  ui.error.hidden = true;
}

function formatError(err) {
  return err.code ? `${err.code}: ${err.message}` : err.message;
}

// connectOptions reads the namespace and transport choice from the page's query string.
function connectOptions() {
  const params = new URLSearchParams(location.search);
  // A leading "//" would make io() read the rest as another host: keep exactly one slash.
  const ns = "/" + (params.get("ns") ?? "").replace(/^\/+/, "");
  const transport = params.get("transport");
  const opts = transport === "polling" || transport === "websocket" ? { transports: [transport] } : {};
  return { ns, opts };
}

// request sends one chorus request and resolves on {ok:true}. It rejects with an Error carrying the
// server's code on {ok:false}, and with socket.io's timeout error when no ack arrives in time.
async function request(event, arg) {
  const res = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, arg);
  if (res?.ok === true) return res;
  const { code = "bad_answer", message = "the server sent an answer chorus does not define" } = res?.error ?? {};
  throw Object.assign(new Error(message), { code });
}

function el(tag, className, text = "") {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = text;
  return node;
}

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
    li.append(button);
    return li;
  });
  ui.rooms.replaceChildren(...items);
  ui.currentRoom.textContent = current ?? "(join a room first)";
  ui.sendButton.disabled = current === null;
}

// describe turns any value another client may have published into text.
function describe(value) {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

// addMessage appends one chat message; own messages say so and which room they went to.
function addMessage(data, { own = false, room = "" } = {}) {
  const obj = data !== null && typeof data === "object" ? data : {};
  const text = typeof obj.text === "string" ? obj.text : describe(data);
  const from = typeof obj.from === "string" && obj.from !== "" ? obj.from : "anonymous";
  const at = new Date(obj.at ?? NaN);

  const li = el("li", own ? "message own" : "message");
  li.dataset.testid = "message";
  li.dataset.own = String(own);
  if (own) li.dataset.status = "pending";
  const meta = el("div", "meta");
  meta.append(el("span", "from", own ? `${from} (you)` : from));
  if (room) meta.append(el("span", "to", `to ${room}`));
  if (!Number.isNaN(at.getTime())) {
    const time = el("time", "at", at.toLocaleTimeString());
    time.dateTime = at.toISOString();
    meta.append(time);
  }
  li.append(meta, el("p", "text", text), el("p", "note"));
  ui.messages.append(li);
  while (ui.messages.childElementCount > MAX_MESSAGES) ui.messages.firstElementChild.remove();
  ui.messages.scrollTop = ui.messages.scrollHeight;
  return li;
}

async function join(room) {
  try {
    await request("join", room);
  } catch (err) {
    showError(`join ${room}: ${formatError(err)}`);
    return;
  }
  joined.add(room);
  current = room;
  clearError();
  renderRooms();
}

async function leave(room) {
  try {
    await request("leave", room);
  } catch (err) {
    showError(`leave ${room}: ${formatError(err)}`);
    return;
  }
  joined.delete(room);
  if (current === room) current = joined.values().next().value ?? null;
  clearError();
  renderRooms();
}

async function send(room, text) {
  const data = { text, from: ui.nameInput.value.trim() || "anonymous", at: Date.now() };
  const item = addMessage(data, { own: true, room });
  try {
    await request("publish", { room, event: "chat", data });
    item.dataset.status = "sent";
    clearError();
  } catch (err) {
    item.dataset.status = "failed";
    item.querySelector(".note").textContent = `not delivered: ${formatError(err)}`;
    showError(`publish to ${room}: ${formatError(err)}`);
  }
}

// A new session starts in no room (unless the server recovered the old one), so join them again.
function rejoin() {
  for (const room of joined) {
    request("join", room).catch((err) => {
      joined.delete(room);
      if (current === room) current = joined.values().next().value ?? null;
      renderRooms();
      showError(`rejoin ${room}: ${formatError(err)}`);
    });
  }
}

function connect() {
  const { ns, opts } = connectOptions();
  socket = globalThis.io(ns, opts);
  const manager = socket.io;
  const showConnected = () => {
    if (socket.connected) setStatus("connected", { transport: manager.engine.transport.name });
  };

  socket.on("connect", () => {
    attempt = 0;
    showConnected();
    manager.engine.once("upgrade", showConnected); // polling → websocket
    if (!socket.recovered) rejoin();
  });
  // socket.active tells whether socket.io will try again: it will not after a server-side
  // disconnect or a refused handshake (e.g. "Invalid namespace").
  socket.on("disconnect", (reason) => {
    setStatus(socket.active ? "reconnecting" : "disconnected", { reason });
  });
  socket.on("connect_error", (err) => {
    setStatus(socket.active ? "reconnecting" : "disconnected", { reason: err.message });
  });
  manager.on("reconnect_attempt", (n) => {
    attempt = n;
    setStatus("reconnecting");
  });
  manager.on("reconnect_failed", () => setStatus("disconnected", { reason: "gave up reconnecting" }));

  socket.on("chat", (data) => addMessage(data));
  globalThis.chorusDemo = { socket }; // for the browser console and browser tests
}

ui.nameInput.value = `guest-${Math.random().toString(36).slice(2, 6)}`;
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

if (typeof globalThis.io === "function") {
  connect();
} else {
  setStatus("disconnected", { reason: "socket.io client not loaded: the server needs `npm ci`" });
  ui.joinButton.disabled = true;
  ui.leaveButton.disabled = true;
}
