/**
 * The deployment planner (`dsi plan`): for a drafter/target pair (acceptance rate and latencies), the
 * best lookahead and the predicted latency per token of non-SI, SI and DSI for every replica count, the
 * lower bound, and the fewest replicas that get DSI within 2% of its best. Every figure comes from the
 * event mode: the libs/core scheduler the orchestrator runs, over simulated replicas with the
 * synthetic backend's oracle and latencies, on a virtual clock.
 */
import { OracleModel, type Mode } from '@dsi/core';
import { eventRun } from './event';
import { loadFigures, loadPrompt, loadRun, type LoadParams } from './load';
import type { EventParams } from './simulated';
import type { PairProfile } from './profile';

/** A pair as the planner takes it: forward latencies without the round trip, which is charged per call. */
export interface PlanPair {
  /** Acceptance rate. */
  a: number;
  /** Target forward of one token (TPOT), ms. */
  targetMs: number;
  /** Drafter forward per token (TPOT), ms. */
  drafterMs: number;
  /** Target prefill (TTFT); default targetMs. */
  targetTtftMs?: number;
  /** Drafter prefill (TTFT); default drafterMs. */
  drafterTtftMs?: number;
  /** Extra target latency per extra token of a forward (verifying k drafts costs targetMs + k x this). */
  verifyMsPerToken?: number;
  /** Per-call overhead (network and services) every Verify (and, unless drafterRttMs is set, every Draft) pays once. */
  rttMs?: number;
  /** Per-call overhead of a Draft; default rttMs. */
  drafterRttMs?: number;
}

export interface PlanOptions {
  /** Replica counts 1..maxReplicas are planned. */
  maxReplicas: number;
  /** Tokens per generation (latencies are per token of generations this long). */
  tokens: number;
  /** Largest lookahead k tried. */
  maxLookahead: number;
  /** Prompts each figure averages over (different prompts, the same oracle). */
  prompts: number;
  /** The oracle seed (the synthetic backend's --synthetic-seed). */
  seed: number;
  /** Under load: this many clients sending back to back (closed loop)... */
  concurrency?: number;
  /** ...or Poisson arrivals per second (open loop). */
  arrivalRate?: number;
  /** Requests of a load run; default max(8, 2 x concurrency) (open loop: 32). */
  requests?: number;
  signal?: AbortSignal;
  /** Called after each replica count is planned. */
  onProgress?: (done: number, total: number) => void;
}

export const DEFAULT_PLAN_OPTIONS: Readonly<Omit<PlanOptions, 'signal' | 'onProgress'>> = Object.freeze({
  maxReplicas: 8,
  tokens: 1000,
  maxLookahead: 12,
  prompts: 4,
  seed: 1,
});

/** Limits of the planner's inputs (the CLI and the simulator service check them). */
export const PLAN_LIMITS = Object.freeze({ maxReplicas: 64, tokens: 100_000, maxLookahead: 64, prompts: 64, concurrency: 256, requests: 4096 });

/** Lookaheads tried under load (each is a whole load run). */
export const LOAD_LOOKAHEADS: readonly number[] = Object.freeze([1, 2, 3, 4, 6, 8]);

/** One mode's predicted figures at one replica count. */
export interface PlanFigure {
  /** Latency per generated token (request latency / tokens; under load the mean over requests). */
  ms_per_token: number;
  /** The lookahead k (SI and DSI). */
  lookahead?: number;
  /** Under load: generated tokens per second over all requests, and the median request latency. */
  throughput_tps?: number;
  p50_ms?: number;
}

export interface PlanRow {
  replicas: number;
  nonsi: PlanFigure;
  si: PlanFigure & { lookahead: number };
  dsi: PlanFigure & { lookahead: number };
  /** Under load: DSI with lookahead auto (what `dsi up` serves by default). */
  dsi_auto?: PlanFigure;
  speedup_vs_si: number;
  speedup_vs_nonsi: number;
  /** DSI latency per token over the lower bound (>= 1). */
  vs_bound: number;
}

