// A crowd of ILIAS repository-chat browsers (the real socket.io-client 4.8) entering one room.
// Usage: node crowd.js <base url> <namespace> <first user id> <count> <room id>
// PHP's Connect/EnterPrivateRoom must have been called for every id before.  Each client does
// what the ILIAS page does: login(name, id, false), wait for loggedIn, enterRoom(room); they all
// connect first and then log in at the same moment (joined_ms counts from there).  When all
// have been welcomed, the first one sends a message that everybody must receive; then, after the
// userlist window, every client's latest userlist must list the whole crowd.
// Browsers get no `connect` notice for the joins of a crowd (ilchat folds them).
// Prints one JSON line with the timings and counts, exits 0 (or 1 on timeout).
"use strict";
const path = require("path");
const { io } = require(require.resolve("socket.io-client", {
  paths: [path.join(__dirname, "..", "..", "js")],
}));

const [url, namespace, firstText, countText, roomText] = process.argv.slice(2);
const first = Number(firstText);
const count = Number(countText);
const room = Number(roomText);
const started = Date.now();
const clients = [];
const latestUserlist = new Array(count).fill(null);
let welcomed = 0;
let received = 0;
let userlists = 0;
let entered = 0;
let joinedAt = 0;
let deliveredAt = 0;
let firstPayload = null;
let connected = 0;
let loggedIn = 0;
let connectedAt = 0;
const connectErrors = {};
let loggedInAt = 0;

function finish(code, extra) {
  const complete = latestUserlist.filter((u) => u && Object.keys(u.users).length === count).length;
  process.stdout.write(JSON.stringify(Object.assign({
    connected_ms: connectedAt ? connectedAt - started : null,
    logged_in_ms: loggedInAt ? loggedInAt - connectedAt : null,
    joined_ms: joinedAt ? joinedAt - connectedAt : null,
    delivered_ms: deliveredAt ? deliveredAt - joinedAt : null,
    welcomed, entered, received, userlists, complete_userlists: complete,
    message: firstPayload,
    connected, logged_in: loggedIn, connect_errors: connectErrors,
  }, extra || {})) + "\n");
  for (const c of clients) c.disconnect();
  process.exit(code);
}

setTimeout(() => finish(1, { error: "timeout" }), 120000);

for (let i = 0; i < count; i++) {
  const id = first + i;
  // Reconnection stays on (as in the browser) so that a handshake lost under load is retried.
  const socket = io(url + namespace, {
    transports: ["websocket"], forceNew: true, reconnectionDelay: 200, reconnectionDelayMax: 1000,
  });
  socket.on("connect_error", (err) => {
    connectErrors[err.message] = (connectErrors[err.message] || 0) + 1;
  });
  clients.push(socket);
  let wasConnected = false;
  socket.on("connect", () => {
    if (wasConnected) return;
    wasConnected = true;
    if (++connected === count) {
      // Everybody is connected: now the whole crowd logs in and enters at once.
      connectedAt = Date.now();
      clients.forEach((c, j) => c.emit("login", "user" + (first + j), first + j, false));
    }
  });
  socket.on("loggedIn", () => {
    if (++loggedIn === count) loggedInAt = Date.now();
    socket.emit("enterRoom", room);
  });
  socket.on("private_room_entered", () => { entered++; });
  socket.on("userlist", (payload) => { userlists++; latestUserlist[i] = payload; });
  socket.on("notice", (payload) => {
    if (payload.content !== "welcome_to_chat") return;
    welcomed++;
    if (welcomed === count) {
      joinedAt = Date.now();
      clients[0].emit("message", { content: "crowd hello", format: {} }, room);
    }
  });
  socket.on("message", (payload) => {
    if (i === 0) firstPayload = payload;
    received++;
    if (received === count) {
      deliveredAt = Date.now();
      // Wait for the last coalesced userlist (its window grows with the room) to arrive everywhere.
      const poll = setInterval(() => {
        const done = latestUserlist.every((u) => u && Object.keys(u.users).length === count);
        if (done) {
          clearInterval(poll);
          finish(0, { userlist_complete_ms: Date.now() - deliveredAt });
        }
      }, 100);
    }
  });
}
