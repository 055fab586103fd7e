/**
 * The oracle language model: one deterministic drafter/target pair with a configured acceptance rate
 * and a configured latency, shared by the synthetic model backend (libs/models, served through the real
 * services and wire) and the simulator's event mode (libs/sim, on a virtual clock). Because both run
 * this one model, an event-mode prediction produces exactly the tokens the synthetic services produce.
 *
 * The hash chain. Every prefix of a token sequence has a 52-bit rolling hash,
 * `H(0) = counterHash(seed, 0, CONTEXT, 0)` and `H(n) = counterHash(H(n-1), n, CONTEXT, tokens[n-1])`,
 * so the hash at a position depends on the seed, the position and the whole prefix. The target's next
 * token after a prefix (the truth) is chosen by that hash; its logits are {@link ORACLE_PEAK_LOGIT}
 * there and hash-derived values in [-1, 1] elsewhere, so greedy decoding returns the truth and seeded or
 * rejection sampling see a proper distribution (about 0.9 on the peak at temperature 1 with the default
 * vocab). The drafter, sharing the seed, computes the same hash; with probability `acceptance` (a
 * uniform drawn from the hash, so independent per position) it peaks on the truth, else on a different
 * token, with its own noise elsewhere.
 *
 * Only ordinary tokens are ever peaked or sampled: ids below min(vocabSize, 256), the byte tokens of
 * the byte-level default models. Other ids (eos 257 among them) get {@link ORACLE_MASKED_LOGIT}, so runs
 * never stop early at an end-of-sequence token and only stop at max tokens or a stop sequence.
 *
 * The latency model ({@link OracleReplica}: one replica = one device; calls are served one at a time,
 * in arrival order): a call on a request with nothing reusable in its cache (a prefill) takes `ttftMs`;
 * any other call takes `tpotMs + verifyMsPerToken * (computedTokens - 1)`, the extra tokens computed in
 * one forward. The duration is measured from when the call gets the device and includes the compute.
 *
 * Batching ({@link OracleBatching}, off by default): the calls that arrive while a forward runs wait and
 * then run together in the next forward, up to `maxBatchRequests` calls and `maxBatchTokens` computed
 * tokens (in arrival order). Before a forward the replica waits for the requests of the forward before
 * it that come back within a forward (each up to 1.5 times its usual gap, never more than a forward:
 * see {@link BatchGather}), so clients that send their next call when the last returns share forwards
 * instead of alternating; otherwise a call waits only for the forward in progress, unless the batch
 * after it is full. A batched forward takes `tpotMs` plus `batchMsPerToken` for every token in the
 * batch beyond the first, and never less than its slowest call's time (as above) plus `batchMsPerToken`
 * for every token the other calls compute: decode is memory-bound, so extra rows cost little.
 */
import { PlainAbortController } from './plain-signal';
import type { Clock } from './ports';
import { counterHash, uniform } from './sampling';

// Builtins bound once: global lookups are slow inside vm contexts (jest), and imul sits in a hot loop.
const { imul, max, min } = Math;

/** The target's (and an agreeing drafter's) logit on the oracle token. */
export const ORACLE_PEAK_LOGIT = 8;
/** The logit of ids the oracle never produces (eos and other non-byte ids): never sampled in practice. */
export const ORACLE_MASKED_LOGIT = -1e4;
/** The default vocabulary, like the byte-level default models: 256 bytes, then bos, eos, pad. */
export const ORACLE_VOCAB_SIZE = 259;
/** The end-of-sequence id when the vocabulary has one (as in the byte-level default models). */
export const ORACLE_EOS_TOKEN_ID = 257;
/** A drafter's default probability of agreeing with the target per position. */
export const ORACLE_DEFAULT_ACCEPTANCE = 0.8;
/** How many ids the oracle draws from at most: the byte tokens. */
const MAX_ORDINARY_TOKENS = 256;

// Streams of the counter-based hash, distinct from the verification rules' streams.
const STREAM_CONTEXT = 0x5e01;
const STREAM_ORACLE = 0x5e02;
const STREAM_AGREE = 0x5e03;
const STREAM_ALTERNATIVE = 0x5e04;
const STREAM_TARGET_NOISE = 0x5e05;
const STREAM_DRAFTER_NOISE = 0x5e06;

/** Which side of the pair a model plays: the target (the truth) or the drafter (agrees with probability a). */
export type OracleRole = 'target' | 'drafter';

