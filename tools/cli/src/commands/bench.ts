import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command, Option } from 'commander';
import { DEFAULT_HEATMAP, HeatmapComputer, heatmapGrid, runHeatmap } from '@dsi/sim';
import { median } from '@dsi/core';
import { checkWritableDir, fixed, integerOption } from '../options';
import { timeEach } from '../timing';
import { startService } from '../stack';
import { DEFAULT_MAX_NEW_TOKENS_LIMIT } from './serve';

/** The most runs per figure `dsi bench` accepts (the sim suite takes about 2 s per run). */
export const MAX_BENCH_RUNS = 100;

/** The reference study's sequential per-cell simulation of the ndim=20 heatmap on one core of this machine kind. */
export const STUDY_HEATMAP_SECONDS = 95;

interface BenchRow {
  name: string;
  seconds: number;
  cells?: number;
  cells_per_second?: number;
  vs_study?: number;
}

/** The median wall time of `runs` runs, in seconds. */
async function timed(runs: number, fn: () => Promise<unknown> | unknown): Promise<number> {
  return median(await timeEach(runs, fn)) / 1000;
}

/** Simulator benchmarks, measured side by side in one run. */
export async function simulatorBench(runs: number, log: (line: string) => void): Promise<BenchRow[]> {
  const seedSpec = { ...DEFAULT_HEATMAP };
  const exactSpec = { ...DEFAULT_HEATMAP, method: 'exact' as const };
  const cells = heatmapGrid(seedSpec).length;
  const threads = os.availableParallelism();
  const rows: BenchRow[] = [];
  const add = (name: string, seconds: number, withCells = true) => {
    const row: BenchRow = { name, seconds };
    if (withCells) {
      row.cells = cells;
      row.cells_per_second = cells / seconds;
      row.vs_study = STUDY_HEATMAP_SECONDS / seconds;
    }
    rows.push(row);
    log(`  ${name}: ${fixed(seconds, 3)} s`);
  };
  await runHeatmap(seedSpec); // warm the file cache and the JIT once
  add(`seed heatmap ndim=20, ${threads} worker threads`, await timed(runs, () => runHeatmap(seedSpec)));
  add('seed heatmap ndim=20, 1 thread in process', await timed(runs, () => {
    const computer = new HeatmapComputer(seedSpec);
    for (const point of heatmapGrid(seedSpec)) computer.compute(point);
  }));
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-bench-'));
  try {
    const bin = path.join(__dirname, '../../bin/dsi.js');
    add('`dsi heatmap --ndim 20` whole command', await timed(runs, () => {
      const result = spawnSync(process.execPath, [bin, 'heatmap', '--ndim', '20', '--out', out, '--no-progress'], { encoding: 'utf8' });
      if (result.status !== 0) throw new Error(`dsi heatmap failed: ${result.stderr}`);
    }));
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
  add(`exact heatmap ndim=20, ${threads} worker threads`, await timed(runs, () => runHeatmap(exactSpec)));
  const simulator = await startService('simulator', ['--port', '0']);
  try {
    const { heatmapRemote } = await import('../remote');
    add('Heatmap RPC ndim=20, streamed over loopback', await timed(runs, () => heatmapRemote(simulator.address, seedSpec, () => undefined)));
  } finally {
    await simulator.stop();
  }
  return rows;
}

/** `dsi bench`: performance figures, printed as ratios measured side by side. */
export function benchCommand(): Command {
  return new Command('bench')
    .description('measure the simulator (heatmap cells per second), the model services (serving overhead, Verify cost, synthetic latency), one request online and many at once (load)')
    .addOption(integerOption('--runs <n>', `runs per figure, at most ${MAX_BENCH_RUNS}; the median is reported`, { min: 1, max: MAX_BENCH_RUNS }).default(3))
    .addOption(new Option('--suite <suite>', 'which benchmarks').choices(['all', 'sim', 'models', 'online', 'load', 'plan', 'soak']).default('all'))
    .addOption(integerOption('--tokens <n>', 'online: tokens per generation', { min: 1, max: DEFAULT_MAX_NEW_TOKENS_LIMIT }).default(96))
    .option('--quick', 'load: one request per client (at least 4 per concurrency) instead of two (at least 8); soak: 75 s instead of 10 minutes')
    .addOption(integerOption('--max-batch-requests <n>', 'load: replicas batch up to n calls per forward (and concurrency goes to 64)', { min: 1, max: 1024 }).default(1))
    .addOption(integerOption('--requests-per-client <n>', 'load: requests each client sends at every concurrency (default 2, --quick 1); with few, the last client to finish decides throughput as much as the rate does', { min: 1, max: 64 }))
    .option('--auto', 'load: DSI runs lookahead auto, SI the best fixed k for each concurrency (event mode)')
    .option('--drift', 'load: also two drifting workloads, one client, auto against every fixed k: DSI with a 0.9 until token 32, then 0.4; SI with a 0.95, then 0.05')
    .option('--out <dir>', 'load, plan: folder for the SVGs and the services\' logs (default: a new temporary folder)')
    .option('--json', 'print one JSON document on stdout')
    .action(async (flags: { runs: number; suite: 'all' | 'sim' | 'models' | 'online' | 'load' | 'plan' | 'soak'; tokens: number; quick?: boolean; out?: string; json?: boolean; maxBatchRequests: number; requestsPerClient?: number; auto?: boolean; drift?: boolean }) => {
      const log = (line: string) => {
        if (!flags.json) process.stderr.write(line + '\n');
      };
      const doc: Record<string, unknown> = { study_heatmap_seconds: STUDY_HEATMAP_SECONDS };
      const lines: string[] = [];
      if (flags.suite === 'all' || flags.suite === 'sim') {
        log(`simulator benchmarks (median of ${flags.runs} runs, ${os.availableParallelism()} cores):`);
        const rows = await simulatorBench(flags.runs, log);
        doc.simulator = rows;
        lines.push(
          '',
          `${'simulator'.padEnd(46)} ${'seconds'.padStart(8)} ${'cells/s'.padStart(9)} ${'vs study 95 s'.padStart(14)}`,
          ...rows.map(
            (r) =>
              `${r.name.padEnd(46)} ${fixed(r.seconds, 3).padStart(8)} ${(r.cells_per_second ? Math.round(r.cells_per_second).toString() : '').padStart(9)} ${(r.vs_study ? `${fixed(r.vs_study, 0)}x` : '').padStart(14)}`,
          ),
          'vs study: the reference study took 95 s for this sweep on one core of this machine kind (its published figure).',
        );
      }
      if (flags.suite === 'all' || flags.suite === 'models') {
        const runs = Math.max(flags.runs, 50);
        log(`model service benchmarks (median of ${runs} calls, default ONNX pair, 1 onnxruntime thread):`);
        const { modelBench } = await import('./bench-models');
        const rows = await modelBench(runs, log);
        doc.models = rows;
        lines.push('', `${'model services'.padEnd(62)} ${'median ms'.padStart(10)}  notes`);
        for (const row of rows) {
          const notes = Object.entries(row)
            .filter(([key]) => key !== 'name' && key !== 'median_ms')
            .map(([key, value]) => `${key}=${typeof value === 'number' ? fixed(value, 3) : value}`)
            .join(' ');
          lines.push(`${row.name.padEnd(62)} ${fixed(row.median_ms, 3).padStart(10)}  ${notes}`);
        }
      }
      if (flags.suite === 'all' || flags.suite === 'online') {
        log(`online benchmark: real services, synthetic backend (target ${50} ms per forward), ${flags.tokens} tokens per request, 2 prompts:`);
        const { onlineBench } = await import('./bench-online');
        const online = await onlineBench(flags.tokens, log);
        doc.online = online;
        lines.push(
          '',
          `online (target 50 ms/forward, measured ${fixed(online.targetForwardMs, 3)} ms): overhead per verification ${fixed(online.overheadMs, 3)} ms back to back, ${fixed(online.cadenceOverheadMs, 3)} ms at a 50 ms cadence`,
          `${'c'.padStart(5)} ${'a'.padStart(4)} ${'k'.padStart(3)} ${'srv'.padStart(4)} ${'non-SI ms'.padStart(10)} ${'SI ms'.padStart(9)} ${'DSI ms'.padStart(9)} ${'DSI/SI'.padStart(7)} ${'DSI/nonSI'.padStart(10)} ${'meas/pred nonSI SI DSI'.padStart(24)}`,
          ...online.rows.map(
            (r) =>
              `${String(r.c).padStart(5)} ${String(r.a).padStart(4)} ${String(r.k).padStart(3)} ${String(r.servers).padStart(4)} ${fixed(r.wall_ms.nonsi, 0).padStart(10)} ${fixed(r.wall_ms.si, 0).padStart(9)} ${fixed(r.wall_ms.dsi, 0).padStart(9)} ${`${fixed(r.speedup.dsi_vs_si, 2)}x`.padStart(7)} ${`${fixed(r.speedup.dsi_vs_nonsi, 2)}x`.padStart(10)} ${[r.measured_vs_predicted.nonsi, r.measured_vs_predicted.si, r.measured_vs_predicted.dsi].map((x) => fixed(x, 3)).join(' ').padStart(24)}`,
          ),
        );
      }
      if (flags.suite === 'all' || flags.suite === 'load') {
        const { DEFAULT_DRIFTS, DEFAULT_LOAD_BENCH, QUICK_LOAD_BENCH, defaultLoadBenchDir, loadBench, loadReport } = await import('./bench-load');
        if (flags.out) checkWritableDir(flags.out, '--out');
        const base = flags.quick ? QUICK_LOAD_BENCH : DEFAULT_LOAD_BENCH;
        const config = {
          ...base,
          ...(flags.requestsPerClient !== undefined ? { requestsPerClient: flags.requestsPerClient } : {}),
          concurrencies: flags.maxBatchRequests > 1 ? [...base.concurrencies, 64] : base.concurrencies,
          maxBatchRequests: flags.maxBatchRequests,
          auto: flags.auto ?? false,
          drift: flags.drift ? DEFAULT_DRIFTS : undefined,
          outDir: flags.out ? path.resolve(flags.out) : defaultLoadBenchDir(),
        };
        log(`load benchmark: real services, synthetic backend, ${config.targets} targets at ${config.targetMs} ms, ${config.drafters} drafters, concurrency ${config.concurrencies.join(', ')}; files in ${config.outDir}`);
        const load = await loadBench(config, log);
        doc.load = load;
        lines.push(...loadReport(load));
      }
      if (flags.suite === 'all' || flags.suite === 'plan') {
        const { DEFAULT_PLAN_BENCH, planBench, planBenchReport } = await import('./bench-plan');
        const { defaultLoadBenchDir } = await import('./bench-load');
        if (flags.out) checkWritableDir(flags.out, '--out');
        const outDir = flags.out ? path.resolve(flags.out) : defaultLoadBenchDir();
        log(`plan benchmark: plan six (a, c) pairs, deploy the plan on synthetic services, measure DSI at the planned k and k = 1..8; files in ${outDir}`);
        const interrupt = new AbortController();
        const onSignal = () => interrupt.abort(new Error('interrupted: stopping the services'));
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        try {
          const plan = await planBench({ ...DEFAULT_PLAN_BENCH, outDir }, log, interrupt.signal);
          doc.plan = plan;
          lines.push(...planBenchReport(plan));
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      }
      if (flags.suite === 'soak') {
        const { DEFAULT_SOAK, QUICK_SOAK, soakBench, soakReport } = await import('./bench-soak');
        const { defaultLoadBenchDir } = await import('./bench-load');
        if (flags.out) checkWritableDir(flags.out, '--out');
        const config = { ...(flags.quick ? QUICK_SOAK : DEFAULT_SOAK), outDir: flags.out ? path.resolve(flags.out) : defaultLoadBenchDir() };
        log(`soak (not in --suite all): ${config.clients} streaming clients for ${config.durationMs / 1000} s on a local synthetic stack (4 targets, 1 drafter); files in ${config.outDir}`);
        const interrupt = new AbortController();
        const onSignal = () => interrupt.abort(new Error('interrupted: stopping the services'));
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        try {
          const soak = await soakBench(config, log, interrupt.signal);
          doc.soak = soak;
          lines.push(...soakReport(soak));
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      }
      process.stdout.write(flags.json ? JSON.stringify(doc) + '\n' : lines.join('\n') + '\n');
    });
}
