/**
 * The three verification rules (docs/architecture.md, "Verification rules"). Pure functions of logits and the
 * request's sampling parameters; every random decision is drawn from the counter-based source at
 * (seed, absolute position, stream), so any replica reaches the same decision for the same inputs.
 */
import { argmax, gumbelRow, Logits, sampleIndex, softmax, uniform } from './sampling';

const { fround } = Math;

/** How drafts are checked against the target; see docs/architecture.md. */
export type VerificationRule = 'greedy' | 'seeded' | 'rejection';

/** Every rule, in the wire enum's order. */
export const VERIFICATION_RULES: readonly VerificationRule[] = ['greedy', 'seeded', 'rejection'];

/** How a request chooses and verifies tokens. */
export interface SamplingParams {
  rule: VerificationRule;
  /** Softmax temperature: ignored by greedy (but must not be negative), > 0 for seeded and rejection. */
  temperature: number;
  /** Seed of all sampling noise: a safe integer >= 0, required by seeded and rejection. */
  seed?: number;
}

/** Stream of the uniform with which the target samples a position under the rejection rule. */
export const STREAM_TARGET = 1;
/** Stream of the uniform that decides acceptance of a draft (rejection rule). */
export const STREAM_ACCEPT = 2;
/** Stream of the uniform that samples the residual max(0, p - q) after a rejection. */
export const STREAM_RESIDUAL = 3;
/** Stream of the uniform with which the drafter samples a position under the rejection rule. */
export const STREAM_DRAFT = 4;

/**
 * Below this total mass the residual max(0, p - q) is rounding noise (p and q agree to float32
 * precision), so a rejection resamples from p instead.
 */
export const RESIDUAL_EPSILON = 1e-6;

/**
 * Checks sampling parameters at the edge (before any model work). Returns a one-line message for the
 * first problem, or undefined when the parameters are usable. Temperature 0 is only valid for greedy:
 * seeded and rejection sampling at temperature 0 would silently be greedy, so callers must ask for
 * greedy explicitly.
 */
export function validateSamplingParams(params: SamplingParams): string | undefined {
  const { rule, temperature, seed } = params;
  if (!VERIFICATION_RULES.includes(rule)) return `unknown verification rule ${JSON.stringify(rule)}`;
  if (typeof temperature !== 'number' || Number.isNaN(temperature)) return `temperature must be a number, got ${temperature}`;
  if (temperature < 0) return `temperature must be >= 0, got ${temperature}`;
  if (!Number.isFinite(temperature)) return `temperature must be finite, got ${temperature}`;
  if (rule === 'greedy') {
    if (seed !== undefined && !isSeed(seed)) return `seed must be an integer in [0, 2^53), got ${seed}`;
    return undefined;
  }
  if (temperature === 0) return `temperature must be > 0 for the ${rule} rule (use greedy for temperature 0)`;
  if (seed === undefined) return `the ${rule} rule needs a seed`;
  if (!isSeed(seed)) return `seed must be an integer in [0, 2^53), got ${seed}`;
  return undefined;
}

function isSeed(seed: unknown): seed is number {
  return typeof seed === 'number' && Number.isSafeInteger(seed) && seed >= 0;
}

function checkParams(params: SamplingParams): void {
  const problem = validateSamplingParams(params);
  if (problem) throw new RangeError(problem);
}

/** Gumbel-max: argmax(logits / T + gumbel(seed, position, i)), an exact sample from softmax(logits / T). */
function gumbelMax(logits: Logits, offset: number, vocab: number, temperature: number, seed: number, position: number): number {
  const noise = gumbelRow(seed, position, vocab);
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < vocab; i++) {
    const value = logits[offset + i] / temperature + noise[i];
    if (value > bestValue) {
      bestValue = value;
      best = i;
    }
  }
  return best;
}

/**
 * The token the TARGET emits at absolute `position` (the position of the token being predicted) from
 * its logits row: greedy = argmax; seeded = Gumbel-max with noise from (seed, position), reproducible
 * on any replica; rejection = an inverse-CDF sample from softmax(logits / T) with the target stream.
 * Throws a RangeError for invalid parameters.
 */
export function targetToken(logits: Logits, vocab: number, params: SamplingParams, position: number, offset = 0): number {
  checkParams(params);
  switch (params.rule) {
    case 'greedy':
      return argmax(logits, offset, vocab);
    case 'seeded':
      return gumbelMax(logits, offset, vocab, params.temperature, params.seed as number, position);
    case 'rejection': {
      const p = softmax(logits, offset, vocab, params.temperature);
      return sampleIndex(p, uniform(params.seed as number, position, STREAM_TARGET, 0));
    }
  }
}

/** A drafter's choice at one position. */
export interface DraftChoice {
  token: number;
  /** The drafter's distribution q at this position: set under the rejection rule, which needs it. */
  probs?: Float32Array;
}

