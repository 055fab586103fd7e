/**
 * `dsi bench --suite load`: many requests at once through the real services (issue "Many requests at
 * once", docs/architecture.md). Synthetic target and drafter replicas and one orchestrator sharing them
 * run as child processes on loopback under a {@link StackSupervisor}; N clients send greedy requests back
 * to back (closed loop), and every figure is printed beside its event-mode prediction: `loadRun` in
 * libs/sim, the same scheduler over simulated replicas with the same servers, drafters, lookahead,
 * tokens, concurrency, requests and prompts ({@link loadPrompt}), calibrated only by the machine's
 * measured forward times and per-call overhead. The same prompts give the same tokens, so the
 * prediction also checks that the output under load is lossless.
 */
import { setMaxListeners } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { quantiles, type Mode } from '@dsi/core';
import { loadFigures, loadPrompt, loadRun, predictSynthetic, type LoadParams } from '@dsi/sim';
import { coord, escapeXml, niceStep, svgOpenTag, tickLabel, tickValues } from '@dsi/svg';
import type { OrchestratorServiceClient } from '@dsi/proto';
import { fixed } from '../options';
import { StackSupervisor, type SupervisedService } from '../supervisor';

/**
 * The synthetic services of the load benchmark sleep on one timer instead of polling the last 2 ms of
 * each latency: a GPU forward costs the host little CPU, while 8 polling processes on a few cores would
 * charge speculation a CPU cost the deployment does not have. The forward times each sleep really
 * takes are measured and given to the prediction.
 */
export const NO_SPIN = ['--synthetic-spin-ms', '0'];

/** Calibration requests whose median overhead the predictions charge: one 64-token request is 1.5 s of a shared host's state. */
const CALIBRATION_RUNS = 5;

/** A drafter/target pair of the load benchmark: acceptance `a`, drafter ms per token, and optionally a fixed lookahead. */
export interface LoadBenchPair {
  a: number;
  drafterMs: number;
  /** Lookahead for every mode; default: the best single-request DSI lookahead in event mode. */
  k?: number;
}

/** What the load benchmark runs. */
export interface LoadBenchOptions {
  /** Synthetic target replicas. */
  targets: number;
  /** Target forward time asked of the synthetic backend (`--ttft-ms` and `--tpot-ms`). */
  targetMs: number;
  /** Synthetic drafter replicas. */
  drafters: number;
  pairs: LoadBenchPair[];
  /** Closed-loop clients, one measurement each. */
  concurrencies: number[];
  /** New tokens per request. */
  tokens: number;
  /** Requests each client sends... */
  requestsPerClient: number;
  /** ...but at least this many per concurrency, so low concurrencies have enough for a median. */
  minRequests: number;
  /** The synthetic oracle seed (the services' `--synthetic-seed`). */
  seed: number;
  /** Where the SVGs and the services' logs go. */
  outDir: string;
  /** Calls one replica forward may batch (drafters, targets; the orchestrator sends that many at once). Default 1. */
  maxBatchRequests?: number;
  /**
   * DSI runs lookahead auto and SI, at each concurrency, the fixed k the event mode finds best for it
   * there (so DSI auto is held against the best fixed-k SI); without it every mode runs the pair's k.
   */
  auto?: boolean;
  /** Also drifting workloads at concurrency 1 (see {@link DriftBenchResult}). */
  drift?: readonly DriftWorkload[];
}

/** A drafter whose acceptance drifts: `a` until generated token `switchToken`, then `aAfter`; requests of `mode`. */
export interface DriftWorkload {
  mode: 'si' | 'dsi';
  a: number;
  aAfter: number;
  switchToken: number;
  drafterMs: number;
  /** Requests per lookahead and pass (one client; every lookahead is measured in two passes, in order then in reverse). */
  requests: number;
}

/** A drifting workload: the mode's mean wall time with lookahead auto and with every fixed k, measured and predicted. */
export interface DriftBenchResult {
  workload: DriftWorkload;
  /** mean_k: the mean k of the requests' blocks (what auto chose), measured and predicted. */
  rows: Array<{ k: number | 'auto'; wall_ms: number; predicted_wall_ms: number; mean_k: number; predicted_mean_k: number; mismatches: number }>;
  best_fixed: { k: number; wall_ms: number };
  /** The best fixed k's wall time over auto's: above 1 when auto is faster. */
  auto_speedup: number;
}

/**
 * The issue's example, DSI (a = 0.9 for 32 generated tokens, then 0.4; drafter 2 ms per token: with 4
 * replicas DSI is nearly insensitive to k there), and a sharp drop under SI (0.95, then 0.05; 1 ms
 * drafter), where the right k differs most between the two halves.
 */
export const DEFAULT_DRIFTS: readonly DriftWorkload[] = [
  { mode: 'dsi', a: 0.9, aAfter: 0.4, switchToken: 32, drafterMs: 2, requests: 8 },
  { mode: 'si', a: 0.95, aAfter: 0.05, switchToken: 32, drafterMs: 1, requests: 8 },
];

/** The issue's configuration: 4 targets at 20 ms, 2 drafters, a=0.8 c=0.1 and a=0.5 c=0.3, concurrency 1-32, 64 tokens. */
export const DEFAULT_LOAD_BENCH: Omit<LoadBenchOptions, 'outDir'> = {
  targets: 4,
  targetMs: 20,
  drafters: 2,
  pairs: [
    { a: 0.8, drafterMs: 2 },
    { a: 0.5, drafterMs: 6 },
  ],
  concurrencies: [1, 2, 4, 8, 16, 32],
  tokens: 64,
  requestsPerClient: 2,
  minRequests: 8,
  seed: 1,
};

/** `--quick`: the same configuration with one request per client (at least 4 per concurrency). */
export const QUICK_LOAD_BENCH: Omit<LoadBenchOptions, 'outDir'> = { ...DEFAULT_LOAD_BENCH, requestsPerClient: 1, minRequests: 4 };

