'use strict';
/*
 * The one load generator for both servers (ilchat and the Node reference).
 *
 * Speaks Engine.IO v4 / Socket.IO v5 by hand over the `ws` package (websocket transport only):
 *   server "0{...}" (open)      -> we send "40/<ns>," (connect the namespace)
 *   server "2" (ping)           -> we send "3" (pong)
 *   server "40/<ns>,{sid}"      -> we send 42/<ns>,["login",name,id,false]
 *   server 42/<ns>,["loggedIn"] -> we send 42/<ns>,["enterRoom",roomId]
 *   server 42/<ns>,["private_room_entered",..] -> the client is "seated"
 *   server 42/<ns>,["message",{..."content":"<seq>|<send time ms>"...}] -> one delivery, latency
 * Incoming frames are classified from their raw bytes (no JSON.parse, no UTF-8 decode) so the
 * generator stays much cheaper per delivery than any server it measures.
 *
 * Before any socket work, each user is registered the way PHP does it (GET /backend/Connect and
 * /backend/EnterPrivateRoom with Basic auth); that part is never timed.
 *
 * Usage: node gen.js --scenario fanout|rooms|idle|storm|crowd --port 8600[,8601..] [--host 127.0.0.1]
 *          [--ns bench] [--auth key:secret] [--server-pid N[,M..]] [--db-pid N] [--redis-pid N] [--clients N] [--rooms N]
 *          [--duration s] [--window N] [--batch N] [--timeout s] [--client raw|ws]
 *          [--tls 1] [--transport websocket|polling] [--rate msgs/s] [--room R] [--first-id K]
 *          [--bound-pct P]
 *   --client raw (default): ./rawws.js, skips the bodies of big frames; ws: the ws package
 *   --tls 1: https and wss (real TLS, nothing verified); --transport polling: ./polling.js,
 *   Engine.IO long-polling that never upgrades
 * Prints progress on stderr and one JSON result line on stdout.
 */
const http = require('http');
const https = require('https');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');
const { RawWebSocket } = require('./rawws');
const { PollingTransport, answered: pollsAnswered } = require('./polling');

// ------------------------------------------------------------------ options
function parseArgs(argv) {
  const out = {};
  for (let i = 2; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  return out;
}
const A = parseArgs(process.argv);
const HOST = A.host || '127.0.0.1';
/* --port 8602 or, for several processes of one cluster, --port 8602,8603: client i talks to the
 * (i mod n)-th (its backend registration included), so the sender (client 1) is on the first. */
const PORTS = String(A.port || '8600').split(',').map((p) => parseInt(p, 10));
const NS = A.ns || 'bench';
const AUTH = 'Basic ' + Buffer.from(A.auth || 'key:secret').toString('base64');
/* --server-pid N[,M...]: the server process(es) whose CPU and RSS are measured (summed). */
const SERVER_PIDS = A['server-pid'] ? String(A['server-pid']).split(',').map((p) => parseInt(p, 10)) : [];
const DB_PID = A['db-pid'] ? parseInt(A['db-pid'], 10) : null;
/* --redis-pid N: the Redis server of a cluster run, measured like the database. */
const REDIS_PID = A['redis-pid'] ? parseInt(A['redis-pid'], 10) : null;
const SCENARIO = A.scenario;
const num = (k, d) => (A[k] !== undefined ? Number(A[k]) : d);
const CLIENT = A.client || 'raw'; // raw: ./rawws.js (skips big frames); ws: the ws package
const TLS = A.tls === '1' || A.tls === 'true';
const POLLING = A.transport === 'polling';

const WS_PATH = '/socket.io/?EIO=4&transport=websocket';
const POLL_PATH = '/socket.io/?EIO=4&transport=polling';
const PREFIX = `/${NS},`;
const NS_CONNECT = `40${PREFIX}`;
const EV_OFFSET = 2 + Buffer.byteLength(PREFIX) + 2; // index of the event name's first letter
const CONTENT_KEY = Buffer.from('"content":"');

const now = () => performance.timeOrigin + performance.now(); // ms since epoch, sub-ms resolution
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => process.stderr.write(`[gen ${SCENARIO}] ${a.join(' ')}\n`);

// ------------------------------------------------------------------ measurements
/* Latency histogram: 10 µs buckets up to 30 s (12 MB), exact enough for p50/p99. */
class Histogram {
  constructor() { this.buckets = new Uint32Array(3_000_000); this.n = 0; this.over = 0; this.max = 0; }
  add(ms) {
    const b = Math.floor(ms * 100);
    if (b < 0) { this.buckets[0]++; } else if (b >= this.buckets.length) { this.over++; } else { this.buckets[b]++; }
    if (ms > this.max) this.max = ms;
    this.n++;
  }
  pct(p) {
    if (!this.n) return null;
    const target = Math.ceil(this.n * p);
    let acc = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      acc += this.buckets[i];
      if (acc >= target) return (i + 0.5) / 100;
    }
    return this.max;
  }
  summary() {
    const r3 = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
    return { samples: this.n, p50_ms: r3(this.pct(0.5)), p99_ms: r3(this.pct(0.99)), max_ms: r3(this.max) };
  }
}