export interface PlanRecommendation {
  replicas: number;
  lookahead: number;
  dsi_ms_per_token: number;
  speedup_vs_si: number;
  speedup_vs_nonsi: number;
  /** DSI's best latency over every replica count planned (the recommendation is within 2% of it). */
  best_dsi_ms_per_token: number;
}

export interface Plan {
  pair: { a: number; target_ms: number; drafter_ms: number; target_ttft_ms: number; drafter_ttft_ms: number; verify_ms_per_token: number; round_trip_ms: number; drafter_round_trip_ms: number };
  options: { max_replicas: number; tokens: number; max_lookahead: number; prompts: number; seed: number; concurrency?: number; arrival_rate?: number; requests?: number };
  /** (1 - a) t + a c: no schedule with one sequential drafter does better per token. */
  bound_ms_per_token: number;
  rows: PlanRow[];
  recommendation: PlanRecommendation;
}

/**
 * Rounds a latency to 1e-6 ms. Where DSI reaches the bound exactly (the drafter slower than the round
 * trips it hides, one draft per block), the two are equal up to the last bits of their floating-point
 * sums; rounding both the same way keeps the comparison exact.
 */
function ms(value: number): number {
  return Math.round(value * 1e6) / 1e6;
}

/** A planner input out of range; `field` names it as the CLI flag's name (`a`, `target_ms`...). */
export class PlanInputError extends Error {
  override readonly name = 'PlanInputError';
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

/** DSI within this fraction of its best latency is recommended with fewer replicas. */
export const RECOMMENDATION_TOLERANCE = 0.02;

/** The lower bound per token: every rejection costs a target forward, every accepted draft a drafter step. */
export function lowerBound(pair: Pick<PlanPair, 'a' | 'targetMs' | 'drafterMs'>): number {
  return (1 - pair.a) * pair.targetMs + pair.a * pair.drafterMs;
}

/**
 * A profile's figures as planner inputs: the round trip a live measurement includes once per call is
 * taken out of each forward (the event mode charges it per call instead).
 */
export function pairFromProfile(profile: PairProfile): PlanPair {
  const rtt = profile.round_trip_ms;
  const target = profile.target.round_trip_ms ?? rtt;
  const drafter = profile.drafter.round_trip_ms ?? rtt;
  // A forward is what is left of a figure without its round trip, and at least 1% of the figure (a
  // round trip measured as long as the whole call still leaves the model some time).
  const less = (ms: number, roundTrip: number) => Math.max(0.01 * ms, ms - roundTrip);
  return {
    a: profile.acceptance.a,
    targetMs: less(profile.target.tpot_ms.median, target),
    drafterMs: less(profile.drafter.tpot_ms.median, drafter),
    targetTtftMs: less(profile.target.ttft_ms.median, target),
    drafterTtftMs: less(profile.drafter.ttft_ms.median, drafter),
    verifyMsPerToken: profile.target.verify_ms_per_token ?? 0,
    rttMs: target,
    drafterRttMs: drafter,
  };
}

function checkPair(pair: PlanPair): void {
  if (!(pair.a >= 0 && pair.a <= 1)) throw new PlanInputError('a', `must be in [0, 1], got ${pair.a}`);
  const latencies: Array<[string, number | undefined]> = [
    ['target_ms', pair.targetMs],
    ['drafter_ms', pair.drafterMs],
    ['target_ttft_ms', pair.targetTtftMs],
    ['drafter_ttft_ms', pair.drafterTtftMs],
    ['verify_ms_per_token', pair.verifyMsPerToken],
    ['round_trip_ms', pair.rttMs],
    ['drafter_round_trip_ms', pair.drafterRttMs],
  ];
  for (const [field, value] of latencies) {
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) throw new PlanInputError(field, `must be a latency >= 0 ms, got ${value}`);
  }
  if (!(pair.targetMs > 0)) throw new PlanInputError('target_ms', 'must be > 0');
  // A drafter that takes no time drafts without end on a virtual clock (nothing ever makes it wait).
  if (!(pair.drafterMs > 0)) throw new PlanInputError('drafter_ms', `must be > 0 (give the smallest latency you mean, e.g. 0.001), got ${pair.drafterMs}`);
}

