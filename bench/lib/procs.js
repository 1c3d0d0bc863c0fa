'use strict';
/* Which process is which, from /proc: the benchmark measures the CPU of servers it did not start
 * (MariaDB, Redis), found by the port they listen on. */
const fs = require('fs');

/* Inodes of the TCP sockets listening on `port` (any address), from /proc/net/tcp{,6}. */
function listeningInodes(port) {
  const inodes = new Set();
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let lines = [];
    try { lines = fs.readFileSync(f, 'utf8').split('\n').slice(1); } catch (e) { continue; }
    for (const line of lines) {
      const c = line.trim().split(/\s+/);
      // c[1] local address:port, c[3] state (0A = LISTEN), c[9] inode
      if (c.length > 9 && c[3] === '0A' && c[1].endsWith(`:${hexPort}`)) inodes.add(c[9]);
    }
  }
  return inodes;
}

/* The process named `comm` that listens on `port`: with several MariaDB servers on the machine
 * (tests start private ones on other ports) the first `mariadbd` in /proc may not be ours. */
function findPid(comm, port) {
  const inodes = listeningInodes(port);
  if (!inodes.size) return null;
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (fs.readFileSync(`/proc/${d}/comm`, 'utf8').trim() !== comm) continue;
      for (const fd of fs.readdirSync(`/proc/${d}/fd`)) {
        const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${d}/fd/${fd}`));
        if (m && inodes.has(m[1])) return parseInt(d, 10);
      }
    } catch (e) { /* gone, or not ours to read */ }
  }
  return null;
}

/* Why a server cannot be started on `port`, or null: something listens there already (another
 * bench run on the default ports, say), and its Heartbeat would be measured instead. */
function portTaken(port) {
  if (!listeningInodes(port).size) return null;
  return `port ${port} is already in use by another process: stop it, or give this run its own `
    + 'ports (--node-port P, --ilchat-port P)';
}

module.exports = { listeningInodes, findPid, portTaken };
