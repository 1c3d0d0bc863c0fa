'use strict';
/*
 * Benchmark orchestrator, started by ../run. For every repeat and scenario it starts each server
 * fresh (the Node reference and/or ilchat, pinned to core 0), drives it with the load generator
 * (pinned to core 1), checks what reached chatroom_history, stops the server, and in the end
 * prints medians with the ilchat / Node ratio and writes results.json + results.txt.
 */
const fs = require('fs');
const os = require('os');
const path = require('path');
const http = require('http');
const https = require('https');
const { spawn, spawnSync, execFileSync } = require('child_process');
const { findPid, portTaken } = require('./procs');
const adapt = require('./adapt');

const BENCH = path.resolve(__dirname, '..');
const MAIN = path.resolve(BENCH, '..');
const SPEC_SQL = process.env.ILIAS_TABLES_SQL || path.join(MAIN, 'ilchat/store/mysql_schema.sql');
const TWISTD = process.env.ILCHAT_TWISTD || path.join(MAIN, '.venv/bin/twistd');
const PY_SPY = path.join(path.dirname(TWISTD), 'py-spy');
const NS = 'bench';
const AUTH_KEY = 'bench-key';
const AUTH_SECRET = 'bench-secret';
const ALL = ['fanout', 'tls', 'polling', 'cluster', 'rooms', 'idle', 'storm', 'crowd', 'backend'];
/* Scenarios that are the fan-out over another transport: the generator runs `fanout` for them. */
const GEN_SCENARIO = { tls: 'fanout', polling: 'fanout', cluster: 'fanout' };
/* The fan-out on two ilchat processes sharing Redis (issue 14) is compared with one ilchat process
 * in the same run, not with Node: the kinds measured per scenario, the first one the reference. */
const CLUSTER_SIZE = 2;
const REDIS = { host: '127.0.0.1', port: 6379 };

// ------------------------------------------------------------------ options
function usage(code) {
  process.stdout.write(`usage: bench/run [--scenarios a,b,..] [--repeat N] [--quick] [--only node|ilchat]
                 [--node-port P] [--ilchat-port P] [--ilchat-log-level L] [--keep-db] [--py-spy]
                 [--gen-bound-pct P] [--adapt-attempts N] [--rate R]
  --gen-bound-pct P: generator CPU (% of its core) above which a run is generator-bound (default 90,
                     or $BENCH_GEN_BOUND_PCT); --adapt-attempts N: configurations tried per fan-out
                     scenario and repeat when it is (default ${adapt.MAX_ATTEMPTS}; 1: only mark it)
  --rate R:          fan-out scenarios start with the sending capped at R messages/s (a configuration
                     the adaptation would reach; for profiling one load, e.g. with --only ilchat)
scenarios: ${ALL.join(', ')} (default: all)
`);
  process.exit(code);
}
const opts = { scenarios: ALL, repeat: null, quick: false, only: null, nodePort: 8601, ilchatPort: 8602,
  ilchatLogLevel: 'warning', keepDb: false, pySpy: false,
  genBoundPct: Number(process.env.BENCH_GEN_BOUND_PCT || adapt.DEFAULT_BOUND_PCT), adaptAttempts: adapt.MAX_ATTEMPTS,
  rate: null };
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  const val = () => { const v = process.argv[++i]; if (v === undefined) usage(2); return v; };
  if (a === '--scenarios') opts.scenarios = val().split(',').map((s) => s.trim()).filter(Boolean);
  else if (a === '--repeat') opts.repeat = parseInt(val(), 10);
  else if (a === '--quick') opts.quick = true;
  else if (a === '--only') opts.only = val();
  else if (a === '--node-port') opts.nodePort = parseInt(val(), 10);
  else if (a === '--ilchat-port') opts.ilchatPort = parseInt(val(), 10);
  else if (a === '--ilchat-log-level') opts.ilchatLogLevel = val();
  else if (a === '--keep-db') opts.keepDb = true;
  else if (a === '--py-spy') opts.pySpy = true;
  else if (a === '--gen-bound-pct') opts.genBoundPct = Number(val());
  else if (a === '--adapt-attempts') opts.adaptAttempts = parseInt(val(), 10);
  else if (a === '--rate') opts.rate = parseInt(val(), 10);
  else if (a === '-h' || a === '--help') usage(0);
  else { process.stderr.write(`unknown option ${a}\n`); usage(2); }
}
for (const s of opts.scenarios) if (!ALL.includes(s)) { process.stderr.write(`unknown scenario ${s}\n`); usage(2); }
if (opts.only && !['node', 'ilchat'].includes(opts.only)) usage(2);
if (!(opts.genBoundPct > 0) || !(opts.adaptAttempts >= 1) || (opts.rate !== null && !(opts.rate >= 1))) usage(2);
if (opts.repeat === null) opts.repeat = opts.quick ? 1 : 3;
const SERVERS = opts.only ? [opts.only] : ['node', 'ilchat'];
const kindsOf = (sc) => (sc === 'cluster' ? ['ilchat', 'cluster'] : SERVERS);

