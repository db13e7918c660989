'use strict';

// Preloaded into artillery by run.sh (NODE_OPTIONS=--require). Artillery 2.0.21 still sends one
// anonymised "test run" event to PostHog when ARTILLERY_DISABLE_TELEMETRY is set, and waits for
// it on exit (about 12 s where that host cannot be reached). This swaps posthog-node for a
// no-op, so a load run talks to the server under test and nothing else.

const Module = require('node:module');

class PostHog {
  capture() {}
  on() {}
  shutdown() {}
  async shutdownAsync() {}
}

const load = Module._load;
Module._load = function loadWithoutTelemetry(request, ...rest) {
  if (request === 'posthog-node') return { PostHog, default: PostHog };
  return load.call(this, request, ...rest);
};
