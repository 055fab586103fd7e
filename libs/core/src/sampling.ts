/**
 * Numerics shared by the verification rules and the model backends: stable softmax, argmax, and a
 * counter-based random source.
 *
 * The random source is a pure function of its coordinates, not a stateful generator: the noise at
 * (seed, position, stream, index) is the same on every replica, in every mode, in any call order. That
 * is what lets the seeded rule reproduce target-only sampling exactly, and what lets the rejection rule
 * give every decision its own independent uniform without threading generator state through services.
 *
 * Construction (all arithmetic on unsigned 64-bit words, emulated with two 32-bit lanes):
 * ```
 * mix(z)       = splitmix64 finalizer: z ^= z >> 30; z *= 0xbf58476d1ce4e5b9;
 *                                      z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31
 * h0           = mix(seed + G)                    (G = 0x9e3779b97f4a7c15, the first SplitMix64 output)
 * absorb(h, w) = mix((h ^ w) + G)
 * hash         = absorb(absorb(absorb(h0, position), stream), index)
 * uniform      = (top 52 bits of hash + 0.5) / 2^52          strictly inside (0, 1)
 * ```
 * Each `absorb` is a bijection of `h` for a fixed word and of the word for a fixed `h`, so tuples that
 * differ in one coordinate never collide, and the splitmix64 finalizer gives full avalanche (every
 * input bit flips each output bit with probability ~1/2), so neighbouring positions and indices are
 * statistically independent. Coordinates are integers in [0, 2^53) (negative values wrap as two's
 * complement; fractions are truncated).
 */

/** Logits as a model hands them out (a row is read at `offset .. offset + vocab - 1`). */
export type Logits = Float32Array | Float64Array | readonly number[];

// Builtins bound once: global lookups are slow inside vm contexts (jest), and these sit in hot loops.
const { exp, floor, imul, log } = Math;

const TWO_32 = 4294967296;
const TWO_52 = 4503599627370496;
const TWO_20 = 1048576;

/** The SplitMix64 increment (golden ratio), as [hi, lo]. */
const GAMMA_HI = 0x9e3779b9;
const GAMMA_LO = 0x7f4a7c15;
const M1_HI = 0xbf58476d;
const M1_LO = 0x1ce4e5b9;
const M2_HI = 0x94d049bb;
const M2_LO = 0x133111eb;

/** High 32 bits of the 64-bit product of two unsigned 32-bit words (exact, via 16-bit halves). */
function mulHigh32(a: number, b: number): number {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const low = a0 * b0;
  const cross1 = a1 * b0;
  const cross2 = a0 * b1;
  const carry = ((low >>> 16) + (cross1 & 0xffff) + (cross2 & 0xffff)) >>> 16;
  return (a1 * b1 + (cross1 >>> 16) + (cross2 >>> 16) + carry) >>> 0;
}

function highWord(value: number): number {
  return floor(value / TWO_32) >>> 0;
}

/**
 * Absorbs the first `count` of the words a, b, c, d into the 64-bit state (hi, lo): each step is
 * absorb(h, w) = mix((h ^ w) + G), so from state 0 the first step is h0 = mix(seed + G). Returns the
 * top 52 bits of the final state and leaves the state in {@link stateHi} / {@link stateLo} (a row's
 * shared part, for gumbelRow). One function with the word in two local 32-bit lanes: no object per
 * hash (it runs for every token position of a simulation), nothing for the garbage collector.
 */
function absorbWords(hi: number, lo: number, a: number, b: number, c: number, d: number, count: number): number {
  for (let step = 0; step < count; step++) {
    const word = step === 0 ? a : step === 1 ? b : step === 2 ? c : d;
    hi = (hi ^ highWord(word)) >>> 0;
    lo = (lo ^ (word >>> 0)) >>> 0;
    // + G
    const sum = lo + GAMMA_LO;
    hi = (hi + GAMMA_HI + (sum >= TWO_32 ? 1 : 0)) >>> 0;
    lo = sum >>> 0;
    // mix64: z ^= z >> 30; z *= M1; z ^= z >> 27; z *= M2; z ^= z >> 31 (mod 2^64)
    lo = (lo ^ ((lo >>> 30) | (hi << 2))) >>> 0;
    hi = (hi ^ (hi >>> 30)) >>> 0;
    let product = imul(lo, M1_LO) >>> 0;
    hi = (mulHigh32(lo, M1_LO) + imul(lo, M1_HI) + imul(hi, M1_LO)) >>> 0;
    lo = product;
    lo = (lo ^ ((lo >>> 27) | (hi << 5))) >>> 0;
    hi = (hi ^ (hi >>> 27)) >>> 0;
    product = imul(lo, M2_LO) >>> 0;
    hi = (mulHigh32(lo, M2_LO) + imul(lo, M2_HI) + imul(hi, M2_LO)) >>> 0;
    lo = product;
    lo = (lo ^ ((lo >>> 31) | (hi << 1))) >>> 0;
    hi = (hi ^ (hi >>> 31)) >>> 0;
  }
  stateHi = hi;
  stateLo = lo;
  return hi * TWO_20 + (lo >>> 12);
}