/* Scenario sizes: full (the issue's numbers) and --quick (a smoke run of a minute or two). */
const SIZES = opts.quick ? {
  fanout: ['--clients', 100, '--duration', 3, '--batch', 50, '--window', 8],
  cluster: ['--clients', 100, '--duration', 3, '--batch', 50, '--window', 8],
  tls: ['--clients', 100, '--duration', 3, '--batch', 50, '--window', 8, '--tls', 1],
  polling: ['--clients', 100, '--duration', 3, '--batch', 50, '--window', 8, '--transport', 'polling'],
  rooms: ['--rooms', 20, '--per-room', 10, '--duration', 5],
  idle: ['--clients', 500, '--rooms', 50, '--settle', 2],
  storm: ['--clients', 200, '--rooms', 20],
  crowd: ['--clients', 200, '--batch', 50],
  backend: { seconds: 3, connections: 32 },
} : {
  fanout: ['--clients', 1000, '--duration', 10, '--batch', 100, '--window', 8],
  cluster: ['--clients', 1000, '--duration', 10, '--batch', 100, '--window', 8],
  // 500 clients: the room of issue 18's TLS figures; with 1,000 the Node reference's seating
  // alone buffers 1.3 GB of userlists for polling clients and the generator nears its core over TLS.
  tls: ['--clients', 500, '--duration', 10, '--batch', 100, '--window', 8, '--tls', 1],
  polling: ['--clients', 500, '--duration', 10, '--batch', 100, '--window', 8, '--transport', 'polling'],
  rooms: ['--rooms', 200, '--per-room', 10, '--duration', 20],
  idle: ['--clients', 5000, '--rooms', 200, '--settle', 5],
  storm: ['--clients', 2000, '--rooms', 200],
  crowd: ['--clients', 1000, '--batch', 100, '--timeout', 400],
  backend: { seconds: 10, connections: 32 },
};
const ROOMS_IN_DB = 200;

// ------------------------------------------------------------------ small helpers
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');
const RESULTS = path.join(BENCH, 'results', stamp + (opts.quick ? '-quick' : ''));
fs.mkdirSync(RESULTS, { recursive: true });
const say = (...a) => process.stdout.write(a.join(' ') + '\n');

const CPUS = os.cpus().length;
const SERVER_CPU = '0';
const GEN_CPU = CPUS > 1 ? '1' : '0';
const HAVE_TASKSET = spawnSync('taskset', ['--version']).status === 0;
/* [cmd, args] prefixed with taskset when we can pin. */
function pinned(cpu, cmd, args) {
  return HAVE_TASKSET && CPUS > 1 ? ['taskset', ['-c', cpu, cmd, ...args]] : [cmd, args];
}

const DB = `ilchat_bench_${stamp.replace('-', '_')}_${process.pid}`;
function sql(statement, database) {
  const args = ['-uroot', '-h127.0.0.1', '-N', '-B'];
  if (database) args.push(database);
  return execFileSync('mariadb', [...args, '-e', statement], { encoding: 'utf8' }).trim();
}

const DB_PORT = 3306;
const DB_PID = findPid('mariadbd', DB_PORT) || findPid('mysqld', DB_PORT);
/* The shared Redis of the cluster scenario, whose CPU is reported beside the servers' (its other
 * clients' load included: in the 1-process run, which uses no Redis, that is all it measures). */
const REDIS_PID = findPid('redis-server', REDIS.port);

function httpGet(port, p, timeoutMs = 2000, secure = false) {
  return new Promise((resolve) => {
    const req = (secure ? https : http).get({ host: '127.0.0.1', port, path: p, rejectUnauthorized: false }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(timeoutMs, () => req.destroy());
    req.on('error', () => resolve(null));
  });
}

function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// ------------------------------------------------------------------ database
function createDatabase() {
  sql(`CREATE DATABASE \`${DB}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  execFileSync('mariadb', ['-uroot', '-h127.0.0.1', DB], { input: fs.readFileSync(SPEC_SQL) });
  const values = Array.from({ length: ROOMS_IN_DB }, (_, i) => `(${i + 1})`).join(',');
  sql(`INSERT INTO chatroom_settings (room_id) VALUES ${values}`, DB);
  say(`database ${DB}: ILIAS tables, ${ROOMS_IN_DB} rooms`);
}
function resetTables() {
  sql('DELETE FROM chatroom_history; DELETE FROM chatroom_history_seq; DELETE FROM chatroom_users; '
    + 'DELETE FROM chatroom_sessions; DELETE FROM chatroom_sessions_seq', DB);
}
function dropDatabase() {
  if (opts.keepDb) { say(`keeping database ${DB}`); return; }
  try { sql(`DROP DATABASE IF EXISTS \`${DB}\``); say(`dropped database ${DB}`); } catch (e) { say(`could not drop ${DB}: ${e.message}`); }
}

