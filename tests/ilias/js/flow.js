// The repository-chat flow of spec §10.2 with the real socket.io-client 4.8, as the ILIAS page
// runs it.  Usage: node flow.js <base url> <namespace> <room id> [<alice cookie> <bob cookie>]
// (the cookies, if given, go with each handshake as a browser on the ILIAS host sends them).
// PHP's Connect/EnterPrivateRoom for users 6 (alice) and 7 (bob) must have been done.  Prints
// {"bob": [[event, ...args], ...], "alice": [...]} with every event each one received; exit 0
// (or 1 on timeout).
"use strict";
const path = require("path");
const { io } = require(require.resolve("socket.io-client", {
  paths: [path.join(__dirname, "..", "..", "js")],
}));

const [url, namespace, roomText, aliceCookie, bobCookie] = process.argv.slice(2);
const cookies = { alice: aliceCookie, bob: bobCookie };
const room = Number(roomText);
const seen = { bob: [], alice: [] };

function browser(name) {
  const options = { transports: ["websocket"], forceNew: true, reconnection: false };
  if (cookies[name]) options.extraHeaders = { Cookie: cookies[name] };
  const socket = io(url + namespace, options);
  socket.onAny((event, ...args) => seen[name].push([event, ...args]));
  return socket;
}

function until(name, predicate) {
  return new Promise((resolve) => {
    const poll = setInterval(() => {
      const hit = seen[name].find(predicate);
      if (hit) { clearInterval(poll); resolve(hit); }
    }, 10);
  });
}

const notice = (content) => (e) => e[0] === "notice" && e[1].content === content;

async function main() {
  setTimeout(() => { process.stdout.write(JSON.stringify(seen) + "\n"); process.exit(1); }, 30000);
  const bob = browser("bob");
  bob.on("connect", () => bob.emit("login", "bob", 7, false));
  bob.on("loggedIn", () => bob.emit("enterRoom", room));
  await until("bob", notice("welcome_to_chat"));
  await new Promise((r) => setTimeout(r, 200));

  const alice = browser("alice");
  alice.on("connect", () => alice.emit("login", "alice", 6, true));
  alice.on("loggedIn", () => alice.emit("enterRoom", room));
  await until("alice", notice("welcome_to_chat"));
  await until("bob", notice("connect"));

  alice.emit("message", { content: "hello", format: {} }, room);
  await until("bob", (e) => e[0] === "message" && e[1].content === "hello");
  await until("alice", (e) => e[0] === "message" && e[1].content === "hello");

  alice.emit("userStartedTyping", room);
  await until("bob", (e) => e[0] === "userStartedTyping");
  alice.emit("userStoppedTyping", room);
  await until("bob", (e) => e[0] === "userStoppedTyping");

  alice.emit("message", { content: "psst", format: {}, target: { username: "bob", id: 7, public: 0 } }, room);
  await until("bob", (e) => e[0] === "message" && e[1].content === "psst");
  await until("alice", (e) => e[0] === "message" && e[1].content === "psst");

  alice.disconnect();
  await until("bob", notice("disconnected"));
  bob.disconnect();
  process.stdout.write(JSON.stringify(seen) + "\n");
  process.exit(0);
}

main();
