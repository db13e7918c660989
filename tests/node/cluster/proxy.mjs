// A TCP proxy on a free 127.0.0.1 port that stands for the network between clients and servers:
// it forwards each new connection to the current target, and can drop every open connection (a
// network blip that both ends notice), black-hole them (a blip nobody notices: bytes stop
// flowing, nothing is closed), or send new connections to another server (a load balancer moving
// a client to another node). The recovery tests use it with stock socket.io-client sockets.

import net from "node:net";

/**
 * Starts a proxy to target (a port on 127.0.0.1). Resolves with {port, url, retarget(port),
 * drop(), blackhole(), close()}.
 */
export async function startProxy(target) {
  const links = new Set(); // {client, server, frozen}
  const holes = new Set(); // black-holed links, destroyed by close()
  let current = target;
  const srv = net.createServer((client) => {
    const server = net.connect({ host: "127.0.0.1", port: current });
    const link = { client, server, frozen: false };
    links.add(link);
    const forward = (from, to) =>
      from.on("data", (chunk) => {
        if (!link.frozen) to.write(chunk);
      });
    forward(client, server);
    forward(server, client);
    const end = () => {
      links.delete(link);
      if (link.frozen) return; // a black hole keeps both ends open, as a dead network would
      client.destroy();
      server.destroy();
    };
    client.on("error", end).on("close", end);
    server.on("error", end).on("close", end);
  });
  await new Promise((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    /** New connections go to targetPort from now on. */
    retarget(targetPort) {
      current = targetPort;
    },
    /** Closes every open connection at both ends (they see a transport close). */
    drop() {
      for (const l of links) {
        l.client.destroy();
        l.server.destroy();
      }
      links.clear();
    },
    /** Stops every open connection from carrying bytes, without closing anything. */
    blackhole() {
      for (const l of links) {
        l.frozen = true;
        holes.add(l);
      }
      links.clear();
    },
    close() {
      for (const l of [...links, ...holes]) {
        l.client.destroy();
        l.server.destroy();
      }
      return new Promise((resolve) => srv.close(() => resolve()));
    },
  };
}
