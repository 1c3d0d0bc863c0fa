'use strict';
/*
 * Benchmark reference: does per event what the ILIAS 10 chat server (Node, socket.io 4.8,
 * express 4, mysql 2.18) does for the repository chat, so ilchat can be measured against it on the
 * same machine (docs/ilias-protocol.rst: "Backend routes", "Repository chat", "Tables").
 *
 * Differences from ILIAS, on purpose and only where the benchmark needs them:
 *   - `login` accepts any id (ILIAS needs a prior PHP `Connect`); `Connect` and `EnterPrivateRoom`
 *     are still answered (Basic auth checked like ILIAS) so one generator drives both servers;
 *   - `enterRoom` makes the subscriber a room member if `EnterPrivateRoom` was not called, and a
 *     room unknown at start-up is created on demand instead of crashing the handler;
 *   - no winston logging (the benchmarked ilchat runs with log_level "warning").
 *
 * Usage: node server.js --port 8600 --address 127.0.0.1 --name bench --auth key:secret
 *                       --db-host 127.0.0.1 --db-port 3306 --db-user root --db-pass '' --db-name X
 *                       [--cert chain.pem --key key.pem [--dhparam dh.pem]]
 * With --cert and --key it serves https and wss, as ILIAS does for `protocol: https`
 * (https.createServer with the cert, key and dhparam files of server.cfg).
 */
const fs = require('fs');
const http = require('http');
const https = require('https');
const express = require('express');
const mysql = require('mysql');
const { Server } = require('socket.io');

