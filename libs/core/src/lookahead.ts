/**
 * `lookahead: auto`: speculation that tunes itself (docs/architecture.md, "Speculation that tunes
 * itself"). Pure: the generation's scheduler feeds it what the request has verified and what the pool
 * has measured, and asks, after every commit, how to speculate next.
 *
 * Acceptance per draft position. {@link PositionAcceptance} keeps, for each position of a block (0 is
 * the first draft after the block's start), how many drafts there were judged and accepted, with
 * exponential forgetting (a draft judged 23 drafts ago weighs half). A position's rate shrinks towards
 * the request's overall rate, which shrinks towards the pool's (the prior: other requests on the same
 * pair), so the first blocks of a request are judged by the pool's experience and few observations
 * never swing the choice; the prior's weight is forgotten like the request's own drafts, so a request
 * is not held to the pool's past. Drift: a fast estimate (about the last 9 drafts) watches the slow
 * one; while they differ by more than 2 standard errors of the fast one, every verdict also halves the
 * slow estimate's memory, so a drop from 0.95 to 0.05 is followed within a few verifications instead of
 * a few dozen drafts (event mode, SI on 4 targets, one client: auto went from 1.02-1.03x to 1.14x the
 * best fixed k on such drifts, with the no-drift cases unchanged). E(k), the expected tokens a
 * verification of k drafts commits, is 1 + sum over j = 1..k of the product of the rates of positions
 * 0..j-1.
 *
 * The choice ({@link chooseLookahead}), from t (the mean Verify call, network included, without the
 * call's wait at the replica when the replicas report it), what one more token in every call adds to
 * t (a batched forward's cost per token times the calls a forward runs: larger blocks slow every
 * request's forward), c (drafter ms per drafted token) and the request's *share* of the pool (replica
 * slots over the generations sharing them: what other requests' lanes leave it):
 * - Sequential speculation (SI) commits E(k) tokens per t + d + k c (d: a drafter call's fixed cost),
 *   but no faster than its share of the replicas allows (share x E(k) per t) nor its share of the
 *   drafters (drafter share x E(k) per d + k c): under load the binding one decides. Its best k
 *   maximises that rate. When
 *   even the best is below non-SI's (min(1, share) / t), drafting is not worth waiting for: the lane never waits
 *   and carries whatever one draft is ready (non-SI behaviour, still measuring acceptance).
 * - With 2 replicas or more to itself (replicas over generations: a block sent to a busy replica waits
 *   for its forward to end even when the replica batches, so only idle replicas verify in parallel),
 *   DSI keeps about t / (k c) blocks in flight; k is the smallest that fits, ceil(t / (replicas c)),
 *   and never above the sequential best (beyond it, longer blocks cost more in drafting time than they
 *   save in forwards). The blocks in flight are capped by those replicas, the drafts kept ahead by one
 *   block more.
 * - With less than 2 replicas (the pool saturated by other requests' lanes), DSI does exactly what SI
 *   does with its best k: every replica-ms goes to a lane full of drafts, so speculation never costs
 *   another request throughput. The run (scheduler.ts, retune) makes one exception: on a *crowded*
 *   pool of unbatched replicas below saturation (a replica idle now and then) it keeps that k but
 *   leaves the lane and the blocks beyond it to the pool's rules, as for a fixed k.
 * No tables by batch size: a batching pool shows up as more slots, a verification's cost per token
 * and, for lanes that wait for their drafts, their mean wait at the replica. On a batching pool whose
 * replicas each serve several requests (scheduler.ts, retune) the choice is the pool's: made from the
 * pool's acceptance, so that the requests a replica batches keep one cadence; there ({@link
 * LookaheadInputs.batching}) the shares count places in the pools' forwards rather than calls, combine
 * softly ({@link sharesRate}), and of the k's within {@link NEAR_BEST} of the best the shortest is taken.
 */

/** The k the run starts with before anything is measured (the pool has no verification or draft timed yet). */
export const AUTO_INITIAL_LOOKAHEAD = 4;