/** The figures of one mode at one concurrency (milliseconds; throughput in tokens per second). */
export interface LoadBenchFigures {
  requests: number;
  tokens: number;
  duration_ms: number;
  throughput: number;
  latency_p50_ms: number;
  latency_p99_ms: number;
  ttft_p50_ms: number;
  /** Target forwards (Verify calls that ran on a replica) per request, and speculative calls taken back for a lane per request. */
  forwards_per_request: number;
  preemptions_per_request: number;
}

/** One mode at one concurrency: measured, predicted, their ratio, and the requests whose tokens differ. */
export interface LoadBenchCell {
  mode: Mode;
  concurrency: number;
  /** The lookahead it ran: a fixed k, or 'auto'. */
  k: number | 'auto';
  measured: LoadBenchFigures;
  predicted: LoadBenchFigures;
  /** measured / predicted. */
  ratio: { throughput: number; latency_p50: number; latency_p99: number; ttft_p50: number };
  /** Request indices whose tokens differ from the prediction's (greedy: must be none). */
  mismatches: number[];
}

/** One pair's results: its calibration and a cell per mode and concurrency. */
export interface LoadBenchPairResult {
  a: number;
  /** Drafter ms per token asked for, and c = that / target ms. */
  drafter_ms: number;
  c: number;
  k: number;
  /** The drafter's measured ms per drafted token (the prediction's drafter latency). */
  measured_drafter_ms: number;
  /** Per-call overhead at a target-forward cadence (the prediction's rtt): non-SI wall per token less the forward. */
  overhead_ms: number;
  cells: LoadBenchCell[];
  svg: string;
}

/** One checked criterion of the issue. */
export interface LoadCriterion {
  name: string;
  pass: boolean;
  /** Every failing figure (empty when it passes). */
  failures: string[];
}

/** The whole suite's result, as `--json` prints it. */
export interface LoadBenchResult {
  targets: number;
  target_ms: number;
  drafters: number;
  tokens: number;
  concurrencies: number[];
  /** A target's measured forward (the prediction's t). */
  target_forward_ms: number;
  /** Calls one replica forward batched at most, and whether DSI ran lookahead auto. */
  max_batch_requests?: number;
  auto?: boolean;
  /** Per-call overhead back to back: non-SI wall per token on a 0 ms target. */
  back_to_back_overhead_ms: number;
  /** Non-SI's ceiling: targets x 1000 / (forward + back-to-back overhead), tokens/s; the criterion asks 90% of it. */
  nonsi_capacity: number;
  pairs: LoadBenchPairResult[];
  drift?: DriftBenchResult[];
  mismatches: number;
  criteria: LoadCriterion[];
  out: string;
}

/** One request as its client saw it. */
interface MeasuredRequest {
  index: number;
  sentAt: number;
  finishedAt: number;
  latency: number;
  ttft: number;
  tokens: number[];
  targetForwards: number;
  preemptions: number;
  meanLookahead: number;
}

const MODES: ReadonlyArray<readonly [Mode, string, string]> = [
  ['nonsi', 'MODE_NON_SI', 'non-SI'],
  ['si', 'MODE_SI', 'SI'],
  ['dsi', 'MODE_DSI', 'DSI'],
];
/** A mode's {@link MODES} entry: [mode, wire name, label]. */
function modeNames(mode: Mode): (typeof MODES)[number] {
  return MODES.find(([m]) => m === mode) as (typeof MODES)[number];
}
const LOOKAHEADS = [1, 2, 3, 4, 5, 6, 7, 8, 10];
const REQUEST_DEADLINE_MS = 600_000;

/** Thrown when SIGINT or SIGTERM stops the load benchmark (every service it started is stopped first). */
export class LoadBenchInterruptedError extends Error {
  override readonly name = 'LoadBenchInterruptedError';
}

/** Stacks of services the benchmark has running, so a signal or a failure stops every one. */
export class Stacks {
  private readonly running = new Set<StackSupervisor>();

  constructor(private readonly logDir: string) {}

  /** Runs `work` with a fresh supervisor and stops everything it started afterwards, whatever happens. */
  async with<T>(name: string, work: (supervisor: StackSupervisor) => Promise<T>): Promise<T> {
    const supervisor = new StackSupervisor({
      logDir: path.join(this.logDir, name),
      report: (line) => process.stderr.write(line.replace(/^dsi up:/, 'dsi bench:') + '\n'),
    });
    this.running.add(supervisor);
    try {
      return await work(supervisor);
    } finally {
      await supervisor.stopAll(2_000);
      this.running.delete(supervisor);
    }
  }

  stopAll(graceMs: number): Promise<void> {
    return Promise.all([...this.running].map((s) => s.stopAll(graceMs))).then(() => undefined);
  }
}

export async function orchestratorClient(address: string): Promise<OrchestratorServiceClient> {
  const { credentials } = await import('@grpc/grpc-js');
  const { OrchestratorServiceClient } = await import('@dsi/proto');
  const { createChannelOptions } = await import('@dsi/rpc');
  return new OrchestratorServiceClient(address, credentials.createInsecure(), createChannelOptions());
}

/** One greedy Generate of `tokens` new tokens after `promptTokens`. */
export async function generateOnce(
  client: OrchestratorServiceClient,
  wireMode: string,
  k: number,
  promptTokens: number[],
  tokens: number,
  signal: AbortSignal,
): Promise<{ tokens: number[]; wallMs: number; ttftMs: number; targetForwards: number; preemptions: number; meanLookahead: number }> {
  const { GenerateRequest } = await import('@dsi/proto');
  const { callUnary } = await import('@dsi/rpc');
  const params = { prompt: '', promptTokens, mode: wireMode, lookahead: k, maxNewTokens: tokens, sampling: { rule: 'VERIFICATION_RULE_GREEDY' } };
  const response = await callUnary(client, 'generate', GenerateRequest.fromJSON({ params }), { signal, deadlineMs: REQUEST_DEADLINE_MS });
  const metrics = response.metrics;
  return { tokens: response.tokens, wallMs: metrics?.wallMs ?? 0, ttftMs: metrics?.ttftMs ?? 0, targetForwards: metrics?.targetForwards ?? 0, preemptions: metrics?.preemptions ?? 0, meanLookahead: metrics?.meanLookahead ?? 0 };
}

