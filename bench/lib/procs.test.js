'use strict';
/* node --test bench/lib: a port something listens on already is refused (procs.js portTaken). */
const test = require('node:test');
const assert = require('node:assert');
const net = require('node:net');
const { portTaken } = require('./procs');

test('a port in use names itself and the options that avoid it; a free one passes', async () => {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  const why = portTaken(port);
  assert.match(why, new RegExp(`port ${port} is already in use`));
  assert.match(why, /--ilchat-port/);
  await new Promise((resolve) => server.close(resolve));
  assert.strictEqual(portTaken(port), null);
});