function parseArgs(argv) {
  const out = {};
  for (let i = 2; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  return out;
}
const args = parseArgs(process.argv);
const PORT = parseInt(args.port || '8600', 10);
const ADDRESS = args.address || '127.0.0.1';
const NAME = args.name || 'bench';
const [AUTH_KEY, AUTH_SECRET] = (args.auth || 'key:secret').split(':');

// ---------------------------------------------------------------- database (Persistence/Database.js)
const pool = mysql.createPool({
  host: args['db-host'] || '127.0.0.1',
  port: parseInt(args['db-port'] || '3306', 10),
  user: args['db-user'] || 'root',
  password: args['db-pass'] || '',
  database: args['db-name'],
  charset: 'UTF8_UNICODE_CI', // as ILIAS: 3-byte utf8 (spec §10.6)
});

let dbErrors = 0;
function logDbError(err) {
  // ILIAS throws here (uncaught, winston logs it and the process lives on); we count and log.
  dbErrors++;
  if (dbErrors <= 10) console.error('db error:', err.code || err.message);
}

// _getNextId(table): INSERT NULL into <table>_seq, read insertId, DELETE older ids, use insertId.
function getNextId(table, cb) {
  pool.query(`INSERT INTO ${table}_seq (sequence) VALUES (NULL)`, (err, result) => {
    if (err) return logDbError(err);
    const id = result.insertId;
    pool.query(`DELETE FROM ${table}_seq WHERE sequence < ?`, [id], (err2) => {
      if (err2) return logDbError(err2);
      cb(id);
    });
  });
}

// persistMessage(message): next hist_id, timestamp to seconds, INSERT ... SET.
function persistMessage(message) {
  getNextId('chatroom_history', (id) => {
    const stored = Object.assign({}, message, { timestamp: Math.floor(message.timestamp / 1000) });
    pool.query('INSERT INTO chatroom_history SET ?', {
      hist_id: id,
      room_id: message.roomId,
      message: JSON.stringify(stored),
      timestamp: stored.timestamp,
    }, (err) => { if (err) logDbError(err); });
  });
}

// ---------------------------------------------------------------- model (Model/*.js, simplified)
const subscribers = new Map(); // id -> {id, name, ppv, sockets: Set<sid>}
const rooms = new Map(); // "<roomId>_0" -> {id, title, members: Map<id, subscriber>, joined: Set<id>}
const disconnectTimers = new Map(); // subscriber id -> timeout (15 s grace, spec §5.1)

function serverRoomId(roomId) { return `${roomId}_0`; }

function getOrCreateRoom(roomId) {
  const key = serverRoomId(roomId);
  let room = rooms.get(key);
  if (!room) {
    room = { id: key, title: 'Main', members: new Map(), joined: new Set() };
    rooms.set(key, room);
  }
  return room;
}

function getOrCreateSubscriber(id) {
  let s = subscribers.get(id);
  if (!s) {
    s = { id, name: undefined, ppv: false, sockets: new Set() };
    subscribers.set(id, s);
  }
  return s;
}

function cancelTimer(id) {
  const t = disconnectTimers.get(id);
  if (t) { clearTimeout(t); disconnectTimers.delete(id); }
}

function envelope(type, content, roomId, extra) {
  return Object.assign({ type, timestamp: Date.now(), content, roomId }, extra);
}

// UserlistAction: the FULL list of joined subscribers, rebuilt on every call as in ILIAS.
function userlist(room, roomId) {
  const users = {};
  for (const id of room.joined) {
    const s = room.members.get(id);
    if (s) users[s.id] = { id: s.id, username: s.name, profile_picture_visible: s.ppv };
  }
  return envelope('userlist', 'userlist', roomId, { users });
}

// ---------------------------------------------------------------- HTTP backend (express 4)
const app = express();

// AuthenticationHandler on /backend/:action/:namespace/* (not on Heartbeat/<ns>, spec §2.2).
app.all('/backend/:action/:namespace/*', (req, res, next) => {
  const header = req.headers.authorization;
  if (!header) return res.send({ status: 403, message: 'Access denied' });
  const parts = Buffer.from(String(header.split(' ')[1]), 'base64').toString('utf8').split(':');
  // eslint-disable-next-line eqeqeq
  if (parts[0] == AUTH_KEY && parts[1] == AUTH_SECRET) return next();
  return res.send({ status: 403, message: 'Access denied' });
});

app.get('/backend/Heartbeat/:namespace', (req, res) => res.send({ status: 200 }));

app.get('/backend/Connect/:namespace/:roomId/:id', (req, res) => {
  const id = parseInt(req.params.id, 10);
  cancelTimer(id);
  getOrCreateSubscriber(id);
  res.send({ status: 200 });
});

app.get('/backend/EnterPrivateRoom/:namespace/:roomId/:id', (req, res) => {
  const room = getOrCreateRoom(parseInt(req.params.roomId, 10));
  const s = getOrCreateSubscriber(parseInt(req.params.id, 10));
  room.members.set(s.id, s);
  res.send({ success: true });
});

const server = args.cert
  ? https.createServer({
    cert: fs.readFileSync(args.cert),
    key: fs.readFileSync(args.key),
    ...(args.dhparam ? { dhparam: fs.readFileSync(args.dhparam) } : {}),
  }, app)
  : http.createServer(app);

// ---------------------------------------------------------------- socket.io (SetupServer.js options)
const io = new Server(server, {
  path: '/socket.io',
  cors: { origin: '*', methods: ['GET', 'POST', 'OPTIONS'], credentials: true },
});

const nsp = io.of('/' + NAME);

nsp.on('connection', (socket) => {
  // Login.js
  socket.on('login', (name, id, ppv) => {
    cancelTimer(id);
    const s = getOrCreateSubscriber(id);
    s.ppv = Boolean(ppv);
    s.name = name;
    s.sockets.add(socket.id);
    socket.subscriber = s;
    socket.emit('loggedIn');
  });

  // EnterRoom.js
  socket.on('enterRoom', (roomId) => {
    const s = socket.subscriber;
    if (!s) return;
    cancelTimer(s.id);
    const room = getOrCreateRoom(roomId);
    if (!room.members.has(s.id)) room.members.set(s.id, s);
    const alreadyJoined = room.joined.has(s.id);
    socket.join(room.id);
    room.joined.add(s.id);
    socket.emit('private_room_entered', envelope('private_room_entered', 'private_room_entered', roomId,
      { subscriber: { id: s.id, username: s.name } }));
    nsp.in(room.id).emit('userlist', userlist(room, roomId));
    if (!alreadyJoined) {
      const data = { id: s.id, username: s.name, title: room.title };
      socket.emit('notice', envelope('notice', 'welcome_to_chat', roomId, { data }));
      socket.broadcast.to(room.id).emit('notice', envelope('notice', 'connect', roomId, { data }));
    }
  });

  // SendMessage.js (no target branch needed by the benchmark; ILIAS 10 does not escape)
  socket.on('message', (data, roomId) => {
    const s = socket.subscriber;
    if (!s || !data) return;
    const msg = envelope('message', data.content, roomId, {
      from: { id: s.id, username: s.name, profile_picture_visible: s.ppv },
      format: data.format,
    });
    nsp.in(serverRoomId(roomId)).emit('message', msg);
    persistMessage(msg);
  });

  // Disconnect.js: drop the socket now, the membership after a 15 s grace period.
  socket.on('disconnect', () => {
    const s = socket.subscriber;
    if (!s) return;
    s.sockets.delete(socket.id);
    cancelTimer(s.id);
    disconnectTimers.set(s.id, setTimeout(() => {
      disconnectTimers.delete(s.id);
      for (const room of rooms.values()) {
        if (!room.members.has(s.id)) continue;
        room.joined.delete(s.id);
        room.members.delete(s.id);
        const prefix = room.id.split('_')[0];
        nsp.in(room.id).emit('userlist', userlist(room, prefix));
        nsp.in(room.id).emit('notice', envelope('notice', 'disconnected', prefix, { data: { username: s.name } }));
      }
      if (s.sockets.size === 0) subscribers.delete(s.id);
    }, 15000));
  });
});

// ---------------------------------------------------------------- boot: preload rooms, listen
pool.query('SELECT room_id FROM chatroom_settings', (err, rows) => {
  if (err) { console.error('cannot read chatroom_settings:', err.message); process.exit(1); }
  for (const row of rows) getOrCreateRoom(row.room_id);
  server.listen(PORT, ADDRESS, () => {
    console.log(`reference listening on ${ADDRESS}:${PORT}, namespace /${NAME}, ${rooms.size} rooms`);
  });
});

function shutdown() {
  io.close();
  pool.end(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