// ------------------------------------------------------------------ TLS files
// RFC 7919 ffdhe2048: a published group, so no slow parameter generation (as tests/test_tls.py).
const FFDHE2048 = `-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
`;
let tlsFiles = null;
/* A self-signed certificate (RSA 2048, as a typical ILIAS installation's), its key and dhparam. */
function makeTlsFiles() {
  if (tlsFiles) return tlsFiles;
  const dir = path.join(RESULTS, 'tls');
  fs.mkdirSync(dir, { recursive: true });
  tlsFiles = { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem'), dhparam: path.join(dir, 'dhparam.pem') };
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', tlsFiles.key, '-out', tlsFiles.cert,
    '-subj', '/CN=localhost', '-days', '2', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  fs.writeFileSync(tlsFiles.dhparam, FFDHE2048);
  return tlsFiles;
}

// ------------------------------------------------------------------ servers
/* server.cfg (and client.cfg) of ilchat; `member` ({index, prefix}) makes it process `index` of a
 * cluster: port ilchatPort + index, its own instance and logs, a `redis` section with `prefix`. */
function writeIlchatConfig(tls, member = null) {
  const dir = path.join(RESULTS, 'ilchat-config');
  fs.mkdirSync(dir, { recursive: true });
  const suffix = member ? `-${member.index + 1}` : '';
  const server = {
    protocol: tls ? 'https' : 'http', port: opts.ilchatPort + (member ? member.index : 0), address: '127.0.0.1',
    cert: tls ? tls.cert : '', key: tls ? tls.key : '', dhparam: tls ? tls.dhparam : '',
    log: path.join(RESULTS, `ilchat-chat${suffix}.log`), error_log: path.join(RESULTS, `ilchat-chat-errors${suffix}.log`),
    log_level: opts.ilchatLogLevel, deletion_mode: 0, deletion_unit: 'days', deletion_value: 30, deletion_time: '03:00',
    // Every benchmark client comes from 127.0.0.1 and sends as fast as it is told: lift the
    // per-address and per-connection limits, which are meant for real networks (the Node server has none).
    network: { max_connections_per_ip: 0, max_http_connections_per_ip: 0, ilias_message_rate: 0 },
  };
  if (member) {
    server.redis = { ...REDIS, prefix: member.prefix, instance: `bench-${member.index + 1}` };
    server.journal_dir = path.join(RESULTS, `journal${suffix}`); // each process its own journals
    fs.mkdirSync(server.journal_dir, { recursive: true });
  }
  const client = {
    name: NS, enable_osd: false, enable_osc: true, enable_browser_notifications: false,
    conversation_idle_state_in_minutes: 1, osd_intervall: 60, chat_enabled: true, play_invitation_sound: false,
    auth: { key: AUTH_KEY, secret: AUTH_SECRET },
    database: { type: 'mysql', host: '127.0.0.1', port: 3306, name: DB, user: 'root', pass: '' },
    // The load generators log in by id as the Node server's clients do (no ILIAS sessions).
    identity: 'trust',
  };
  const name = `server${tls ? '-https' : ''}${suffix}.cfg`;
  fs.writeFileSync(path.join(dir, name), JSON.stringify(server, null, 2));
  fs.writeFileSync(path.join(dir, 'client.cfg'), JSON.stringify(client, null, 2));
  return path.join(dir, name);
}

/* [[cmd, args], port] of a server; `tls` (the files of makeTlsFiles) makes it serve https/wss. */
function serverCommand(kind, tls, member) {
  if (kind === 'node') {
    return [pinned(SERVER_CPU, process.execPath, [path.join(BENCH, 'reference/server.js'),
      '--port', String(opts.nodePort), '--address', '127.0.0.1', '--name', NS, '--auth', `${AUTH_KEY}:${AUTH_SECRET}`,
      '--db-host', '127.0.0.1', '--db-port', String(DB_PORT), '--db-user', 'root', '--db-pass', '', '--db-name', DB,
      ...(tls ? ['--cert', tls.cert, '--key', tls.key, '--dhparam', tls.dhparam] : [])]), opts.nodePort];
  }
  const serverCfg = writeIlchatConfig(tls, member);
  return [pinned(SERVER_CPU, TWISTD, ['-n', '--pidfile=', 'ilchat',
    '--server-cfg', serverCfg, '--client-cfg', path.join(path.dirname(serverCfg), 'client.cfg')]),
  opts.ilchatPort + (member ? member.index : 0)];
}

async function startServer(kind, logName, tls, member = null) {
  const [[cmd, args], port] = serverCommand(kind, tls, member);
  const taken = portTaken(port);
  if (taken) throw new Error(`${kind} server not started: ${taken}`);
  const out = fs.openSync(path.join(RESULTS, logName), 'w');
  const child = spawn(cmd, args, { stdio: ['ignore', out, out], cwd: RESULTS });
  let exited = null;
  child.on('exit', (code, sig) => { exited = { code, sig }; });
  const t0 = Date.now();
  while (Date.now() - t0 < 30000) {
    if (exited) break;
    const r = await httpGet(port, `/backend/Heartbeat/${NS}`, 1000, Boolean(tls));
    if (r && r.status === 200 && r.body.includes('200')) return { child, port, pid: child.pid, tls: Boolean(tls) };
    await sleep(200);
  }
  try { child.kill('SIGKILL'); } catch (e) { /* gone */ }
  const tail = fs.readFileSync(path.join(RESULTS, logName), 'utf8').split('\n').slice(-15).join('\n');
  throw new Error(`${kind} server did not answer Heartbeat${exited ? ` (exited ${JSON.stringify(exited)})` : ' in 30 s'}:\n${tail}`);
}

async function stopServer(srv) {
  if (srv.child.exitCode !== null || srv.child.signalCode !== null) return;
  const done = new Promise((r) => srv.child.once('exit', r));
  srv.child.kill('SIGTERM');
  const t = setTimeout(() => { try { srv.child.kill('SIGKILL'); } catch (e) { /* gone */ } }, 10000);
  await done;
  clearTimeout(t);
}

// ------------------------------------------------------------------ one measurement
/* Runs the generator against `srvs` (one server, or the processes of a cluster: the clients are
 * spread over them, CPU and RSS summed) at `config` (adapt.js); `onSeated` is called once when it
 * reports its clients seated. */
function runGenerator(scenario, srvs, logName, config, onSeated = null) {
  return new Promise((resolve) => {
    const [cmd, args] = pinned(GEN_CPU, process.execPath, [path.join(BENCH, 'loadgen/gen.js'),
      '--scenario', GEN_SCENARIO[scenario] || scenario, '--port', srvs.map((s) => s.port).join(','), '--ns', NS,
      '--auth', `${AUTH_KEY}:${AUTH_SECRET}`, '--server-pid', srvs.map((s) => s.pid).join(','), ...(DB_PID ? ['--db-pid', String(DB_PID)] : []),
      ...(scenario === 'cluster' && REDIS_PID ? ['--redis-pid', String(REDIS_PID)] : []), '--hard-limit', '900',
      '--bound-pct', String(opts.genBoundPct), ...SIZES[scenario].map(String), ...adapt.generatorArgs(config)]);
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const errLog = fs.createWriteStream(path.join(RESULTS, logName));
    child.stdout.on('data', (c) => { out += c; });
    child.stderr.on('data', (c) => {
      errLog.write(c);
      process.stderr.write(c);
      if (onSeated && / seated \d+/.test(String(c))) { onSeated(); onSeated = null; }
    });
    const killer = setTimeout(() => child.kill('SIGKILL'), 960 * 1000);
    child.on('exit', (code) => {
      clearTimeout(killer);
      errLog.end();
      const line = out.trim().split('\n').pop();
      try { resolve(JSON.parse(line)); } catch (e) { resolve({ error: `generator exited ${code}`, output: out.slice(-500) }); }
    });
  });
}

/* Heartbeat requests/s with wrk (one thread, pinned), or a Node keep-alive loop without it. */
function runBackend(srv) {
  const { seconds, connections } = SIZES.backend;
  const url = `http://127.0.0.1:${srv.port}/backend/Heartbeat/${NS}`;
  if (spawnSync('wrk', ['--version']).error === undefined) {
    const [cmd, args] = pinned(GEN_CPU, 'wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', url]);
    const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
    const m = /Requests\/sec:\s+([\d.]+)/.exec(r.stdout || '');
    const p50 = /\s50%\s+([\d.]+)(us|ms|s)/.exec(r.stdout || '');
    const p99 = /\s99%\s+([\d.]+)(us|ms|s)/.exec(r.stdout || '');
    const ms = (x) => (x ? Number(x[1]) * ({ us: 0.001, ms: 1, s: 1000 }[x[2]]) : null);
    const errs = /Non-2xx or 3xx responses:\s+(\d+)/.exec(r.stdout || '');
    return { tool: 'wrk', connections, seconds, requests_per_s: m ? Number(m[1]) : null,
      latency: { p50_ms: ms(p50), p99_ms: ms(p99) }, non_2xx: errs ? Number(errs[1]) : 0, raw: (r.stdout || '') + (r.stderr || '') };
  }
  const loop = `
    const http=require('http');const a=new http.Agent({keepAlive:true,maxSockets:${connections}});
    let n=0,bad=0;const end=Date.now()+${seconds}*1000;
    function one(){if(Date.now()>=end)return Promise.resolve();return new Promise(r=>{http.get('${url}',{agent:a},res=>{
      if(res.statusCode!==200)bad++;res.resume();res.on('end',()=>{n++;r();});}).on('error',()=>{bad++;r();});}).then(one);}
    const t0=Date.now();Promise.all(Array.from({length:${connections}},one)).then(()=>{
      console.log(JSON.stringify({tool:'node-loop',requests_per_s:Math.round(n/((Date.now()-t0)/1000)),non_2xx:bad}));process.exit(0);});`;
  const [cmd, args] = pinned(GEN_CPU, process.execPath, ['-e', loop]);
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 });
  try { return JSON.parse(r.stdout.trim()); } catch (e) { return { error: 'node loop failed', output: r.stderr }; }
}

