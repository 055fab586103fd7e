/**
 * The synthetic backend: a deterministic oracle language model with configured latencies and a
 * configured drafter/target acceptance rate. It makes wall-clock experiments exact and reproducible
 * (the study's sleeps), but through the real services and wire.
 *
 * The oracle. Every prefix of a token sequence has a 52-bit rolling hash,
 * `H(0) = counterHash(seed, 0, CONTEXT, 0)` and `H(n) = counterHash(H(n-1), n, CONTEXT, tokens[n-1])`,
 * so the hash at a position depends on the seed, the position and the whole prefix. The target's next
 * token after a prefix is chosen by that hash; its logits are {@link PEAK_LOGIT} there and hash-derived
 * values in [-1, 1] elsewhere, so greedy decoding returns the oracle token and seeded or rejection
 * sampling see a proper distribution (about 0.9 on the peak at temperature 1 with the default vocab).
 * The drafter, sharing the seed, computes the same hash; with probability `acceptance` (a uniform drawn
 * from the hash, so independent per position) it peaks on the target's token, else on a different one,
 * with its own noise elsewhere.
 *
 * Only ordinary tokens are ever peaked or sampled: ids below min(vocabSize, 256), the byte tokens of
 * the byte-level default models. Other ids (eos 257 among them) get {@link MASKED_LOGIT}, so runs
 * never stop early at an end-of-sequence token and only stop at max tokens or a stop sequence.
 *
 * The latency model (one instance = one device; calls are served one at a time, in arrival order):
 * a call on a request with nothing reusable in its cache (a prefill) takes `ttftMs`; any other call
 * takes `tpotMs + verifyMsPerToken * (computedTokens - 1)`, the extra tokens computed in one forward.
 * The duration is measured from when the call gets the device and includes the (tiny) compute time.
 */
import { counterHash, uniform } from '@dsi/core';
import { checkTokens, type ForwardResult, type LanguageModel, type ModelInfo } from './backend';

/** Time as the synthetic model sees it: inject a virtual clock in tests and simulations. */
export interface SyntheticClock {
  now(): number;
  /** Resolves after `ms`; rejects with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** Configuration of a synthetic drafter or target. */
export interface SyntheticOptions {
  role: 'target' | 'drafter';
  /** The oracle's seed; the drafter and the target must share it. */
  seed: number;
  /** Default 259, like the byte-level default models (eos 257). */
  vocabSize?: number;
  /** Default 4096. */
  contextLength?: number;
  /** Drafter only (a target ignores it): probability it agrees with the target per position. Default 0.8. */
  acceptance?: number;
  /** Latency of a forward with nothing cached (a prefill). Default 0. */
  ttftMs?: number;
  /** Latency of a forward that continues a cached request. Default 0. */
  tpotMs?: number;
  /** Extra latency per additional token computed in one forward (verification of k drafts). Default 0. */
  verifyMsPerToken?: number;
  /** Default {@link realClock}. */
  clock?: SyntheticClock;
}

// Builtins bound once: global lookups are slow inside vm contexts (jest), and imul sits in a hot loop.
const { imul, max, min } = Math;

/** The target's (and an agreeing drafter's) logit on the oracle token. */
export const PEAK_LOGIT = 8;
/** The logit of ids the oracle never produces (eos and other non-byte ids): never sampled in practice. */
export const MASKED_LOGIT = -1e4;

const DEFAULT_VOCAB_SIZE = 259;
const DEFAULT_EOS_TOKEN_ID = 257;
const DEFAULT_CONTEXT_LENGTH = 4096;
const DEFAULT_ACCEPTANCE = 0.8;
/** How many ids the oracle draws from at most: the byte tokens. */
const MAX_ORDINARY_TOKENS = 256;

// Streams of the counter-based hash, distinct from the verification rules' streams.
const STREAM_CONTEXT = 0x5e01;
const STREAM_ORACLE = 0x5e02;
const STREAM_AGREE = 0x5e03;
const STREAM_ALTERNATIVE = 0x5e04;
const STREAM_TARGET_NOISE = 0x5e05;
const STREAM_DRAFTER_NOISE = 0x5e06;

/** The last stretch of a {@link realClock} sleep spent polling with setImmediate (timers fire late by ~1 ms). */
const SPIN_MS = 2;

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/**
 * Wall-clock time with sub-millisecond sleeps: a timer for all but the last {@link SPIN_MS}, then
 * setImmediate polling of `performance.now()` (yielding to the event loop every turn), so a sleep ends
 * within a fraction of a millisecond of its deadline without blocking other work.
 */
export const realClock: SyntheticClock = {
  now: () => performance.now(),
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortReason(signal));
        return;
      }
      const deadline = performance.now() + ms;
      let timer: NodeJS.Timeout | undefined;
      let immediate: NodeJS.Immediate | undefined;
      const onAbort = () => {
        if (timer) clearTimeout(timer);
        if (immediate) clearImmediate(immediate);
        reject(abortReason(signal as AbortSignal));
      };
      const poll = () => {
        timer = undefined;
        immediate = undefined;
        if (performance.now() >= deadline) {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        } else {
          immediate = setImmediate(poll);
        }
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      if (ms > SPIN_MS) timer = setTimeout(poll, ms - SPIN_MS);
      else poll();
    });
  },
};