/** A synthetic target's real time per forward, as the target itself measures it (timer lateness included). */
export async function measuredTargetForwardMs(address: string): Promise<number> {
  const { credentials } = await import('@grpc/grpc-js');
  const { TargetServiceClient, VerifyRequest } = await import('@dsi/proto');
  const { callUnary } = await import('@dsi/rpc');
  const client = new TargetServiceClient(address, credentials.createInsecure());
  try {
    const times: number[] = [];
    const prefix = [...Buffer.from('calibrate load', 'utf8')];
    for (let i = 0; i < 12; i++) {
      prefix.push(65 + i);
      const response = await callUnary(client, 'verify', VerifyRequest.fromPartial({ requestId: 'calibrate-load', prefix, drafts: [] }));
      times.push(response.stats?.modelMs ?? 0);
    }
    return quantiles(times, [0.5])[0];
  } finally {
    client.close();
  }
}

/** A synthetic drafter's real time per drafted token. */
export async function measuredDraftTokenMs(address: string): Promise<number> {
  const { credentials } = await import('@grpc/grpc-js');
  const { DraftRequest, DrafterServiceClient } = await import('@dsi/proto');
  const { callUnary } = await import('@dsi/rpc');
  const client = new DrafterServiceClient(address, credentials.createInsecure());
  try {
    const times: number[] = [];
    for (let i = 0; i < 6; i++) {
      const response = await callUnary(client, 'draft', DraftRequest.fromPartial({ prefix: [...Buffer.from(`calibrate load ${i}`, 'utf8')], maxTokens: 6 }));
      times.push((response.stats?.modelMs ?? 0) / Math.max(1, response.stats?.forwards ?? 1));
    }
    return quantiles(times, [0.5])[0];
  } finally {
    client.close();
  }
}

/**
 * N clients, each sending its next request as soon as the last one finished, taking request indices
 * in order from one counter (as `loadRun` does): request i has prompt {@link loadPrompt}(seed, i).
 */
async function closedLoop(
  client: OrchestratorServiceClient,
  wireMode: string,
  k: number,
  concurrency: number,
  requests: number,
  options: LoadBenchOptions,
  signal: AbortSignal,
): Promise<MeasuredRequest[]> {
  const done = new Array<MeasuredRequest>(requests);
  const failed = new AbortController();
  const both = AbortSignal.any([signal, failed.signal]);
  // Every client's call in flight listens on this one signal (callUnary removes its listener when the
  // call ends): `concurrency` legitimate listeners, beyond EventTarget's default warning threshold of 10.
  setMaxListeners(Math.max(10, concurrency + 1), both);
  let next = 0;
  const clientLoop = async (): Promise<void> => {
    while (next < requests) {
      const index = next++;
      const sentAt = performance.now();
      try {
        const response = await generateOnce(client, wireMode, k, loadPrompt(options.seed, index), options.tokens, both);
        const finishedAt = performance.now();
        const { ttftMs: ttft, tokens, targetForwards, preemptions, meanLookahead } = response;
        done[index] = { index, sentAt, finishedAt, latency: finishedAt - sentAt, ttft, tokens, targetForwards, preemptions, meanLookahead };
      } catch (error) {
        failed.abort(error);
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, requests) }, clientLoop));
  return done;
}

/** The figures of measured requests, computed as `loadFigures` computes the prediction's. */
function measuredFigures(requests: readonly MeasuredRequest[]): LoadBenchFigures {
  const [p50, p99] = quantiles(
    requests.map((r) => r.latency),
    [0.5, 0.99],
  );
  const tokens = requests.reduce((sum, r) => sum + r.tokens.length, 0);
  const duration = Math.max(...requests.map((r) => r.finishedAt)) - Math.min(...requests.map((r) => r.sentAt));
  return {
    requests: requests.length,
    tokens,
    duration_ms: duration,
    throughput: (tokens / duration) * 1000,
    latency_p50_ms: p50,
    latency_p99_ms: p99,
    ttft_p50_ms: quantiles(
      requests.map((r) => r.ttft),
      [0.5],
    )[0],
    forwards_per_request: requests.reduce((sum, r) => sum + r.targetForwards, 0) / requests.length,
    preemptions_per_request: requests.reduce((sum, r) => sum + r.preemptions, 0) / requests.length,
  };
}

/** Requests at one concurrency: `requestsPerClient` per client, at least `minRequests`. */
export function loadBenchRequests(options: Pick<LoadBenchOptions, 'requestsPerClient' | 'minRequests'>, concurrency: number): number {
  return Math.max(options.minRequests, concurrency * options.requestsPerClient);
}

/**
 * Runs the load benchmark (module comment) and returns every figure, the criteria of the issue
 * checked, and the SVG files written to `options.outDir`. Progress goes to `log`. Every service it
 * starts is stopped before it returns or throws; SIGINT or SIGTERM stops them and rejects with a
 * {@link LoadBenchInterruptedError}.
 */
export async function loadBench(options: LoadBenchOptions, log: (line: string) => void): Promise<LoadBenchResult> {
  fs.mkdirSync(options.outDir, { recursive: true });
  const stacks = new Stacks(path.join(options.outDir, 'logs'));
  const interrupt = new AbortController();
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals += 1;
    if (signals === 1) interrupt.abort(new LoadBenchInterruptedError(`${signal} received: stopping the services`));
    void stacks.stopAll(signals === 1 ? 2_000 : 0);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const interrupted = new Promise<never>((_, reject) => interrupt.signal.addEventListener('abort', () => reject(interrupt.signal.reason as Error), { once: true }));
  interrupted.catch(() => undefined);
  try {
    return await Promise.race([run(options, stacks, interrupt.signal, log), interrupted]);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await stacks.stopAll(2_000);
  }
}