/** Forgetting per judged draft: a draft judged 23 drafts ago weighs half (0.97^23 = 0.5). */
const DECAY = 0.97;
/** Forgetting of the fast estimate that watches for drift: at most (1 + 0.8) / (1 - 0.8) = 9 drafts' worth of evidence. */
const FAST_DECAY = 0.8;
/** Standard errors between the fast and the slow estimate that mean the workload drifted. */
const DRIFT_Z = 2;
/** Extra forgetting of the slow estimate per verdict while the fast one says the workload drifted. */
const DRIFT_FORGET = 0.5;
/**
 * How much better plain decoding must be expected to be for a speculating request to stop (and
 * speculation for a decoding one to start): near the break-even the acceptance estimate's noise flips
 * lanes to going without drafts and back, each flip wasting the drafter call in flight. Event mode,
 * batched pool, a = 0.5 (break-even near 0.38), DSI auto / best SI: 8 clients 0.961 -> 0.968, 16
 * clients 0.987 -> 1.006.
 */
const SWITCH_MARGIN = 1.05;
/**
 * On batching pools, the shortest k whose expected rate is within this fraction of the best k's is
 * chosen (chooseLookahead). Event mode, 4 targets and 2 drafters batching 8, a = 0.8, with the load
 * bench's calibration (a 3.6 ms call overhead), auto / the best fixed-k SI at 8, 16, 32 clients: 0.958,
 * 0.941, 0.962 -> 0.996, 0.992, 0.994 (k 5-6 chosen against a best of 4-5); with a 1.1 ms overhead
 * 0.990, 0.983, 0.984 -> 0.994, 0.983, 0.999; the a = 0.5 pair unchanged (k = 1). 2% gave 0.976 at 8
 * clients there (k 4 chosen against a best of 5), 1.004 and 1.017 at 16 and 32.
 */
const NEAR_BEST = 0.01;
/** Pseudo-observations of the pool's rate in the request's (a request's first drafts barely move it). */
const POOL_WEIGHT = 24;
/** Pseudo-observations of the request's rate in a position's (besides the prior's, while it lasts). */
const POSITION_WEIGHT = 6;

/** Decayed per-position acceptance of one request's drafts (see the module comment). */
export class PositionAcceptance {
  private readonly judged: number[] = [];
  private readonly accepted: number[] = [];
  private totalJudged = 0;
  private totalAccepted = 0;
  /** The prior's pseudo-observations, forgotten like real ones (a drifted request is not held to the pool's past). */
  private priorWeight = POOL_WEIGHT;
  private fastJudged = 0;
  private fastAccepted = 0;
  private fastSquares = 0;

  /** Records the verdict on the draft at `position` of its block (0: the first draft). */
  record(position: number, accepted: boolean): void {
    this.fastJudged = this.fastJudged * FAST_DECAY + 1;
    this.fastAccepted = this.fastAccepted * FAST_DECAY + (accepted ? 1 : 0);
    this.fastSquares = this.fastSquares * FAST_DECAY * FAST_DECAY + 1;
    const decay = this.drifted() ? DECAY * DRIFT_FORGET : DECAY;
    for (let i = 0; i < this.judged.length; i++) {
      this.judged[i] *= decay;
      this.accepted[i] *= decay;
    }
    this.priorWeight *= decay;
    this.totalJudged = this.totalJudged * decay + 1;
    this.totalAccepted = this.totalAccepted * decay + (accepted ? 1 : 0);
    while (this.judged.length <= position) {
      this.judged.push(0);
      this.accepted.push(0);
    }
    this.judged[position] += 1;
    if (accepted) this.accepted[position] += 1;
  }