/** One device: calls run one at a time in arrival order; a waiting call leaves the queue when aborted. */
class DeviceQueue {
  private busy = false;
  private readonly waiting: Array<() => void> = [];

  acquire(signal?: AbortSignal): Promise<void> {
    if (!this.busy) {
      this.busy = true;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const grant = () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        const index = this.waiting.indexOf(grant);
        if (index >= 0) this.waiting.splice(index, 1);
        reject(abortReason(signal as AbortSignal));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(grant);
    });
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.busy = false;
  }
}

/** What a request's "KV cache" holds: its tokens and the rolling hash of every prefix of them. */
interface RequestCache {
  tokens: number[];
  /** prefixHashes[n] = H(n), for n = 0 .. tokens.length. */
  prefixHashes: number[];
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function nonNegative(name: string, value: number | undefined): number {
  const resolved = value ?? 0;
  if (!(resolved >= 0) || !Number.isFinite(resolved)) throw new RangeError(`${name}=${value} must be a finite number >= 0`);
  return resolved;
}

/**
 * Fills `out[offset .. offset + vocab)` with values in [-1, 1] from a 32-bit counter hash keyed by
 * `key` (a splitmix32-style finalizer over an incrementing counter): cheap, deterministic row noise.
 */
function fillNoise(out: Float32Array, offset: number, vocab: number, key: number): void {
  let state = key >>> 0;
  for (let i = 0; i < vocab; i++) {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = imul(z ^ (z >>> 16), 0x85ebca6b);
    z = imul(z ^ (z >>> 13), 0xc2b2ae35);
    z = (z ^ (z >>> 16)) >>> 0;
    out[offset + i] = (z / 4294967296) * 2 - 1;
  }
}

class SyntheticModel implements LanguageModel {
  readonly info: ModelInfo;
  private readonly role: 'target' | 'drafter';
  private readonly seed: number;
  private readonly acceptance: number;
  private readonly ttftMs: number;
  private readonly tpotMs: number;
  private readonly verifyMsPerToken: number;
  private readonly clock: SyntheticClock;
  /** Ids the oracle may produce: [0, ordinaryTokens). */
  private readonly ordinaryTokens: number;
  private readonly caches = new Map<string, RequestCache>();
  private readonly device = new DeviceQueue();
  private closed = false;

  constructor(options: SyntheticOptions) {
    const vocabSize = options.vocabSize ?? DEFAULT_VOCAB_SIZE;
    const contextLength = options.contextLength ?? DEFAULT_CONTEXT_LENGTH;
    if (options.role !== 'target' && options.role !== 'drafter') throw new RangeError(`role=${options.role} is not target or drafter`);
    if (!Number.isSafeInteger(options.seed) || options.seed < 0) throw new RangeError(`seed=${options.seed} must be an integer in [0, 2^53)`);
    if (!Number.isInteger(vocabSize) || vocabSize < 2) throw new RangeError(`vocabSize=${vocabSize} must be an integer >= 2`);
    if (!Number.isInteger(contextLength) || contextLength < 1) throw new RangeError(`contextLength=${contextLength} must be an integer >= 1`);
    const acceptance = options.acceptance ?? DEFAULT_ACCEPTANCE;
    if (!(acceptance >= 0 && acceptance <= 1)) throw new RangeError(`acceptance=${options.acceptance} is outside [0, 1]`);
    this.role = options.role;
    this.seed = options.seed;
    this.acceptance = acceptance;
    this.ttftMs = nonNegative('ttftMs', options.ttftMs);
    this.tpotMs = nonNegative('tpotMs', options.tpotMs);
    this.verifyMsPerToken = nonNegative('verifyMsPerToken', options.verifyMsPerToken);
    this.clock = options.clock ?? realClock;
    this.ordinaryTokens = min(vocabSize, MAX_ORDINARY_TOKENS);
    this.info = {
      name: `synthetic-${options.role}`,
      backend: 'synthetic',
      vocabSize,
      contextLength,
      eosTokenId: vocabSize > DEFAULT_EOS_TOKEN_ID ? DEFAULT_EOS_TOKEN_ID : undefined,
    };
  }