function checkOptions(o: PlanOptions): void {
  const integer = (field: string, value: number | undefined, min: number, max: number) => {
    if (value !== undefined && !(Number.isInteger(value) && value >= min && value <= max)) throw new PlanInputError(field, `must be an integer in [${min}, ${max}], got ${value}`);
  };
  integer('max_replicas', o.maxReplicas, 1, PLAN_LIMITS.maxReplicas);
  integer('tokens', o.tokens, 2, PLAN_LIMITS.tokens);
  integer('max_lookahead', o.maxLookahead, 1, PLAN_LIMITS.maxLookahead);
  integer('prompts', o.prompts, 1, PLAN_LIMITS.prompts);
  integer('concurrency', o.concurrency, 1, PLAN_LIMITS.concurrency);
  integer('requests', o.requests, 1, PLAN_LIMITS.requests);
  if (o.concurrency !== undefined && o.arrivalRate !== undefined) throw new PlanInputError('arrival_rate', 'give concurrency or arrival_rate, not both');
  if (o.arrivalRate !== undefined && !(Number.isFinite(o.arrivalRate) && o.arrivalRate > 0)) throw new PlanInputError('arrival_rate', `must be > 0 requests per second, got ${o.arrivalRate}`);
}

/** SI's expected latency per token at acceptance `a` (blocks of k drafts, the target's extra token). */
function siPerToken(pair: PlanPair, k: number, a: number): number {
  const iteration = k * pair.drafterMs + pair.targetMs + k * (pair.verifyMsPerToken ?? 0) + (pair.rttMs ?? 0) + (pair.drafterRttMs ?? pair.rttMs ?? 0);
  const tokens = a >= 1 ? k + 1 : (1 - a ** (k + 1)) / (1 - a);
  return iteration / tokens;
}

/** d/da of a per-token cost (a central difference, one-sided at the ends). */
function slope(f: (a: number) => number, a: number): number {
  const h = 1e-4;
  const lo = Math.max(0, a - h);
  const hi = Math.min(1, a + h);
  return (f(hi) - f(lo)) / (hi - lo);
}

/**
 * The synthetic drafter's agreement (see {@link drafterAgreement}) over a generation of `tokens` after
 * `prompt`: for a measurement through services that run the oracle pair of `seed` at acceptance `a`.
 */
export function syntheticAgreement(seed: number, a: number, prompt: readonly number[], tokens: readonly number[]): number {
  return drafterAgreement(new OracleModel({ role: 'drafter', seed, acceptance: a }), prompt, tokens);
}

/**
 * The control variate's slope: how a mode's latency per token moves with the acceptance rate (0 for
 * non-SI, SI's expected cost's derivative, the bound's c - t for DSI). A generation whose drafter
 * agreed at rate p instead of a is brought to its expectation by subtracting slope x (p - a).
 */
export function acceptanceSlope(pair: PlanPair, mode: Mode, k: number): number {
  if (mode === 'nonsi') return 0;
  if (mode === 'si') return slope((a) => siPerToken(pair, k, a), pair.a);
  // DSI: the bound's slope. Exact where DSI reaches the bound; elsewhere only less of the noise goes.
  return pair.drafterMs - pair.targetMs;
}

/**
 * The drafter's agreement over a generation: the fraction of generated positions where the drafter's
 * greedy guess, given the true prefix, is the target's token. Its expectation is exactly `a` (the
 * oracle's coin is independent of the target's tokens), so it is a control variate with known mean.
 */
