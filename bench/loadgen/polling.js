'use strict';
/*
 * An Engine.IO v4 long-polling client that never upgrades, as a browser behind a proxy that
 * blocks websockets: one GET parked at the server at all times, one POST at a time carrying what
 * was sent meanwhile (packets joined with the record separator 0x1e, as engine.io-client does).
 * Same interface as ./rawws.js, so gen.js drives both alike:
 *
 *   const c = new PollingTransport(host, port, path, { onFrame(buf), onClose, onError(why), agent, tls })
 *   c.send(string); c.terminate()
 *
 * `path` is the Engine.IO path with `EIO=4&transport=polling`; `agent` a keep-alive http(s) Agent
 * shared by all clients (its sockets are reused across them, as a browser's are across requests).
 * Every packet of a response is handed to onFrame as a Buffer, unparsed, like a websocket frame.
 */
const http = require('http');
const https = require('https');

const SEP = 0x1e;
/* HTTP requests answered so far, all clients of this process together (gen.js reports the
 * server's CPU per request: at a low rate each delivery is a poll cycle of its own). */
const answered = { count: 0 };

class PollingTransport {
  constructor(host, port, path, handlers) {
    this.h = handlers;
    this.host = host;
    this.port = port;
    this.base = path;
    this.mod = handlers.tls ? https : http;
    this.sid = null;
    this.closed = false;
    this.outq = [];
    this.posting = false;
    this.requests = new Set();
    this.request('GET', this.base, null, (body) => this.opened(body));
  }

  request(method, path, body, done, retried = false) {
    const headers = body === null ? {} : { 'Content-Type': 'text/plain;charset=UTF-8', 'Content-Length': Buffer.byteLength(body) };
    const req = this.mod.request({ host: this.host, port: this.port, path, method, agent: this.h.agent, headers }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => {
        answered.count++;
        this.requests.delete(req);
        if (this.closed) return;
        if (res.statusCode !== 200) { this.finish(`${method} ${res.statusCode}`); return; }
        done(parts.length === 1 ? parts[0] : Buffer.concat(parts));
      });
    });
    req.on('error', (e) => {
      this.requests.delete(req);
      if (this.closed) return;
      // A kept-alive connection the server closed just as we reused it (Node's keepAliveTimeout
      // race): the request never reached the server, so send it again once, as browsers do.
      if (req.reusedSocket && e.code === 'ECONNRESET' && !retried) {
        this.request(method, path, body, done, true);
        return;
      }
      this.finish(`${method} ${e.code || e.message}`);
    });
    this.requests.add(req);
    req.end(body === null ? undefined : body);
  }

  /* The handshake's answer: the open packet (its sid is the only JSON this client parses). */
  opened(body) {
    const open = this.packets(body)[0];
    if (!open || open[0] !== 0x30) { this.finish('no open packet'); return; }
    this.sid = JSON.parse(open.toString('utf8', 1)).sid;
    this.path = `${this.base}&sid=${encodeURIComponent(this.sid)}`;
    this.h.onFrame(open);
    this.flushPost();
    this.poll();
  }

  packets(body) {
    const out = [];
    let i = 0;
    for (;;) {
      const j = body.indexOf(SEP, i);
      out.push(body.subarray(i, j < 0 ? body.length : j));
      if (j < 0) return out;
      i = j + 1;
    }
  }

  poll() {
    this.request('GET', this.path, null, (body) => {
      for (const p of this.packets(body)) {
        if (this.closed) return;
        if (p[0] === 0x31 /* close */) { this.finish('close packet'); return; }
        if (p[0] !== 0x36 /* noop */) this.h.onFrame(p);
      }
      if (!this.closed) this.poll();
    });
  }

  send(s) {
    if (this.closed) return;
    this.outq.push(s);
    this.flushPost();
  }

  flushPost() {
    if (this.posting || this.sid === null || !this.outq.length) return;
    const body = this.outq.join('\x1e');
    this.outq = [];
    this.posting = true;
    this.request('POST', this.path, body, () => { this.posting = false; this.flushPost(); });
  }

  /* Closed by the server, an error, or terminate(); `why` (if any) goes to handlers.onError. */
  finish(why) {
    if (this.closed) return;
    this.closed = true;
    if (why && this.h.onError) this.h.onError(why);
    for (const req of this.requests) req.destroy();
    this.requests.clear();
    if (this.h.onClose) this.h.onClose();
  }

  terminate() { this.finish(); }
}

module.exports = { PollingTransport, answered };
