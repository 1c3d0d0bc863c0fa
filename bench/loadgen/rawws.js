'use strict';
/*
 * A minimal websocket client over a raw TCP socket, for the load generator's heaviest case: the
 * crowd, where the Node reference sends ~500,000 full userlists (gigabytes). `ws` has to copy
 * every frame into one Buffer; this client hands only the first HEAD bytes of a big frame to the
 * caller and skips the rest as it streams by, so the generator stays cheap.
 *
 * Enough of RFC 6455 for a socket.io server: text frames (unfragmented, as socket.io sends them),
 * ping -> pong, close. Client frames are masked with an all-zero key (valid: the key is XORed, so
 * the payload goes out unchanged).
 *
 *   const c = new RawWebSocket(host, port, path, { onOpen, onFrame(buf, totalLength), onClose, tls })
 *   c.send(string); c.terminate()
 * With `tls: true` the socket is a real TLS connection (wss) that verifies nothing: the benchmark
 * measures the servers' encryption, not a PKI.
 */
const net = require('net');
const tls = require('tls');
const crypto = require('crypto');

const HEAD = 512; // bytes of a large frame passed to onFrame (small frames are passed whole)
const SMALL = 16384; // frames up to this size are assembled completely

class RawWebSocket {
  constructor(host, port, path, handlers) {
    this.h = handlers;
    this.open = false;
    this.closed = false;
    this.pending = null; // unparsed bytes (handshake or frame header)
    this.frameLeft = 0; // payload bytes of the current frame still to come
    this.frameOp = 0;
    this.frameLen = 0;
    this.frameParts = null; // collected payload (small frames) or head (large frames)
    this.frameGot = 0;
    const key = crypto.randomBytes(16).toString('base64');
    const opened = () => {
      this.sock.setNoDelay(true);
      this.sock.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\n`
        + `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    };
    this.sock = handlers.tls
      ? tls.connect({ host, port, rejectUnauthorized: false, servername: 'localhost' }, opened)
      : net.connect({ host, port }, opened);
    this.sock.on('data', (d) => this.data(d));
    this.sock.on('error', () => this.finish());
    this.sock.on('close', () => this.finish());
  }

  finish() {
    if (this.closed) return;
    this.closed = true;
    this.open = false;
    if (this.h.onClose) this.h.onClose();
  }

  data(d) {
    if (this.pending) { d = Buffer.concat([this.pending, d]); this.pending = null; }
    let i = 0;
    if (!this.open) {
      const end = d.indexOf('\r\n\r\n');
      if (end < 0) { this.pending = d; return; }
      if (!d.toString('latin1', 0, 12).startsWith('HTTP/1.1 101')) { this.sock.destroy(); return; }
      this.open = true;
      i = end + 4;
      if (this.h.onOpen) this.h.onOpen();
    }
    while (i < d.length) {
      if (this.frameLeft > 0) { // inside a payload
        const n = Math.min(this.frameLeft, d.length - i);
        this.take(d, i, n);
        i += n;
        this.frameLeft -= n;
        if (this.frameLeft === 0) this.deliver();
        continue;
      }
      // frame header: 2 bytes, then 0, 2 or 8 bytes of length (servers never mask)
      if (d.length - i < 2) { this.pending = d.subarray(i); return; }
      const op = d[i] & 0x0f;
      let len = d[i + 1] & 0x7f;
      let hl = 2;
      if (len === 126) { hl = 4; } else if (len === 127) { hl = 10; }
      if (d.length - i < hl) { this.pending = d.subarray(i); return; }
      if (len === 126) len = d.readUInt16BE(i + 2);
      else if (len === 127) len = Number(d.readBigUInt64BE(i + 2));
      i += hl;
      this.frameOp = op;
      this.frameLen = len;
      this.frameLeft = len;
      this.frameParts = [];
      this.frameGot = 0;
      if (len === 0) this.deliver();
    }
  }

  /* Keep the payload if the frame is small, or only its first HEAD bytes if it is large. */
  take(d, i, n) {
    const want = this.frameLen <= SMALL ? n : Math.min(n, HEAD - this.frameGot);
    if (want > 0) { this.frameParts.push(d.subarray(i, i + want)); this.frameGot += want; }
  }

  deliver() {
    const parts = this.frameParts;
    const payload = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    this.frameParts = null;
    const op = this.frameOp;
    if (op === 0x1 || op === 0x2) { this.h.onFrame(payload, this.frameLen); return; }
    if (op === 0x9) { this.write(0xa, payload); return; } // ping -> pong
    if (op === 0x8) { this.sock.end(); this.finish(); }
  }

  write(op, payload) {
    const len = payload.length;
    let header;
    if (len < 126) { header = Buffer.alloc(6); header[1] = 0x80 | len; } else if (len < 65536) {
      header = Buffer.alloc(8); header[1] = 0x80 | 126; header.writeUInt16BE(len, 2);
    } else { header = Buffer.alloc(14); header[1] = 0x80 | 127; header.writeBigUInt64BE(BigInt(len), 2); }
    header[0] = 0x80 | op; // FIN + opcode; the 4 mask-key bytes at the end stay zero
    this.sock.write(Buffer.concat([header, payload]));
  }

  send(s) { if (this.open) this.write(0x1, Buffer.from(s)); }

  terminate() { this.sock.destroy(); this.finish(); }
}

module.exports = { RawWebSocket };