const fs = require('fs');
const CLK_TCK = 100; // Linux USER_HZ
// generator CPU (% of its core) above which a figure is generator-bound; --bound-pct for tests
const GEN_BOUND_PCT = num('bound-pct', 90);
/* utime+stime of a process (all threads), in seconds; null if unknown. */
function cpuSeconds(pid) {
  if (Array.isArray(pid)) return sumOf(pid.map(cpuSeconds));
  if (!pid) return null;
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14 and 15 of stat(5)
  } catch (e) { return null; }
}
/* The sum of per-process figures; null if there are none or one is unknown. */
function sumOf(xs) { return xs.length && xs.every((x) => x !== null) ? xs.reduce((a, b) => a + b, 0) : null; }
/* Resident set size in KiB from /proc/<pid>/status. */
function rssKiB(pid) {
  if (Array.isArray(pid)) return sumOf(pid.map(rssKiB));
  if (!pid) return null;
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) : null;
  } catch (e) { return null; }
}
/* Busy CPU seconds of the whole machine (all cores) from /proc/stat. */
function machineBusySeconds() {
  try {
    const f = fs.readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return (total - f[3] - f[4]) / CLK_TCK; // minus idle and iowait
  } catch (e) { return null; }
}
class CpuWindow {
  start() {
    this.m0 = machineBusySeconds();
    this.t0 = performance.now();
    this.each0 = SERVER_PIDS.map(cpuSeconds);
    this.s0 = cpuSeconds(SERVER_PIDS); this.d0 = cpuSeconds(DB_PID); this.r0 = cpuSeconds(REDIS_PID);
    this.g0 = process.cpuUsage();
  }
  stop() {
    const wall = (performance.now() - this.t0) / 1000;
    const pct = (a, b) => (a === null || b === null ? null : Math.round(((b - a) / wall) * 1000) / 10);
    const g = process.cpuUsage(this.g0);
    const s1 = cpuSeconds(SERVER_PIDS);
    const r1 = cpuSeconds(REDIS_PID);
    const mine = [pct(this.s0, s1), pct(this.d0, cpuSeconds(DB_PID)), pct(this.r0, r1)];
    const machine = pct(this.m0, machineBusySeconds());
    const genPct = Math.round(((g.user + g.system) / 1e6 / wall) * 1000) / 10;
    return {
      // CPU used by everything else on the machine (other jobs): a noise indicator, in % of one core
      others_cpu_pct: machine === null ? null
        : Math.max(0, Math.round((machine - genPct - (mine[0] || 0) - (mine[1] || 0) - (mine[2] || 0)) * 10) / 10),
      server_cpu_pct: mine[0],
      // CPU seconds the server spent in the window: robust against other jobs on the machine
      server_cpu_s: this.s0 === null || s1 === null ? null : Math.round((s1 - this.s0) * 100) / 100,
      // per server process (several for a cluster), in the order of --server-pid
      server_cpu_s_each: SERVER_PIDS.map((pid, i) => {
        const a = this.each0[i]; const b = cpuSeconds(pid);
        return a === null || b === null ? null : Math.round((b - a) * 100) / 100;
      }),
      db_cpu_pct: pct(this.d0, cpuSeconds(DB_PID)),
      // the Redis server's CPU seconds in the window (all its clients: a shared server's others too)
      redis_cpu_s: this.r0 === null || r1 === null ? null : Math.round((r1 - this.r0) * 1000) / 1000,
      gen_cpu_pct: Math.round(((g.user + g.system) / 1e6 / wall) * 1000) / 10,
      gen_sys_pct: Math.round((g.system / 1e6 / wall) * 1000) / 10, // kernel share (socket reads)
    };
  }
}