// The last state absorbWords reached.
let stateHi = 0;
let stateLo = 0;

/**
 * The 52-bit integer hash of (seed, position, stream, index) behind {@link uniform}. Useful wherever
 * code needs reproducible, well-mixed integers keyed by coordinates (the synthetic model hashes its
 * contexts with it).
 */
export function counterHash(seed: number, position: number, stream: number, index: number): number {
  return absorbWords(0, 0, seed, position, stream, index, 4);
}

/**
 * A uniform draw in the open interval (0, 1), determined by its coordinates alone (see the module
 * comment). Use distinct `stream`s for decisions that must be independent at the same position.
 */
export function uniform(seed: number, position: number, stream: number, index: number): number {
  return (counterHash(seed, position, stream, index) + 0.5) / TWO_52;
}

/** The stream of the Gumbel noise that the seeded rule adds to the logits. */
export const STREAM_GUMBEL = 0;

/** Standard Gumbel noise `-log(-log(u))` for vocabulary entry `index` at `position`. */
export function gumbel(seed: number, position: number, index: number): number {
  return -log(-log(uniform(seed, position, STREAM_GUMBEL, index)));
}

/** {@link gumbel} for a whole row of `vocab` entries, sharing the per-row hashing work. */
export function gumbelRow(seed: number, position: number, vocab: number): Float64Array {
  absorbWords(0, 0, seed, position, STREAM_GUMBEL, 0, 3);
  const rowHi = stateHi;
  const rowLo = stateLo;
  const noise = new Float64Array(vocab);
  for (let i = 0; i < vocab; i++) noise[i] = -log(-log((absorbWords(rowHi, rowLo, i, 0, 0, 0, 1) + 0.5) / TWO_52));
  return noise;
}

/**
 * Index of the largest logit in the row; ties go to the lowest index (so greedy decoding is the same
 * on every backend), NaN never wins.
 */
export function argmax(logits: Logits, offset = 0, vocab = logits.length - offset): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < vocab; i++) {
    const value = logits[offset + i];
    if (value > bestValue) {
      bestValue = value;
      best = i;
    }
  }
  return best;
}

/**
 * Log-probabilities of softmax(logits / temperature), computed stably (max subtracted, log-sum-exp).
 * Temperature 0 is the greedy limit: 0 at the argmax, -Infinity elsewhere. Entries of -Infinity get
 * probability 0. Throws a RangeError for a negative or NaN temperature or a row with no finite logit.
 */
export function logSoftmax(logits: Logits, offset: number, vocab: number, temperature: number): Float64Array {
  if (!(temperature >= 0)) throw new RangeError(`temperature must be >= 0, got ${temperature}`);
  const out = new Float64Array(vocab);
  if (temperature === 0) {
    out.fill(-Infinity);
    out[argmax(logits, offset, vocab)] = 0;
    return out;
  }
  let max = -Infinity;
  for (let i = 0; i < vocab; i++) {
    const scaled = logits[offset + i] / temperature;
    out[i] = scaled;
    if (scaled > max) max = scaled;
  }
  if (!Number.isFinite(max)) throw new RangeError(`logits row has no finite maximum (${max})`);
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += exp(out[i] - max);
  const logNorm = max + log(sum);
  for (let i = 0; i < vocab; i++) out[i] -= logNorm;
  return out;
}

/** Probabilities of softmax(logits / temperature); same conventions as {@link logSoftmax}. */
export function softmax(logits: Logits, offset: number, vocab: number, temperature: number): Float64Array {
  const out = logSoftmax(logits, offset, vocab, temperature);
  for (let i = 0; i < vocab; i++) out[i] = exp(out[i]);
  return out;
}

/**
 * Inverse-CDF sampling: the first index whose cumulative weight exceeds `u * total`. `weights` need
 * not be normalised; zero-weight entries are never returned (rounding at the top end falls back to
 * the last positive entry). Returns -1 when no weight is positive.
 */
export function sampleIndex(weights: ArrayLike<number>, u: number, offset = 0, length = weights.length - offset): number {
  let total = 0;
  let last = -1;
  for (let i = 0; i < length; i++) {
    const weight = weights[offset + i];
    if (weight > 0) {
      total += weight;
      last = i;
    }
  }
  if (last < 0) return -1;
  const target = u * total;
  let cumulative = 0;
  for (let i = 0; i < last; i++) {
    const weight = weights[offset + i];
    if (weight > 0) {
      cumulative += weight;
      if (target < cumulative) return i;
    }
  }
  return last;
}