  /**
   * Whether the recent drafts (the fast estimate) have left the band the slow estimate allows them:
   * more than {@link DRIFT_Z} standard errors of a rate measured over the fast estimate's memory.
   */
  private drifted(): boolean {
    if (this.totalJudged < 8) return false;
    const slow = (this.totalAccepted + 1) / (this.totalJudged + 2);
    const fast = this.fastAccepted / this.fastJudged;
    // The fast estimate's effective sample size, (sum of weights)^2 / sum of squared weights: at most (1 + FAST_DECAY) / (1 - FAST_DECAY).
    const n = (this.fastJudged * this.fastJudged) / this.fastSquares;
    return Math.abs(fast - slow) > DRIFT_Z * Math.sqrt((slow * (1 - slow)) / n);
  }

  /** The request's acceptance over every position, shrunk towards `prior`. */
  overall(prior: number): number {
    return (this.totalAccepted + this.priorWeight * prior) / (this.totalJudged + this.priorWeight);
  }

  /** Probability the draft at `position` is accepted given those before it were, shrunk towards {@link overall}. */
  rate(position: number, prior: number): number {
    const overall = this.overall(prior);
    const judged = this.judged[position] ?? 0;
    const accepted = this.accepted[position] ?? 0;
    // A position inherits the prior's weight too: while the request has few drafts of its own, two
    // rejections at position 0 must not swing its rate (they took a = 0.5 to 0.35 with 6 alone).
    const weight = POSITION_WEIGHT + this.priorWeight;
    return (accepted + weight * overall) / (judged + weight);
  }
}

/** What {@link chooseLookahead} decides from. */
export interface LookaheadInputs {
  mode: 'si' | 'dsi';
  /** Acceptance of the draft at each block position given the earlier ones were accepted. */
  acceptance(position: number): number;
  /**
   * Mean Verify call, ms: the round trip and the forward, without a wait at the replica for a forward
   * in progress when the replicas report it (a call the replica's next forward waits for has none).
   */
  verifyMs: number;
  /**
   * The mean forward's model time on the replica, ms, where `verifyMs` was measured (batching pools
   * only): what a forward occupies the replica for, without the call's round trip.
   */
  verifyForwardMs?: number;
  /** Tokens a Verify call carries on average (drafts + 1) where `verifyMs` was measured; default 1. */
  verifyTokens?: number;
  /**
   * What one more token in every call adds to a Verify call, ms (a batching replica's forward costs
   * more per token it runs for all its calls); default 0. A call of n tokens then takes
   * verifyMs + verifyMsPerToken x (n - verifyTokens).
   */
  verifyMsPerToken?: number;
  /**
   * How much longer lanes that wait for their drafts wait at the replica than lanes that go at once,
   * ms; default 0. On a batching replica shared by several requests a lane that goes when its last
   * verdict returns joins the replica's next forward (the replica waits for it), while one that first
   * waits for a drafter call may arrive with that forward under way and wait for its end.
   */
  waitingLaneQueueMs?: number;
  /** Drafter ms per drafted token, and the fixed cost of a drafter call (network, service). */
  draftMsPerToken: number;
  draftCallMs?: number;
  /**
   * The mean wait of a lane's drafter call for a drafter (for a lease, and at a batching drafter for
   * its forwards), ms; default 0: a lane that waits for its drafts waits that much more a cycle.
   */
  laneDraftQueueMs?: number;
  /**
   * Whether the pools batch the calls that arrive during a forward and their lanes queue for the next
   * (see sharesRate and chooseLookahead); default false.
   */
  batching?: boolean;
  /** Target replica slots this request can count on: the pool's slots over the generations sharing it (throughput). */
  share: number;
  /**
   * Target replicas this request can count on: replicas over generations (default: `share`). A block
   * sent to a replica that is busy waits for its forward to end, even when the replica batches: only
   * idle replicas make verifications run in parallel, so they size DSI's blocks.
   */
  replicaShare?: number;
  /** Drafter slots this request can count on, the same way (default: unlimited). */
  drafterShare?: number;
  /**
   * Drafter replicas this request can count on: drafters over generations (default: `drafterShare`).
   * A drafter call sent to a drafter that is busy waits for its forward to end, batching or not, so
   * drafting ahead of the lane pays only with a drafter to itself.
   */
  drafterReplicaShare?: number;
  /** The largest k allowed. */
  maxLookahead: number;
  /** The k in force now: kept unless another is expected to be at least 1% better (no flapping on noise). */
  current?: number;
  /**
   * Whether the request speculates now (true) or plainly decodes ('nonsi', false); undefined: no choice
   * made yet. Switching either way needs the other to be {@link SWITCH_MARGIN} better.
   */
  speculating?: boolean;
}

