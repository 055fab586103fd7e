/**
 * The event mode under load (docs/architecture.md, "Many requests at once"): many simulated requests
 * on one virtual clock, every generation running the libs/core scheduler (the orchestrator's code) on
 * one shared {@link TargetScheduler} over `servers` simulated target replicas and one shared
 * {@link DrafterScheduler} over `drafters` simulated drafters. Clients either send back to back
 * (closed loop, `concurrency` of them) or arrive as a Poisson process (open loop, `arrivalRate`).
 * Every mode sees the same requests (prompts and arrival times), so the modes compare like for like,
 * and the same seed gives the same figures, exactly.
 */
import { DrafterScheduler, generate, mean, quantiles, TargetScheduler, VirtualClock, type Mode } from '@dsi/core';
import { isLoadConfig, loadRequests, resolveConfig, SimulationConfigError, type SimulationConfig } from './config';
import { Mt19937 } from './mt19937';
import type { EventRunOptions } from './event';
import { simulatedReplicas, withoutStackTraces, type EventParams } from './simulated';
import type { AlgorithmResult, LoadFigures, SimulationResult } from './simulate';

/**
 * One load run's world and traffic: {@link EventParams} (without a prompt: every request has its own,
 * {@link loadPrompt}) plus the drafters and exactly one of `concurrency` and `arrivalRate`.
 */
export interface LoadParams extends Omit<EventParams, 'prompt'> {
  /** Simulated drafters shared by every request; default 1. */
  drafters?: number;
  /** Closed loop: clients, each sending its next request when the last one finished. */
  concurrency?: number;
  /** Open loop: Poisson arrivals per unit of time, seeded by `seed`. */
  arrivalRate?: number;
  /** Requests in total. */
  requests: number;
  /**
   * Requests run first on the same pools and not reported (default 0): closed loop at `concurrency`
   * (or one at a time in an open loop), all finished before the measured traffic starts, so the pools'
   * measurements are as warm as a running service's. Their prompts are {@link loadPrompt} of
   * {@link WARMUP_PROMPT_OFFSET} + i, none of the measured ones.
   */
  warmup?: number;
}

/** Where warm-up requests' prompt indices start (see {@link LoadParams.warmup}). */
export const WARMUP_PROMPT_OFFSET = 1_000_000;

/** One request of a load run, as its client saw it (virtual times). */
export interface LoadRequest {
  /** Its place in the traffic: the order requests are sent in, and the key of its prompt. */
  index: number;
  sentAt: number;
  finishedAt: number;
  /** From sending to the last token. */
  latency: number;
  /** From sending to the first committed token. */
  ttft: number;
  tokens: number[];
  /** Verify calls of this request that ran on a replica. */
  targetForwards: number;
  /** Times a rejected draft cancelled this request's work built on it (the result's metrics). */
  preemptions: number;
  /** The mean k of its blocks (what lookahead 'auto' chose), and Verify calls per committing one. */
  meanLookahead: number;
  blocksPerCommit: number;
}

/** What one mode did under load: every request, and the replicas' work. */
export interface LoadRun {
  /** In index order. */
  requests: LoadRequest[];
  /** From the first request sent to the last one finished. */
  duration: number;
  /** Target replicas simulated. */
  servers: number;
  /** Virtual time the target replicas spent in forwards, summed over the replicas. */
  targetBusyTime: number;
  /** Verify calls started on the replicas (cancelled ones included). */
  targetForwards: number;
  /** Speculative verifications taken back for lanes by the shared target scheduler. */
  preemptions: number;
}

/**
 * The prompt of request `index` of a load run with oracle seed `seed`: the single-request event mode's
 * prompt followed by the index's bytes, so every request generates different tokens.
 */
export function loadPrompt(seed: number, index: number): number[] {
  return [1 + (seed % 200), index & 0xff, (index >>> 8) & 0xff, (index >>> 16) & 0xff];
}

/**
 * Arrival times of a Poisson process with `rate` arrivals per unit of time, from time 0: cumulative
 * exponential inter-arrival times `-ln(1 - u) / rate`, with `u` from MT19937 seeded with `seed` (the
 * simulator's random source), so the same seed gives the same arrivals.
 */