/** Configuration of one side of the oracle pair; the drafter and the target must share the seed. */
export interface OracleModelOptions {
  role: OracleRole;
  /** The oracle's seed: an integer in [0, 2^53). */
  seed: number;
  /** Default {@link ORACLE_VOCAB_SIZE}. */
  vocabSize?: number;
  /** Drafter only (a target ignores it): probability it agrees with the target per position. Default 0.8. */
  acceptance?: number;
  /**
   * Drafter only: a workload whose acceptance drifts. From prefix length `acceptanceSwitchAt` on (the
   * prediction of the token at that position, prompt included), the drafter agrees with probability
   * `acceptanceAfter` instead. Both or neither.
   */
  acceptanceAfter?: number;
  acceptanceSwitchAt?: number;
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

/**
 * One side of the oracle pair, as pure functions of prefix hashes (see the module comment). Use
 * {@link OracleModel.hashes} or an {@link OracleReplica} to hash a sequence, then {@link OracleModel.next}
 * for the greedy token (what simulations need) or {@link OracleModel.fillLogits} for the full row (what
 * a model backend serves).
 */
export class OracleModel {
  readonly role: OracleRole;
  readonly seed: number;
  readonly vocabSize: number;
  /** The drafter's agreement probability (1 for a target, which is the truth). */
  readonly acceptance: number;
  /** The drifting workload's acceptance and where it starts (see {@link OracleModelOptions.acceptanceAfter}); undefined: none. */
  readonly acceptanceAfter: number | undefined;
  readonly acceptanceSwitchAt: number | undefined;
  /** {@link ORACLE_EOS_TOKEN_ID} when the vocabulary holds it, else undefined. */
  readonly eosTokenId: number | undefined;
  /** Ids the oracle may produce: [0, ordinaryTokens). */
  readonly ordinaryTokens: number;

  /** Throws a RangeError naming the first bad option. */
  constructor(options: OracleModelOptions) {
    const vocabSize = options.vocabSize ?? ORACLE_VOCAB_SIZE;
    if (options.role !== 'target' && options.role !== 'drafter') throw new RangeError(`role=${options.role} is not target or drafter`);
    if (!Number.isSafeInteger(options.seed) || options.seed < 0) throw new RangeError(`seed=${options.seed} must be an integer in [0, 2^53)`);
    if (!Number.isInteger(vocabSize) || vocabSize < 2) throw new RangeError(`vocabSize=${vocabSize} must be an integer >= 2`);
    const acceptance = options.acceptance ?? ORACLE_DEFAULT_ACCEPTANCE;
    if (!(acceptance >= 0 && acceptance <= 1)) throw new RangeError(`acceptance=${options.acceptance} is outside [0, 1]`);
    this.role = options.role;
    this.seed = options.seed;
    this.vocabSize = vocabSize;
    this.acceptance = options.role === 'target' ? 1 : acceptance;
    const { acceptanceAfter, acceptanceSwitchAt } = options;
    if ((acceptanceAfter === undefined) !== (acceptanceSwitchAt === undefined)) throw new RangeError('acceptanceAfter and acceptanceSwitchAt go together');
    if (acceptanceAfter !== undefined && !(acceptanceAfter >= 0 && acceptanceAfter <= 1)) throw new RangeError(`acceptanceAfter=${acceptanceAfter} is outside [0, 1]`);
    if (acceptanceSwitchAt !== undefined && !(Number.isSafeInteger(acceptanceSwitchAt) && acceptanceSwitchAt >= 0)) {
      throw new RangeError(`acceptanceSwitchAt=${acceptanceSwitchAt} must be an integer >= 0`);
    }
    this.acceptanceAfter = options.role === 'target' ? undefined : acceptanceAfter;
    this.acceptanceSwitchAt = options.role === 'target' ? undefined : acceptanceSwitchAt;
    this.eosTokenId = vocabSize > ORACLE_EOS_TOKEN_ID ? ORACLE_EOS_TOKEN_ID : undefined;
    this.ordinaryTokens = min(vocabSize, MAX_ORDINARY_TOKENS);
  }

  /** H(0), the hash of the empty prefix. */
  rootHash(): number {
    return counterHash(this.seed, 0, STREAM_CONTEXT, 0);
  }

  /** H(length) from H(length - 1) and the token at position length - 1. */
  nextHash(previous: number, length: number, token: number): number {
    return counterHash(previous, length, STREAM_CONTEXT, token);
  }

  /**
   * The hashes of every prefix of `tokens` (H(0) .. H(tokens.length)), completing `known` (the hashes
   * of a prefix of `tokens`, possibly empty) in place.
   */
  hashes(tokens: readonly number[], known: number[] = []): number[] {
    if (known.length === 0) known.push(this.rootHash());
    for (let n = known.length; n <= tokens.length; n++) known.push(this.nextHash(known[n - 1], n, tokens[n - 1]));
    return known;
  }