// ------------------------------------------------------------------ global counters
const stats = { frames: 0, deliveries: 0, sent: 0, errors: 0, closed: 0, connectErrors: 0, why: {} };
let lastFrameAt = 0;
// (seq, send time in ms since the epoch, receive time as performance.now()) — set by the scenario
let onDelivery = null;
const ORIGIN = performance.timeOrigin;

// ------------------------------------------------------------------ one simulated browser
class Client {
  constructor(id, roomId, port) {
    this.id = id;
    this.port = port;
    this.roomId = roomId;
    this.ws = null;
    this.seated = false;
    this.loggedIn = false;
    this.failed = false;
    this.onSeated = null;
    this.onFailed = null;
    this.onDropped = null; // called when a seated client's connection ends
  }

  connect() {
    const handlers = {
      onFrame: (buf) => this.frame(buf),
      onClose: () => { stats.closed++; this.fail(); },
      onError: (why) => { stats.errors++; stats.why[why] = (stats.why[why] || 0) + 1; },
      tls: TLS,
      agent: pollAgent,
    };
    if (POLLING) { this.ws = new PollingTransport(HOST, this.port, POLL_PATH, handlers); return; }
    if (CLIENT === 'raw') { this.ws = new RawWebSocket(HOST, this.port, WS_PATH, handlers); return; }
    const ws = new WebSocket(`${TLS ? 'wss' : 'ws'}://${HOST}:${this.port}${WS_PATH}`, { perMessageDeflate: false, skipUTF8Validation: true, rejectUnauthorized: false });
    this.ws = ws;
    ws.on('message', (buf) => this.frame(buf));
    ws.on('error', () => { stats.errors++; this.fail(); });
    ws.on('close', () => { stats.closed++; this.fail(); });
  }

  fail() {
    if (this.failed) return;
    this.failed = true;
    if (!this.seated && this.onFailed) this.onFailed(this);
    else if (this.seated && this.onDropped) this.onDropped(this);
  }

  send(s) { if (POLLING || CLIENT === 'raw' || this.ws.readyState === 1) this.ws.send(s); }

  emit(json) { this.send(`42${PREFIX}${json}`); }

  frame(buf) {
    stats.frames++;
    const at = performance.now(); // the one clock read per frame: quiet detection and latency
    lastFrameAt = at;
    const t = buf[0];
    if (t === 0x34 /* '4' message */) {
      const s = buf[1];
      if (s === 0x32 /* '2' EVENT */) return this.event(buf, at);
      if (s === 0x30 /* '0' CONNECT */) {
        this.emit(`["login","u${this.id}",${this.id},false]`);
        return;
      }
      if (s === 0x34 /* '4' CONNECT_ERROR */) { stats.connectErrors++; this.fail(); }
      return;
    }
    if (t === 0x32 /* '2' ping */) { this.send('3'); return; }
    if (t === 0x30 /* '0' open */) { this.send(NS_CONNECT); }
  }