export function poissonArrivals(seed: number, rate: number, count: number): number[] {
  if (!(rate > 0 && Number.isFinite(rate))) throw new SimulationConfigError('arrivalRate', `arrivalRate=${rate} must be positive`);
  const rng = new Mt19937(seed >>> 0);
  const arrivals: number[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    at += -Math.log1p(-rng.nextDouble()) / rate;
    arrivals.push(at);
  }
  return arrivals;
}

/**
 * Runs `p.requests` greedy requests in `mode` on shared simulated replicas (module comment) and returns
 * what every request saw. Non-SI and SI use the whole pool too: each request has one verification in
 * flight, but different requests run on different replicas.
 */
export async function loadRun(mode: Mode, p: LoadParams, options: EventRunOptions = {}): Promise<LoadRun> {
  if ((p.concurrency === undefined) === (p.arrivalRate === undefined)) {
    throw new SimulationConfigError('concurrency', 'a load run needs exactly one of concurrency (closed loop) and arrivalRate (open loop)');
  }
  const clock = new VirtualClock({ settle: options.settle ?? 'microtasks' });
  const { targetModel, drafters, targets } = simulatedReplicas(p, clock, { targets: p.servers, drafters: p.drafters ?? 1 });
  const slotsPerReplica = p.maxBatchRequests ?? 1;
  const targetScheduler = new TargetScheduler(targets, { slotsPerReplica });
  const drafterScheduler = new DrafterScheduler(drafters, { slotsPerReplica });
  const requests: LoadRequest[] = new Array<LoadRequest>(p.requests);

  const send = async (index: number, warm = false): Promise<void> => {
    const sentAt = clock.now();
    const requestId = warm ? `warm-${index}` : `load-${index}`;
    const result = await generate(
      {
        requestId,
        mode,
        prompt: loadPrompt(p.seed, warm ? WARMUP_PROMPT_OFFSET + index : index),
        maxNewTokens: p.tokens,
        lookahead: p.k,
        sampling: { rule: 'greedy', temperature: 1 },
        eosTokenId: targetModel.eosTokenId,
      },
      { targetScheduler, drafterScheduler, clock },
    );
    // Its calls have all settled or been aborted, and no later request shares its id: its caches go.
    for (const replica of [...targets, ...drafters]) replica.forget(requestId);
    if (warm) return;
    const { wallMs, ttftMs, targetForwards, preemptions, meanLookahead, blocksPerCommit } = result.metrics;
    requests[index] = { index, sentAt, finishedAt: clock.now(), latency: wallMs, ttft: ttftMs, tokens: result.tokens, targetForwards, preemptions, meanLookahead, blocksPerCommit };
  };

  /** `count` requests from `clients` clients, each sending its next when its last finished. */
  const closedLoop = (count: number, clients: number, warm: boolean): Promise<unknown> => {
    let next = 0;
    const client = async (): Promise<void> => {
      while (next < count) await send(next++, warm);
    };
    return Promise.all(Array.from({ length: Math.min(clients, count) }, client));
  };
  /** The replicas' work so far (the warm-up's is not reported). */
  const work = () => ({
    busy: targets.reduce((sum, target) => sum + target.busyTime, 0),
    forwards: targets.reduce((sum, target) => sum + target.forwards, 0),
    preemptions: targetScheduler.stats().preemptions,
  });

  const warmup = p.warmup ?? 0;
  if (!(Number.isInteger(warmup) && warmup >= 0)) throw new SimulationConfigError('warmup', `warmup must be an integer >= 0, got ${warmup}`);
  if (warmup > 0) await withoutStackTraces(() => clock.run(closedLoop(warmup, p.concurrency ?? 1, true)));
  const trafficStart = clock.now();
  const warm = work();

  let traffic: Promise<unknown>;
  if (p.concurrency !== undefined) {
    traffic = closedLoop(p.requests, p.concurrency, false);
  } else {
    const arrivals = poissonArrivals(p.seed, p.arrivalRate as number, p.requests);
    traffic = (async () => {
      const pending: Promise<void>[] = [];
      for (let index = 0; index < arrivals.length; index++) {
        await clock.sleep(trafficStart + arrivals[index] - clock.now());
        const request = send(index);
        request.catch(() => undefined); // observed by Promise.all below
        pending.push(request);
      }
      await Promise.all(pending);
    })();
  }
  await withoutStackTraces(() => clock.run(traffic));
  const end = work();

  let firstSent = Infinity;
  let lastFinished = -Infinity;
  for (const request of requests) {
    firstSent = Math.min(firstSent, request.sentAt);
    lastFinished = Math.max(lastFinished, request.finishedAt);
  }
  return {
    requests,
    duration: lastFinished - firstSent,
    servers: targets.length,
    targetBusyTime: end.busy - warm.busy,
    targetForwards: end.forwards - warm.forwards,
    preemptions: end.preemptions - warm.preemptions,
  };
}