  /** The target's token after a prefix with hash `prefixHash` (the truth every rule converges on greedily). */
  truth(prefixHash: number): number {
    return counterHash(prefixHash, 0, STREAM_ORACLE, 0) % this.ordinaryTokens;
  }

  /**
   * This model's greedy token after a prefix with hash `prefixHash`: the truth, or a drafter's guess.
   * `length` is the prefix's length: a drifting drafter needs it (without it, the first acceptance holds).
   */
  next(prefixHash: number, length?: number): number {
    const truth = this.truth(prefixHash);
    if (this.role === 'target') return truth;
    const switchAt = this.acceptanceSwitchAt;
    const acceptance = switchAt !== undefined && length !== undefined && length >= switchAt ? (this.acceptanceAfter as number) : this.acceptance;
    if (uniform(prefixHash, 0, STREAM_AGREE, 0) < acceptance) return truth;
    const ordinary = this.ordinaryTokens;
    return (truth + 1 + (counterHash(prefixHash, 0, STREAM_ALTERNATIVE, 0) % (ordinary - 1))) % ordinary;
  }

  /** Writes this model's logits after a prefix with hash `prefixHash` (of `length` tokens) into `out[offset .. offset + vocabSize)`. */
  fillLogits(out: Float32Array, offset: number, prefixHash: number, length?: number): void {
    const ordinary = this.ordinaryTokens;
    const noiseStream = this.role === 'target' ? STREAM_TARGET_NOISE : STREAM_DRAFTER_NOISE;
    fillNoise(out, offset, ordinary, counterHash(prefixHash, 0, noiseStream, 0));
    out.fill(ORACLE_MASKED_LOGIT, offset + ordinary, offset + this.vocabSize);
    out[offset + this.next(prefixHash, length)] = ORACLE_PEAK_LOGIT;
  }
}

/** The configured latencies of an {@link OracleReplica}, in the clock's unit (ms on the real clock). */
export interface OracleLatency {
  /** Latency of a forward with nothing cached (a prefill). Default 0. */
  ttftMs?: number;
  /** Latency of a forward that continues a cached request. Default 0. */
  tpotMs?: number;
  /** Extra latency per additional token computed in one forward (verification of k drafts). Default 0. */
  verifyMsPerToken?: number;
}

/** How an {@link OracleReplica} batches calls (module comment, "Batching"); every field is optional. */
export interface OracleBatching {
  /** Calls one forward may take. Default 1: no batching, one call per forward. */
  maxBatchRequests?: number;
  /** Tokens one forward may compute across its calls (a larger call still runs, alone). Default unbounded. */
  maxBatchTokens?: number;
  /** Latency per token a batched forward computes beyond its slowest call's. Default 0. */
  batchMsPerToken?: number;
}

/**
 * A batched forward's default cost of each extra token, as a fraction of the forward: from the H200
 * figures for llama3.1-70b (`../shared/data`), (fwd16 - fwd1) / 15 / fwd1 = (58.80 - 51.18) / 15 / 51.18
 * = 0.0099. A memory-bound decode step barely notices 15 more rows.
 */
export const DEFAULT_BATCH_COST_PER_TOKEN = 0.0099;

/** The batching options with defaults applied; throws a RangeError naming a bad one. */
export function resolveOracleBatching(batching: OracleBatching = {}): Required<OracleBatching> {
  const { maxBatchRequests = 1, maxBatchTokens = Infinity, batchMsPerToken = 0 } = batching;
  if (!Number.isInteger(maxBatchRequests) || maxBatchRequests < 1) throw new RangeError(`maxBatchRequests=${maxBatchRequests} must be an integer >= 1`);
  if (!(maxBatchTokens === Infinity || (Number.isInteger(maxBatchTokens) && maxBatchTokens >= 1))) {
    throw new RangeError(`maxBatchTokens=${maxBatchTokens} must be an integer >= 1`);
  }
  return { maxBatchRequests, maxBatchTokens, batchMsPerToken: nonNegative('batchMsPerToken', batchMsPerToken) };
}

/**
 * How long a forward takes under the latency model: `ttftMs` when nothing was reused (a prefill), else
 * `tpotMs` plus `verifyMsPerToken` per token computed beyond the first.
 */
export function oracleForwardMs(latency: Required<OracleLatency>, reusedTokens: number, computedTokens: number): number {
  return reusedTokens === 0 ? latency.ttftMs : latency.tpotMs + latency.verifyMsPerToken * max(0, computedTokens - 1);
}

function nonNegative(name: string, value: number | undefined): number {
  const resolved = value ?? 0;
  if (!(resolved >= 0) || !Number.isFinite(resolved)) throw new RangeError(`${name}=${value} must be a finite number >= 0`);
  return resolved;
}

/** The latencies with defaults applied; throws a RangeError naming a negative or non-finite one. */
export function resolveOracleLatency(latency: OracleLatency): Required<OracleLatency> {
  return {
    ttftMs: nonNegative('ttftMs', latency.ttftMs),
    tpotMs: nonNegative('tpotMs', latency.tpotMs),
    verifyMsPerToken: nonNegative('verifyMsPerToken', latency.verifyMsPerToken),
  };
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

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
  /** hashes[n] = H(n), for n = 0 .. tokens.length. */
  hashes: number[];
  /** The stem of the call that filled it, and how many of its first tokens are that stem's (see {@link PrefixStem}). */
  stem: readonly number[] | undefined;
  stemLength: number;
}

/**
 * A call's promise about its prefix (the `stem` and `stemLength` of a DraftCall or VerifyCall): its first
 * `stemLength` tokens are those of `stem`, an array that only grows. Two calls with the same stem agree
 * on the positions both vouch for, so a cache filled by one need not compare them for the other.
 */
export interface PrefixStem {
  stem?: readonly number[];
  stemLength?: number;
}

/** The prefix hashes of one forward's token sequence, as its `compute` step sees them. */
export interface PrefixHashes {
  /** H(length): the hash of the sequence's first `length` tokens, 0 <= length <= the sequence's length. */
  at(length: number): number;
}

/** What one {@link OracleReplica.forward} did: the caller's result and the work and time it took. */
export interface OracleForward<T> {
  result: T;
  /** Tokens whose state came from the request's cache. */
  reusedTokens: number;
  /** Tokens this forward computed (the sequence's length minus the reused ones). */
  computedTokens: number;
  /** Clock time from getting the device to the end of the forward. */
  modelMs: number;
  /** Calls that ran in this forward (1 unless the replica batches). */
  batchRequests: number;
  /** Clock time from the call to getting the device (or to its batch's forward beginning). */
  queueMs: number;
  /** Tokens the forward computed over all of its calls. */
  batchTokens: number;
}

/** Thrown by {@link OracleReplica.forward} after {@link OracleReplica.close}. */
export class OracleReplicaClosedError extends Error {
  override readonly name = 'OracleReplicaClosedError';
}

/**
 * One oracle replica (one device) with a "KV cache" per request and the latency model of the module
 * comment, on an injected {@link Clock}: the synthetic model backend serves its forwards with it on the
 * real clock, the simulator's event mode on a {@link VirtualClock}. The cache behaves like a real one:
 * a forward reuses the common prefix with what the request's cache holds (but recomputes from `from` at
 * least), and only a finished forward replaces the cache, so an aborted one leaves it consistent.
 */
export class OracleReplica {
  private readonly latency: Required<OracleLatency>;
  private readonly caches = new Map<string, RequestCache>();
  private readonly device = new DeviceQueue();
  private readonly batching: Required<OracleBatching>;
  /** Batching only: calls and cache releases waiting for the device, in arrival order. */
  private readonly pending: Array<BatchMember | (() => void)> = [];
  /** Batching only: whether a forward runs (or is about to start). */
  private running = false;
  /** Batching only: how the next forward waits for the last one's requests to come back (module comment). */
  private readonly gather = new BatchGather();
  private closed = false;

