'use strict';
/* node --test bench/lib: the rule that re-runs a generator-bound fan-out pair (adapt.js). */
const test = require('node:test');
const assert = require('node:assert');
const adapt = require('./adapt');

const run = (genCpu, deliveries, members = 500, bound = genCpu > 90) => (
  { gen_cpu_pct: genCpu, deliveries_per_s: deliveries, members, generator_bound: bound });

test('a pair with no generator-bound run keeps its configuration', () => {
  assert.strictEqual(adapt.nextConfig('tls', adapt.BASE, [run(60, 100000), run(80, 200000)]), null);
});

test('the cap puts the most loaded generator of the pair at 80 % of the bound', () => {
  // 400 messages/s at 96 % and 200 at 92 %: 400 * 72 / 96 = 300, 200 * 72 / 92 = 156.5
  const next = adapt.nextConfig('polling', adapt.BASE, [run(96, 200000), run(92, 100000)]);
  assert.deepStrictEqual(next, { rate: 156 });
  assert.deepStrictEqual(adapt.generatorArgs(next), ['--rate', '156']);
  assert.deepStrictEqual(adapt.generatorArgs(adapt.BASE), []);
});

test('the bound is a parameter (a tiny one forces the adaptation)', () => {
  assert.deepStrictEqual(adapt.nextConfig('fanout', adapt.BASE, [run(20, 50000, 100, true)], 10), { rate: 200 });
});

test('a cap that would not lower the load steps down by a quarter, and ends at 1 message/s', () => {
  // at a cap of 100 the run made 40 messages/s at 95 %: 40 * 0.76 = 30 would be lower, so taken
  assert.deepStrictEqual(adapt.nextConfig('tls', { rate: 100 }, [run(95, 20000)]), { rate: 30 });
  // a run that made more than its cap (what the formula gives is not lower): three quarters of it
  assert.deepStrictEqual(adapt.nextConfig('tls', { rate: 100 }, [run(91, 75000)]), { rate: 75 });
  assert.deepStrictEqual(adapt.nextConfig('tls', { rate: 2 }, [run(99, 100)]), { rate: 1 });
  assert.strictEqual(adapt.nextConfig('tls', { rate: 1 }, [run(99, 100)]), null);
});

test('only the fan-out scenarios are adapted; failed runs do not count', () => {
  assert.strictEqual(adapt.nextConfig('rooms', adapt.BASE, [run(99, 20000)]), null);
  assert.strictEqual(adapt.nextConfig('crowd', adapt.BASE, [run(99, 20000)]), null);
  assert.strictEqual(adapt.nextConfig('fanout', adapt.BASE, [{ ...run(99, 20000), error: 'generator exited 1' }]), null);
  assert.ok(adapt.nextConfig('cluster', adapt.BASE, [run(99, 20000)]));
});

test('the report names the configuration', () => {
  assert.match(adapt.describe(adapt.BASE), /no rate cap/);
  assert.match(adapt.describe({ rate: 300 }), /300 messages\/s/);
});
