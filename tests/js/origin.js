// Connects the real socket.io-client (Node) with a chosen Origin header, as a browser page from
// that origin would send it. Usage: node origin.js <url> <transports, comma separated> <origin>
// Prints {"connected": true, "transport": ...} or {"connected": false, "error": ...}, exits 0.
"use strict";
const { io } = require("socket.io-client");

const [url, transportList, origin] = process.argv.slice(2);
const transports = transportList.split(",");
const socket = io(url, {
  transports,
  upgrade: false,
  reconnection: false,
  timeout: 5000,
  extraHeaders: { Origin: origin },
});
function done(result) {
  console.log(JSON.stringify(result));
  socket.close();
  process.exit(0);
}
socket.on("connect", () => done({ connected: true, transport: socket.io.engine.transport.name }));
socket.on("connect_error", (err) => done({ connected: false, error: String(err && err.message) }));
setTimeout(() => done({ connected: false, error: "timeout" }), 8000);
