// ILIAS pages across a restart of the chat server, with the real socket.io-client 4.8.
// Usage: node restart.js <base url> <client name> <room id>
// Each browser is one socket.io Manager (as a page has), with the repository chat's socket on
// /<name> and/or the On-Screen Chat's on /<name>-im, doing on every (re)connect what ILIAS's
// scripts do: the room socket sends login(name, id, picture) and enterRoom(roomId) once loggedIn
// comes; the OSC socket sends login(id, name). Every event is printed as one JSON line
// {"who", "ns", "event", "args"}; "connect" and "disconnect" (with socket.io-client's reason)
// included. Commands come as JSON lines on stdin: {"cmd": "emit", "who", "ns", "args"},
// {"cmd": "hold", "who"} (no reconnection until "release"), {"cmd": "release", "who"},
// {"cmd": "exit"}.
"use strict";
const path = require("path");
const readline = require("readline");
const { Manager } = require(require.resolve("socket.io-client", {
  paths: [path.join(__dirname, "..", "..", "js")],
}));

const [url, name, roomText] = process.argv.slice(2);
const room = Number(roomText);

// alice: the ILIAS default transports (polling, then upgrade); bob: polling only; carol:
// websocket only; dave: only the On-Screen Chat.
const people = {
  alice: { id: 6, transports: ["polling", "websocket"], room: true, osc: true },
  bob: { id: 7, transports: ["polling"], room: true, osc: false },
  carol: { id: 8, transports: ["websocket"], room: true, osc: false },
  dave: { id: 9, transports: ["websocket"], room: false, osc: true },
};
const browsers = {};

function print(who, ns, event, args) {
  process.stdout.write(JSON.stringify({ who, ns, event, args }) + "\n");
}

function watch(who, ns, socket) {
  socket.onAny((event, ...args) => print(who, ns, event, args));
  socket.on("connect", () => print(who, ns, "connect", []));
  socket.on("disconnect", (reason) => print(who, ns, "disconnect", [reason]));
  socket.on("connect_error", (error) => print(who, ns, "connect_error", [String(error.message)]));
}

for (const [who, person] of Object.entries(people)) {
  const manager = new Manager(url, {
    transports: person.transports,
    reconnectionDelay: 200,
    reconnectionDelayMax: 1000,
  });
  const browser = (browsers[who] = { manager });
  if (person.room) {
    const socket = (browser.room = manager.socket("/" + name));
    watch(who, "room", socket);
    // ServerConnector.init and run.js's onLoggedIn, as on the ILIAS page.
    socket.on("connect", () => socket.emit("login", who, person.id, false));
    socket.on("loggedIn", () => socket.emit("enterRoom", room));
    // The page closes its socket on shutdown and on userjustbanned (and leaves).
    socket.on("shutdown", () => socket.close());
  }
  if (person.osc) {
    const socket = (browser.osc = manager.socket("/" + name + "-im"));
    watch(who, "osc", socket);
    socket.on("connect", () => socket.emit("login", person.id, who)); // il.Chat.init
  }
}

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  const browser = browsers[command.who];
  if (command.cmd === "emit") {
    browser[command.ns].emit(...command.args);
  } else if (command.cmd === "hold") {
    browser.manager.reconnection(false);
  } else if (command.cmd === "release") {
    browser.manager.reconnection(true);
    for (const socket of [browser.room, browser.osc]) if (socket) socket.connect();
  } else if (command.cmd === "exit") {
    for (const b of Object.values(browsers)) {
      for (const socket of [b.room, b.osc]) if (socket) socket.close();
    }
    process.exit(0);
  }
});

setTimeout(() => process.exit(1), 170000).unref();