  event(buf, at) {
    if (buf[EV_OFFSET - 1] !== 0x22) return; // not ["name"... (an ack id or another namespace)
    switch (buf[EV_OFFSET]) {
      case 0x6d: /* m: message */ {
        const a = buf.indexOf(CONTENT_KEY, EV_OFFSET);
        if (a < 0) return;
        const start = a + CONTENT_KEY.length;
        const end = buf.indexOf(0x22, start);
        const text = buf.toString('latin1', start, end);
        const bar = text.indexOf('|');
        if (bar < 0) return;
        stats.deliveries++;
        if (onDelivery) onDelivery(Number(text.slice(0, bar)), Number(text.slice(bar + 1)), at);
        return;
      }
      case 0x6c: /* l: loggedIn */
        if (!this.loggedIn) {
          this.loggedIn = true;
          this.emit(`["enterRoom",${this.roomId}]`);
        }
        return;
      case 0x70: /* p: private_room_entered */
        if (!this.seated) {
          this.seated = true;
          if (this.onSeated) this.onSeated(this);
        }
        return;
      default: // userlist, notice, typing...: counted in stats.frames only
    }
  }

  sendMessage(seq) {
    const t = now().toFixed(3);
    this.emit(`["message",{"content":"${seq}|${t}","format":{}},${this.roomId}]`);
    stats.sent++;
  }

  close() { try { this.ws.terminate(); } catch (e) { /* already gone */ } }
}

// ------------------------------------------------------------------ helpers
const HTTP = TLS ? https : http;
const agent = new HTTP.Agent({ keepAlive: true, maxSockets: 32, rejectUnauthorized: false });
// The polling clients' connections: kept alive and shared, as many as there are requests in flight.
const pollAgent = POLLING ? new HTTP.Agent({ keepAlive: true, rejectUnauthorized: false }) : null;
function httpGet(path, port) {
  return new Promise((resolve, reject) => {
    const req = HTTP.get({ host: HOST, port, path, agent, headers: { Authorization: AUTH } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(10000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/* What PHP does before the browser connects: Connect, then EnterPrivateRoom (32 in parallel). */
async function registerUsers(clients) {
  let next = 0;
  let bad = 0;
  async function worker() {
    while (next < clients.length) {
      const c = clients[next++];
      const r1 = await httpGet(`/backend/Connect/${NS}/${c.roomId}/${c.id}`, c.port);
      const r2 = await httpGet(`/backend/EnterPrivateRoom/${NS}/${c.roomId}/${c.id}`, c.port);
      if (r1.status !== 200 || r2.status !== 200 || !r1.body || !r2.body
          || r1.body.includes('403') || r2.body.includes('"success":false')) bad++;
    }
  }
  await Promise.all(Array.from({ length: 32 }, worker));
  if (bad) log(`${bad} backend registrations failed`);
  return bad;
}

/* Connect and seat clients (all at once, or `batch` at a time waiting for each batch to be seated).
 * Resolves {seconds, seated, failed, timedOut}; never runs longer than timeoutS. */
function seat(clients, batch, timeoutS) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    let seated = 0;
    let failed = 0;
    let started = 0;
    let inBatch = 0;
    let done = false;
    const finish = (timedOut) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ seconds: (performance.now() - t0) / 1000, seated, failed, timedOut });
    };
    const timer = setTimeout(() => finish(true), timeoutS * 1000);
    const startBatch = () => {
      const end = Math.min(clients.length, started + (batch || clients.length));
      inBatch = end - started;
      for (; started < end; started++) clients[started].connect();
    };
    const settle = () => {
      if (done) return;
      inBatch--;
      if (seated + failed === clients.length) finish(false);
      else if (inBatch === 0) startBatch();
    };
    for (const c of clients) {
      c.onSeated = () => { seated++; settle(); };
      c.onFailed = () => { failed++; settle(); };
    }
    startBatch();
  });
}

