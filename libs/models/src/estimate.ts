/**
 * Measuring a drafter/target pair through the {@link LanguageModel} interface, so the same estimate
 * runs on the ONNX backend (the forward path the services use) and on the synthetic one: greedy
 * generation and the study's acceptance-rate estimator. `dsi estimate acceptance` and the default
 * pair's quality tests call it.
 */
import { argmax, quantiles } from '@dsi/core';
import type { LanguageModel } from './backend';

/**
 * Prompts the default models are tuned and tested on (prose, code, story); the acceptance and
 * variety figures reported for the default pair are measured over these.
 */
export const BUILTIN_PROMPTS: readonly string[] = Object.freeze(['The quick brown fox', 'def fibonacci(n):', 'Once upon a time']);

let nextEstimateRequest = 1;

/**
 * Greedy decoding on one request's KV cache: one forward over the prompt, then one per new token
 * (each reusing the cache). Stops early at the model's eos token. Returns only the new tokens; the
 * request's cache is released afterwards. Use it to see what a model writes, or as the reference a
 * drafter is measured against.
 */
export async function greedyGenerate(model: LanguageModel, promptIds: readonly number[], maxNewTokens: number): Promise<number[]> {
  const { vocabSize, eosTokenId } = model.info;
  const requestId = `estimate-greedy-${nextEstimateRequest++}`;
  const sequence = [...promptIds];
  const generated: number[] = [];
  try {
    let { logits } = await model.logits(requestId, sequence, sequence.length - 1);
    while (generated.length < maxNewTokens) {
      const next = argmax(logits, 0, vocabSize);
      generated.push(next);
      if (next === eosTokenId || generated.length === maxNewTokens) break;
      sequence.push(next);
      ({ logits } = await model.logits(requestId, sequence, sequence.length - 1));
    }
  } finally {
    await model.release(requestId);
  }
  return generated;
}

/**
 * The 95% (z = 1.96) Wilson score interval of a proportion `successes / trials`: it stays inside [0, 1]
 * and is honest for small counts and for proportions near 0 or 1, where the normal approximation is
 * not. No trial at all gives [0, 1] (nothing is known).
 */
export function wilsonInterval(successes: number, trials: number, z = 1.96): [number, number] {
  if (!Number.isInteger(trials) || trials < 0) throw new RangeError(`trials=${trials} must be an integer >= 0`);
  if (!Number.isInteger(successes) || successes < 0 || successes > trials) throw new RangeError(`successes=${successes} must be an integer in [0, ${trials}]`);
  if (!(z > 0)) throw new RangeError(`z=${z} must be > 0`);
  if (trials === 0) return [0, 1];
  const p = successes / trials;
  const z2 = z * z;
  const scale = 1 + z2 / trials;
  const center = (p + z2 / (2 * trials)) / scale;
  const half = (z / scale) * Math.sqrt((p * (1 - p)) / trials + z2 / (4 * trials * trials));
  return [successes === 0 ? 0 : Math.max(0, center - half), successes === trials ? 1 : Math.min(1, center + half)];
}

/** Acceptance of draft position j given the drafts before it in the block were accepted. */
export interface PositionAcceptanceStats {
  /** j, from 1. */
  position: number;
  /** accepted / trials; NaN when no block reached the position. */
  rate: number;
  /** 95% Wilson interval of `rate` ([0, 1] with no trial). */
  interval: [number, number];
  /** Starts s whose drafts 1..j-1 all matched (the estimate's denominator). */
  trials: number;
  /** Of those, the starts whose draft j matched too. */
  accepted: number;
}

/** Acceptance statistics from per-position match flags (see {@link acceptanceFromMatches}). */
export interface AcceptanceStats {
  /** a = m / (1 + m), m the mean closed run length; 1 when no draft was ever rejected. */
  acceptanceRate: number;
  /**
   * 95% Wilson interval of a: a = m / (1 + m) is exactly the proportion of accepted drafts among the
   * drafts of closed runs (successes = the sum of the runs, trials = that plus the number of runs).
   */
  interval: [number, number];
  /** m: mean number of consecutive matches before a mismatch (closed runs only). */
  meanRunLength: number;
  /** Plain per-position agreement: matches / positions. */
  agreement: number;
  /** Closed run lengths (a run is closed by a mismatch; each sequence's last open run is dropped). */
  runs: number[];
  positions: number;
  /** Per-position acceptance, positions 1..P (see {@link acceptanceFromMatches}). */
  perPosition: PositionAcceptanceStats[];
}