/** How to speculate next: the scheduler's limits for the coming blocks. */
export interface LookaheadChoice {
  /** Drafts per block (k); with `behaviour` 'nonsi' the lane carries at most this many ready drafts. */
  lookahead: number;
  /**
   * 'dsi': blocks in flight on several replicas; 'overlap': one lane at a time, full of drafts, the
   * next block drafted while it verifies; 'si': one lane at a time, drafted after it (mode si);
   * 'nonsi': the lane never waits for drafts.
   */
  behaviour: 'nonsi' | 'si' | 'overlap' | 'dsi';
  /** Verifications in flight at once (1 unless 'dsi'). */
  parallel: number;
  /** E(k) under the estimates: the tokens a verification of a full block is expected to commit. */
  expectedTokens: number;
}

/**
 * E(k) for k = 0..max under `acceptance` (index k), and P(k), the chance that all of the first k
 * drafts are accepted.
 */
export function expectedTokensByLookahead(acceptance: (position: number) => number, max: number): { expected: number[]; reach: number[] } {
  const expected = [1];
  const reachAll = [1];
  let reach = 1;
  for (let k = 1; k <= max; k++) {
    // Past a negligible chance of reaching a position, E stays put: no need to ask further.
    if (reach > 1e-9) reach *= acceptance(k - 1);
    expected.push(expected[k - 1] + reach);
    reachAll.push(reach);
  }
  return { expected, reach: reachAll };
}

/**
 * The rate a request's shares of the target and the drafter pools allow together. Apart, the lower
 * binds. Batching pools ({@link LookaheadInputs.batching}) couple: a call that arrives mid-forward
 * waits for that forward's end, so a lane going through both pools near their limits loses part of a
 * forward at each; there the two combine as (r^-2 + d^-2)^-1/2, which is the lower of them when the
 * other has room and about 0.7 of either when both bind alike. Event mode, 4 targets and 2 drafters
 * batching 8, 64 clients, auto over SI at its best k: a = 0.8 0.92 -> 0.99 (k 7-8 -> 4-5, where
 * the drafters' share had just room), a = 0.5 0.85 -> 0.99 (k 2-3 -> 1); with the shares counted in
 * forwards, not calls (chooseLookahead), a = 0.5 with the load bench's 3.2 ms call overhead 0.90 -> 1.00
 * (the drafters' share charged each call's round trip, and plain decoding won).
 */
function sharesRate(replicas: number, drafters: number, coupled: boolean): number {
  if (!coupled || !Number.isFinite(drafters)) return Math.min(replicas, drafters);
  return (replicas ** -2 + drafters ** -2) ** -0.5;
}