/* How many messages reached chatroom_history (waits for background writers, up to 20 s). */
async function persisted(expected) {
  let last = -1;
  let stableSince = Date.now();
  const t0 = Date.now();
  while (Date.now() - t0 < 20000) {
    const n = Number(sql('SELECT COUNT(*) FROM chatroom_history', DB));
    if (n >= expected) return n;
    if (n !== last) { last = n; stableSince = Date.now(); } else if (Date.now() - stableSince > 3000) return n;
    await sleep(250);
  }
  return last;
}

/* Deletes the keys of a cluster run's Redis prefix (instance keys, counters, locks). */
function dropRedisPrefix(prefix) {
  const cli = (args) => spawnSync('redis-cli', ['-h', REDIS.host, '-p', String(REDIS.port), ...args], { encoding: 'utf8' });
  const keys = (cli(['--scan', '--pattern', `${prefix}*`]).stdout || '').split('\n').filter(Boolean);
  if (keys.length) cli(['DEL', ...keys]);
}

/* Starts the server(s) of one run: one, or CLUSTER_SIZE ilchat processes on one Redis prefix. */
async function startServers(kind, tag, scenario, prefix) {
  const tls = scenario === 'tls' ? makeTlsFiles() : null;
  if (kind !== 'cluster') return [await startServer(kind, `${tag}.server.log`, tls)];
  const srvs = [];
  try {
    for (let index = 0; index < CLUSTER_SIZE; index++) {
      srvs.push(await startServer('ilchat', `${tag}.server-${index + 1}.log`, tls, { index, prefix }));
    }
  } catch (e) {
    for (const s of srvs) await stopServer(s);
    throw e;
  }
  return srvs;
}