async function run(options: LoadBenchOptions, stacks: Stacks, signal: AbortSignal, log: (line: string) => void): Promise<LoadBenchResult> {
  const synthetic = (ms: number, extra: string[] = []) => ['--port', '0', '--backend', 'synthetic', '--synthetic-seed', String(options.seed), ...NO_SPIN, '--ttft-ms', String(ms), '--tpot-ms', String(ms), ...extra];
  const maxConcurrency = Math.max(...options.concurrencies);

  // Per-call overhead back to back (scheduling, RPC, services): non-SI on a 0 ms target.
  const backToBackOverheadMs = await stacks.with('overhead', async (supervisor) => {
    const target = await supervisor.start('target', synthetic(0), 'target');
    const drafter = await supervisor.start('drafter', synthetic(0), 'drafter');
    const orchestrator = await supervisor.start('orchestrator', ['--port', '0', '--drafter', drafter.address, '--targets', target.address], 'orchestrator');
    const client = await orchestratorClient(orchestrator.address);
    try {
      const prompt = [...Buffer.from('overhead', 'utf8')];
      await generateOnce(client, 'MODE_NON_SI', 1, prompt, options.tokens, signal);
      const probe = await generateOnce(client, 'MODE_NON_SI', 1, prompt, options.tokens, signal);
      return probe.wallMs / options.tokens;
    } finally {
      client.close();
    }
  });
  log(`  per-call overhead back to back (non-SI on a 0 ms target): ${fixed(backToBackOverheadMs, 3)} ms`);

  return stacks.with('load', async (supervisor) => {
    const targets: SupervisedService[] = [];
    for (let i = 0; i < options.targets; i++) targets.push(await supervisor.start('target', synthetic(options.targetMs, batchArgs(options)), `target-${i}`));
    const targetForwardMs = await measuredTargetForwardMs(targets[0].address);
    const capacity = (options.targets * 1000) / (targetForwardMs + backToBackOverheadMs);
    log(`  target forward ${fixed(targetForwardMs, 3)} ms (asked ${options.targetMs}); non-SI capacity ${options.targets} x 1000 / (${fixed(targetForwardMs, 2)} + ${fixed(backToBackOverheadMs, 2)}) = ${fixed(capacity, 1)} tokens/s`);

    const pairs: LoadBenchPairResult[] = [];
    for (const [pairIndex, pair] of options.pairs.entries()) {
      pairs.push(await benchPair(options, pair, pairIndex, supervisor, targets, targetForwardMs, maxConcurrency, signal, log));
    }
    let drift: DriftBenchResult[] | undefined;
    for (const [index, workload] of (options.drift ?? []).entries()) {
      (drift ??= []).push(await benchDrift(options, workload, index, supervisor, targets, targetForwardMs, signal, log));
    }
    const mismatches =
      pairs.reduce((sum, p) => sum + p.cells.reduce((s, cell) => s + cell.mismatches.length, 0), 0) +
      (drift ?? []).reduce((sum, d) => sum + d.rows.reduce((s, row) => s + row.mismatches, 0), 0);
    return {
      targets: options.targets,
      target_ms: options.targetMs,
      drafters: options.drafters,
      tokens: options.tokens,
      concurrencies: options.concurrencies,
      max_batch_requests: options.maxBatchRequests ?? 1,
      auto: options.auto ?? false,
      target_forward_ms: targetForwardMs,
      back_to_back_overhead_ms: backToBackOverheadMs,
      nonsi_capacity: capacity,
      pairs,
      drift,
      mismatches,
      criteria: loadCriteria(pairs, capacity, options.targets),
      out: options.outDir,
    };
  });
}