  /** Throws a RangeError for a negative or non-finite latency, or bad batching options. */
  constructor(
    readonly model: OracleModel,
    latency: OracleLatency,
    private readonly clock: Clock,
    batching?: OracleBatching,
  ) {
    this.latency = resolveOracleLatency(latency);
    this.batching = resolveOracleBatching(batching);
  }

  /** Whether calls are batched (maxBatchRequests > 1). */
  get batched(): boolean {
    return this.batching.maxBatchRequests > 1;
  }

  /**
   * Runs one forward over `tokens` for `requestId` (empty: never cached): waits for the device, calls
   * `compute` with the sequence's prefix hashes (the caller derives tokens or logits for positions
   * `from` onwards), then sleeps out the forward's latency. Rejects with the signal's reason when it
   * aborts (the device is then free at once), with {@link OracleReplicaClosedError} after close.
   */
  forward<T>(requestId: string, tokens: readonly number[], from: number, compute: (hashes: PrefixHashes) => T, signal?: AbortSignal, stem?: PrefixStem): Promise<OracleForward<T>> {
    return this.forwardJoined(requestId, tokens, NO_TOKENS, from, compute, signal, stem);
  }

  /**
   * {@link OracleReplica.forward} over the sequence `prefix ++ suffix`, without building it: a
   * simulation's calls carry long prefixes, and copying them per forward is most of its garbage. The
   * arrays are read while the forward runs (after it waits for the device), not copied: the caller
   * must not change them until it settles. `stem` (a call's, see {@link PrefixStem}) spares comparing the
   * positions it vouches for with the request's cache.
   */
  forwardJoined<T>(
    requestId: string,
    prefix: readonly number[],
    suffix: readonly number[],
    from: number,
    compute: (hashes: PrefixHashes) => T,
    signal?: AbortSignal,
    stem?: PrefixStem,
  ): Promise<OracleForward<T>> {
    return this.forwardSequence(requestId, { head: NO_TOKENS, headLength: 0, prefix, suffix, stem: stem?.stem, stemLength: stem?.stem ? min(stem.stemLength ?? 0, prefix.length) : 0 }, from, compute, signal);
  }