/* One run of `kind` in `scenario` at `config`; `attempt` > 1 is a re-run of the repeat adapted. */
async function measure(kind, scenario, rep, config, attempt) {
  resetTables();
  const tag = `${kind}-${scenario}-${rep}${attempt > 1 ? `-a${attempt}` : ''}`;
  const prefix = `ilchat-bench-${stamp}-${process.pid}-${rep}:`;
  let srvs;
  try {
    srvs = await startServers(kind, tag, scenario, prefix);
  } catch (e) {
    if (kind === 'cluster') dropRedisPrefix(prefix);
    return { error: e.message };
  }
  const srv = srvs[0];
  let result;
  const load = os.loadavg()[0];
  try {
    await sleep(500);
    if (scenario === 'backend') {
      result = runBackend(srv);
      fs.writeFileSync(path.join(RESULTS, `${tag}.wrk.txt`), result.raw || '');
      delete result.raw;
    } else {
      // --py-spy: ilchat's threads sampled from the moment the clients are seated (the measured
      // window and what follows it) to the generator's end, as collapsed stacks; each process of
      // a cluster in a file of its own (`<tag>-<n>.py-spy.txt`).
      const spies = [];
      const startSpy = () => {
        srvs.forEach((s, i) => {
          const name = srvs.length > 1 ? `${tag}-${i + 1}.py-spy` : `${tag}.py-spy`;
          spies.push(spawn(PY_SPY, ['record', '--pid', String(s.pid), '--rate', String(process.env.BENCH_PY_SPY_RATE || 250), '--nonblocking', '--threads',
            '--format', 'raw', '-o', path.join(RESULTS, `${name}.txt`)],
          { stdio: ['ignore', 'ignore', fs.openSync(path.join(RESULTS, `${name}.log`), 'w')] }));
        });
      };
      result = await runGenerator(scenario, srvs, `${tag}.gen.log`, config, opts.pySpy && kind !== 'node' ? startSpy : null);
      await Promise.all(spies.map((spy) => { const done = new Promise((r) => spy.once('exit', r)); spy.kill('SIGINT'); return done; }));
      if (typeof result.sent === 'number' && result.sent > 0) {
        result.persisted = await persisted(result.sent);
      }
    }
    const rss = (s) => Number((/VmRSS:\s+(\d+)/.exec(
      fs.existsSync(`/proc/${s.pid}/status`) ? fs.readFileSync(`/proc/${s.pid}/status`, 'utf8') : '') || [0, 0])[1]) || 0;
    result.server_rss_end_kib = srvs.reduce((a, s) => a + rss(s), 0) || null;
    result.server_alive = srvs.every((s) => s.child.exitCode === null && s.child.signalCode === null);
    if (kind === 'cluster') result.processes = srvs.length;
    result.loadavg1_at_start = Math.round(load * 100) / 100;
  } finally {
    for (const s of srvs) await stopServer(s);
    if (kind === 'cluster') dropRedisPrefix(prefix);
  }
  return result;
}

