// chorus-client.js: a connection manager for chorus on the stock socket.io-client. A plain ES module
// with no dependency but "socket.io-client" (npm); copy it into your app as it is.
//
//   import { connect } from "./chorus-client.js";
//   const chorus = connect("https://chat.example.com", { maxAttempts: 20 });
//   chorus.subscribe((s) => render(s.status, s.attempt, s.queued));
//   await chorus.join("lobby");
//   chorus.on("chat", (msg) => show(msg));
//   await chorus.sendCritical("lobby", "chat", { text: "hi" });   // queued while offline, sent once
//
// What it adds to a bare io() socket (README "The browser client module"):
//   - one connection per server: connect() with the same server returns the same client, and
//     clients of several namespaces share one connection;
//   - reconnection with exponential backoff, jitter and a cap (1 s, 2 s, 4 s … 30 s by default), and
//     a maximum number of attempts after which it stops and reports "offline";
//   - a state store (connecting, connected, reconnecting, offline) with subscribe / unsubscribe;
//   - send() (fire-and-forget) and sendCritical() (queued while offline, acknowledged, retried with
//     the same message id, so chorus delivers it once: docs/protocol.md, "Effectively-once publish");
//   - rooms joined through join() are joined again after every new session;
//   - lifecycle hooks for logging; teardown on page hide, resumption when the page comes back.

import { Manager } from "socket.io-client";

/** The four states of a client. */
export const STATES = Object.freeze(["connecting", "connected", "reconnecting", "offline"]);

/** Defaults of connect()'s options. */
export const DEFAULTS = Object.freeze({
  /** Engine.IO path on the server. */
  path: "/socket.io",
  /** Transports in the order they are tried: ["websocket"] or ["polling"] forces one. */
  transports: ["polling", "websocket"],
  /** First reconnection delay, ms; it doubles on every attempt… */
  reconnectionDelay: 1000,
  /** …up to this cap, ms. */
  reconnectionDelayMax: 30000,
  /** Jitter: each delay is randomly moved by up to this fraction (0.5: 1 s becomes 0.5–1.5 s). */
  randomizationFactor: 0.5,
  /** Reconnection attempts before giving up and reporting "offline"; Infinity never gives up. */
  maxAttempts: 10,
  /** How long one connection attempt may take, ms. */
  connectTimeout: 20000,
  /** How long to wait for the server's acknowledgement of a request, ms. */
  ackTimeout: 5000,
  /** Pause before sending a critical message again after the server answered "unavailable", ms. */
  retryDelay: 1000,
  /** Most critical messages waiting at once; sendCritical() beyond it rejects with "queue_full". */
  maxQueue: 1000,
  /** A Storage (e.g. sessionStorage) that keeps the queue of critical messages across reloads; null: memory only. */
  storage: null,
  /** Handshake auth, passed to socket.io (an object, or a function of a callback). */
  auth: undefined,
  /** Lifecycle hooks, each optional: { state, connect, disconnect, reconnectAttempt, offline, error,
   *  joined, queued, sent, retry, acked, dropped, any } (README lists what each receives). */
  hooks: {},
  /** Close the connection on pagehide and open it again on pageshow (bfcache). */
  teardownOnPageHide: true,
});

// Acknowledgement error codes after which a message is sent again; any other refusal is final.
const RETRYABLE = new Set(["unavailable", "internal", "rate_limited"]);
const STORAGE_PREFIX = "chorus-client:queue:";

/** An Error with a stable code: the server's (forbidden, invalid_room…) or the client's own
 *  (offline, timeout, closed, queue_full, bad_answer). */
export class ChorusError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "ChorusError";
    this.code = code;
  }
}

// One entry per server: the socket.io Manager (one connection) and its clients by namespace.
const servers = new Map();

/**
 * Returns the client of url's server and namespace, creating it (and its connection) on first use.
 * url is like io()'s: "https://host:3000" or "https://host:3000/chat" for the namespace /chat; a path
 * alone ("/chat") means this page's origin. Later calls for the same server and namespace return the
 * same client, whatever options they pass; clients of other namespaces share its connection (the
 * connection options of the first client of a server apply).
 */
export function connect(url = "/", options = {}) {
  const { key, namespace, origin } = parse(url, options.path ?? DEFAULTS.path);
  let server = servers.get(key);
  if (server === undefined) {
    server = { key, origin, manager: null, clients: new Map() };
    servers.set(key, server);
  }
  let client = server.clients.get(namespace);
  if (client === undefined) {
    client = new ChorusClient(server, namespace, options);
    server.clients.set(namespace, client);
    watchPage();
  }
  return client;
}