/** The choice of the module comment. */
export function chooseLookahead(inputs: LookaheadInputs): LookaheadChoice {
  const { verifyMs: t, draftMsPerToken: c, maxLookahead } = inputs;
  const perToken = inputs.verifyMsPerToken ?? 0;
  const baseTokens = inputs.verifyTokens ?? 1;
  // A time measured at `baseTokens` tokens a call (the call, or its forward), at `tokens` tokens a call;
  // never below a quarter of it (a fit is only trusted near its data).
  const atTokens = (ms: number, tokens: number): number => Math.max(ms / 4, ms + perToken * (tokens - baseTokens));
  const verifyAt = (tokens: number): number => atTokens(t, tokens);
  const plain = verifyAt(1);
  const waitingQueue = inputs.waitingLaneQueueMs ?? 0;
  const callMs = inputs.draftCallMs ?? 0;
  const draftQueue = inputs.laneDraftQueueMs ?? 0;
  const coupled = inputs.batching === true;
  const forwardMs = inputs.verifyForwardMs;
  const targetShare = inputs.share;
  const drafterShare = inputs.drafterShare ?? Infinity;
  const replicas = inputs.replicaShare ?? targetShare;
  // Drafting ahead of the lane needs a drafter to itself: drafters shared by several requests are
  // better spent on their lanes' blocks (drafting ahead there only slows the other lanes' drafts).
  // Drafters, not slots: a call sent to a batching drafter mid-forward waits for that forward to end.
  const overlap = inputs.mode === 'dsi' && (inputs.drafterReplicaShare ?? drafterShare) >= 1;
  const { expected, reach } = expectedTokensByLookahead((position) => inputs.acceptance(position), maxLookahead + 1);
  let best = 1;
  let bestRate = -Infinity;
  let currentRate: number | undefined;
  const rates: number[] = [];
  for (let k = 1; k <= maxLookahead; k++) {
    const drafting = callMs + k * c;
    // SI drafts each block after the last verdict. Overlapping drafts the next block while the lane
    // verifies: only when a draft of the lane (or the bonus token's) is rejected, P = 1 - reach[k + 1],
    // is the next block drafted after the verdict; the drafter then works (2 - P) blocks per cycle.
    const missed = overlap ? 1 - reach[k + 1] : 1;
    const drafterWork = overlap ? (1 + missed) * drafting : drafting;
    // Its own cycle, or its share of the replicas' time, or of the drafters' time, whichever binds.
    const tk = verifyAt(k + 1) + waitingQueue;
    // What a call occupies of the pools. Apart: a slot from grant to release (the call). Batching pools,
    // whose lanes queue at a replica for its next forward: a place in a forward (its model time at k + 1
    // tokens a call), and at the drafters k forwards' places (a call's round trip holds no drafter).
    const replicaMs = coupled && forwardMs !== undefined ? atTokens(forwardMs, k + 1) : tk;
    const drafterMs = coupled ? (overlap ? 1 + missed : 1) * k * c : drafterWork;
    const rate = expected[k] * Math.min(1 / (tk + missed * (drafting + draftQueue)), sharesRate(targetShare / replicaMs, drafterMs > 0 ? drafterShare / drafterMs : Infinity, coupled));
    rates[k] = rate;
    if (rate > bestRate + 1e-12) {
      best = k;
      bestRate = rate;
    }
    if (k === inputs.current) currentRate = rate;
  }
  if (coupled) {
    // Batching pools: the shortest block within NEAR_BEST of the best. Near its top the rate is flat
    // and the estimate's noise picks among k's a step or two apart, while a longer block's cycle
    // varies more (its commits spread wider) and the requests a forward batches drift apart.
    for (let k = 1; k < best; k++) {
      if (rates[k] >= bestRate * (1 - NEAR_BEST)) {
        best = k;
        break;
      }
    }
  }
  if (currentRate !== undefined && currentRate * 1.01 >= bestRate) {
    best = inputs.current as number;
    bestRate = currentRate;
  }
  const margin = inputs.speculating === undefined ? 1 : inputs.speculating ? 1 / SWITCH_MARGIN : SWITCH_MARGIN;
  if (!(bestRate * plain > Math.min(1, targetShare) * margin)) return { lookahead: 1, behaviour: 'nonsi', parallel: 1, expectedTokens: expected[1] };
  if (inputs.mode === 'si' || !(replicas >= 2)) return { lookahead: best, behaviour: overlap ? 'overlap' : 'si', parallel: 1, expectedTokens: expected[best] };
  const fits = c > 0 ? Math.ceil(t / (replicas * c) - 1e-9) : best;
  const k = Math.max(1, Math.min(best, fits));
  // About t / (k c) blocks keep the drafter busy; one more covers the lane's turnover.
  const parallel = Math.max(1, Math.min(Math.floor(replicas), c > 0 ? Math.ceil(t / (k * c)) + 1 : Math.floor(replicas)));
  return { lookahead: k, behaviour: 'dsi', parallel, expectedTokens: expected[k] };
}