/** Draft positions {@link acceptanceFromMatches} reports by default (a lookahead of 8). */
export const DEFAULT_ACCEPTANCE_POSITIONS = 8;

/**
 * The study's acceptance estimator, for turning drafter-vs-target match flags into the acceptance
 * rate the simulator takes: for each sequence, count runs of matches closed by a mismatch (a
 * mismatch right after a mismatch closes a run of 0), drop the last unclosed run, pool the runs of
 * all sequences, and return a = m / (1 + m) with m their mean (the moment estimator of the
 * geometric model), its Wilson interval, plus the plain agreement.
 *
 * Per-position acceptance (positions 1..`positions`) checks the geometric model's assumption that
 * each draft is accepted with the same probability: a block of drafts could start at any generated
 * position s, so for each sequence's flags f[0..n-1] and every start s with s + j - 1 < n whose
 * drafts 1..j-1 all matched (f[s..s+j-2]), position j has one more trial, accepted when f[s+j-1].
 * Position 1 is the plain agreement.
 */
export function acceptanceFromMatches(matches: readonly (readonly boolean[])[], positions = DEFAULT_ACCEPTANCE_POSITIONS): AcceptanceStats {
  if (!Number.isInteger(positions) || positions < 1) throw new RangeError(`positions=${positions} must be an integer >= 1`);
  const runs: number[] = [];
  let hits = 0;
  let total = 0;
  const trials = new Array<number>(positions).fill(0);
  const accepted = new Array<number>(positions).fill(0);
  for (const sequence of matches) {
    let run = 0;
    for (const match of sequence) {
      total++;
      if (match) {
        hits++;
        run++;
      } else {
        runs.push(run);
        run = 0;
      }
    }
    for (let s = 0; s < sequence.length; s++) {
      for (let j = 1; j <= positions && s + j - 1 < sequence.length; j++) {
        trials[j - 1]++;
        if (!sequence[s + j - 1]) break;
        accepted[j - 1]++;
      }
    }
  }
  const runTotal = runs.reduce((a, b) => a + b, 0);
  const meanRunLength = runs.length ? runTotal / runs.length : Infinity;
  return {
    acceptanceRate: runs.length ? meanRunLength / (1 + meanRunLength) : 1,
    interval: wilsonInterval(runTotal, runTotal + runs.length),
    meanRunLength,
    agreement: total ? hits / total : NaN,
    runs,
    positions: total,
    perPosition: trials.map((n, i) => ({
      position: i + 1,
      rate: n ? accepted[i] / n : NaN,
      interval: wilsonInterval(accepted[i], n),
      trials: n,
      accepted: accepted[i],
    })),
  };
}

/** Per-prompt detail of {@link measureAcceptance}, for reports that show what the target wrote. */
export interface PromptAcceptance extends AcceptanceStats {
  prompt: string;
  /** The target's greedy continuation (token ids). */
  generated: number[];
  /** The continuation as text (the byte-level tokens decoded as UTF-8). */
  text: string;
  /** The drafter's one-token prediction at each generated position. */
  drafted: number[];
  distinctTokens: number;
}

/** Result of {@link measureAcceptance}: pooled statistics plus per-prompt detail. */
export interface AcceptanceReport extends AcceptanceStats {
  prompts: PromptAcceptance[];
}

