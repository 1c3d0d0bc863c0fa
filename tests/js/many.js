// N socket.io-client websocket clients join one room; one asks for a broadcast; every client
// must receive it.  Usage: node many.js <base url> <N>
// Prints {"connected_ms":…,"delivered_ms":…,"received":N} and exits 0, or exits 1 on timeout.
"use strict";
const { io } = require("socket.io-client");

const [url, countText] = process.argv.slice(2);
const count = Number(countText);
const clients = [];
let joined = 0;
let received = 0;
const started = Date.now();
let broadcastAt = 0;
const errors = {};

function finish(code) {
  const now = Date.now();
  process.stdout.write(JSON.stringify({
    connected_ms: broadcastAt ? broadcastAt - started : null,
    delivered_ms: broadcastAt ? now - broadcastAt : null,
    joined,
    received,
    errors,
  }) + "\n");
  for (const c of clients) c.disconnect();
  process.exit(code);
}

for (let i = 0; i < count; i++) {
  const socket = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
  clients.push(socket);
  socket.on("connect", async () => {
    await socket.timeout(20000).emitWithAck("join", "big");
    joined += 1;
    if (joined === count) {
      broadcastAt = Date.now();
      clients[0].emit("shout", "big", "to everyone");
    }
  });
  socket.on("connect_error", (err) => {
    errors[err.message] = (errors[err.message] || 0) + 1;
  });
  socket.on("disconnect", (reason) => {
    errors["disconnect: " + reason] = (errors["disconnect: " + reason] || 0) + 1;
  });
  socket.on("shouted", (text) => {
    if (text === "to everyone") {
      received += 1;
      if (received === count) finish(0);
    }
  });
}
setTimeout(() => finish(1), 60000).unref();