  /**
   * {@link OracleReplica.forwardJoined} over `stem.stem[0 .. stem.stemLength) ++ tail ++ suffix`: a call
   * whose prefix comes as its generation's verified tokens (the live stem array, see {@link PrefixStem})
   * and the tokens after them (`tail`, the drafts it carries), so nobody copies the long part.
   */
  forwardStemmed<T>(
    requestId: string,
    stem: Required<PrefixStem>,
    tail: readonly number[],
    suffix: readonly number[],
    from: number,
    compute: (hashes: PrefixHashes) => T,
    signal?: AbortSignal,
  ): Promise<OracleForward<T>> {
    return this.forwardSequence(requestId, { head: stem.stem, headLength: stem.stemLength, prefix: tail, suffix, stem: stem.stem, stemLength: stem.stemLength }, from, compute, signal);
  }

  private async forwardSequence<T>(requestId: string, sequence: ForwardSequence, from: number, compute: (hashes: PrefixHashes) => T, signal?: AbortSignal): Promise<OracleForward<T>> {
    if (signal?.aborted) throw abortReason(signal);
    if (this.batched) return this.enqueue(requestId, sequence, from, compute, signal);
    const called = this.clock.now();
    await this.device.acquire(signal);
    try {
      if (this.closed) throw new OracleReplicaClosedError('the oracle replica is closed');
      const started = this.clock.now();
      const cached = (requestId && this.caches.get(requestId)) || this.emptyCache();
      const length = sequenceLength(sequence);
      const common = commonPrefix(cached, sequence);
      // Like a KV cache: reuse the common prefix, but recompute from `from` at least (logits are not cached).
      const reusedTokens = min(common, from);
      const computedTokens = length - reusedTokens;
      // H(0 .. common) come from the cache, H(common + 1 .. length) are computed here.
      const fresh = this.freshHashes(cached, common, sequence, length);
      const at = (position: number): number => (position <= common ? cached.hashes[position] : fresh[position - common - 1]);
      const result = compute({ at });

      const remaining = oracleForwardMs(this.latency, reusedTokens, computedTokens) - (this.clock.now() - started);
      if (remaining > 0) await this.clock.sleep(remaining, signal);
      if (signal?.aborted) throw abortReason(signal);
      // Commit only a finished forward: an aborted one leaves the previous, consistent cache.
      if (requestId) this.commit(requestId, cached, common, sequence, length, fresh);
      return { result, reusedTokens, computedTokens, modelMs: this.clock.now() - started, batchRequests: 1, queueMs: started - called, batchTokens: computedTokens };
    } finally {
      this.device.release();
    }
  }

  /** Drops a request's cache, queued behind the device's pending forwards (none can bring it back). */
  async release(requestId: string): Promise<boolean> {
    if (this.batched) {
      this.gather.forget(requestId);
      if (!this.running && this.pending.length === 0) return this.caches.delete(requestId);
      return new Promise<boolean>((resolve) => this.pending.push(() => resolve(this.caches.delete(requestId))));
    }
    await this.device.acquire();
    try {
      return this.caches.delete(requestId);
    } finally {
      this.device.release();
    }
  }

  /**
   * Drops a request's cache at once, not queued behind the device: for a caller that knows no forward
   * of the request is pending (a simulation, once the request has finished: every call it made has
   * settled or been aborted, and an aborted forward never commits). Returns whether there was one.
   */
  forget(requestId: string): boolean {
    this.gather.forget(requestId);
    return this.caches.delete(requestId);
  }

  private emptyCache(): RequestCache {
    return { tokens: [], hashes: [this.model.rootHash()], stem: undefined, stemLength: 0 };
  }

  /** Drops every cache; forwards that get the device afterwards reject. */
  close(): void {
    this.closed = true;
    this.caches.clear();
  }