/* Wait until no frame arrived for quietMs (the server finished its backlog), at most maxMs. */
async function quiesce(quietMs, maxMs) {
  const t0 = performance.now();
  while (performance.now() - t0 < maxMs) {
    if (performance.now() - lastFrameAt >= quietMs) return (performance.now() - t0) / 1000;
    await sleep(50);
  }
  return null;
}

/* --first-id K numbers the users from K (default 1): generators sharing a server use disjoint ids. */
function makeClients(n, roomOf) {
  const first = num('first-id', 1);
  return Array.from({ length: n }, (_, i) => new Client(first + i, roomOf(i), PORTS[i % PORTS.length]));
}

function closeAll(clients) { for (const c of clients) c.close(); }

// ------------------------------------------------------------------ scenarios
/* 1. fan-out: one room, N clients, one sender keeping `window` messages in flight for `duration`.
 * A message leaves the window when all N members (the sender included) got it, or after 5 s.
 * --rate R caps the sending at R messages/s (R x members deliveries/s): the offered load that a
 * generator-bound run is repeated with, so that the generator keeps up (see ../lib/run.js).
 * --room R puts them in room R (default 1). */
async function fanout() {
  const n = num('clients', 1000);
  const window = num('window', 8);
  const duration = num('duration', 10);
  const rate = num('rate', 0); // messages/s at most; 0: as fast as the window allows
  const room = num('room', 1);
  const clients = makeClients(n, () => room);
  const rss0 = rssKiB(SERVER_PIDS);
  const reg = await registerUsers(clients);
  const setup = await seat(clients, num('batch', 100), num('timeout', 300));
  log(`seated ${setup.seated}/${n} in ${setup.seconds.toFixed(1)} s`);
  const drainS = await quiesce(1000, 120000);
  const rss1 = rssKiB(SERVER_PIDS);
  const members = setup.seated;
  // Members still connected: one that drops out (a polling client the server let go) no longer
  // holds every message back until the 5 s release.
  let live = clients.filter((c) => c.seated && !c.failed).length;
  const sender = clients.find((c) => c.seated && !c.failed && c.port === PORTS[0]); // on the first process
  const sock = sender && sender.ws && sender.ws.sock;
  const tlsInfo = sock && sock.getCipher ? { protocol: sock.getProtocol(), cipher: sock.getCipher().standardName } : null;
  const hist = new Histogram();
  const counts = new Map(); // seq -> deliveries so far
  const sentAt = new Map(); // seq -> performance.now() at send (for the 5 s release)
  let seq = 0;
  let inFlight = 0;
  let sending = true;
  let tEnd = 0;
  let windowDeliveries = 0;
  let lost = 0;
  const cpu = new CpuWindow();

  let t0 = 0;
  let pumpTimer = null;
  // With a rate, message k may leave at t0 + k / rate: a slot not yet due waits for a timer.
  const due = () => {
    if (!rate) return true;
    const wait = t0 + (seq * 1000) / rate - performance.now();
    if (wait <= 0) return true;
    if (!pumpTimer) pumpTimer = setTimeout(() => { pumpTimer = null; pump(); }, Math.max(1, wait));
    return false;
  };
  const pump = () => {
    while (sending && inFlight < window && due()) {
      seq++;
      counts.set(seq, 0);
      sentAt.set(seq, performance.now());
      inFlight++;
      sender.sendMessage(seq);
    }
  };
  const release = (s) => { counts.delete(s); sentAt.delete(s); inFlight--; pump(); };
  onDelivery = (s, sendT, recvT) => {
    hist.add(ORIGIN + recvT - sendT);
    if (recvT <= tEnd) windowDeliveries++;
    const c = counts.get(s);
    if (c === undefined) return; // already released by timeout
    if (c + 1 >= live) release(s); else counts.set(s, c + 1);
  };
  let dropped = 0;
  for (const c of clients) {
    if (!c.seated || c.failed) continue;
    c.onDropped = () => {
      live--;
      dropped++;
      for (const [s, k] of counts) if (k >= live) release(s);
    };
  }
  const reaper = setInterval(() => {
    const limit = performance.now() - 5000;
    for (const [s, t] of sentAt) if (t < limit) { lost++; release(s); }
  }, 250);

  t0 = performance.now();
  tEnd = t0 + duration * 1000;
  const requests0 = pollsAnswered.count;
  cpu.start();
  pump();
  await sleep(duration * 1000);
  sending = false;
  clearTimeout(pumpTimer);
  const usage = cpu.stop();
  const wall = (performance.now() - t0) / 1000;
  const requests = pollsAnswered.count - requests0;
  await quiesce(500, 10000); // let the last messages arrive for their latency
  clearInterval(reaper);
  const droppedBeforeEnd = dropped;
  closeAll(clients);
  return {
    clients: n, members, window, rate: rate || null, duration_s: duration, setup_s: round(setup.seconds), setup_drain_s: drainS,
    backend_failures: reg, messages_sent: seq, messages_lost: lost, members_dropped: droppedBeforeEnd, transport: POLLING ? 'polling' : 'websocket', tls: tlsInfo,
    // What the server holds per seated client (its RSS after seating minus before), in KiB.
    rss_per_client_kib: rss0 && rss1 && members ? Math.round(((rss1 - rss0) / members) * 100) / 100 : null,
    deliveries_per_s: Math.round(windowDeliveries / wall), messages_per_s: Math.round(windowDeliveries / wall / members),
    server_us_per_delivery: usage.server_cpu_s === null || !windowDeliveries ? null
      : Math.round((usage.server_cpu_s / windowDeliveries) * 1e8) / 100,
    // Long-polling: the HTTP requests (GETs and POSTs) answered in the window, and the server's
    // CPU per request, which does not depend on how many messages each poll happens to carry.
    http_requests_per_s: POLLING ? Math.round(requests / wall) : null,
    server_us_per_request: !POLLING || usage.server_cpu_s === null || !requests ? null
      : Math.round((usage.server_cpu_s / requests) * 1e8) / 100,
    redis_us_per_delivery: usage.redis_cpu_s === null || !windowDeliveries ? null
      : Math.round((usage.redis_cpu_s / windowDeliveries) * 1e8) / 100,
    latency: hist.summary(), ...usage, sent: stats.sent,
  };
}

