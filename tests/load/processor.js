'use strict';

// Hooks shared by the scenarios in this folder (config.processor). They measure what the
// socketio-v3 engine does not report under Artillery 2 and name every metric "chorus.*",
// which check.js reads:
//
//   chorus.connect_ms              histogram: time from startClock to the engine's "connect"
//   chorus.ack_ms, .ack_ms.<event> histogram: emit → ack with { ok: true }
//   chorus.ack.ok                  counter: acks that answered { ok: true }
//   chorus.ack.timeout             counter: acks that did not come within ackTimeout
//   chorus.ack.disconnected        counter: acks cut off by the connection dropping
//   chorus.ack.refused.<code>      counter: acks that answered { ok: false, error: { code } }
//   chorus.disconnect.<reason>     counter: disconnects the scenario did not ask for
//   chorus.fanout.*                the HTTP fan-out scenario (see listenFanout and stampEmit)
//
// The engine still checks every ack itself (`acknowledge.args`) and fails the virtual user on
// a mismatch; these hooks only classify and time. They never throw and never wait.

const { randomUUID } = require('node:crypto');

function elapsedMs(start) {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

// startClock goes right before a `connect` step; instrument right after it.
function startClock(context, events, next) {
  context._chorusConnectStart = process.hrtime.bigint();
  return next();
}

// instrument wraps the connected socket of the default namespace: it times every emit that
// carries an ack callback and classifies the answer, and counts unexpected disconnects. The
// engine calls socket.emit(...args, ackCallback); socket.io-client's ackTimeout (set in
// config.engines.socketio-v3) makes that callback (err) on timeout and (null, ...args) otherwise.
function instrument(context, events, next) {
  const socket = context.sockets && context.sockets[''];
  if (!socket || !socket.connected) {
    events.emit('counter', 'chorus.instrument.not_connected', 1);
    return next(new Error('instrument: the socket is not connected'));
  }
  if (typeof (socket._opts || {}).ackTimeout !== 'number') {
    return next(new Error('instrument: set ackTimeout in config.engines.socketio-v3'));
  }
  if (context._chorusConnectStart !== undefined) {
    events.emit('histogram', 'chorus.connect_ms', elapsedMs(context._chorusConnectStart));
    context._chorusConnectStart = undefined;
  }

  const emit = socket.emit;
  socket.emit = function emitTimed(event, ...args) {
    const ack = args[args.length - 1];
    if (typeof ack === 'function') {
      const started = process.hrtime.bigint();
      args[args.length - 1] = function ackTimed(err, ...rest) {
        const ms = elapsedMs(started);
        const res = rest[0];
        if (err instanceof Error) {
          // "operation has timed out", or "socket has been disconnected" when the connection
          // dropped with the ack outstanding.
          const what = /timed out/.test(err.message) ? 'timeout' : 'disconnected';
          events.emit('counter', `chorus.ack.${what}`, 1);
        } else if (res && res.ok === true) {
          events.emit('counter', 'chorus.ack.ok', 1);
          events.emit('histogram', 'chorus.ack_ms', ms);
          events.emit('histogram', `chorus.ack_ms.${event}`, ms);
        } else {
          const code = (res && res.error && res.error.code) || 'malformed';
          events.emit('counter', `chorus.ack.refused.${code}`, 1);
        }
        return ack.call(this, err, ...rest);
      };
    }
    return emit.call(this, event, ...args);
  };

  socket.on('disconnect', (reason) => {
    // "io client disconnect" is the engine closing the socket (end of scenario or `connect`).
    if (reason !== 'io client disconnect') {
      events.emit('counter', `chorus.disconnect.${String(reason).replace(/\W+/g, '_')}`, 1);
    }
  });
  return next();
}

// listenFanout counts the "tick" events chorus delivers to a listener. Each tick carries
// { emitter, seq, sentAt } from stampEmit: delivery latency is now - sentAt (same machine, same
// clock), and a hole in one emitter's sequence between the first and last tick a listener saw
// is a message chorus lost.
function listenFanout(context, events, next) {
  const socket = context.sockets && context.sockets[''];
  if (!socket) return next(new Error('listenFanout: no socket'));
  const seen = new Map(); // emitter → { min, max, count }
  context._chorusFanout = seen;
  socket.on('tick', (data) => {
    events.emit('counter', 'chorus.fanout.delivered', 1);
    if (!data || typeof data.emitter !== 'string' || !Number.isInteger(data.seq)) {
      events.emit('counter', 'chorus.fanout.malformed', 1);
      return;
    }
    events.emit('histogram', 'chorus.fanout.delivery_ms', Date.now() - data.sentAt);
    const s = seen.get(data.emitter);
    if (!s) {
      seen.set(data.emitter, { min: data.seq, max: data.seq, count: 1, last: data.seq });
      return;
    }
    if (data.seq <= s.last) events.emit('counter', 'chorus.fanout.out_of_order', 1);
    s.min = Math.min(s.min, data.seq);
    s.max = Math.max(s.max, data.seq);
    s.last = data.seq;
    s.count++;
  });
  return next();
}

// reportFanout runs at the end of a listener's flow, while it is still in the room.
function reportFanout(context, events, next) {
  const seen = context._chorusFanout || new Map();
  let received = 0;
  let lost = 0;
  for (const s of seen.values()) {
    received += s.count;
    lost += Math.max(0, s.max - s.min + 1 - s.count);
  }
  events.emit('histogram', 'chorus.fanout.per_listener', received);
  if (received === 0) events.emit('counter', 'chorus.fanout.listener_got_nothing', 1);
  if (lost > 0) events.emit('counter', 'chorus.fanout.lost', lost);
  return next();
}

// stampEmit is the HTTP emitter's beforeRequest hook: it numbers this virtual user's emits.
function stampEmit(requestParams, context, events, next) {
  if (!context._chorusEmitter) {
    context._chorusEmitter = randomUUID();
    context._chorusSeq = 0;
  }
  requestParams.json = {
    ...requestParams.json,
    data: { emitter: context._chorusEmitter, seq: context._chorusSeq++, sentAt: Date.now() },
  };
  return next();
}

module.exports = { startClock, instrument, listenFanout, reportFanout, stampEmit };