  /** Batching: queues a call for the next forward (starting one now when the device is idle). */
  private enqueue<T>(requestId: string, sequence: ForwardSequence, from: number, compute: (hashes: PrefixHashes) => T, signal?: AbortSignal): Promise<OracleForward<T>> {
    return new Promise<OracleForward<T>>((resolve, reject) => {
      const member: BatchMember = { requestId, sequence, from, compute, signal, resolve: resolve as BatchMember['resolve'], reject, settled: false, calledAt: this.clock.now() };
      if (signal) {
        member.onAbort = () => {
          if (member.settled) return;
          member.settled = true;
          const index = this.pending.indexOf(member);
          if (index >= 0) this.pending.splice(index, 1);
          reject(abortReason(signal));
          member.batch?.memberAborted();
        };
        signal.addEventListener('abort', member.onAbort, { once: true });
      }
      this.pending.push(member);
      this.gather.arrived(requestId, this.clock.now(), this.pendingCalls() >= this.batching.maxBatchRequests);
      if (!this.running) {
        this.running = true;
        // Calls that arrive at the same time (a burst: what the event loop has already received, or a
        // virtual clock's events of this instant) join this forward too.
        void this.clock.sleep(0).then(() => this.runBatches());
      }
    });
  }

  /** Batching: runs forwards while calls wait, then marks the device idle. */
  private async runBatches(): Promise<void> {
    try {
      for (;;) {
        // Releases queued before the next call happen now: they wait only for the forwards before them.
        while (this.pending.length > 0 && typeof this.pending[0] === 'function') (this.pending.shift() as () => void)();
        if (this.pending.length === 0) return;
        await this.gatherBatch();
        if (this.pending.length === 0 || typeof this.pending[0] === 'function') continue;
        await this.runBatch(this.takeBatch());
      }
    } finally {
      this.running = false;
    }
  }

  /** Calls (not releases) waiting for a forward. */
  private pendingCalls(): number {
    let calls = 0;
    for (const item of this.pending) if (typeof item !== 'function') calls++;
    return calls;
  }

  /**
   * Before a forward: while the last forward's requests that have no call waiting yet are expected back
   * (within {@link BatchGather.lingerMs} of its end) and the batch is not full, wait for them.
   */
  private async gatherBatch(): Promise<void> {
    const waiting: string[] = [];
    for (const item of this.pending) if (typeof item !== 'function') waiting.push(item.requestId);
    const ms = this.gather.waitMs(this.clock.now(), waiting, waiting.length >= this.batching.maxBatchRequests);
    if (ms > 0) await this.gather.wait(this.clock, ms);
  }

  /** The calls of the next forward: in arrival order up to a release, within the request and token limits. */
  private takeBatch(): Array<{ member: BatchMember; cached: RequestCache; common: number; reused: number; computed: number }> {
    const { maxBatchRequests, maxBatchTokens } = this.batching;
    const batch: Array<{ member: BatchMember; cached: RequestCache; common: number; reused: number; computed: number }> = [];
    let tokens = 0;
    while (batch.length < maxBatchRequests && this.pending.length > 0 && typeof this.pending[0] !== 'function') {
      const member = this.pending[0] as BatchMember;
      let cached = (member.requestId && this.caches.get(member.requestId)) || this.emptyCache();
      // Two calls of one request in a forward each commit their own sequence: give each its own copy.
      if (member.requestId && batch.some((other) => other.member.requestId === member.requestId)) {
        cached = { tokens: cached.tokens.slice(), hashes: cached.hashes.slice(), stem: cached.stem, stemLength: cached.stemLength };
      }
      const common = commonPrefix(cached, member.sequence);
      const reused = min(common, member.from);
      const computed = sequenceLength(member.sequence) - reused;
      if (batch.length > 0 && tokens + computed > maxBatchTokens) break;
      this.pending.shift();
      tokens += computed;
      batch.push({ member, cached, common, reused, computed });
    }
    return batch;
  }