async function benchPair(
  options: LoadBenchOptions,
  pair: LoadBenchPair,
  pairIndex: number,
  supervisor: StackSupervisor,
  targets: readonly SupervisedService[],
  targetForwardMs: number,
  maxConcurrency: number,
  signal: AbortSignal,
  log: (line: string) => void,
): Promise<LoadBenchPairResult> {
  const c = pair.drafterMs / options.targetMs;
  const drafterArgs = [
    '--port', '0', '--backend', 'synthetic', '--synthetic-seed', String(options.seed), ...NO_SPIN, '--a', String(pair.a), '--ttft-ms', String(pair.drafterMs), '--tpot-ms', String(pair.drafterMs), ...batchArgs(options),
  ];
  const drafters: SupervisedService[] = [];
  for (let i = 0; i < options.drafters; i++) drafters.push(await supervisor.start('drafter', drafterArgs, `pair-${pairIndex}-drafter-${i}`));
  const measuredDrafterMs = await measuredDraftTokenMs(drafters[0].address);
  // The event mode has no admission limit: let every client's request run at once here too.
  const orchestrator = await supervisor.start(
    'orchestrator',
    [
      '--port', '0',
      '--drafters', drafters.map((d) => d.address).join(','),
      '--targets', targets.map((t) => t.address).join(','),
      '--max-active-requests', String(Math.max(maxConcurrency, 1)),
      ...batchArgs(options),
    ],
    `pair-${pairIndex}-orchestrator`,
  );
  const client = await orchestratorClient(orchestrator.address);
  try {
    const overheadMs = await cadenceOverheadMs(client, options.tokens, targetForwardMs, signal, CALIBRATION_RUNS);
    const world = { a: pair.a, c: measuredDrafterMs, t: targetForwardMs, tokens: options.tokens, servers: options.targets, seed: options.seed, rtt: overheadMs, maxBatchRequests: options.maxBatchRequests ?? 1 };

    let k = pair.k;
    if (k === undefined) {
      // The best single-request DSI lookahead in event mode (ties: the smaller k), on a few load prompts.
      let best: { k: number; wallMs: number } | undefined;
      for (const lookahead of LOOKAHEADS) {
        let wallMs = 0;
        for (let index = 0; index < 4; index++) {
          const stack = { seed: options.seed, a: pair.a, drafterMs: measuredDrafterMs, targetMs: targetForwardMs, servers: options.targets, overheadMs };
          wallMs += (await predictSynthetic(stack, 'dsi', loadPrompt(options.seed, index), options.tokens, lookahead)).wallMs;
        }
        if (!best || wallMs < best.wallMs - 1e-9) best = { k: lookahead, wallMs };
      }
      k = best!.k;
    }
    log(`  a=${pair.a} c=${fixed(c, 2)} (drafter ${pair.drafterMs} ms, measured ${fixed(measuredDrafterMs, 3)} ms per token), k=${k}, per-call overhead at this cadence ${fixed(overheadMs, 3)} ms`);
    for (const [, wireMode] of MODES) await generateOnce(client, wireMode, k, [...Buffer.from('warm up', 'utf8')], options.tokens, signal);

    const cells: LoadBenchCell[] = [];
    for (const concurrency of options.concurrencies) {
      const requests = loadBenchRequests(options, concurrency);
      const siK = options.auto ? await bestFixedSiK({ ...world, drafters: options.drafters, concurrency, requests, k: 1, warmup: concurrency }) : k;
      for (const [mode, wireMode, label] of MODES) {
        const modeK: number | 'auto' = !options.auto ? k : mode === 'dsi' ? 'auto' : mode === 'si' ? siK : 1;
        const measuredRequests = await closedLoop(client, wireMode, modeK === 'auto' ? 0 : modeK, concurrency, requests, options, signal);
        // The service is warm (calibration, warm-up, the cells before): so is the prediction's pool.
        const params: LoadParams = { ...world, k: modeK, drafters: options.drafters, concurrency, requests, warmup: concurrency };
        const prediction = await loadRun(mode, params);
        const predictedFigures = loadFigures(prediction);
        const predicted: LoadBenchFigures = {
          requests: predictedFigures.requests,
          tokens: predictedFigures.tokens,
          duration_ms: predictedFigures.duration,
          throughput: predictedFigures.throughput * 1000,
          latency_p50_ms: predictedFigures.latencyP50,
          latency_p99_ms: predictedFigures.latencyP99,
          ttft_p50_ms: predictedFigures.ttftP50,
          forwards_per_request: predictedFigures.targetForwards / predictedFigures.requests,
          preemptions_per_request: prediction.requests.reduce((sum, r) => sum + r.preemptions, 0) / predictedFigures.requests,
        };
        const measured = measuredFigures(measuredRequests);
        const mismatches = measuredRequests.filter((r) => JSON.stringify(r.tokens) !== JSON.stringify(prediction.requests[r.index].tokens)).map((r) => r.index);
        const cell: LoadBenchCell = {
          mode,
          concurrency,
          k: modeK,
          measured,
          predicted,
          ratio: {
            throughput: measured.throughput / predicted.throughput,
            latency_p50: measured.latency_p50_ms / predicted.latency_p50_ms,
            latency_p99: measured.latency_p99_ms / predicted.latency_p99_ms,
            ttft_p50: measured.ttft_p50_ms / predicted.ttft_p50_ms,
          },
          mismatches,
        };
        cells.push(cell);
        log(
          `    ${label.padEnd(6)} x${String(concurrency).padEnd(3)} k=${String(modeK).padEnd(5)} ${fixed(measured.throughput, 1)} tok/s (pred ${fixed(predicted.throughput, 1)}), ` +
            `p50 ${fixed(measured.latency_p50_ms, 0)} ms (pred ${fixed(predicted.latency_p50_ms, 0)}), ` +
            `${fixed(measured.forwards_per_request, 1)} forwards/request (pred ${fixed(predicted.forwards_per_request, 1)}), ` +
            `${fixed(measured.preemptions_per_request, 2)} preemptions/request (pred ${fixed(predicted.preemptions_per_request, 2)})${mismatches.length > 0 ? `, ${mismatches.length} token mismatches: requests ${mismatches.join(' ')}` : ''}`,
        );
      }
    }
    const result: LoadBenchPairResult = { a: pair.a, drafter_ms: pair.drafterMs, c, k, measured_drafter_ms: measuredDrafterMs, overhead_ms: overheadMs, cells, svg: '' };
    result.svg = path.join(options.outDir, `load-a${pair.a}-c${fixed(c, 2)}.svg`);
    fs.writeFileSync(result.svg, loadSvg(result, options));
    return result;
  } finally {
    client.close();
  }
}

/**
 * The drifting workload at concurrency 1: a drafter replica set whose agreement drops at generated
 * token `switchToken` (load prompts are 4 tokens: the switch is at position 4 + switchToken), the
 * workload's mode with lookahead auto and with every fixed k, `requests` requests each, beside the
 * event mode's prediction. Its drafters and orchestrator are `drift-<index>-...` in the logs.
 */