/** The figures of one load run: throughput, latency and TTFT percentiles, utilisation. */
export function loadFigures(run: LoadRun): LoadFigures {
  const latencies = run.requests.map((request) => request.latency);
  const [latencyP50, latencyP99] = quantiles(latencies, [0.5, 0.99]);
  const [ttftP50, ttftP99] = quantiles(
    run.requests.map((request) => request.ttft),
    [0.5, 0.99],
  );
  const tokens = run.requests.reduce((sum, request) => sum + request.tokens.length, 0);
  return {
    requests: run.requests.length,
    tokens,
    duration: run.duration,
    throughput: tokens / run.duration,
    latencyP50,
    latencyP99,
    latencyMean: mean(latencies),
    ttftP50,
    ttftP99,
    meanTokensPerRequest: tokens / run.requests.length,
    targetUtilisation: run.targetBusyTime / (run.servers * run.duration),
    targetForwards: run.targetForwards,
    preemptions: run.preemptions,
  };
}

/** The load parameters of a resolved configuration with concurrency or arrivalRate set. */
export function loadParams(config: SimulationConfig): LoadParams {
  const { a, c, k, t, tokens, servers, seed, ttft, verifyPerToken, rtt, drafters, concurrency, arrivalRate } = config;
  return { a, c, k, t, tokens, servers, seed, ttft, verifyPerToken, rtt, drafters, concurrency, arrivalRate, requests: loadRequests(config) };
}

/**
 * `--method event` with `concurrency` (closed loop) or `arrivalRate` (open loop): runs non-SI, SI and
 * DSI each on its own simulated pool with the same requests, and reports each mode's {@link LoadFigures}
 * as `load`. The per-algorithm costs are request latencies (see {@link SimulationResult.nonsi}).
 * `repeats` is not used. Throws {@link SimulationConfigError} for a bad parameter, or when neither
 * loop is configured.
 */
export async function simulateLoad(partial: Partial<SimulationConfig>): Promise<SimulationResult> {
  const resolved = resolveConfig({ ...partial, method: 'event' });
  if (!isLoadConfig(resolved)) {
    throw new SimulationConfigError('concurrency', 'a load simulation needs concurrency (closed loop) or arrivalRate (open loop)');
  }
  const params = loadParams(resolved);
  const config: SimulationConfig = { ...resolved, requests: params.requests, drafters: params.drafters ?? 1 };
  const runs = { nonsi: await loadRun('nonsi', params), si: await loadRun('si', params), dsi: await loadRun('dsi', params) };
  const algorithm = (run: LoadRun): AlgorithmResult => {
    const costs = run.requests.map((request) => request.latency);
    return { cost: mean(costs), costs, iterations: run.requests.map((request) => request.targetForwards) };
  };
  const nonsi = algorithm(runs.nonsi).cost;
  const si = algorithm(runs.si);
  const dsi = algorithm(runs.dsi);
  return {
    config,
    nonsi: { cost: nonsi },
    si,
    dsi,
    speedup: { si_vs_nonsi: nonsi / si.cost, dsi_vs_si: si.cost / dsi.cost, dsi_vs_nonsi: nonsi / dsi.cost },
    load: { nonsi: loadFigures(runs.nonsi), si: loadFigures(runs.si), dsi: loadFigures(runs.dsi) },
  };
}