  /** One batched forward: every call's result computed, one sleep for the batch, caches committed for the calls still wanted. */
  private async runBatch(batch: Array<{ member: BatchMember; cached: RequestCache; common: number; reused: number; computed: number }>): Promise<void> {
    const started = this.clock.now();
    const sleep = PlainAbortController.create();
    let live = batch.length;
    const handle = { memberAborted: () => (--live === 0 ? sleep.abort() : undefined) };
    let slowest = 0;
    let slowestTokens = 0;
    let tokens = 0;
    const work = batch.map(({ member, cached, common, reused, computed }) => {
      member.batch = handle;
      tokens += computed;
      const ms = oracleForwardMs(this.latency, reused, computed);
      if (ms > slowest || (ms === slowest && computed > slowestTokens)) {
        slowest = ms;
        slowestTokens = computed;
      }
      if (this.closed) return undefined;
      const fresh = this.freshHashes(cached, common, member.sequence, sequenceLength(member.sequence));
      const at = (position: number): number => (position <= common ? cached.hashes[position] : fresh[position - common - 1]);
      try {
        return { fresh, result: member.compute({ at }) };
      } catch (error) {
        return { fresh, error };
      }
    });
    // Every token beyond the batch's first costs batchMsPerToken, and no call runs faster than alone.
    const perToken = this.batching.batchMsPerToken;
    const forwardMs = max(slowest + perToken * (tokens - slowestTokens), this.latency.tpotMs + perToken * (tokens - 1));
    const remaining = forwardMs - (this.clock.now() - started);
    if (remaining > 0 && live > 0) await this.clock.sleep(remaining, sleep.signal).catch(() => undefined);
    const modelMs = this.clock.now() - started;
    this.gather.finished(this.clock.now(), modelMs, batch.map(({ member }) => (member.settled ? '' : member.requestId)));
    batch.forEach(({ member, cached, common, reused, computed }, i) => {
      if (member.settled) return;
      member.settled = true;
      if (member.onAbort) member.signal?.removeEventListener('abort', member.onAbort);
      const done = work[i];
      if (!done) return member.reject(new OracleReplicaClosedError('the oracle replica is closed'));
      if ('error' in done) return member.reject(done.error);
      if (member.requestId) this.commit(member.requestId, cached, common, member.sequence, sequenceLength(member.sequence), done.fresh);
      member.resolve({ result: done.result, reusedTokens: reused, computedTokens: computed, modelMs, batchRequests: batch.length, queueMs: started - member.calledAt, batchTokens: tokens });
    });
  }

  /** H(common + 1 .. length) of `sequence`, from the cache's H(common). */
  private freshHashes(cached: RequestCache, common: number, sequence: ForwardSequence, length: number): number[] {
    const fresh: number[] = [];
    let hash = cached.hashes[common];
    for (let n = common + 1; n <= length; n++) fresh.push((hash = this.model.nextHash(hash, n, tokenAt(sequence, n - 1))));
    return fresh;
  }

  /** Replaces the cache's tokens after `common` by the forward's (in place: only the new tokens are copied). */
  private commit(requestId: string, cache: RequestCache, common: number, sequence: ForwardSequence, length: number, fresh: readonly number[]): void {
    // The cache now holds the sequence, whose first stemLength tokens are the stem's.
    cache.stem = sequence.stem;
    cache.stemLength = sequence.stemLength;
    // Truncate only when the forward diverged from the cache (setting a length is not free).
    if (cache.tokens.length !== common) {
      cache.tokens.length = common;
      cache.hashes.length = common + 1;
    }
    for (let n = common; n < length; n++) cache.tokens.push(tokenAt(sequence, n));
    for (const hash of fresh) cache.hashes.push(hash);
    this.caches.set(requestId, cache);
  }
}

const NO_TOKENS: readonly number[] = [];

/** Weight of the newest return gap in a request's mean (see {@link BatchGather}). */
const GATHER_GAP_WEIGHT = 0.3;
/** How much longer than its mean return gap a forward waits for a request. */
const GATHER_GAP_MARGIN = 1.5;

/**
 * Batching: the wait before a forward for the requests of the forward before it. A caller that
 * sends its next call when the last one returns (non-SI; SI after one drafter call) is back a
 * round trip (and a draft) after the forward ends. A replica that starts the next forward at once,
 * with the calls that queued meanwhile, runs them without it: two requests on one replica then
 * alternate, one a forward each, and batching gains nothing until more requests than that share it.
 * So the replica learns, per request, how soon after a forward of it its next call arrives (the
 * mean of those gaps; a request that did not come back within a forward is not expected), and a
 * forward waits for the last forward's expected requests that have no call waiting yet, each until
 * 1.5 times its mean gap after that forward ended and never more than one forward. A full batch
 * goes at once; a request that was not in the last forward is never waited for.
 */
class BatchGather {
  /** Per request: the mean gap between the end of a forward of it and its next call here. */
  private readonly gaps = new Map<string, number>();
  /** The last forward's requests with no call since, and when each is due at the latest. */
  private readonly expected = new Map<string, number>();
  /** The last forward's requests with no call since, for learning their gaps. */
  private returning = new Set<string>();
  private endedAt = 0;
  private forwardMs = 0;
  private wake: (() => void) | undefined;

