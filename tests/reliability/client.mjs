// A stock socket.io-client in a process of its own, for the reliability tests that freeze or kill
// a client (SIGSTOP makes it vanish without a FIN, as a laptop lid or a dead network does).
//
//   node tests/reliability/client.mjs URL TRANSPORT
//
// It connects with reconnection off, joins no room, and prints one JSON line {"sid": "..."} once
// connected, and {"pings": n} at each heartbeat; then it idles until it is stopped or killed.
import { io } from "socket.io-client";

const [url, transport] = process.argv.slice(2);
const socket = io(url, { transports: [transport], reconnection: false, forceNew: true });
socket.on("connect", () => process.stdout.write(`${JSON.stringify({ sid: socket.id })}\n`));
let pings = 0;
socket.io.on("ping", () => process.stdout.write(`${JSON.stringify({ pings: ++pings })}\n`));
socket.on("connect_error", (err) => {
  process.stderr.write(`connect_error: ${err.message}\n`);
  process.exitCode = 1;
});