  async logits(requestId: string, tokens: readonly number[], from: number, signal?: AbortSignal): Promise<ForwardResult> {
    checkTokens(tokens, from, this.info.vocabSize, this.info.contextLength);
    if (signal?.aborted) throw abortReason(signal);
    await this.device.acquire(signal);
    try {
      if (this.closed) throw new Error('the synthetic model is closed');
      const started = this.clock.now();
      const cached = requestId ? this.caches.get(requestId) : undefined;
      const common = cached ? commonPrefix(cached.tokens, tokens) : 0;
      // Like a KV cache: reuse the common prefix, but recompute from `from` at least (logits are not cached).
      const reusedTokens = min(common, from);
      const computedTokens = tokens.length - reusedTokens;
      const prefixHashes = this.extendHashes(cached ? cached.prefixHashes.slice(0, common + 1) : [], tokens);
      const rows = tokens.length - from;
      const logits = new Float32Array(rows * this.info.vocabSize);
      for (let r = 0; r < rows; r++) this.fillRow(logits, r * this.info.vocabSize, prefixHashes[from + r + 1]);

      const latency = reusedTokens === 0 ? this.ttftMs : this.tpotMs + this.verifyMsPerToken * max(0, computedTokens - 1);
      const remaining = latency - (this.clock.now() - started);
      if (remaining > 0) await this.clock.sleep(remaining, signal);
      if (signal?.aborted) throw abortReason(signal);
      // Commit only a finished forward: an aborted one leaves the previous, consistent cache.
      if (requestId) this.caches.set(requestId, { tokens: tokens.slice(), prefixHashes });
      return { logits, rows, reusedTokens, computedTokens, modelMs: this.clock.now() - started };
    } finally {
      this.device.release();
    }
  }

  /** Queued behind the device's pending forwards, so none of them can bring the cache back afterwards. */
  async release(requestId: string): Promise<boolean> {
    await this.device.acquire();
    try {
      return this.caches.delete(requestId);
    } finally {
      this.device.release();
    }
  }

  /** Nothing to load or compile: checks the oracle once, without latency, cache or device. */
  async warmup(): Promise<void> {
    const row = new Float32Array(this.info.vocabSize);
    this.fillRow(row, 0, this.extendHashes([], [0])[1]);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.caches.clear();
  }

  /** Completes `known` (the hashes of a prefix of `tokens`, possibly empty) to all of `tokens`. */
  private extendHashes(known: number[], tokens: readonly number[]): number[] {
    const hashes = known;
    if (hashes.length === 0) hashes.push(counterHash(this.seed, 0, STREAM_CONTEXT, 0));
    for (let n = hashes.length; n <= tokens.length; n++) hashes.push(counterHash(hashes[n - 1], n, STREAM_CONTEXT, tokens[n - 1]));
    return hashes;
  }

  /** The logits after a prefix whose rolling hash is `prefixHash`. */
  private fillRow(out: Float32Array, offset: number, prefixHash: number): void {
    const vocab = this.info.vocabSize;
    const ordinary = this.ordinaryTokens;
    const oracle = counterHash(prefixHash, 0, STREAM_ORACLE, 0) % ordinary;
    let peak = oracle;
    if (this.role === 'drafter' && !(uniform(prefixHash, 0, STREAM_AGREE, 0) < this.acceptance)) {
      peak = (oracle + 1 + (counterHash(prefixHash, 0, STREAM_ALTERNATIVE, 0) % (ordinary - 1))) % ordinary;
    }
    const noiseStream = this.role === 'target' ? STREAM_TARGET_NOISE : STREAM_DRAFTER_NOISE;
    fillNoise(out, offset, ordinary, counterHash(prefixHash, 0, noiseStream, 0));
    out.fill(MASKED_LOGIT, offset + ordinary, offset + vocab);
    out[offset + peak] = PEAK_LOGIT;
  }
}

/** A synthetic drafter or target replica (see the module comment for the oracle and latency model). */
export function createSyntheticModel(options: SyntheticOptions): LanguageModel {
  return new SyntheticModel(options);
}
