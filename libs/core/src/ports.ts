/**
 * The ports through which the schedulers see the world (docs/architecture.md, "One scheduler, two clocks"). The
 * orchestrator implements them over gRPC with the real clock; the simulator's event mode implements
 * them with simulated latencies on a {@link VirtualClock}. Every port call gets an AbortSignal: when the
 * scheduler aborts it (a preemption, the end of the generation, the client going away), the port stops
 * the work and rejects with the signal's reason.
 */
import type { SamplingParams } from './rules';

/** Asks the drafter to extend `prefix` (prompt plus verified output plus drafts) by up to `maxTokens`. */
export interface DraftCall {
  /** Stable for the whole generation, so a drafter can keep one KV cache per request. */
  requestId: string;
  prefix: readonly number[];
  maxTokens: number;
  /**
   * Optional, for a port that keeps a cache per request and may skip comparing what it can trust: the
   * generation's verified tokens, one live array per generation that only ever grows (a token it holds
   * never changes), and how many of them begin the call's prefix (`prefix[i] === stem[i]` for
   * i < stemLength). A port that declares `stemPrefixes` (scheduler.ts, SignalRecycling) gets in
   * `prefix` only the tokens after those: its prefix is `stem[0 .. stemLength) ++ prefix`.
   */
  stem?: readonly number[];
  stemLength?: number;
  sampling: SamplingParams;
  /** Set under the rejection rule, which needs the drafter's distribution q for every draft. */
  returnProbs: boolean;
}

/** What a drafter proposes: at most `maxTokens` tokens (fewer is allowed, e.g. at the model's end). */
export interface DraftResult {
  tokens: number[];
  /** tokens.length rows of vocab probabilities (row-major), present when `returnProbs` was set. */
  probs?: Float32Array;
  /**
   * When the drafter reports it: how long the call waited at the drafter for forwards in progress
   * (a batching drafter queues the calls that arrive during a forward), summed over its forwards.
   * Lookahead 'auto' fits a drafter call's cost without it.
   */
  queueMs?: number;
}

/** Asks a target replica to verify `drafts` (at absolute positions prefix.length, ...) after `prefix`. */
export interface VerifyCall {
  /** Stable for the whole generation: the replica keeps a KV cache per requestId. */
  requestId: string;
  prefix: readonly number[];
  /** May be empty: then the replica performs one plain target step (the non-SI lane). */
  drafts: readonly number[];
  /**
   * Optional, for a port that keeps a cache per request and may skip comparing what it can trust: the
   * generation's verified tokens, one live array per generation that only ever grows (a token it holds
   * never changes), and how many of them begin the call's prefix (`prefix[i] === stem[i]` for
   * i < stemLength). A port that declares `stemPrefixes` (scheduler.ts, SignalRecycling) gets in
   * `prefix` only the tokens after those: its prefix is `stem[0 .. stemLength) ++ prefix`.
   */
  stem?: readonly number[];
  stemLength?: number;
  sampling: SamplingParams;
  /** The drafter's q rows for exactly these drafts (drafts.length x vocab); rejection rule only. */
  draftProbs?: Float32Array;
}

/** A replica's verdict: `accepted` drafts (a prefix of them) and then exactly one target token. */
export interface VerifyResult {
  accepted: number;
  /** The accepted drafts followed by one target token (the correction, or the bonus token). */
  tokens: number[];
  /** What the replica says about the forward that served the call, when it says (lookahead 'auto' learns from it). */
  report?: ForwardReport;
}

/** A replica's account of the forward that served one call. */
export interface ForwardReport {
  /** Time in the model, ms. */
  modelMs: number;
  /** Time the call waited at the replica before that forward began, ms. */
  queueMs: number;
  /** Calls the forward ran together (1 unless the replica batches), the call itself included. */
  batchRequests: number;
  /** Tokens the forward computed over all of its calls. */
  batchTokens: number;
}

/** The small model that guesses ahead. */
export interface Drafter {
  /** Names the drafter replica in events and traces when several serve (optional). */
  readonly id?: string;
  draft(call: DraftCall, signal: AbortSignal): Promise<DraftResult>;
}

/** One target model instance (one GPU); at most one verification per replica runs at a time. */
export interface TargetReplica {
  /** Names the replica in events, traces and errors. */
  readonly id: string;
  verify(call: VerifyCall, signal: AbortSignal): Promise<VerifyResult>;
}

/**
 * Time as the scheduler sees it: milliseconds on the real clock in the orchestrator, virtual ms in
 * tests and in the simulator. `sleep` rejects with the signal's reason when the signal aborts, and then
 * leaves no timer behind.
 */
export interface Clock {
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}