async function benchDrift(
  options: LoadBenchOptions,
  drift: DriftWorkload,
  index: number,
  supervisor: StackSupervisor,
  targets: readonly SupervisedService[],
  targetForwardMs: number,
  signal: AbortSignal,
  log: (line: string) => void,
): Promise<DriftBenchResult> {
  const switchAt = loadPrompt(options.seed, 0).length + drift.switchToken;
  const drafterArgs = [
    '--port', '0', '--backend', 'synthetic', '--synthetic-seed', String(options.seed), ...NO_SPIN, '--a', String(drift.a), '--a-after', String(drift.aAfter),
    '--a-switch-token', String(switchAt), '--ttft-ms', String(drift.drafterMs), '--tpot-ms', String(drift.drafterMs), ...batchArgs(options),
  ];
  const drafters: SupervisedService[] = [];
  for (let i = 0; i < options.drafters; i++) drafters.push(await supervisor.start('drafter', drafterArgs, `drift-${index}-drafter-${i}`));
  const measuredDrafterMs = await measuredDraftTokenMs(drafters[0].address);
  const orchestrator = await supervisor.start(
    'orchestrator',
    ['--port', '0', '--drafters', drafters.map((d) => d.address).join(','), '--targets', targets.map((t) => t.address).join(','), ...batchArgs(options)],
    `drift-${index}-orchestrator`,
  );
  const [, wireMode, label] = modeNames(drift.mode);
  const client = await orchestratorClient(orchestrator.address);
  try {
    const overheadMs = await cadenceOverheadMs(client, options.tokens, targetForwardMs, signal, CALIBRATION_RUNS);
    log(`  drifting workload: a=${drift.a} until generated token ${drift.switchToken}, then ${drift.aAfter}; drafter ${drift.drafterMs} ms per token; ${label} at concurrency 1, ${drift.requests} requests per lookahead, twice (every lookahead in order, then in reverse)`);
    const world = {
      a: drift.a, aAfter: drift.aAfter, aSwitchAt: switchAt, c: measuredDrafterMs, t: targetForwardMs, tokens: options.tokens, servers: options.targets, seed: options.seed,
      rtt: overheadMs, maxBatchRequests: options.maxBatchRequests ?? 1, drafters: options.drafters, concurrency: 1, requests: drift.requests,
    };
    const rows: DriftBenchResult['rows'] = [];
    // Warm-up (JIT of the mode's paths in every process): measured, the first 8 DSI requests of a fresh
    // stack run ~10% slower than the same requests later, which would fall on whichever row comes first.
    for (let i = 0; i < 12; i++) await generateOnce(client, wireMode, i % 2 === 0 ? 0 : 3, [...Buffer.from(`warm up ${i}`, 'utf8')], options.tokens, signal);
    // Every k is measured twice, in order and then in reverse (A B .. B A), so that whatever drifts over
    // the run (the stack warming up, the host) falls on every row alike: measured with the rows in one
    // order, auto (the first row) ran 1.12x its prediction first and 1.04x last, level with the fixed k.
    const lookaheads = ['auto', ...LOOKAHEADS] as const;
    const measuredBy = new Map<(typeof lookaheads)[number], MeasuredRequest[]>();
    for (const k of [...lookaheads, ...[...lookaheads].reverse()]) {
      const pass = await closedLoop(client, wireMode, k === 'auto' ? 0 : k, 1, drift.requests, options, signal);
      measuredBy.set(k, [...(measuredBy.get(k) ?? []), ...pass]);
    }
    for (const k of lookaheads) {
      const measured = measuredBy.get(k) as MeasuredRequest[];
      const prediction = await loadRun(drift.mode, { ...world, k, warmup: drift.requests });
      const wall = measured.reduce((sum, r) => sum + r.latency, 0) / measured.length;
      const predicted = prediction.requests.reduce((sum, r) => sum + r.latency, 0) / prediction.requests.length;
      const mismatches = measured.filter((r) => JSON.stringify(r.tokens) !== JSON.stringify(prediction.requests[r.index].tokens)).length;
      const meanK = measured.reduce((sum, r) => sum + r.meanLookahead, 0) / measured.length;
      const predictedMeanK = prediction.requests.reduce((sum, r) => sum + r.meanLookahead, 0) / prediction.requests.length;
      rows.push({ k, wall_ms: wall, predicted_wall_ms: predicted, mean_k: meanK, predicted_mean_k: predictedMeanK, mismatches });
      log(`    ${label} k=${String(k).padEnd(5)} mean wall ${fixed(wall, 0)} ms (pred ${fixed(predicted, 0)}), mean k ${fixed(meanK, 2)} (pred ${fixed(predictedMeanK, 2)})${mismatches > 0 ? `, ${mismatches} token mismatches` : ''}`);
    }
    const fixedRows = rows.filter((row): row is DriftBenchResult['rows'][number] & { k: number } => row.k !== 'auto');
    const best = fixedRows.reduce((b, row) => (row.wall_ms < b.wall_ms ? row : b));
    const auto = rows[0];
    return { workload: drift, rows, best_fixed: { k: best.k, wall_ms: best.wall_ms }, auto_speedup: best.wall_ms / auto.wall_ms };
  } finally {
    client.close();
  }
}

function cellOf(pair: LoadBenchPairResult, mode: Mode, concurrency: number): LoadBenchCell {
  const cell = pair.cells.find((c) => c.mode === mode && c.concurrency === concurrency);
  if (!cell) throw new Error(`no ${mode} figure at concurrency ${concurrency}`);
  return cell;
}

/**
 * The per-call overhead at a target-forward cadence, as the online benchmark calibrates it: non-SI
 * requests on their own prompt after a warm-up one, wall per token less the forward; the median of
 * `runs` of them (the plan benchmark's calibrations ranged 1.3-3.0 ms between the configurations of one run).
 */
export async function cadenceOverheadMs(client: OrchestratorServiceClient, tokens: number, targetForwardMs: number, signal: AbortSignal, runs = 1): Promise<number> {
  const prompt = [...Buffer.from('calibration', 'utf8')];
  await generateOnce(client, 'MODE_NON_SI', 1, prompt, tokens, signal);
  const overheads: number[] = [];
  for (let run = 0; run < runs; run++) {
    const calibration = await generateOnce(client, 'MODE_NON_SI', 1, prompt, tokens, signal);
    overheads.push(Math.max(0, calibration.wallMs / tokens - targetForwardMs));
  }
  return quantiles(overheads, [0.5])[0];
}

/** The services' batching flags of a configuration (none without batching). */
function batchArgs(options: Pick<LoadBenchOptions, 'maxBatchRequests'>): string[] {
  const batch = options.maxBatchRequests ?? 1;
  return batch > 1 ? ['--max-batch-requests', String(batch)] : [];
}

/** The fixed k that gives SI the most throughput at this load in event mode (ties: the smaller k). */
async function bestFixedSiK(params: LoadParams): Promise<number> {
  let best: { k: number; throughput: number } | undefined;
  for (const k of LOOKAHEADS) {
    const throughput = loadFigures(await loadRun('si', { ...params, k })).throughput;
    if (!best || throughput > best.throughput * (1 + 1e-9)) best = { k, throughput };
  }
  return best!.k;
}

/** Within 5% of the prediction. */
const PREDICTION_TOLERANCE = 0.05;

/**
 * The issue's criteria over measured figures: DSI throughput >= 0.98 x max(non-SI, SI) and p50 <=
 * 1.02 x min at every concurrency; non-SI at concurrency >= `targets` >= 90% of `capacity`; every
 * figure within 5% of its prediction; no token mismatch.
 */