/* 2. many rooms: R rooms x K clients, every client sends one message per second (random phase). */
async function rooms() {
  const r = num('rooms', 200);
  const k = num('per-room', 10);
  const duration = num('duration', 20);
  const n = r * k;
  const clients = makeClients(n, (i) => (i % r) + 1);
  const reg = await registerUsers(clients);
  const setup = await seat(clients, num('batch', 500), num('timeout', 300));
  log(`seated ${setup.seated}/${n} in ${setup.seconds.toFixed(1)} s`);
  await quiesce(1000, 60000);
  const hist = new Histogram();
  let inWindow = true;
  onDelivery = (s, sendT, recvT) => { if (inWindow) hist.add(ORIGIN + recvT - sendT); };
  const cpu = new CpuWindow();
  const timers = [];
  let seq = 0;
  const t0 = performance.now();
  cpu.start();
  for (const c of clients) {
    if (!c.seated) continue;
    timers.push(setTimeout(() => {
      c.sendMessage(++seq);
      timers.push(setInterval(() => c.sendMessage(++seq), 1000));
    }, Math.random() * 1000));
  }
  await sleep(duration * 1000);
  for (const t of timers) { clearTimeout(t); clearInterval(t); }
  const usage = cpu.stop();
  const wall = (performance.now() - t0) / 1000;
  await quiesce(500, 10000);
  inWindow = false;
  closeAll(clients);
  return {
    rooms: r, per_room: k, clients: n, seated: setup.seated, setup_s: round(setup.seconds), backend_failures: reg,
    duration_s: duration, messages_sent: seq, messages_per_s: Math.round(seq / wall),
    deliveries_per_s: Math.round(hist.n / wall), latency: hist.summary(), ...usage, sent: stats.sent,
    server_us_per_message: usage.server_cpu_s === null || !seq ? null : Math.round((usage.server_cpu_s / seq) * 1e8) / 100,
  };
}

