/**
 * The event mode's simulated world: drafter and target replicas that do what the services do, over the
 * libs/core oracle pair and latency model (the synthetic backend's), on a virtual clock.
 */
import {
  DEFAULT_BATCH_COST_PER_TOKEN,
  OracleModel,
  OracleReplica,
  type Clock,
  type DraftCall,
  type DraftResult,
  type Drafter,
  type Lookahead,
  type PrefixHashes,
  type PrefixStem,
  type SignalRecycling,
  type TargetReplica,
  type VerifyCall,
  type VerifyResult,
} from '@dsi/core';

/**
 * The event-mode world: the libs/core oracle pair (the synthetic backend's model, seeded with `seed`)
 * with latencies in target-forward units and a drafter that agrees with probability `a`.
 */
export interface EventParams {
  a: number;
  /** A drifting workload: the drafter agrees with `aAfter` from prefix length `aSwitchAt` on (both or neither). */
  aAfter?: number;
  aSwitchAt?: number;
  /** Drafter forward latency per token. */
  c: number;
  /** Lookahead: a fixed k, or 'auto'. */
  k: Lookahead;
  /** Target forward latency (one token). */
  t: number;
  tokens: number;
  servers: number;
  /** Latency of a replica's first target forward for the request (prefill); default `t`. */
  ttft?: number;
  /** Latency of a drafter's first forward for the request (prefill); default `c`. */
  drafterTtft?: number;
  /** Extra target latency per additional token computed in one forward (verifying k drafts costs t + k * this). */
  verifyPerToken?: number;
  /** Network round trip (and service overhead) added to every call. */
  rtt?: number;
  /** The round trip of a drafter call, when it differs from a target call's; default `rtt`. */
  drafterRtt?: number;
  /** The oracle's seed (drafter and target share it). */
  seed: number;
  /** The prompt's tokens; default one token, 1 + seed % 200. */
  prompt?: readonly number[];
  /**
   * Calls one forward of a replica (drafter or target) may batch: those that arrive while a forward
   * runs join the next. Default 1 (no batching); the schedulers then send each replica this many calls at once.
   */
  maxBatchRequests?: number;
  /** Tokens one batched forward may compute. Default unbounded. */
  maxBatchTokens?: number;
  /**
   * Latency of each token a batched forward computes beyond its slowest call's, as a fraction of the
   * replica's forward (t for targets, c for drafters). Default {@link DEFAULT_BATCH_COST_PER_TOKEN}.
   */
  batchCostPerToken?: number;
}

const NO_STEM: Required<PrefixStem> = Object.freeze({ stem: [], stemLength: 0 });

/** A call's stem as these ports read it: its prefix is `stem[0 .. stemLength) ++ call.prefix` (none: the prefix alone). */
function stemOf(call: DraftCall | VerifyCall): Required<PrefixStem> {
  return call.stem === undefined || call.stemLength === undefined ? NO_STEM : (call as Required<PrefixStem>);
}

/** Sleeps a call's round trip (nothing when it is 0, so no timer is registered). */
function roundTrip(clock: Clock, rtt: number, signal: AbortSignal): Promise<void> | undefined {
  return rtt > 0 ? clock.sleep(rtt, signal) : undefined;
}

/**
 * A simulated drafter replica: what the drafter service does for one Draft (one cached forward per
 * token, the greedy choice of each), on an {@link OracleReplica} of the drafter oracle, after a round
 * trip of `rtt`. Stops early at the oracle's end-of-sequence id (which it never peaks on).
 */
export class SimulatedDrafter implements Drafter, SignalRecycling {
  /** A call's listeners on its signal are gone once it settles (see {@link SignalRecycling}). */
  readonly recyclesSignals = true;
  /** Reads a call's arrays only (see {@link SignalRecycling}). */
  readonly sharesPrefixes = true;
  /** Hands a call's signal only to the oracle replica and the clock (see {@link SignalRecycling}). */
  readonly plainSignals = true;
  /** Reads a call's prefix as stem ++ prefix (see {@link SignalRecycling}). */
  readonly stemPrefixes = true;
  /** Draft calls started (including cancelled ones). */
  calls = 0;

  constructor(
    private readonly replica: OracleReplica,
    private readonly clock: Clock,
    private readonly rtt = 0,
    /** Names the replica when several drafters serve (a load simulation). */
    readonly id?: string,
  ) {}

  /** Drops a finished request's cache (see {@link OracleReplica.forget}). */
  forget(requestId: string): void {
    this.replica.forget(requestId);
  }

  async draft(call: DraftCall, signal: AbortSignal): Promise<DraftResult> {
    this.calls += 1;
    await roundTrip(this.clock, this.rtt, signal);
    const model = this.replica.model;
    const stem = stemOf(call);
    const prefixLength = stem.stemLength + call.prefix.length;
    const tokens: number[] = [];
    let queueMs = 0;
    const next = (hashes: PrefixHashes): number => model.next(hashes.at(prefixLength + tokens.length), prefixLength + tokens.length);
    while (tokens.length < call.maxTokens) {
      signal.throwIfAborted();
      // Over the prefix ++ tokens (the drafts so far), which the forward reads without a copy.
      const forward = await this.replica.forwardStemmed(call.requestId, stem, call.prefix, tokens, prefixLength + tokens.length - 1, next, signal);
      queueMs += forward.queueMs;
      tokens.push(forward.result);
      if (forward.result === model.eosTokenId) break;
    }
    return { tokens, queueMs };
  }
}