export function loadCriteria(pairs: readonly LoadBenchPairResult[], capacity: number, targets: number): LoadCriterion[] {
  const throughput: string[] = [];
  const latency: string[] = [];
  const nonsi: string[] = [];
  const prediction: string[] = [];
  const lossless: string[] = [];
  for (const pair of pairs) {
    const name = `a=${pair.a} c=${fixed(pair.c, 2)}`;
    const concurrencies = [...new Set(pair.cells.map((c) => c.concurrency))];
    for (const n of concurrencies) {
      const [n0, s0, d0] = (['nonsi', 'si', 'dsi'] as const).map((mode) => cellOf(pair, mode, n).measured);
      const best = Math.max(n0.throughput, s0.throughput);
      if (d0.throughput < 0.98 * best) throughput.push(`${name} x${n}: DSI ${fixed(d0.throughput, 1)} < 0.98 x ${fixed(best, 1)} tok/s`);
      const fastest = Math.min(n0.latency_p50_ms, s0.latency_p50_ms);
      if (d0.latency_p50_ms > 1.02 * fastest) latency.push(`${name} x${n}: DSI p50 ${fixed(d0.latency_p50_ms, 0)} > 1.02 x ${fixed(fastest, 0)} ms`);
      if (n >= targets && n0.throughput < 0.9 * capacity) nonsi.push(`${name} x${n}: non-SI ${fixed(n0.throughput, 1)} < 0.9 x ${fixed(capacity, 1)} tok/s`);
    }
    for (const cell of pair.cells) {
      for (const [figure, ratio] of Object.entries(cell.ratio)) {
        if (Math.abs(ratio - 1) > PREDICTION_TOLERANCE) prediction.push(`${name} ${cell.mode} x${cell.concurrency} ${figure}: measured/predicted ${fixed(ratio, 3)}`);
      }
      if (cell.mismatches.length > 0) lossless.push(`${name} ${cell.mode} x${cell.concurrency}: requests ${cell.mismatches.join(' ')}`);
    }
  }
  const criterion = (name: string, failures: string[]): LoadCriterion => ({ name, pass: failures.length === 0, failures });
  return [
    criterion('DSI throughput >= 0.98 x max(non-SI, SI) at every concurrency', throughput),
    criterion('DSI p50 latency <= 1.02 x min(non-SI, SI) at every concurrency', latency),
    criterion(`non-SI at concurrency >= ${targets} >= 90% of capacity ${fixed(capacity, 1)} tok/s`, nonsi),
    criterion('every figure within 5% of its event-mode prediction', prediction),
    criterion('lossless under load: every request\'s tokens equal the prediction\'s', lossless),
  ];
}

const MODE_COLOURS: Record<Mode, string> = { nonsi: '#7f7f7f', si: '#1f77b4', dsi: '#d62728' };
const MODE_LABELS: Record<Mode, string> = { nonsi: 'non-SI', si: 'SI', dsi: 'DSI' };

/**
 * One pair's picture: throughput and p50 latency against concurrency (evenly spaced), a line per mode,
 * measured solid and predicted dashed.
 */