function parse(url, path) {
  const base = typeof location !== "undefined" ? location.href : undefined;
  const u = new URL(url, base);
  const namespace = "/" + u.pathname.replace(/^\/+/, "");
  const origin = `${u.protocol}//${u.host}`;
  return { key: `${origin}${path}`, namespace, origin };
}

/** A random prefix per page (or process) and a counter: message ids unique among all clients. */
const idPrefix = (() => {
  const words = new Uint32Array(3);
  globalThis.crypto.getRandomValues(words);
  return [...words].map((w) => w.toString(36)).join("");
})();
let idCounter = 0;

/** Returns a new message id (at most 64 bytes, as chorus requires). */
export function newMessageId() {
  return `${idPrefix}-${(++idCounter).toString(36)}`;
}

class ChorusClient {
  #server;
  #opts;
  #hooks;
  #socket;
  #state;
  #subscribers = new Set();
  #rooms = new Map(); // room → waiters [{resolve, reject}] until the server has acked the join
  #queue = []; // critical messages, oldest first: {id, room, event, data, tries, resolve?, reject?}
  #inFlight = null;
  #retryTimer = null;
  #closed = false;
  #suspended = false;
  #storageKey;
  #unlisten = () => {};

  constructor(server, namespace, options) {
    this.#server = server;
    this.namespace = namespace;
    this.url = server.origin + (namespace === "/" ? "" : namespace);
    const opts = Object.freeze({ ...DEFAULTS, ...options });
    this.#opts = opts;
    this.#hooks = opts.hooks ?? {};
    this.#storageKey = `${STORAGE_PREFIX}${server.key}${namespace}`;
    this.#state = Object.freeze({
      status: "connecting",
      attempt: 0,
      maxAttempts: opts.maxAttempts,
      queued: 0,
      transport: null,
      reason: null,
      since: Date.now(),
    });

    if (server.manager === null) {
      server.manager = new Manager(server.origin, {
        path: opts.path,
        transports: opts.transports,
        reconnection: true,
        reconnectionDelay: opts.reconnectionDelay,
        reconnectionDelayMax: opts.reconnectionDelayMax,
        randomizationFactor: opts.randomizationFactor,
        reconnectionAttempts: opts.maxAttempts,
        timeout: opts.connectTimeout,
        autoConnect: false,
      });
    }
    this.#socket = server.manager.socket(namespace, { auth: opts.auth });
    this.#listen();
    this.#load();
    this.#socket.connect();
  }

  // --- state ---------------------------------------------------------------------------------

  /** The current state: {status, attempt, maxAttempts, queued, transport, reason, since} (frozen). */
  get state() {
    return this.#state;
  }

  /** Calls fn(state) now and on every change of the state; returns a function that unsubscribes. */
  subscribe(fn) {
    this.#subscribers.add(fn);
    try {
      fn(this.#state);
    } catch (err) {
      this.#hook("error", { error: err, where: "subscriber" });
    }
    return () => this.unsubscribe(fn);
  }

  /** Stops calling fn. */
  unsubscribe(fn) {
    this.#subscribers.delete(fn);
  }

  /** The options in force (DEFAULTS overridden by connect()'s). */
  get options() {
    return this.#opts;
  }

  /** The underlying socket.io socket, for what this module does not wrap (read-only use advised). */
  get socket() {
    return this.#socket;
  }

  #set(changes) {
    const prev = this.#state;
    const next = { ...prev, ...changes };
    if (next.status !== prev.status) next.since = Date.now();
    if (STATES.every((s) => s !== next.status)) throw new Error(`unknown state ${next.status}`);
    if (Object.keys(next).every((k) => next[k] === prev[k])) return;
    this.#state = Object.freeze(next);
    if (next.status !== prev.status) this.#hook("state", { status: next.status, from: prev.status, reason: next.reason });
    for (const fn of [...this.#subscribers]) {
      try {
        fn(this.#state);
      } catch (err) {
        this.#hook("error", { error: err, where: "subscriber" });
      }
    }
  }

  #hook(name, detail) {
    for (const fn of [this.#hooks[name], this.#hooks.any && ((d) => this.#hooks.any(name, d))]) {
      if (typeof fn !== "function") continue;
      try {
        fn(detail);
      } catch {
        // a logging hook must not break the client
      }
    }
  }

  // --- connection ----------------------------------------------------------------------------

  #listen() {
    const socket = this.#socket;
    const manager = this.#server.manager;
    const transport = () => manager.engine?.transport?.name ?? null;

    socket.on("connect", () => {
      this.#set({ status: "connected", attempt: 0, transport: transport(), reason: null });
      this.#hook("connect", { id: socket.id, transport: transport(), recovered: socket.recovered });
      manager.engine?.once("upgrade", () => {
        if (socket.connected) this.#set({ transport: transport() });
      });
      if (!socket.recovered) this.#rejoin();
      this.#pump();
    });
    socket.on("disconnect", (reason) => {
      this.#hook("disconnect", { reason });
      if (socket.active) {
        this.#set({ status: "reconnecting", transport: null, reason });
      } else {
        this.#goOffline(reason);
      }
    });
    socket.on("connect_error", (err) => {
      const reason = err.data?.code ? `${err.data.code}: ${err.message}` : err.message;
      this.#hook("error", { error: err, where: "connect" });
      if (socket.active) {
        this.#set({ status: "reconnecting", transport: null, reason });
      } else {
        this.#goOffline(reason); // refused by the server (auth, namespace): it will not retry
      }
    });
    // Manager events concern every namespace of the connection.
    const onAttempt = (n) => {
      if (this.#closed || this.#suspended) return;
      this.#hook("reconnectAttempt", { attempt: n, maxAttempts: this.#opts.maxAttempts });
      this.#set({ status: "reconnecting", attempt: n });
    };
    const onFailed = () => {
      if (!this.#closed) this.#goOffline(`gave up after ${this.#opts.maxAttempts} attempts`);
    };
    manager.on("reconnect_attempt", onAttempt);
    manager.on("reconnect_failed", onFailed);
    this.#unlisten = () => {
      manager.off("reconnect_attempt", onAttempt);
      manager.off("reconnect_failed", onFailed);
    };
  }

  #goOffline(reason) {
    this.#set({ status: "offline", transport: null, reason });
    this.#hook("offline", { reason });
  }

  /** Connects again at once after the client went offline (gave up, or was refused); does nothing
   *  while connected or already trying. */
  reconnect() {
    if (this.#closed) throw new ChorusError("closed", "the client is closed");
    if (this.#socket.connected || (this.#state.status !== "offline" && this.#socket.active)) return;
    this.#suspended = false;
    this.#set({ status: "connecting", attempt: 0, reason: null });
    this.#socket.connect();
  }

  /** Closes the page's connection for the page's hide; resume() opens it again. Critical messages
   *  stay queued (and stored, with the storage option). */
  suspend(reason = "page hidden") {
    if (this.#closed || this.#suspended) return;
    this.#suspended = true;
    this.#save();
    this.#sayGoodbye();
    this.#socket.disconnect();
    this.#goOffline(reason);
  }

  // A page being hidden cancels the requests it starts, so over long-polling the client's own
  // close would never reach the server, which would keep the session until its ping timeout. A
  // beacon survives the page: it posts the Engine.IO close packet ("1") for the session.
  #sayGoodbye() {
    const engine = this.#server.manager.engine;
    if (engine?.transport?.name !== "polling" || !engine.id || typeof navigator === "undefined" || !navigator.sendBeacon) return;
    if ([...this.#server.clients.values()].some((c) => c !== this && c.socket.connected)) return; // the connection stays
    const path = this.#opts.path.replace(/\/?$/, "/");
    const url = `${this.#server.origin}${path}?EIO=4&transport=polling&sid=${encodeURIComponent(engine.id)}`;
    try {
      navigator.sendBeacon(url, "1");
    } catch {
      // the session ends at its ping timeout instead
    }
  }

  /** Opens the connection again after suspend(). */
  resume() {
    if (this.#closed || !this.#suspended) return;
    this.#suspended = false;
    this.reconnect();
  }

  /** Connects again if the client gave up (not if it was suspended or closed): the page calls it
   *  when the browser comes back online or the page becomes visible. */
  retryIfGaveUp() {
    if (!this.#closed && !this.#suspended && this.#state.status === "offline") this.reconnect();
  }

  /** Closes the client for good: the connection is closed once no other namespace's client uses it;
   *  pending sendCritical() promises reject with "closed" (with the storage option their messages
   *  stay stored, and a later client of the same server sends them). */
  close() {
    if (this.#closed) return;
    this.#save();
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#unlisten();
    this.#socket.disconnect();
    this.#goOffline("closed");
    for (const [, waiters] of this.#rooms) for (const w of waiters) w.reject(new ChorusError("closed", "the client is closed"));
    this.#rooms.clear();
    for (const m of this.#queue) m.reject?.(new ChorusError("closed", "the client is closed"));
    this.#queue = [];
    this.#subscribers.clear();
    this.#server.clients.delete(this.namespace);
    if (this.#server.clients.size === 0) servers.delete(this.#server.key);
  }

  // --- events and requests -------------------------------------------------------------------

  /** Listens to event from the server (e.g. "chat"); returns a function that stops listening. */
  on(event, fn) {
    this.#socket.on(event, fn);
    return () => this.#socket.off(event, fn);
  }

  /** Stops listening to event with fn (or to event altogether without fn). */
  off(event, fn) {
    this.#socket.off(event, fn);
  }

  /** Fire-and-forget: emits event with args if connected and returns true; returns false (and sends
   *  nothing, ever) otherwise. */
  send(event, ...args) {
    if (this.#closed || !this.#socket.connected) return false;
    this.#socket.emit(event, ...args);
    return true;
  }

  /** Fire-and-forget publish of data as event to the other members of room (typing indicators,
   *  cursors: anything a newer message replaces). */
  publish(room, event, data) {
    return this.send("publish", { room, event, data });
  }

  /** Sends a chorus request and resolves with its {ok:true…} answer; rejects with a ChorusError
   *  carrying the server's code, "timeout" when no answer comes within ackTimeout, or "offline". */
  async request(event, arg) {
    if (this.#closed) throw new ChorusError("closed", "the client is closed");
    if (!this.#socket.connected) throw new ChorusError("offline", `not connected: ${event} was not sent`);
    let res;
    try {
      res = await this.#socket.timeout(this.#opts.ackTimeout).emitWithAck(event, arg);
    } catch (err) {
      const code = this.#socket.connected ? "timeout" : "offline";
      throw new ChorusError(code, `${event}: ${err.message}`);
    }
    return answer(res);
  }

  /** Joins room; resolves when the server has acknowledged it (after the next connection if the
   *  client is not connected now). The room is joined again after every new session. Rejects with
   *  the server's code (e.g. "forbidden"), and the room is then forgotten. */
  join(room) {
    if (this.#closed) return Promise.reject(new ChorusError("closed", "the client is closed"));
    return new Promise((resolve, reject) => {
      const waiters = this.#rooms.get(room);
      if (waiters !== undefined && waiters.length === 0) {
        resolve({ ok: true }); // joined already
        return;
      }
      this.#rooms.set(room, [...(waiters ?? []), { resolve, reject }]);
      if (waiters === undefined && this.#socket.connected) this.#joinOne(room);
    });
  }

  /** Leaves room (and stops joining it again); resolves at once when offline. */
  async leave(room) {
    const waiters = this.#rooms.get(room) ?? [];
    this.#rooms.delete(room);
    for (const w of waiters) w.reject(new ChorusError("left", `left ${room} before it was joined`));
    if (this.#socket.connected) return this.request("leave", room);
    return { ok: true };
  }

  /** The rooms joined through join() (those whose join is still pending included). */
  get rooms() {
    return [...this.#rooms.keys()];
  }

  #joinOne(room) {
    this.request("join", room).then(
      (res) => {
        const waiters = this.#rooms.get(room);
        if (waiters === undefined) return; // left meanwhile
        this.#rooms.set(room, []);
        this.#hook("joined", { room });
        for (const w of waiters) w.resolve(res);
      },
      (err) => {
        if (err.code === "offline" || err.code === "timeout" || err.code === "closed") return; // tried again on the next connection
        const waiters = this.#rooms.get(room) ?? [];
        this.#rooms.delete(room);
        this.#hook("error", { error: err, where: "join", room });
        for (const w of waiters) w.reject(err);
      },
    );
  }

  #rejoin() {
    for (const room of this.#rooms.keys()) this.#joinOne(room);
  }

  // --- critical messages ---------------------------------------------------------------------

  /**
   * Publishes data as event to the other members of room, and resolves with {id, duplicate,
   * attempts} once chorus has acknowledged it. While offline the message waits in a queue (in
   * memory, and in the storage option's Storage); messages leave one at a time, in order, each
   * with a message id; a message whose acknowledgement does not come (timeout, lost connection) is
   * sent again with the same id, so chorus broadcasts it once. duplicate: true says chorus had
   * already broadcast it. Rejects with a ChorusError when chorus refuses the message (its code:
   * forbidden, invalid_room, …), with "queue_full" or "closed". options.id sets the id (≤ 64 bytes).
   */
  sendCritical(room, event, data, { id = newMessageId() } = {}) {
    if (this.#closed) return Promise.reject(new ChorusError("closed", "the client is closed"));
    if (this.#queue.length >= this.#opts.maxQueue) {
      return Promise.reject(new ChorusError("queue_full", `${this.#queue.length} messages are waiting already`));
    }
    return new Promise((resolve, reject) => {
      const msg = { id, room, event, data, tries: 0, resolve, reject };
      this.#queue.push(msg);
      this.#hook("queued", { id, room, event, queued: this.#queue.length });
      this.#queueChanged();
      this.#pump();
    });
  }

  #queueChanged() {
    this.#save();
    this.#set({ queued: this.#queue.length });
  }

  #pump() {
    if (this.#closed || this.#inFlight !== null || this.#retryTimer !== null) return;
    if (!this.#socket.connected || this.#queue.length === 0) return;
    const msg = this.#queue[0];
    this.#inFlight = msg;
    msg.tries++;
    this.#hook("sent", { id: msg.id, room: msg.room, event: msg.event, attempt: msg.tries });
    this.request("publish", { room: msg.room, event: msg.event, data: msg.data, id: msg.id }).then(
      (res) => this.#settle(msg, () => {
        this.#hook("acked", { id: msg.id, duplicate: res.duplicate === true, attempts: msg.tries });
        msg.resolve?.({ id: msg.id, duplicate: res.duplicate === true, attempts: msg.tries });
      }),
      (err) => {
        if (this.#closed) return;
        if (err.code === "offline" || err.code === "timeout" || RETRYABLE.has(err.code)) {
          this.#hook("retry", { id: msg.id, reason: err.code, attempt: msg.tries });
          this.#inFlight = null;
          // Timeout and offline: the next try follows at once, or on the next connection; a
          // refusal the server says is passing waits retryDelay.
          if (RETRYABLE.has(err.code)) {
            this.#retryTimer = setTimeout(() => {
              this.#retryTimer = null;
              this.#pump();
            }, this.#opts.retryDelay);
          } else {
            this.#pump();
          }
          return;
        }
        this.#settle(msg, () => {
          this.#hook("dropped", { id: msg.id, error: err });
          msg.reject?.(err);
        });
      },
    );
  }

  #settle(msg, notify) {
    if (this.#queue[0] === msg) this.#queue.shift();
    this.#inFlight = null;
    this.#queueChanged();
    notify();
    this.#pump();
  }

  #save() {
    const storage = this.#opts.storage;
    if (!storage || this.#closed) return;
    try {
      if (this.#queue.length === 0) {
        storage.removeItem(this.#storageKey);
      } else {
        const items = this.#queue.map(({ id, room, event, data }) => ({ id, room, event, data }));
        storage.setItem(this.#storageKey, JSON.stringify(items));
      }
    } catch (err) {
      this.#hook("error", { error: err, where: "storage" }); // quota, or data that is not JSON
    }
  }

  #load() {
    const storage = this.#opts.storage;
    if (!storage) return;
    let items = [];
    try {
      items = JSON.parse(storage.getItem(this.#storageKey) ?? "[]");
    } catch (err) {
      this.#hook("error", { error: err, where: "storage" });
    }
    if (!Array.isArray(items)) return;
    for (const { id, room, event, data } of items) {
      if (typeof id === "string" && typeof room === "string" && typeof event === "string") {
        this.#queue.push({ id, room, event, data, tries: 0 });
      }
    }
    if (this.#queue.length > 0) this.#set({ queued: this.#queue.length });
  }
}

function answer(res) {
  if (res?.ok === true) return res;
  const { code = "bad_answer", message = "the server sent an answer chorus does not define" } = res?.error ?? {};
  throw new ChorusError(code, message);
}

// One pair of page listeners for every client: pagehide closes their connections (a page with an
// open WebSocket cannot enter the back/forward cache, and the server learns at once that the user
// left), pageshow from the cache opens them again; coming back online or visible retries at once
// after a client gave up.
let watching = false;
function watchPage() {
  if (watching || typeof addEventListener !== "function" || typeof document === "undefined") return;
  watching = true;
  const each = (fn) => {
    for (const server of servers.values()) for (const client of server.clients.values()) fn(client);
  };
  addEventListener("pagehide", () => each((c) => c.options.teardownOnPageHide && c.suspend("page hidden")));
  addEventListener("pageshow", (ev) => {
    if (ev.persisted) each((c) => c.resume());
  });
  const retry = () => each((c) => c.retryIfGaveUp());
  addEventListener("online", retry);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") retry();
  });
}
