/**
 * `dsi bench --suite soak`: load held. `clients` streaming clients send greedy requests back to back
 * (modes in turn: non-SI, SI, DSI) through a local synthetic stack for `durationMs`, every stream's
 * tokens checked against the first answer for its prompt. Sampled every second: each process's RSS and
 * open file descriptors (from /proc). Reported: requests, errors, tokens per second, p50/p99 latency of
 * the first and the last window, RSS (the lowest of the last 5 s) and descriptors after warm-up and at
 * the end.
 */
import { setMaxListeners } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { quantiles } from '@dsi/core';
import { fixed } from '../options';
import { orchestratorClient, Stacks } from './bench-load';
import type { SupervisedService, StackSupervisor } from '../supervisor';

export interface SoakOptions {
  clients: number;
  durationMs: number;
  /** Tokens per request. */
  tokens: number;
  /** Distinct prompts (each is answered many times: every answer must equal the first). */
  prompts: number;
  /** The first window: RSS and descriptors are compared against their values at its end. */
  warmupMs: number;
  /** How far RSS may move from its value after warm-up (a fraction). */
  rssTolerance: number;
  /** How much higher the last window's p99 latency may be than the first's (a factor). */
  p99Tolerance: number;
  outDir: string;
}

/** The soak: 32 streaming clients for 10 minutes (warm-up: the first minute). */
export const DEFAULT_SOAK: Omit<SoakOptions, 'outDir'> = { clients: 32, durationMs: 600_000, tokens: 64, prompts: 16, warmupMs: 60_000, rssTolerance: 0.1, p99Tolerance: 1.25 };
/**
 * The CI version: 75 seconds, the first 45 as warm-up. RSS may move 25% there: in the first minute V8's
 * heaps are still growing to their working size (+12-14% from 15 s to 60 s measured here; in CI, beside
 * an image build, one target went from 85 MB at 15 s to 123 MB at 60 s, level with the others), which
 * the 10-minute run shows settling (-6% to +7% from 1 to 10 minutes, 2026-12-02). With the warm-up at
 * 30 s it failed twice in CI: the other projects' tests slow the stack, so less work is done by 30 s
 * (all four targets 91 -> 126 MB from 30 s to 60 s on 2026-12-03, where alone they are at 112-127 MB by
 * 30 s and flat after it). Its p99 may double: in CI the other projects' tests share the two cores
 * with it, so a window's tail follows their load.
 */
export const QUICK_SOAK: Omit<SoakOptions, 'outDir'> = { ...DEFAULT_SOAK, durationMs: 75_000, warmupMs: 45_000, rssTolerance: 0.25, p99Tolerance: 2 };

export interface SoakProcess {
  name: string;
  pid: number;
  rss_warm_mb: number;
  rss_end_mb: number;
  rss_change: number;
  fds_warm: number;
  fds_end: number;
}

export interface SoakResult {
  clients: number;
  duration_s: number;
  requests: number;
  errors: number;
  error_samples: string[];
  mismatches: number;
  tokens_per_s: number;
  /** Request latency (sent to the last streamed message) of the requests finished in the first and the last window. */
  p50_first_ms: number;
  p99_first_ms: number;
  p50_last_ms: number;
  p99_last_ms: number;
  processes: SoakProcess[];
  criteria: Array<{ name: string; pass: boolean; detail: string }>;
}

/** The stretch at the end of the warm-up and of the run whose lowest RSS sample is compared. */
const RSS_WINDOW_MS = 5_000;

/** RSS (MB) and open descriptors of a process, from /proc (Linux). */
function sample(pid: number): { rssMb: number; fds: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return { rssMb: rssKb / 1024, fds: fs.readdirSync(`/proc/${pid}/fd`).length };
}

const MODES = ['MODE_NON_SI', 'MODE_SI', 'MODE_DSI'] as const;

/** Runs the soak on a fresh local synthetic stack; every process it starts is stopped when it ends. */
export async function soakBench(options: SoakOptions, log: (line: string) => void, signal: AbortSignal = new AbortController().signal): Promise<SoakResult> {
  fs.mkdirSync(options.outDir, { recursive: true });
  const stacks = new Stacks(path.join(options.outDir, 'logs'));
  try {
    return await stacks.with('soak', (supervisor) => run(options, supervisor, log, signal));
  } finally {
    await stacks.stopAll(2_000);
  }
}

