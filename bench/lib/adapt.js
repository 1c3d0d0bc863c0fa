'use strict';
/*
 * What the benchmark does when its load generator, not the server, was the limit (issue 18).
 *
 * The fan-out scenarios (fanout, tls, polling, cluster) are closed loops: the sender keeps a
 * window of messages in flight, so a generator at the end of its core caps the rate of both
 * servers and hides the difference between them. On the 2-core machine the generator has one
 * core (the server has the other), so more generator processes or fewer clients per process
 * would only share that core: every delivery still costs the generator the same, and two
 * processes cost it more (bench/README.rst has the measurement). What relieves the generator is
 * less work per second: the pair is run again with the sending capped (`--rate` messages/s,
 * the window still the upper bound) at the rate that puts the most loaded generator of the pair
 * at TARGET_SHARE of the bound, until no run of the pair is generator-bound or MAX_ATTEMPTS
 * configurations have been tried.
 */

/* The scenarios whose generator is the fan-out closed loop, which a rate cap relieves. */
const ADAPTABLE = new Set(['fanout', 'tls', 'polling', 'cluster']);
const DEFAULT_BOUND_PCT = 90;
const TARGET_SHARE = 0.8; // the adapted rate aims at 80 % of the bound (72 % of the core at 90)
const MAX_ATTEMPTS = 3; // configurations per scenario and repeat, the first one included

/* The configuration a scenario starts with: the window alone. */
const BASE = Object.freeze({ rate: null });

function isGeneratorBound(run) { return Boolean(run && !run.error && run.generator_bound); }

/* The configuration to run the pair at next, or null if `runs` (the pair's runs at `config`)
 * need none: not generator-bound, not an adaptable scenario, or no rate to derive one from. */
function nextConfig(scenario, config, runs, boundPct = DEFAULT_BOUND_PCT) {
  if (!ADAPTABLE.has(scenario)) return null;
  const bound = runs.filter(isGeneratorBound);
  if (!bound.length) return null;
  const rates = bound
    .filter((r) => r.deliveries_per_s > 0 && r.members > 0 && r.gen_cpu_pct > 0)
    .map((r) => ((r.deliveries_per_s / r.members) * TARGET_SHARE * boundPct) / r.gen_cpu_pct);
  if (!rates.length) return null;
  let rate = Math.floor(Math.min(...rates));
  // A cap that would not lower the load (the run fell short of its rate) steps down by a quarter.
  if (config.rate && rate >= config.rate) rate = Math.floor(config.rate * 0.75);
  rate = Math.max(rate, 1); // one message a second is the least there is to measure
  return config.rate === rate ? null : { rate };
}

/* The generator's arguments for `config`. */
function generatorArgs(config) { return config.rate ? ['--rate', String(config.rate)] : []; }

/* How the report names a configuration. */
function describe(config) {
  return config.rate ? `sending capped at ${config.rate} messages/s` : 'window only (no rate cap)';
}

module.exports = { ADAPTABLE, BASE, DEFAULT_BOUND_PCT, MAX_ATTEMPTS, TARGET_SHARE, nextConfig, generatorArgs, describe,
  isGeneratorBound };