/**
 * A simulated target replica: what the target service does for one Verify under the greedy rule (one
 * forward over the tokens its cache lacks, then accept drafts while they equal the truth), on an
 * {@link OracleReplica} of the target oracle, after a round trip of `rtt`.
 */
export class SimulatedTarget implements TargetReplica, SignalRecycling {
  /** A call's listeners on its signal are gone once it settles (see {@link SignalRecycling}). */
  readonly recyclesSignals = true;
  /** Reads a call's arrays only (see {@link SignalRecycling}). */
  readonly sharesPrefixes = true;
  /** Hands a call's signal only to the oracle replica and the clock (see {@link SignalRecycling}). */
  readonly plainSignals = true;
  /** Reads a call's prefix as stem ++ prefix (see {@link SignalRecycling}). */
  readonly stemPrefixes = true;
  /** Verify calls started (including cancelled ones). */
  forwards = 0;
  /** Virtual time spent in forwards, cancelled ones up to their cancellation (the round trip excluded). */
  busyTime = 0;

  constructor(
    readonly id: string,
    private readonly replica: OracleReplica,
    private readonly clock: Clock,
    private readonly rtt = 0,
  ) {}

  /** Drops a finished request's cache (see {@link OracleReplica.forget}). */
  forget(requestId: string): void {
    this.replica.forget(requestId);
  }

  async verify(call: VerifyCall, signal: AbortSignal): Promise<VerifyResult> {
    this.forwards += 1;
    await roundTrip(this.clock, this.rtt, signal);
    const model = this.replica.model;
    const stem = stemOf(call);
    const start = stem.stemLength + call.prefix.length;
    const drafts = call.drafts;
    const began = this.clock.now();
    try {
      const { result, modelMs, queueMs, batchRequests, batchTokens } = await this.replica.forwardStemmed(
        call.requestId,
        stem,
        call.prefix,
        drafts,
        start - 1,
        (hashes): VerifyResult => {
          for (let i = 0; i < drafts.length; i++) {
            const truth = model.next(hashes.at(start + i));
            if (drafts[i] !== truth) return { accepted: i, tokens: [...drafts.slice(0, i), truth] };
          }
          return { accepted: drafts.length, tokens: [...drafts, model.next(hashes.at(start + drafts.length))] };
        },
        signal,
      );
      result.report = { modelMs, queueMs, batchRequests, batchTokens };
      return result;
    } finally {
      this.busyTime += this.clock.now() - began;
    }
  }
}

/** The simulated replicas of one event-mode world, on one clock. */
export interface SimulatedReplicas {
  /** The target oracle (its end-of-sequence id is the generations'). */
  targetModel: OracleModel;
  drafters: SimulatedDrafter[];
  targets: SimulatedTarget[];
}

/**
 * Builds `counts.targets` simulated target replicas and `counts.drafters` simulated drafters over one
 * oracle pair seeded with `p.seed`, each replica its own device (one forward at a time) with the
 * latencies of `p`, all on `clock`.
 */
export function simulatedReplicas(p: EventParams, clock: Clock, counts: { targets: number; drafters: number }): SimulatedReplicas {
  const rtt = p.rtt ?? 0;
  const drafterModel = new OracleModel({ role: 'drafter', seed: p.seed, acceptance: p.a, acceptanceAfter: p.aAfter, acceptanceSwitchAt: p.aSwitchAt });
  const targetModel = new OracleModel({ role: 'target', seed: p.seed });
  const drafterLatency = { ttftMs: p.drafterTtft ?? p.c, tpotMs: p.c };
  const targetLatency = { ttftMs: p.ttft ?? p.t, tpotMs: p.t, verifyMsPerToken: p.verifyPerToken ?? 0 };
  const cost = p.batchCostPerToken ?? DEFAULT_BATCH_COST_PER_TOKEN;
  const batching = (forwardMs: number) => ({ maxBatchRequests: p.maxBatchRequests ?? 1, maxBatchTokens: p.maxBatchTokens ?? Infinity, batchMsPerToken: cost * forwardMs });
  return {
    targetModel,
    drafters: Array.from(
      { length: counts.drafters },
      (_, i) => new SimulatedDrafter(new OracleReplica(drafterModel, drafterLatency, clock, batching(p.c)), clock, p.drafterRtt ?? rtt, `drafter-${i}`),
    ),
    targets: Array.from({ length: counts.targets }, (_, i) => new SimulatedTarget(`server-${i}`, new OracleReplica(targetModel, targetLatency, clock, batching(p.t)), clock, rtt)),
  };
}

let quietRuns = 0;
let savedStackTraceLimit = Error.stackTraceLimit;

/**
 * Runs `work` (a simulation) with `Error.stackTraceLimit` at 0, restoring it when the last of the
 * overlapping calls settles. A simulation constructs an error for every cancelled call (the
 * scheduler's WorkCancelledError, the abort reason its ports reject with); nobody reads their stacks,
 * but capturing them is a tenth of a run's time. The limit is global: errors created meanwhile by
 * anything else in the process (other work interleaved with a run) have no stack either.
 */
export async function withoutStackTraces<T>(work: () => Promise<T>): Promise<T> {
  if (quietRuns++ === 0) {
    savedStackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
  }
  try {
    return await work();
  } finally {
    if (--quietRuns === 0) Error.stackTraceLimit = savedStackTraceLimit;
  }
}

