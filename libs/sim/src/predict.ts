import type { Mode } from '@dsi/core';
import { eventRun } from './event';

/** A synthetic stack as `dsi serve ... --backend synthetic` runs it, to predict on a virtual clock. */
export interface SyntheticStack {
  /** The oracle seed (`--synthetic-seed`, default 1). */
  seed: number;
  /** The drafter's acceptance rate (`--a`). */
  a: number;
  /** The drafter's forward time per token (its ttft and tpot). */
  drafterMs: number;
  /** The target's forward time (its ttft and tpot; no per-token verify cost). */
  targetMs: number;
  /** Target replicas (DSI uses them all, non-SI and SI one). */
  servers: number;
  /** Per-call cost of the network and the services (each Draft and each Verify pays it once). */
  overheadMs: number;
}

/** What {@link predictSynthetic} predicts for one request. */
export interface SyntheticPrediction {
  /** Virtual wall time of the whole generation. */
  wallMs: number;
  /** The generated tokens: exactly those the real stack returns for the same seed and prompt. */
  tokens: number[];
}

/**
 * Event-mode prediction of one greedy request on a synthetic stack, for the online benchmark: the
 * libs/core scheduler (the orchestrator's code) over simulated replicas that run the synthetic
 * backend's oracle and latency model, on a virtual clock, with a per-call overhead. Same seed and
 * prompt as the real run, so the same tokens are drafted, accepted and rejected: the prediction differs
 * from the measurement only by timing.
 */
export async function predictSynthetic(
  stack: SyntheticStack,
  mode: Mode,
  prompt: readonly number[],
  maxNewTokens: number,
  lookahead: number,
): Promise<SyntheticPrediction> {
  const run = await eventRun(mode, {
    a: stack.a,
    c: stack.drafterMs,
    t: stack.targetMs,
    k: lookahead,
    tokens: maxNewTokens,
    servers: stack.servers,
    rtt: stack.overheadMs,
    seed: stack.seed,
    prompt,
  });
  return { wallMs: run.cost, tokens: run.tokens };
}