/* 3. idle: N clients logged in and seated (rooms of N/R), then idle: RSS delta per connection. */
async function idle() {
  const n = num('clients', 5000);
  const r = num('rooms', 200);
  await sleep(1000);
  const rss0 = rssKiB(SERVER_PIDS);
  const clients = makeClients(n, (i) => (i % r) + 1);
  const reg = await registerUsers(clients);
  const setup = await seat(clients, num('batch', 500), num('timeout', 300));
  log(`seated ${setup.seated}/${n} in ${setup.seconds.toFixed(1)} s`);
  await quiesce(1000, 60000);
  await sleep(num('settle', 5) * 1000);
  const rss1 = rssKiB(SERVER_PIDS);
  const cpu = new CpuWindow();
  cpu.start();
  await sleep(2000); // what does the server burn while nobody talks?
  const usage = cpu.stop();
  closeAll(clients);
  return {
    clients: n, rooms: r, seated: setup.seated, setup_s: round(setup.seconds), backend_failures: reg,
    rss_before_kib: rss0, rss_after_kib: rss1,
    rss_per_conn_kib: rss0 && rss1 ? Math.round(((rss1 - rss0) / setup.seated) * 100) / 100 : null,
    idle_server_cpu_pct: usage.server_cpu_pct,
  };
}

/* 4a. connect storm: N clients connect at the same moment into R rooms; time until all seated. */
async function storm() {
  const n = num('clients', 2000);
  const r = num('rooms', 200);
  const clients = makeClients(n, (i) => (i % r) + 1);
  const reg = await registerUsers(clients);
  const cpu = new CpuWindow();
  cpu.start();
  const res = await seat(clients, 0, num('timeout', 120));
  const usage = cpu.stop();
  closeAll(clients);
  return {
    clients: n, rooms: r, backend_failures: reg, seconds: round(res.seconds), seated: res.seated,
    failed: res.failed, timed_out: res.timedOut, ...usage,
  };
}

/* 4b. crowd: N clients join ONE room in batches of B (each batch waits for the previous one). */
async function crowd() {
  const n = num('clients', 1000);
  const batch = num('batch', 100);
  const clients = makeClients(n, () => 1);
  const reg = await registerUsers(clients);
  const cpu = new CpuWindow();
  cpu.start();
  const res = await seat(clients, batch, num('timeout', 300));
  const usage = cpu.stop();
  const drain = await quiesce(1000, 60000); // backlog of userlists still arriving after the last seat
  closeAll(clients);
  return {
    clients: n, batch, backend_failures: reg, seconds: round(res.seconds), seated: res.seated,
    failed: res.failed, timed_out: res.timedOut, drain_after_s: drain, frames_received: stats.frames, ...usage,
  };
}

function round(x) { return Math.round(x * 1000) / 1000; }

const SCENARIOS = { fanout, rooms, idle, storm, crowd };

(async () => {
  const fn = SCENARIOS[SCENARIO];
  if (!fn) { log(`unknown scenario ${SCENARIO}`); process.exit(2); }
  // Hard stop: whatever happens, this process ends.
  setTimeout(() => { log('hard time limit reached'); process.exit(3); }, num('hard-limit', 900) * 1000).unref();
  const result = await fn();
  // Above ~90 % of its core the generator itself may be what limits the rates it measured.
  if (typeof result.gen_cpu_pct === 'number') result.generator_bound = result.gen_cpu_pct > GEN_BOUND_PCT;
  result.socket_errors = stats.errors;
  if (Object.keys(stats.why).length) result.socket_error_reasons = stats.why;
  result.connect_errors = stats.connectErrors;
  process.stdout.write(JSON.stringify(result) + '\n');
  agent.destroy();
  setTimeout(() => process.exit(0), 200);
})().catch((e) => { log(e.stack || e); process.exit(1); });