// ------------------------------------------------------------------ reporting
/* The figures compared per scenario: [label, getter, better: 'higher' | 'lower']. */
const FANOUT_FIGURES = [['rate cap messages/s (config)', (r) => r.config && r.config.rate, 'config'],
  ['deliveries/s', (r) => r.deliveries_per_s, 'higher'], ['latency p50 ms', (r) => r.latency && r.latency.p50_ms, 'lower'],
  ['latency p99 ms', (r) => r.latency && r.latency.p99_ms, 'lower'], ['server CPU %', (r) => r.server_cpu_pct, 'info'],
  ['server CPU µs / delivery', (r) => r.server_us_per_delivery, 'lower'], ['generator CPU %', (r) => r.gen_cpu_pct, 'info'],
  ['generator-bound runs', (r) => (r.generator_bound ? 1 : 0), 'count'], ['others CPU % (noise)', (r) => r.others_cpu_pct, 'info'],
  ['setup (all seated) s', (r) => r.setup_s, 'lower'], ['persisted / sent', (r) => (r.sent ? r.persisted / r.sent : null), 'info']];
const FIGURES = {
  fanout: FANOUT_FIGURES,
  tls: FANOUT_FIGURES,
  cluster: [...FANOUT_FIGURES.slice(0, 6),
    ['Redis CPU µs / delivery', (r) => r.redis_us_per_delivery, 'info'],
    ['server + Redis µs / delivery', (r) => (r.server_us_per_delivery === null || r.redis_us_per_delivery === null ? null
      : r.server_us_per_delivery + r.redis_us_per_delivery), 'lower'],
    ...FANOUT_FIGURES.slice(6)],
  polling: [...FANOUT_FIGURES.slice(0, 6), ['HTTP requests/s', (r) => r.http_requests_per_s, 'info'],
    ['server CPU µs / HTTP request', (r) => r.server_us_per_request, 'lower'], ...FANOUT_FIGURES.slice(6),
    ['RSS per polling client KiB', (r) => r.rss_per_client_kib, 'lower']],
  rooms: [['others CPU % (noise)', (r) => r.others_cpu_pct, 'info'], ['latency p50 ms', (r) => r.latency && r.latency.p50_ms, 'lower'], ['latency p99 ms', (r) => r.latency && r.latency.p99_ms, 'lower'],
    ['server CPU %', (r) => r.server_cpu_pct, 'lower'],
    ['server CPU µs / message', (r) => r.server_us_per_message, 'lower'], ['db CPU %', (r) => r.db_cpu_pct, 'info'],
    ['messages/s', (r) => r.messages_per_s, 'info'], ['persisted / sent', (r) => (r.sent ? r.persisted / r.sent : null), 'info']],
  idle: [['RSS per connection KiB', (r) => r.rss_per_conn_kib, 'lower'], ['RSS total MiB', (r) => r.rss_after_kib && r.rss_after_kib / 1024, 'info'],
    ['idle server CPU %', (r) => r.idle_server_cpu_pct, 'info']],
  storm: [['all seated s', (r) => (r.timed_out ? null : r.seconds), 'lower'], ['seated', (r) => r.seated, 'info'],
    ['server CPU s', (r) => r.server_cpu_s, 'lower'],
    ['others CPU % (noise)', (r) => r.others_cpu_pct, 'info']],
  crowd: [['all seated s', (r) => (r.timed_out ? null : r.seconds), 'lower'], ['seated', (r) => r.seated, 'info'],
    ['server CPU s', (r) => r.server_cpu_s, 'lower'],
    ['generator CPU %', (r) => r.gen_cpu_pct, 'info'], ['others CPU % (noise)', (r) => r.others_cpu_pct, 'info']],
  backend: [['Heartbeat req/s', (r) => r.requests_per_s, 'higher'], ['latency p99 ms', (r) => r.latency && r.latency.p99_ms, 'lower']],
};