function drafterAgreement(drafter: OracleModel, prompt: readonly number[], tokens: readonly number[]): number {
  if (tokens.length === 0) return drafter.acceptance;
  const sequence = [...prompt, ...tokens];
  const hashes = drafter.hashes(sequence);
  let matches = 0;
  for (let i = prompt.length; i < sequence.length; i++) if (drafter.next(hashes[i], i) === sequence[i]) matches++;
  return matches / tokens.length;
}

/**
 * Plans a deployment (see the module comment). A single request's figures average `prompts` event-mode
 * generations, each corrected for its own sample's drafter agreement (a control variate: the
 * generation's agreement fraction has mean a, and the cost's slope in a is known: 0 for non-SI, SI's
 * expected cost's for SI, and the bound's, c - t, for DSI). The correction has
 * mean zero, so the figure is still the event mode's expectation, with most of the sampling noise of
 * a few thousand tokens removed (uncorrected, 4 x 1000 tokens at a = 0.5 put DSI 1% under its own
 * bound by chance). Under load the figures are a load run's (mean latency per token, throughput).
 * Lookaheads go from 1 up while they can still win: a sweep stops 3 past its best once k >= 4.
 */
export async function planDeployment(pair: PlanPair, options: Partial<PlanOptions> = {}): Promise<Plan> {
  const given = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
  const o: PlanOptions = { ...DEFAULT_PLAN_OPTIONS, ...given };
  checkPair(pair);
  checkOptions(o);
  const underLoad = o.concurrency !== undefined || o.arrivalRate !== undefined;
  const base: Omit<EventParams, 'k' | 'servers'> = {
    a: pair.a,
    c: pair.drafterMs,
    t: pair.targetMs,
    ttft: pair.targetTtftMs ?? pair.targetMs,
    drafterTtft: pair.drafterTtftMs ?? pair.drafterMs,
    verifyPerToken: pair.verifyMsPerToken ?? 0,
    rtt: pair.rttMs ?? 0,
    drafterRtt: pair.drafterRttMs ?? pair.rttMs ?? 0,
    tokens: o.tokens,
    seed: o.seed,
  };
  const total = o.maxReplicas + 1;
  let done = 0;
  const progress = () => o.onProgress?.(++done, total);

  const single = underLoad ? undefined : singleRequest(pair, base, o);
  const load = underLoad ? underLoadFigures(base, o) : undefined;
  const sweep = async (figure: (k: number) => Promise<PlanFigure>): Promise<PlanFigure & { lookahead: number }> => {
    let best: (PlanFigure & { lookahead: number }) | undefined;
    const candidates = underLoad ? LOAD_LOOKAHEADS.filter((k) => k <= o.maxLookahead) : Array.from({ length: o.maxLookahead }, (_, i) => i + 1);
    for (const k of candidates) {
      o.signal?.throwIfAborted();
      if (best && k >= 4 && k >= best.lookahead + 3 && !underLoad) break;
      const f = await figure(k);
      if (!best || f.ms_per_token < best.ms_per_token * (1 - 1e-9)) best = { ...f, lookahead: k };
    }
    return best!;
  };

  const nonsiAt = async (servers: number) => (single ? single.figure('nonsi', 1, servers) : load!.figure('nonsi', 1, servers));
  const figureOf = (mode: Mode, servers: number) => (k: number) => (single ? single.figure(mode, k, servers) : load!.figure(mode, k, servers));
  // Single request: non-SI and SI use one replica whatever the pool; under load they use them all.
  const nonsiOne = underLoad ? undefined : await nonsiAt(1);
  const siOne = underLoad ? undefined : await sweep(figureOf('si', 1));
  progress();
  const rows: PlanRow[] = [];
  for (let replicas = 1; replicas <= o.maxReplicas; replicas++) {
    const nonsi = nonsiOne ?? (await nonsiAt(replicas));
    const si = siOne ?? (await sweep(figureOf('si', replicas)));
    const dsi = await sweep(figureOf('dsi', replicas));
    const row: PlanRow = {
      replicas,
      nonsi,
      si,
      dsi,
      speedup_vs_si: si.ms_per_token / dsi.ms_per_token,
      speedup_vs_nonsi: nonsi.ms_per_token / dsi.ms_per_token,
      vs_bound: dsi.ms_per_token / ms(lowerBound(pair)),
    };
    if (load) row.dsi_auto = await load.figure('dsi', 'auto', replicas);
    rows.push(row);
    progress();
  }
  const bestDsi = Math.min(...rows.map((r) => r.dsi.ms_per_token));
  const chosen = rows.find((r) => r.dsi.ms_per_token <= bestDsi * (1 + RECOMMENDATION_TOLERANCE))!;
  return {
    pair: {
      a: pair.a,
      target_ms: pair.targetMs,
      drafter_ms: pair.drafterMs,
      target_ttft_ms: base.ttft!,
      drafter_ttft_ms: base.drafterTtft!,
      verify_ms_per_token: base.verifyPerToken!,
      round_trip_ms: base.rtt!,
      drafter_round_trip_ms: base.drafterRtt!,
    },
    options: {
      max_replicas: o.maxReplicas,
      tokens: o.tokens,
      max_lookahead: o.maxLookahead,
      prompts: o.prompts,
      seed: o.seed,
      ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}),
      ...(o.arrivalRate !== undefined ? { arrival_rate: o.arrivalRate } : {}),
      ...(load ? { requests: load.requests } : {}),
    },
    bound_ms_per_token: ms(lowerBound(pair)),
    rows,
    recommendation: {
      replicas: chosen.replicas,
      lookahead: chosen.dsi.lookahead,
      dsi_ms_per_token: chosen.dsi.ms_per_token,
      speedup_vs_si: chosen.speedup_vs_si,
      speedup_vs_nonsi: chosen.speedup_vs_nonsi,
      best_dsi_ms_per_token: bestDsi,
    },
  };
}