export function loadSvg(pair: LoadBenchPairResult, options: Pick<LoadBenchOptions, 'targets' | 'targetMs' | 'drafters' | 'tokens'>): string {
  const width = 920;
  const height = 400;
  const panelWidth = 380;
  const top = 70;
  const plotHeight = 260;
  const concurrencies = [...new Set(pair.cells.map((c) => c.concurrency))].sort((x, y) => x - y);
  const out: string[] = [svgOpenTag(width, height), `<rect width="${width}" height="${height}" fill="white"/>`];
  const title = `a=${pair.a}, c=${fixed(pair.c, 2)} (drafter ${pair.drafter_ms} ms/token), k=${pair.k}: ${options.targets} targets x ${options.targetMs} ms, ${options.drafters} drafters, ${options.tokens}-token greedy requests, closed loop`;
  out.push(`<text x="20" y="26" font-size="14" font-weight="bold">${escapeXml(title)}</text>`);
  const panels: Array<{ heading: string; unit: string; value: (f: LoadBenchFigures) => number }> = [
    { heading: 'throughput', unit: 'tokens/s', value: (f) => f.throughput },
    { heading: 'p50 request latency', unit: 'ms', value: (f) => f.latency_p50_ms },
  ];
  panels.forEach((panel, p) => {
    const left = 80 + p * (panelWidth + 80);
    const values = pair.cells.flatMap((cell) => [panel.value(cell.measured), panel.value(cell.predicted)]);
    const step = niceStep(Math.max(...values, 1), 5);
    const yMax = Math.ceil(Math.max(...values, 1) / step) * step;
    const x = (i: number) => left + (concurrencies.length === 1 ? panelWidth / 2 : (i * panelWidth) / (concurrencies.length - 1));
    const y = (v: number) => top + plotHeight - (v / yMax) * plotHeight;
    out.push(`<g class="panel" data-figure="${panel.heading}">`);
    out.push(`<text x="${left}" y="${top - 12}" font-size="13">${escapeXml(`${panel.heading} (${panel.unit})`)}</text>`);
    for (const tick of tickValues(0, yMax, step)) {
      out.push(`<line x1="${left}" y1="${coord(y(tick))}" x2="${left + panelWidth}" y2="${coord(y(tick))}" stroke="#e0e0e0"/>`);
      out.push(`<text x="${left - 6}" y="${coord(y(tick) + 4)}" font-size="11" text-anchor="end">${tickLabel(tick, step)}</text>`);
    }
    concurrencies.forEach((n, i) => out.push(`<text x="${coord(x(i))}" y="${top + plotHeight + 18}" font-size="11" text-anchor="middle">${n}</text>`));
    out.push(`<text x="${left + panelWidth / 2}" y="${top + plotHeight + 38}" font-size="12" text-anchor="middle">concurrency (clients)</text>`);
    out.push(`<line x1="${left}" y1="${top + plotHeight}" x2="${left + panelWidth}" y2="${top + plotHeight}" stroke="black"/>`);
    out.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotHeight}" stroke="black"/>`);
    for (const [mode] of MODES) {
      for (const kind of ['measured', 'predicted'] as const) {
        const points = concurrencies.map((n, i) => `${coord(x(i))},${coord(y(panel.value(cellOf(pair, mode, n)[kind])))}`);
        const dash = kind === 'predicted' ? ' stroke-dasharray="6 4"' : '';
        out.push(`<polyline class="line" data-mode="${mode}" data-kind="${kind}" points="${points.join(' ')}" fill="none" stroke="${MODE_COLOURS[mode]}" stroke-width="2"${dash}/>`);
        if (kind === 'measured') {
          concurrencies.forEach((n, i) => {
            const value = panel.value(cellOf(pair, mode, n).measured);
            out.push(`<circle cx="${coord(x(i))}" cy="${coord(y(value))}" r="3" fill="${MODE_COLOURS[mode]}"><title>${escapeXml(`${MODE_LABELS[mode]} x${n}: ${fixed(value, 1)} ${panel.unit}`)}</title></circle>`);
          });
        }
      }
    }
    out.push('</g>');
  });
  const legendY = height - 16;
  let legendX = 80;
  for (const [mode] of MODES) {
    out.push(`<line x1="${legendX}" y1="${legendY - 4}" x2="${legendX + 24}" y2="${legendY - 4}" stroke="${MODE_COLOURS[mode]}" stroke-width="2"/>`);
    out.push(`<text x="${legendX + 30}" y="${legendY}" font-size="12">${MODE_LABELS[mode]}</text>`);
    legendX += 90;
  }
  out.push(`<text x="${legendX + 20}" y="${legendY}" font-size="12">solid: measured through the services; dashed: event-mode prediction</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** The human report: one table per pair, then the criteria with every failing figure. */
export function loadReport(result: LoadBenchResult): string[] {
  const lines: string[] = [
    '',
    `load (${result.targets} targets x ${result.target_ms} ms${(result.max_batch_requests ?? 1) > 1 ? `, batching up to ${result.max_batch_requests} calls per forward` : ''}${result.auto ? ', DSI lookahead auto against SI at its best fixed k' : ''}, measured ${fixed(result.target_forward_ms, 3)} ms; ${result.drafters} drafters; ${result.tokens}-token greedy requests, closed loop)`,
    `per-call overhead back to back ${fixed(result.back_to_back_overhead_ms, 3)} ms; non-SI capacity ${result.targets} x 1000 / (forward + overhead) = ${fixed(result.nonsi_capacity, 1)} tok/s (90%: ${fixed(0.9 * result.nonsi_capacity, 1)})`,
  ];
  for (const pair of result.pairs) {
    lines.push(
      '',
      `a=${pair.a} c=${fixed(pair.c, 2)} (drafter ${pair.drafter_ms} ms/token, measured ${fixed(pair.measured_drafter_ms, 3)}), k=${pair.k}, prediction's per-call overhead ${fixed(pair.overhead_ms, 3)} ms`,
      `${'mode'.padEnd(7)}${'conc'.padStart(5)}${'k'.padStart(5)}${'req'.padStart(5)}${'tok/s'.padStart(8)}${'pred'.padStart(8)}${'m/p'.padStart(7)}${'p50 ms'.padStart(8)}${'pred'.padStart(7)}${'m/p'.padStart(7)}${'p99 ms'.padStart(8)}${'pred'.padStart(7)}${'m/p'.padStart(7)}${'TTFT'.padStart(7)}${'pred'.padStart(6)}${'m/p'.padStart(7)}${'fwd/req'.padStart(8)}${'pred'.padStart(6)}${'tokens'.padStart(8)}`,
    );
    for (const cell of pair.cells) {
      const { measured: m, predicted: p, ratio: r } = cell;
      lines.push(
        `${MODE_LABELS[cell.mode].padEnd(7)}${String(cell.concurrency).padStart(5)}${String(cell.k).padStart(5)}${String(m.requests).padStart(5)}` +
          `${fixed(m.throughput, 1).padStart(8)}${fixed(p.throughput, 1).padStart(8)}${fixed(r.throughput, 3).padStart(7)}` +
          `${fixed(m.latency_p50_ms, 0).padStart(8)}${fixed(p.latency_p50_ms, 0).padStart(7)}${fixed(r.latency_p50, 3).padStart(7)}` +
          `${fixed(m.latency_p99_ms, 0).padStart(8)}${fixed(p.latency_p99_ms, 0).padStart(7)}${fixed(r.latency_p99, 3).padStart(7)}` +
          `${fixed(m.ttft_p50_ms, 1).padStart(7)}${fixed(p.ttft_p50_ms, 1).padStart(6)}${fixed(r.ttft_p50, 3).padStart(7)}` +
          `${fixed(m.forwards_per_request, 1).padStart(8)}${fixed(p.forwards_per_request, 1).padStart(6)}` +
          `${(cell.mismatches.length === 0 ? 'same' : `${cell.mismatches.length} diff`).padStart(8)}`,
      );
    }
    lines.push(`picture: ${pair.svg}`);
  }
  lines.push('', `token mismatches against the prediction: ${result.mismatches}`, 'criteria:');
  for (const criterion of result.criteria) {
    lines.push(`  ${criterion.pass ? 'PASS' : 'FAIL'} ${criterion.name}`);
    for (const failure of criterion.failures) lines.push(`       ${failure}`);
  }
  for (const drift of result.drift ?? []) {
    const w = drift.workload;
    lines.push(
      '',
      `drifting workload (a=${w.a} until token ${w.switchToken}, then ${w.aAfter}; drafter ${w.drafterMs} ms; ${modeNames(w.mode)[2]}, concurrency 1): mean wall ms, measured (predicted)`,
      ...drift.rows.map((row) => `  k=${String(row.k).padEnd(5)} ${fixed(row.wall_ms, 0).padStart(6)} (${fixed(row.predicted_wall_ms, 0)})  mean k ${fixed(row.mean_k, 2)} (${fixed(row.predicted_mean_k, 2)})`),
      `  auto vs the best fixed k (${drift.best_fixed.k}): ${fixed(drift.auto_speedup, 3)}x`,
    );
  }
  lines.push(`files and service logs: ${result.out}`);
  return lines;
}

/** A fresh temporary folder for the load benchmark's files (the default `--out`). */
export function defaultLoadBenchDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-bench-load-'));
}