function fmt(x) {
  if (x === null || x === undefined) return '-';
  if (Math.abs(x) >= 1000) return String(Math.round(x));
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(3);
}

function COMMIT() {
  try {
    let c = execFileSync('git', ['-C', MAIN, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    if (execFileSync('git', ['-C', MAIN, 'status', '--porcelain', '--', 'ilchat', 'twisted'], { encoding: 'utf8' }).trim()) c += '+dirty';
    return c;
  } catch (e) { return 'unknown'; }
}

const sameConfig = (x, y) => ((x && x.rate) || null) === ((y && y.rate) || null);

/* One table of `scenarios`, comparing kind `b` with kind `a` (the reference) in its last column;
 * its figures come from the runs at the scenario's last configuration (`configs`, adapt.js). */
function table(all, configs, scenarios, [a, b], headers, summary) {
  const lines = [];
  const rows = [['scenario', 'figure', ...headers]];
  const notes = [];
  for (const sc of scenarios) {
    const config = configs[sc] || adapt.BASE;
    const everyRun = (kind) => (all[sc] && all[sc][kind]) || [];
    const runsOf = (kind) => everyRun(kind).filter((r) => sameConfig(r.config, config));
    summary[sc] = { config };
    for (const [label, get, better] of FIGURES[sc]) {
      const med = {};
      for (const kind of [a, b]) {
        const runs = runsOf(kind);
        if (better === 'count') { // how many runs had it, of how many
          const ok = runs.filter((r) => !r.error);
          med[kind] = ok.length ? ok.filter((r) => get(r)).length : null;
          continue;
        }
        med[kind] = median(runs.filter((r) => !r.error).map((r) => { try { return get(r); } catch (e) { return null; } }));
      }
      const ratio = !['count', 'config'].includes(better) && med[a] && med[b] !== null && med[b] !== undefined ? med[b] / med[a] : null;
      const show = (x) => (['count', 'config'].includes(better) && x !== null ? String(x) : fmt(x));
      summary[sc][label] = { [a]: med[a], [b]: med[b], ratio, better };
      rows.push([sc, label + (better === 'higher' ? ' (↑)' : better === 'lower' ? ' (↓)' : ''), show(med[a]), show(med[b]),
        ratio === null ? '-' : ratio.toFixed(2)]);
    }
    const superseded = [a, b].reduce((n, kind) => n + everyRun(kind).length - runsOf(kind).length, 0);
    if (config.rate) {
      const members = median(runsOf(b).concat(runsOf(a)).map((r) => r.members));
      notes.push(`${sc}: figures from the runs ${adapt.describe(config)} (${members ? `${fmt(config.rate * members)} deliveries/s offered, ` : ''}`
        + `${runsOf(a).length} + ${runsOf(b).length} runs), as the window alone made the generator the limit; `
        + 'deliveries/s is then the offered load unless a server fell short: compare latency and CPU per delivery');
    }
    if (superseded) notes.push(`${sc}: ${superseded} run(s) at an earlier configuration left out of the medians (in results.json)`);
    for (const kind of kindsOf(sc)) {
      const errs = runsOf(kind).filter((r) => r.error);
      for (const e of errs) rows.push([sc, `${kind} FAILED`, String(e.error).split('\n')[0].slice(0, 70), '', '']);
      const bound = runsOf(kind).filter((r) => r.generator_bound).length;
      if (bound) notes.push(`${sc}: ${bound} ${kind} run(s) generator-bound (generator above ${opts.genBoundPct} % of its core`
        + `${adapt.ADAPTABLE.has(sc) ? `, ${adapt.describe(config)}` : ''}): `
        + 'its rates and latencies there are bounds, not the server\'s; compare the CPU per delivery');
    }
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  for (const [i, r] of rows.entries()) {
    lines.push(r.map((c, j) => (j >= 2 ? String(c).padStart(widths[j]) : String(c).padEnd(widths[j]))).join('  '));
    if (i === 0) lines.push(widths.map((w) => '-'.repeat(w)).join('  '));
  }
  for (const n of notes) lines.push(`* ${n}`);
  return lines;
}

function report(all, configs) {
  const lines = [];
  lines.push(`ilchat benchmark ${stamp} (ilchat ${COMMIT()})${opts.quick ? ' (quick)' : ''}: repeat ${opts.repeat}, medians; `
    + `cpus ${CPUS}, server on cpu ${SERVER_CPU}, generator on cpu ${GEN_CPU}${HAVE_TASKSET ? '' : ' (no taskset)'}`);
  const summary = {};
  const sideBySide = opts.scenarios.filter((sc) => sc !== 'cluster');
  if (sideBySide.length) lines.push(...table(all, configs, sideBySide, ['node', 'ilchat'], ['node', 'ilchat', 'ilchat/node'], summary));
  if (opts.scenarios.includes('cluster')) {
    if (sideBySide.length) lines.push('');
    lines.push(`cluster: ${CLUSTER_SIZE} ilchat processes on one Redis (clients split evenly, sender on the first; CPU summed) against one`);
    lines.push(...table(all, configs, ['cluster'], ['ilchat', 'cluster'], ['1 process', `${CLUSTER_SIZE} processes`, `${CLUSTER_SIZE} / 1`], summary));
  }
  return { text: lines.join('\n'), summary };
}

// ------------------------------------------------------------------ main
/* Each scenario's configuration (adapt.js): the last one its pair ran at. */
const configs = {};
(async () => {
  say(`results in ${RESULTS}`);
  createDatabase();
  let interrupted = false;
  const cleanup = () => { if (!interrupted) { interrupted = true; dropDatabase(); process.exit(130); } };
  process.on('SIGINT', cleanup);
  process.on('SIGTERM', cleanup);
  const all = {};
  const started = new Date().toISOString();
  try {
    for (let rep = 1; rep <= opts.repeat; rep++) {
      for (const sc of opts.scenarios) {
        all[sc] = all[sc] || {};
        // The pair (both kinds) at one configuration; generator-bound, the pair again adapted.
        // A scenario keeps its last configuration for the next repeats.
        let config = configs[sc] || (opts.rate && adapt.ADAPTABLE.has(sc) ? { rate: opts.rate } : adapt.BASE);
        for (let attempt = 1; ; attempt++) {
          configs[sc] = config;
          const pair = [];
          for (const kind of kindsOf(sc)) {
            say(`--- repeat ${rep}/${opts.repeat}: ${sc} on ${kind}${adapt.ADAPTABLE.has(sc) ? `, ${adapt.describe(config)}` : ''}`
              + (attempt > 1 ? ` (attempt ${attempt})` : ''));
            const r = { ...await measure(kind, sc, rep, config, attempt), repeat: rep, attempt, config };
            (all[sc][kind] = all[sc][kind] || []).push(r);
            pair.push(r);
            say(JSON.stringify(r));
            fs.writeFileSync(path.join(RESULTS, 'raw.json'), JSON.stringify(all, null, 2));
          }
          const next = adapt.nextConfig(sc, config, pair, opts.genBoundPct);
          if (!next || attempt >= opts.adaptAttempts) {
            if (adapt.ADAPTABLE.has(sc) && pair.some(adapt.isGeneratorBound)) {
              say(`--- ${sc}: still generator-bound after ${attempt} configuration(s); keeping ${adapt.describe(config)}`);
            }
            break;
          }
          say(`--- ${sc}: generator-bound (${pair.filter(adapt.isGeneratorBound).map((r) => `${r.gen_cpu_pct} %`).join(', ')}); `
            + `the pair again, ${adapt.describe(next)}`);
          config = next;
        }
      }
    }
  } finally {
    dropDatabase();
  }
  const { text, summary } = report(all, configs);
  const doc = { started, ilchat_commit: COMMIT(), finished: new Date().toISOString(), options: opts, sizes: SIZES, cpus: CPUS,
    configs,
    pinning: { server: SERVER_CPU, generator: GEN_CPU, taskset: HAVE_TASKSET }, node: process.version,
    summary, runs: all };
  fs.writeFileSync(path.join(RESULTS, 'results.json'), JSON.stringify(doc, null, 2));
  fs.writeFileSync(path.join(RESULTS, 'results.txt'), text + '\n');
  const latest = path.join(BENCH, 'results', 'latest');
  try { fs.rmSync(latest, { force: true }); fs.symlinkSync(path.basename(RESULTS), latest); } catch (e) { /* ignore */ }
  say('');
  say(text);
  say(`\nwritten: ${path.join(RESULTS, 'results.json')}, results.txt`);
})().catch((e) => { process.stderr.write((e.stack || String(e)) + '\n'); dropDatabase(); process.exit(1); });