async function run(options: SoakOptions, supervisor: StackSupervisor, log: (line: string) => void, signal: AbortSignal): Promise<SoakResult> {
  const synthetic = (ms: number, extra: string[] = []) => ['--port', '0', '--backend', 'synthetic', '--synthetic-spin-ms', '0', '--ttft-ms', String(ms), '--tpot-ms', String(ms), ...extra];
  const services: SupervisedService[] = [];
  for (let i = 0; i < 4; i++) services.push(await supervisor.start('target', synthetic(5), `target-${i}`));
  services.push(await supervisor.start('drafter', synthetic(0.5, ['--a', '0.8']), 'drafter'));
  const orchestrator = await supervisor.start(
    'orchestrator',
    ['--port', '0', '--drafter', services[4].address, '--targets', services.slice(0, 4).map((s) => s.address).join(','), '--max-active-requests', String(options.clients)],
    'orchestrator',
  );
  services.push(orchestrator);
  const { GenerateStreamRequest } = await import('@dsi/proto');
  // Every client's stream in flight listens on the one signal: `clients` legitimate listeners.
  setMaxListeners(Math.max(10, options.clients + 1), signal);
  const client = await orchestratorClient(orchestrator.address);
  const first = new Map<number, string>();
  const finished: Array<{ at: number; latency: number; tokens: number }> = [];
  const errors: string[] = [];
  let mismatches = 0;
  let next = 0;
  const started = performance.now();
  const endAt = started + options.durationMs;

  const stream = (promptIndex: number, mode: string): Promise<number[]> =>
    new Promise((resolve, reject) => {
      const params = { prompt: `soak prompt ${promptIndex}`, mode, lookahead: 3, maxNewTokens: options.tokens, sampling: { rule: 'VERIFICATION_RULE_GREEDY' } };
      const call = client.generateStream(GenerateStreamRequest.fromJSON({ params }), { deadline: Date.now() + 60_000 });
      const tokens: number[] = [];
      const onAbort = () => call.cancel();
      signal.addEventListener('abort', onAbort, { once: true });
      call.on('data', (message: { delta?: { tokens: number[] }; done?: { tokens: number[] } }) => {
        if (message.delta) tokens.push(...message.delta.tokens);
        if (message.done && message.done.tokens.join(',') !== tokens.join(',')) reject(new Error('the final response disagrees with the streamed tokens'));
      });
      call.on('error', (error) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      });
      call.on('end', () => {
        signal.removeEventListener('abort', onAbort);
        resolve(tokens);
      });
    });

  const clientLoop = async (): Promise<void> => {
    while (performance.now() < endAt && !signal.aborted) {
      const index = next++;
      const promptIndex = index % options.prompts;
      const sentAt = performance.now();
      try {
        const tokens = await stream(promptIndex, MODES[index % MODES.length]);
        const at = performance.now();
        finished.push({ at: at - started, latency: at - sentAt, tokens: tokens.length });
        const key = tokens.join(',');
        const seen = first.get(promptIndex);
        if (seen === undefined) first.set(promptIndex, key);
        else if (seen !== key) mismatches++;
      } catch (error) {
        if (signal.aborted) return;
        errors.push(error instanceof Error ? error.message : String(error));
      }
    }
  };

  const pids = () => services.map((s) => ({ name: s.name, pid: s.pid! }));
  // RSS is sampled every second and each end of the comparison is the lowest of its last samples: a
  // single sample lands anywhere on the heap's garbage sawtooth (tens of MB under this load), while a
  // leak lifts the lowest point too. Descriptors: the last sample.
  const samples = new Map<number, Array<{ at: number; rssMb: number; fds: number }>>();
  /** Samples every process now; returns when (ms since the start). */
  const takeSamples = (): number => {
    const at = performance.now() - started;
    for (const { pid } of pids()) {
      let now: { rssMb: number; fds: number };
      try {
        now = sample(pid);
      } catch {
        continue; // gone: the run reports its error
      }
      const list = samples.get(pid) ?? [];
      list.push({ at, ...now });
      samples.set(pid, list);
    }
    return at;
  };
  const lowestBefore = (pid: number, until: number): { rssMb: number; fds: number } | undefined => {
    const list = (samples.get(pid) ?? []).filter((s) => s.at <= until && s.at > until - RSS_WINDOW_MS);
    if (list.length === 0) return undefined;
    return { rssMb: Math.min(...list.map((s) => s.rssMb)), fds: list[list.length - 1].fds };
  };
  const sampler = setInterval(() => void takeSamples(), 1_000);
  let warm: Map<number, { rssMb: number; fds: number }> | undefined;
  const warmTimer = setTimeout(() => {
    const at = takeSamples();
    warm = new Map(pids().map(({ pid }) => [pid, lowestBefore(pid, at)!]));
    log(`  warm-up done at ${fixed(options.warmupMs / 1000, 0)} s: ${finished.length} requests, ${errors.length} errors`);
  }, options.warmupMs);
  const progress = setInterval(() => log(`  ${fixed((performance.now() - started) / 1000, 0)} s: ${finished.length} requests, ${errors.length} errors, ${mismatches} mismatches`), 15_000);
  try {
    await Promise.all(Array.from({ length: options.clients }, clientLoop));
  } finally {
    clearTimeout(warmTimer);
    clearInterval(progress);
    clearInterval(sampler);
  }
  const endedAt = takeSamples();
  const end = new Map(pids().map(({ pid }) => [pid, lowestBefore(pid, endedAt)!]));
  client.close();
  const elapsed = performance.now() - started;
  const window = (from: number, to: number) => finished.filter((r) => r.at >= from && r.at < to).map((r) => r.latency);
  const [p50First, p99First] = quantiles(window(0, options.warmupMs), [0.5, 0.99]);
  const [p50Last, p99Last] = quantiles(window(elapsed - options.warmupMs, Infinity), [0.5, 0.99]);
  const processes: SoakProcess[] = pids().map(({ name, pid }) => {
    const w = warm?.get(pid) ?? end.get(pid)!;
    const e = end.get(pid)!;
    return { name, pid, rss_warm_mb: w.rssMb, rss_end_mb: e.rssMb, rss_change: e.rssMb / w.rssMb - 1, fds_warm: w.fds, fds_end: e.fds };
  });
  const criteria = [
    { name: 'no errors', pass: errors.length === 0, detail: `${errors.length} errors` },
    { name: 'every answer equals the first for its prompt', pass: mismatches === 0, detail: `${mismatches} mismatches` },
    {
      name: `RSS of every process within ${fixed(100 * options.rssTolerance, 0)}% of its value after warm-up`,
      pass: processes.every((p) => Math.abs(p.rss_change) <= options.rssTolerance),
      detail: processes.map((p) => `${p.name} ${fixed(p.rss_warm_mb, 1)} -> ${fixed(p.rss_end_mb, 1)} MB`).join(', '),
    },
    {
      name: 'open descriptors flat',
      pass: processes.every((p) => p.fds_end <= p.fds_warm + 4),
      detail: processes.map((p) => `${p.name} ${p.fds_warm} -> ${p.fds_end}`).join(', '),
    },
    {
      name: `p99 latency stable (last window within ${options.p99Tolerance}x the first)`,
      pass: p99Last <= options.p99Tolerance * p99First,
      detail: `${fixed(p99First, 0)} -> ${fixed(p99Last, 0)} ms`,
    },
  ];
  return {
    clients: options.clients,
    duration_s: elapsed / 1000,
    requests: finished.length,
    errors: errors.length,
    error_samples: [...new Set(errors)].slice(0, 5),
    mismatches,
    tokens_per_s: (finished.reduce((s, r) => s + r.tokens, 0) * 1000) / elapsed,
    p50_first_ms: p50First,
    p99_first_ms: p99First,
    p50_last_ms: p50Last,
    p99_last_ms: p99Last,
    processes,
    criteria,
  };
}

/** The human report. */
export function soakReport(result: SoakResult): string[] {
  return [
    '',
    `soak: ${result.clients} streaming clients for ${fixed(result.duration_s, 0)} s: ${result.requests} requests, ${result.errors} errors, ${result.mismatches} mismatches, ${fixed(result.tokens_per_s, 0)} tokens/s`,
    `  latency p50/p99: first window ${fixed(result.p50_first_ms, 0)}/${fixed(result.p99_first_ms, 0)} ms, last window ${fixed(result.p50_last_ms, 0)}/${fixed(result.p99_last_ms, 0)} ms`,
    ...result.processes.map((p) => `  ${p.name.padEnd(13)} RSS ${fixed(p.rss_warm_mb, 1)} -> ${fixed(p.rss_end_mb, 1)} MB (${p.rss_change >= 0 ? '+' : ''}${fixed(100 * p.rss_change, 1)}%), descriptors ${p.fds_warm} -> ${p.fds_end}`),
    ...result.criteria.map((c) => `  ${c.pass ? 'pass' : 'FAIL'}  ${c.name}: ${c.detail}`),
    ...result.error_samples.map((e) => `  error: ${e}`),
  ];
}
