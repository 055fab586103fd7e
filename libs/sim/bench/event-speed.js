// Wall time of event-mode runs, the virtual clock settling by macrotask turns beside microtasks (the
// default). Build first (npx tsc -b libs/sim/tsconfig.json), then: node libs/sim/bench/event-speed.js
// Prints ms per 1000-token DSI run (best of `rounds`, alternating the modes) for two shapes, and a
// load simulation's time (simulateLoad: non-SI, SI and DSI, 1000 requests each at concurrency 16).
const { performance } = require('node:perf_hooks');
const { eventRun } = require('../dist/event');
const { loadRun } = require('../dist/load');

async function perRun(params, settle, runs) {
  const started = performance.now();
  for (let i = 0; i < runs; i++) await eventRun('dsi', { ...params, seed: i + 1 }, { settle });
  return (performance.now() - started) / runs;
}

async function main() {
  const rounds = 5;
  const runs = 10;
  for (const [a, k, servers] of [[0.9, 5, 7], [0.7, 1, 4]]) {
    const params = { a, k, servers, tokens: 1000, seed: 1, c: 0.1, t: 1, ttft: 1, verifyPerToken: 0, rtt: 0 };
    const best = { macrotask: Infinity, microtasks: Infinity };
    for (const settle of Object.keys(best)) await perRun(params, settle, 2);
    for (let r = 0; r < rounds; r++) for (const settle of Object.keys(best)) best[settle] = Math.min(best[settle], await perRun(params, settle, runs));
    console.log(`a=${a} k=${k} servers=${servers}: macrotask ${best.macrotask.toFixed(1)} ms, microtasks ${best.microtasks.toFixed(1)} ms per 1000-token run`);
  }
  const load = { a: 0.8, c: 0.1, k: 5, t: 1, tokens: 100, servers: 8, seed: 42, concurrency: 16, requests: 1000 };
  for (const settle of ['macrotask', 'microtasks']) {
    const started = performance.now();
    for (const mode of ['nonsi', 'si', 'dsi']) await loadRun(mode, load, { settle });
    console.log(`load simulation (3 modes x 1000 requests x 100 tokens, concurrency 16), ${settle}: ${((performance.now() - started) / 1000).toFixed(2)} s`);
  }
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