/** Options of {@link measureAcceptance}; the defaults are the study's setting. */
export interface AcceptanceOptions {
  prompts?: readonly string[];
  /** Greedy tokens generated by the target per prompt (default 64). */
  maxNewTokens?: number;
  /** Maps a prompt to token ids (default: its UTF-8 bytes, which is what the byte-level tokenizer yields). */
  encode?: (text: string) => number[];
  /** Draft positions of the per-position acceptance (default {@link DEFAULT_ACCEPTANCE_POSITIONS}). */
  positions?: number;
  /** Called after each prompt with the prompts done and their total. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Measures drafter/target greedy acceptance as the study did, to calibrate the simulator's `a` on a
 * real pair: the target generates greedily from each prompt; at each generated position the drafter
 * predicts one token from the target's prefix (prompt + target tokens so far, one uncached forward);
 * the match flags go to {@link acceptanceFromMatches}. The models stay open (the caller owns them).
 */
export async function measureAcceptance(target: LanguageModel, drafter: LanguageModel, options: AcceptanceOptions = {}): Promise<AcceptanceReport> {
  const prompts = options.prompts ?? BUILTIN_PROMPTS;
  const maxNewTokens = options.maxNewTokens ?? 64;
  const encode = options.encode ?? ((text: string) => [...Buffer.from(text, 'utf8')]);
  const positions = options.positions ?? DEFAULT_ACCEPTANCE_POSITIONS;
  const predictions: AcceptancePrediction[] = [];
  for (const prompt of prompts) {
    const ids = encode(prompt);
    const generated = await greedyGenerate(target, ids, maxNewTokens);
    // One drafter forward over prompt + generated[0..n-2]; row k predicts generated[k].
    const { logits } = await drafter.logits('', [...ids, ...generated.slice(0, -1)], ids.length - 1);
    const drafted = generated.map((_, k) => argmax(logits, k * drafter.info.vocabSize, drafter.info.vocabSize));
    predictions.push({ prompt, generated, drafted });
    options.onProgress?.(predictions.length, prompts.length);
  }
  return acceptanceReport(predictions, positions);
}

/** What a target wrote after a prompt and what the drafter predicted at each of its positions. */
export interface AcceptancePrediction {
  prompt: string;
  /** The target's greedy continuation. */
  generated: number[];
  /** drafted[k]: the drafter's one-token prediction after the prompt and generated[0..k-1]. */
  drafted: number[];
}

/**
 * The acceptance report of target continuations and the drafter's predictions along them, however they
 * were obtained (models in process, services): per-prompt statistics and the pooled ones.
 */
export function acceptanceReport(predictions: readonly AcceptancePrediction[], positions = DEFAULT_ACCEPTANCE_POSITIONS): AcceptanceReport {
  const flags = predictions.map(({ generated, drafted }) => generated.map((token, k) => token === drafted[k]));
  const details = predictions.map(({ prompt, generated, drafted }, i): PromptAcceptance => ({
    ...acceptanceFromMatches([flags[i]], positions),
    prompt,
    generated,
    drafted,
    text: Buffer.from(generated.filter((token) => token < 256)).toString('utf8'),
    distinctTokens: new Set(generated).size,
  }));
  return { ...acceptanceFromMatches(flags, positions), prompts: details };
}

/** Median and spread of a latency over the generations measured (ms). */
export interface LatencySpread {
  median: number;
  p10: number;
  p90: number;
}

/** The result of one greedy step of a {@link GreedyStepper}. */
export interface StepResult {
  /** The model's greedy token after the sequence (before any drafts). */
  token: number;
  /** Time spent in the model, when the model's side reports it (a service); absent in process. */
  modelMs?: number;
  /** Tokens the forward computed (what its KV cache lacked), when known. */
  computedTokens?: number;
}

/**
 * A model seen one greedy step at a time, on a request's KV cache: what {@link measureLatencyWith}
 * times. A {@link LanguageModel} in process ({@link modelStepper}), or a service over the wire.
 */
export interface GreedyStepper {
  /**
   * One forward over the tokens of `sequence` followed by `drafts` that the request's cache lacks
   * (the cache then holds them); returns the greedy token after `sequence`.
   */
  step(requestId: string, sequence: readonly number[], drafts?: readonly number[]): Promise<StepResult>;
  /** Drops the request's cache. */
  release(requestId: string): Promise<void>;
}

/** A {@link LanguageModel} as a {@link GreedyStepper} (the time it reports is the caller's: no model time). */
export function modelStepper(model: LanguageModel): GreedyStepper {
  const vocab = model.info.vocabSize;
  return {
    async step(requestId, sequence, drafts = []) {
      const { logits, computedTokens } = await model.logits(requestId, [...sequence, ...drafts], sequence.length - 1);
      return { token: argmax(logits, 0, vocab), computedTokens };
    },
    async release(requestId) {
      await model.release(requestId);
    },
  };
}

/** Options of {@link measureLatency}. */
export interface LatencyOptions {
  /** Times each prompt is measured, each on a fresh request (default 3). */
  repeats?: number;
  /**
   * Generations run first and not counted, cycling through the prompts (default: one per prompt). One
   * warm-up generation in all is not enough on onnxruntime: the first generation at each new prompt
   * length still pays for new buffer shapes, which put the first repeat's TPOT 20-45% above the later
   * ones' on the built-in pair and p90/p10 near 1.5.
   */
  warmup?: number;
  /** Drafts of the block whose extra cost gives `verifyMsPerToken` (default 7: a forward of 1 + 7 new tokens). */
  verifyDrafts?: number;
  /** The clock (ms); default `performance.now`. */
  now?: () => number;
  /** Request ids are this plus a counter (default `estimate-latency-`); a service needs ids no one else uses. */
  requestPrefix?: string;
  /** Called after each generation (warm-up included) with the generations done and their total. */
  onProgress?: (done: number, total: number) => void;
}

/** One measured generation of {@link measureLatencyWith}. */
export interface LatencySample {
  /** Index of the prompt. */
  prompt: number;
  repeat: number;
  /** One forward over the prompt (the first token). */
  ttftMs: number;
  /** (generateMs - ttftMs) / (tokens - 1). */
  tpotMs: number;
  /** Time to generate all the tokens, the first forward included. */
  generateMs: number;
  /**
   * When the stepper reports model time (a service): the TTFT call's round trip (its time less the
   * model's), and the mean round trip of the later calls (TPOT's): what the figures hold besides the model.
   */
  ttftRoundTripMs?: number;
  tpotRoundTripMs?: number;
}

/** What {@link measureLatencyWith} measured. */
export interface LatencyReport {
  /** N: tokens per generation. */
  tokens: number;
  prompts: number;
  repeats: number;
  /** Over the prompts x repeats generations. */
  ttftMs: LatencySpread;
  tpotMs: LatencySpread;
  /**
   * Extra latency per extra token in one forward: (time of a forward computing 1 + `verifyDrafts`
   * new tokens on a warm cache - time of one computing 1) / the difference in tokens computed,
   * medians over one pair per generation and clamped at 0. It uses the model time when the stepper
   * reports it (a service: the round trip is not a token's cost), the caller's time otherwise.
   */
  verifyMsPerToken: number;
  /** Mean over the generation calls of (caller's time - model time); 0 when no model time is reported (in process). */
  roundTripMs: number;
  /** Each generation call's (caller's time - model time), when the model time is reported (else empty). */
  callRoundTripsMs: number[];
  samples: LatencySample[];
}

/** Median, p10 and p90 of `values` (linear interpolation between order statistics). */
export function latencySpread(values: readonly number[]): LatencySpread {
  const [p10, median, p90] = quantiles(values, [0.1, 0.5, 0.9]);
  return { median, p10, p90 };
}

/**
 * TTFT and TPOT of a model measured the study's way, with their spread: for each prompt, `repeats`
 * times, on a fresh request each time, TTFT = one forward over the prompt (no cache: the first token)
 * and TPOT = (time to generate `tokens` tokens - TTFT) / (tokens - 1), the later tokens one cached
 * forward each (greedy; an end-of-sequence token does not stop it, the count is what is timed). Warm-up
 * generations first (one per prompt by default), not counted. After each generation, on its warm cache, a forward of
 * 1 + `verifyDrafts` new tokens and one of 1 new token give the verify cost per token. Every request
 * is released. Unlike the study: one prefill (the TTFT forward starts the generation), no division by
 * zero (tokens >= 2), the model stays loaded, and the spread is reported.
 */
export async function measureLatencyWith(stepper: GreedyStepper, prompts: readonly (readonly number[])[], tokens: number, options: LatencyOptions = {}): Promise<LatencyReport> {
  const repeats = options.repeats ?? 3;
  const warmup = options.warmup ?? prompts.length;
  const verifyDrafts = options.verifyDrafts ?? 7;
  const now = options.now ?? (() => performance.now());
  const prefix = options.requestPrefix ?? 'estimate-latency-';
  if (!Number.isInteger(tokens) || tokens < 2) throw new RangeError(`tokens=${tokens} must be an integer >= 2 (TPOT divides by tokens - 1)`);
  if (!Number.isInteger(repeats) || repeats < 1) throw new RangeError(`repeats=${repeats} must be an integer >= 1`);
  if (!Number.isInteger(warmup) || warmup < 0) throw new RangeError(`warmup=${warmup} must be an integer >= 0`);
  if (!Number.isInteger(verifyDrafts) || verifyDrafts < 1) throw new RangeError(`verifyDrafts=${verifyDrafts} must be an integer >= 1`);
  if (prompts.length === 0 || prompts.some((p) => p.length === 0)) throw new RangeError('latency needs at least one prompt, none of them empty');
  let nextRequest = 1;
  const roundTrips: number[] = [];
  const one: number[] = [];
  const block: number[] = [];
  const blockExtra: number[] = [];
  const samples: LatencySample[] = [];
  const total = warmup + prompts.length * repeats;
  let done = 0;

  const timed = async (requestId: string, sequence: readonly number[], drafts?: readonly number[]) => {
    const start = now();
    const result = await stepper.step(requestId, sequence, drafts);
    const wallMs = now() - start;
    return { ...result, wallMs, costMs: result.modelMs ?? wallMs };
  };

  const generate = async (prompt: readonly number[], counted: boolean): Promise<Pick<LatencySample, 'ttftMs' | 'generateMs' | 'ttftRoundTripMs' | 'tpotRoundTripMs'>> => {
    const requestId = `${prefix}${nextRequest++}`;
    try {
      const sequence = [...prompt];
      const start = now();
      const first = await timed(requestId, sequence);
      const ttftMs = now() - start;
      const calls = [first];
      let next = first.token;
      for (let n = 1; n < tokens; n++) {
        sequence.push(next);
        const step = await timed(requestId, sequence);
        calls.push(step);
        next = step.token;
      }
      const generateMs = now() - start;
      if (!counted) return { ttftMs, generateMs };
      // Each call's round trip (caller's time less the model time), when the stepper reports model time.
      const trips = calls.flatMap((call) => (call.modelMs === undefined ? [] : [Math.max(0, call.wallMs - call.modelMs)]));
      roundTrips.push(...trips);
      const ownTrips = trips.length === calls.length ? { ttftRoundTripMs: trips[0], tpotRoundTripMs: trips.slice(1).reduce((sum, trip) => sum + trip, 0) / (trips.length - 1) } : {};
      // The cache holds `sequence`; `next` is the token after it. A block of 1 + verifyDrafts new
      // tokens, then 1 token that leaves the block's path (so the cache rolls back to `sequence`).
      const drafts = Array.from({ length: verifyDrafts }, (_, i) => sequence[i % sequence.length]);
      const big = await timed(requestId, [...sequence, next], drafts);
      const small = await timed(requestId, [...sequence, next === 0 ? 1 : next - 1]);
      block.push(big.costMs);
      one.push(small.costMs);
      blockExtra.push((big.computedTokens ?? 1 + verifyDrafts) - (small.computedTokens ?? 1));
      return { ttftMs, generateMs, ...ownTrips };
    } finally {
      await stepper.release(requestId);
      options.onProgress?.(++done, total);
    }
  };

  for (let w = 0; w < warmup; w++) await generate(prompts[w % prompts.length], false);
  for (let repeat = 0; repeat < repeats; repeat++) {
    for (let p = 0; p < prompts.length; p++) {
      const { ttftMs, generateMs, ...ownTrips } = await generate(prompts[p], true);
      samples.push({ prompt: p, repeat, ttftMs, generateMs, tpotMs: (generateMs - ttftMs) / (tokens - 1), ...ownTrips });
    }
  }
  const extra = quantiles(blockExtra, [0.5])[0];
  const [oneMs] = quantiles(one, [0.5]);
  const [blockMs] = quantiles(block, [0.5]);
  return {
    tokens,
    prompts: prompts.length,
    repeats,
    ttftMs: latencySpread(samples.map((s) => s.ttftMs)),
    tpotMs: latencySpread(samples.map((s) => s.tpotMs)),
    verifyMsPerToken: extra > 0 ? Math.max(0, (blockMs - oneMs) / extra) : 0,
    // The mean, as TPOT is one (a generation's time over its calls): TPOT - round trip is then the mean model time.
    roundTripMs: roundTrips.length ? roundTrips.reduce((sum, x) => sum + x, 0) / roundTrips.length : 0,
    callRoundTripsMs: roundTrips,
    samples,
  };
}

/** {@link measureLatencyWith} on a {@link LanguageModel} in process (round trip 0). */
export async function measureLatency(model: LanguageModel, prompts: readonly (readonly number[])[], tokens: number, options: LatencyOptions = {}): Promise<LatencyReport> {
  const longest = prompts.reduce((most, p) => Math.max(most, p.length), 0) + tokens + (options.verifyDrafts ?? 7);
  if (longest > model.info.contextLength) {
    throw new RangeError(`a prompt plus ${tokens} tokens exceeds ${model.info.name}'s context length ${model.info.contextLength}`);
  }
  return measureLatencyWith(modelStepper(model), prompts, tokens, options);
}

/**
 * The smallest period p <= maxPeriod such that the last `window` tokens repeat with period p
 * (tokens[i] === tokens[i - p] throughout the window), or 0 if there is none. A nonzero result
 * means generation has fallen into a short loop: a quality check on generated text.
 */
export function repeatingTailPeriod(tokens: readonly number[], window = 24, maxPeriod = 12): number {
  if (tokens.length < window) return 0;
  const start = tokens.length - window;
  for (let p = 1; p <= maxPeriod && p < window; p++) {
    let periodic = true;
    for (let i = start + p; i < tokens.length && periodic; i++) periodic = tokens[i] === tokens[i - p];
    if (periodic) return p;
  }
  return 0;
}