  /** A forward ended at `now` after `forwardMs`, with calls of these requests ('' for an aborted one). */
  finished(now: number, forwardMs: number, requestIds: readonly string[]): void {
    // Whoever did not come back within the forward since theirs is not expected any more.
    for (const id of this.returning) this.gaps.delete(id);
    this.endedAt = now;
    this.forwardMs = forwardMs;
    this.returning = new Set();
    this.expected.clear();
    for (const id of requestIds) {
      if (id === '') continue;
      this.returning.add(id);
      const gap = this.gaps.get(id);
      if (gap !== undefined) this.expected.set(id, now + min(GATHER_GAP_MARGIN * gap, forwardMs));
    }
  }

  /** A call of `requestId` arrived at `now`; `full` when the calls waiting fill a batch. */
  arrived(requestId: string, now: number, full: boolean): void {
    this.expected.delete(requestId);
    if (this.returning.delete(requestId)) {
      const gap = now - this.endedAt;
      const mean = this.gaps.get(requestId);
      if (gap > this.forwardMs) this.gaps.delete(requestId);
      else this.gaps.set(requestId, mean === undefined ? gap : mean + GATHER_GAP_WEIGHT * (gap - mean));
    }
    if (this.wake && (full || this.expected.size === 0)) this.wake();
  }

  /** Forgets a request (its cache was released: no more calls of it are coming). */
  forget(requestId: string): void {
    this.gaps.delete(requestId);
    this.returning.delete(requestId);
    this.expected.delete(requestId);
  }

  /** How long to wait at `now` with calls of `waiting` requests queued (0: start the forward). */
  waitMs(now: number, waiting: readonly string[], full: boolean): number {
    if (this.expected.size === 0) return 0;
    for (const id of waiting) this.expected.delete(id);
    let due = -Infinity;
    for (const [id, at] of this.expected) {
      if (at <= now) this.expected.delete(id);
      else due = Math.max(due, at);
    }
    return full || this.expected.size === 0 ? 0 : due - now;
  }

  /** Sleeps `ms` on `clock`, or until every expected request is back or the batch is full. */
  async wait(clock: Clock, ms: number): Promise<void> {
    const stop = PlainAbortController.create();
    this.wake = () => stop.abort();
    try {
      await clock.sleep(ms, stop.signal).catch(() => undefined);
    } finally {
      this.wake = undefined;
    }
  }
}

/** A call waiting for (or in) a batched forward. */
interface BatchMember {
  requestId: string;
  sequence: ForwardSequence;
  from: number;
  compute: (hashes: PrefixHashes) => unknown;
  signal?: AbortSignal;
  onAbort?: () => void;
  resolve: (forward: OracleForward<unknown>) => void;
  reject: (reason: unknown) => void;
  /** Resolved, rejected or aborted: nothing more happens to it. */
  settled: boolean;
  /** Clock time of the call. */
  calledAt: number;
  /** The forward it runs in, once it runs: told when it aborts (the forward stops when every call has). */
  batch?: { memberAborted(): void };
}

/**
 * The tokens of one forward, `head[0 .. headLength) ++ prefix ++ suffix`, read in place (nothing is
 * joined), and what it vouches for: its first `stemLength` tokens are those of the array `stem`.
 */
interface ForwardSequence {
  head: readonly number[];
  headLength: number;
  prefix: readonly number[];
  suffix: readonly number[];
  stem: readonly number[] | undefined;
  stemLength: number;
}

function sequenceLength(sequence: ForwardSequence): number {
  return sequence.headLength + sequence.prefix.length + sequence.suffix.length;
}

function tokenAt(sequence: ForwardSequence, position: number): number {
  if (position < sequence.headLength) return sequence.head[position];
  const n = position - sequence.headLength;
  return n < sequence.prefix.length ? sequence.prefix[n] : sequence.suffix[n - sequence.prefix.length];
}

/**
 * The length of the common prefix of the cache's tokens and the sequence's, comparing from where both
 * are known to hold the same generation's verified tokens (the same stem) on.
 */
function commonPrefix(cache: RequestCache, sequence: ForwardSequence): number {
  const cached = cache.tokens;
  const n = min(cached.length, sequenceLength(sequence));
  let i = sequence.stem !== undefined && sequence.stem === cache.stem ? min(cache.stemLength, sequence.stemLength, n) : 0;
  // The head (a stem's tokens) and the prefix, compared as arrays: the long parts of a sequence.
  const { head, headLength, prefix } = sequence;
  const headEnd = min(n, headLength);
  while (i < headEnd && cached[i] === head[i]) i++;
  if (i < headEnd) return i;
  const prefixEnd = min(n, headLength + prefix.length);
  while (i < prefixEnd && cached[i] === prefix[i - headLength]) i++;
  if (i < prefixEnd) return i;
  while (i < n && cached[i] === tokenAt(sequence, i)) i++;
  return i;
}
