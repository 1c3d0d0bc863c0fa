// Drives the real socket.io-client through the scenarios of tests/socketio/test_clients.py.
// Usage: node scenario.js <base url> <transports, comma separated>
// Prints one JSON object with what the client saw, then exits (code 0), or exits 1 on timeout.
"use strict";
const { io } = require("socket.io-client");

const [url, transportList] = process.argv.slice(2);
const transports = transportList.split(",");
const upgrade = transports.length > 1;
const result = {};

function show(value) {
  // JSON cannot carry a Buffer: turn it into {"$bin": "<hex>"} for the Python side.
  if (Buffer.isBuffer(value) || value instanceof ArrayBuffer) {
    return { $bin: Buffer.from(value).toString("hex") };
  }
  if (Array.isArray(value)) return value.map(show);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, show(v)]));
  }
  return value;
}

function ackAll(socket, ...args) {
  // emitWithAck keeps only the first ack argument; this keeps them all.
  return new Promise((resolve, reject) =>
    socket.timeout(5000).emit(...args, (err, ...ack) => (err ? reject(err) : resolve(ack))));
}

function once(socket, event) {
  return new Promise((resolve) => socket.once(event, (...args) => resolve(args)));
}

async function main() {
  const main = io(url, { transports, upgrade, auth: { token: "abc" }, reconnection: false });
  const [auth] = await once(main, "auth");
  result.auth = auth;
  result.sid = main.id;

  main.emit("message", 1, "two", { bin: Buffer.from([1, 2, 3]) });
  result.message_back = show(await once(main, "message-back"));

  result.ack = show(await ackAll(main, "message-with-ack", "a", Buffer.from([255])));

  main.once("question", (arg, callback) => callback(arg + "!", Buffer.from([7])));
  main.emit("ask", "why");
  result.answer = show(await once(main, "answer-received"));

  const custom = io(url + "/custom", { transports, upgrade, reconnection: false });
  const [customAuth] = await once(custom, "auth");
  result.custom_auth = customAuth;
  result.same_engine = custom.io.engine === main.io.engine;

  const nope = io(url + "/nope", { transports, upgrade, reconnection: false });
  const [error] = await once(nope, "connect_error");
  result.refused = error.message;

  main.emit("join", "lobby");
  await once(main, "joined");
  main.emit("shout", "lobby", "hello room");
  result.room = show(await once(main, "shouted"));

  custom.disconnect();
  main.emit("bye");
  const [reason] = await once(main, "disconnect");
  result.disconnect_reason = reason;
  result.transport = main.io.engine.transport.name;
  main.io.engine.close();
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
}

setTimeout(() => {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.stderr.write("timeout\n");
  process.exit(1);
}, 15000).unref();
main().catch((e) => {
  process.stderr.write(String(e && e.stack || e) + "\n");
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(1);
});