/**
 * The token the DRAFTER proposes at absolute `position`: greedy = argmax; seeded = Gumbel-max with the
 * very noise the target will use (coupled sampling: a drafter close to the target agrees often);
 * rejection = a sample from the drafter's own softmax on its own stream, returned with q.
 */
export function draftToken(logits: Logits, vocab: number, params: SamplingParams, position: number, offset = 0): DraftChoice {
  checkParams(params);
  switch (params.rule) {
    case 'greedy':
      return { token: argmax(logits, offset, vocab) };
    case 'seeded':
      return { token: gumbelMax(logits, offset, vocab, params.temperature, params.seed as number, position) };
    case 'rejection': {
      // Sample from the float32 q handed to the verifier, so the draft follows exactly the q it is judged by.
      const probs = Float32Array.from(softmax(logits, offset, vocab, params.temperature));
      const token = sampleIndex(probs, uniform(params.seed as number, position, STREAM_DRAFT, 0));
      return { token, probs };
    }
  }
}

/** One verification: the target's logits for a block of drafts. */
export interface VerifyBlockInput {
  /** Rows k + 1 (at least), row-major: row i predicts the token at absolute position start + i. */
  targetLogits: Float32Array;
  vocab: number;
  /** The k drafted tokens, drafts[i] at absolute position start + i. */
  drafts: readonly number[];
  /** Absolute position of drafts[0] (the length of the verified prefix). */
  start: number;
  params: SamplingParams;
  /** The drafter's q for each draft, k * vocab row-major; required by the rejection rule. */
  draftProbs?: Float32Array;
}

/** What a verification decides. */
export interface VerifyBlockResult {
  /** How many drafts (a prefix of them) the target accepted. */
  accepted: number;
  /** The accepted drafts followed by exactly one target token (the correction, or the bonus token). */
  tokens: number[];
}

/**
 * Verifies a block of drafts against the target's logits. Greedy and seeded accept while the draft
 * equals {@link targetToken}; rejection accepts draft x with probability min(1, p(x) / q(x)), else
 * samples the correction from normalise(max(0, p - q)) (from p when that residual is rounding noise).
 * After all k are accepted, the bonus token is {@link targetToken} at start + k, so with k = 0 this is
 * exactly one target step. Throws a RangeError on malformed input (a caller's bug).
 */
export function verifyBlock(input: VerifyBlockInput): VerifyBlockResult {
  const { targetLogits, vocab, drafts, start, params, draftProbs } = input;
  checkParams(params);
  const k = drafts.length;
  if (!Number.isInteger(vocab) || vocab < 1) throw new RangeError(`vocab must be a positive integer, got ${vocab}`);
  if (!Number.isInteger(start) || start < 0) throw new RangeError(`start must be an integer >= 0, got ${start}`);
  if (targetLogits.length < (k + 1) * vocab) {
    throw new RangeError(`targetLogits holds ${targetLogits.length / vocab} rows, need ${k + 1}`);
  }
  for (const draft of drafts) {
    if (!Number.isInteger(draft) || draft < 0 || draft >= vocab) throw new RangeError(`draft token ${draft} is outside [0, ${vocab})`);
  }
  const tokens: number[] = [];
  if (params.rule !== 'rejection') {
    for (let i = 0; i < k; i++) {
      const truth = targetToken(targetLogits, vocab, params, start + i, i * vocab);
      tokens.push(truth);
      if (drafts[i] !== truth) return { accepted: i, tokens };
    }
    tokens.push(targetToken(targetLogits, vocab, params, start + k, k * vocab));
    return { accepted: k, tokens };
  }

  if (!draftProbs || draftProbs.length < k * vocab) {
    throw new RangeError(`the rejection rule needs draftProbs with ${k} rows of ${vocab}`);
  }
  const seed = params.seed as number;
  for (let i = 0; i < k; i++) {
    const position = start + i;
    const p = softmax(targetLogits, i * vocab, vocab, params.temperature);
    const draft = drafts[i];
    const px = p[draft];
    const qx = draftProbs[i * vocab + draft];
    // q travels as float32, so compare at that precision: q == p is always accepted.
    if (qx <= fround(px) || uniform(seed, position, STREAM_ACCEPT, 0) * qx < px) {
      tokens.push(draft);
      continue;
    }
    const residual = new Float64Array(vocab);
    let mass = 0;
    for (let j = 0; j < vocab; j++) {
      const excess = p[j] - draftProbs[i * vocab + j];
      if (excess > 0) {
        residual[j] = excess;
        mass += excess;
      }
    }
    const u = uniform(seed, position, STREAM_RESIDUAL, 0);
    tokens.push(sampleIndex(mass > RESIDUAL_EPSILON ? residual : p, u));
    return { accepted: i, tokens };
  }
  tokens.push(targetToken(targetLogits, vocab, params, start + k, k * vocab));
  return { accepted: k, tokens };
}