/** One request at a time: event-mode generations over `prompts` prompts, corrected for their agreement. */
function singleRequest(pair: PlanPair, base: Omit<EventParams, 'k' | 'servers'>, o: PlanOptions) {
  const drafter = new OracleModel({ role: 'drafter', seed: o.seed, acceptance: pair.a });
  const prompts = Array.from({ length: o.prompts }, (_, i) => loadPrompt(o.seed, i));
  const agreements: number[] = [];
  return {
    async figure(mode: Mode, k: number, servers: number): Promise<PlanFigure> {
      let sum = 0;
      for (let i = 0; i < prompts.length; i++) {
        o.signal?.throwIfAborted();
        const run = await eventRun(mode, { ...base, k, servers, prompt: prompts[i] });
        agreements[i] ??= drafterAgreement(drafter, prompts[i], run.tokens);
        sum += run.cost / Math.max(1, run.tokens.length) - acceptanceSlope(pair, mode, k) * (agreements[i] - pair.a);
      }
      return { ms_per_token: ms(sum / prompts.length) };
    },
  };
}

/** Many requests at once: one load run per figure (every mode sees the same requests). */
function underLoadFigures(base: Omit<EventParams, 'k' | 'servers'>, o: PlanOptions) {
  const requests = o.requests ?? (o.concurrency !== undefined ? Math.max(8, 2 * o.concurrency) : 32);
  return {
    requests,
    async figure(mode: Mode, k: number | 'auto', servers: number): Promise<PlanFigure> {
      o.signal?.throwIfAborted();
      // Rates are per second; the event mode's clock runs in ms.
      const params: LoadParams = { ...base, k, servers, requests, concurrency: o.concurrency, arrivalRate: o.arrivalRate === undefined ? undefined : o.arrivalRate / 1000 };
      const run = await loadRun(mode, params);
      const figures = loadFigures(run);
      const perToken = run.requests.reduce((s, r) => s + r.latency / Math.max(1, r.tokens.length), 0) / run.requests.length;
      return { ms_per_token: ms(perToken), throughput_tps: figures.throughput * 1000, p50_ms: ms(figures.latencyP50) };
    },
  };
}
