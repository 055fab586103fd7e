/**
 * The one scheduler behind non-SI, SI and DSI (docs/architecture.md, "The DSI scheduler (per request)"). The three
 * modes are the same state machine with different limits:
 *
 * | mode    | lookahead | parallel verifications | drafting while verifying | the lane waits for drafts |
 * |---------|-----------|------------------------|--------------------------|---------------------------|
 * | `nonsi` | 0         | 1                      | -                        | -                         |
 * | `si`    | k         | 1                      | no                       | yes (one drafter call)    |
 * | `dsi`   | k         | every replica          | yes                      | no                        |
 *
 * State: `verified` (prompt plus committed output, V), `drafts` (D, the drafts after V), `epoch`, and
 * `blocks`: the dispatched verification blocks of the current epoch, contiguous and in position order.
 *
 * - Replicas: a run does not pick replicas itself. It tells a {@link TargetScheduler} (and a
 *   {@link DrafterScheduler}) what it wants, and builds the work when it is granted a replica. Given
 *   `{ drafter, targets, clock }` a run makes private schedulers and has the replicas to itself: then
 *   a wish is granted at once whenever a replica is free, as described below. Given shared schedulers
 *   (`{ targetScheduler, drafterScheduler, clock }`, docs/architecture.md, "Many requests at once"),
 *   lanes of every run go before speculative blocks, and a speculative block may be preempted for
 *   another run's lane (it then waits again). On a saturated pool (as many runs as replicas) replica
 *   time is the bottleneck: a lane whose drafts are on their way waits for them when that is worth
 *   more committed tokens per replica-ms than going without (see worthWaitingForDrafts, measured on
 *   the pool), D is kept within two blocks (one when lanes queue for a replica longer than a block
 *   takes to draft: see lanesWaitLongerThanDrafting), no speculative verification starts, and a
 *   drafter call a lane needs may take the drafter of another run's drafting ahead.
 * - Drafting: at most one drafter call in flight, of up to k tokens after V ++ D. D is kept within
 *   (replicas + 1) * k drafts of V (k for SI, 2k or k on a saturated pool) and never runs past the last
 *   position worth drafting.
 * - Blocks: a block starts where the last dispatched block ends (or at the end of V when none is
 *   dispatched) and is complete when it holds k drafts (or the drafts up to the last useful position).
 *   A complete block goes to an idle replica; at most one task per replica.
 * - The lane: when no dispatched block covers the end of V, one is dispatched at once with the drafts
 *   available, even none (SI first waits for its one drafter call). So a verification whose block
 *   covers the end of V is always running: with a verification latency that does not grow with the
 *   block (the paper's assumption), DSI commits at least one token per target latency.
 * - Commits, strictly in block order. A block's accepted drafts join V, then the target's token:
 *   - a rejected draft (accepted < size): the target's token joins V, D is cleared, and every later
 *     block and the drafter call are cancelled (if any was in flight, that is a preemption: the epoch
 *     increases);
 *   - all accepted: the target's (bonus) token joins V too. If D holds a draft at that position and it
 *     differs, that is a rejection as above; if it agrees, it is verified and speculation goes on: the
 *     next block, which starts at that position, overlaps V by one token, and its first draft is
 *     already known to be right. Committing that block adds its tokens after the overlap.
 * - An overlapping block whose verdict contradicts the overlapping token (a non-deterministic replica,
 *   or under the rejection rule an independent rejection of a draft the bonus token confirmed) commits
 *   nothing: speculation restarts from V. Under the greedy and seeded rules with deterministic
 *   replicas this never happens, so the output is the target's, identical in every mode. Under the
 *   rejection rule every committed token is still an exact sample (which verdict is used never
 *   depends on the randomness of the position it decides), but such a restart costs a forward, so
 *   "never slower than non-SI" holds for greedy and seeded and only nearly for rejection sampling.
 * - Failures: a failed Verify call puts its block back to wait for an idle replica (the one with the
 *   fewest consecutive failures, counted per replica by the scheduler across runs; the failed one may
 *   be retried); 3 x replicas consecutive failures of the run's own fail the generation. A failed, timed-out or empty drafter call pauses drafting until the next
 *   commit; the lane keeps generation going meanwhile, as non-SI.
 * - Cancellation: the scheduler forgets a port call the moment it aborts its signal (a port that
 *   ignores the abort cannot hold a replica or the drafter); late results are ignored.
 */
import type { Clock, DraftResult, Drafter, TargetReplica, VerifyCall, VerifyResult } from './ports';
import { DrafterScheduler, LeaseOutcome, PoolMeasurements, ReplicaClaim, ReplicaLease, ReplicaTenant, TargetScheduler, WorkClass } from './replica-scheduler';
import { AUTO_INITIAL_LOOKAHEAD, chooseLookahead, PositionAcceptance, type LookaheadInputs } from './lookahead';
import { PlainAbortController } from './plain-signal';
import { SamplingParams, validateSamplingParams } from './rules';

/** The decoding algorithm: target only, classic speculative inference, or distributed SI. */
export type Mode = 'nonsi' | 'si' | 'dsi';

/** Every mode, in the wire enum's order. */
export const MODES: readonly Mode[] = ['nonsi', 'si', 'dsi'];

/** The largest lookahead (drafts per verification) a request may ask for. */
export const MAX_LOOKAHEAD = 64;

/** A fixed k, or 'auto' (see {@link GenerateConfig.lookahead}). */
export type Lookahead = number | 'auto';

/** What to generate and how; checked by {@link validateGenerateConfig}. */
export interface GenerateConfig {
  /** Stable id of this generation: the replicas key their KV caches by it. */
  requestId: string;
  mode: Mode;
  prompt: readonly number[];
  /** Output tokens at most (the output is truncated exactly there). */
  maxNewTokens: number;
  /**
   * k, drafts per verification, in [1, {@link MAX_LOOKAHEAD}] for si and dsi (ignored by nonsi); or
   * 'auto': the run chooses k, and how many blocks to keep in flight, after every commit from the
   * acceptance it measures and the pool's costs and load (see lookahead.ts).
   */
  lookahead: Lookahead;
  sampling: SamplingParams;
  /** The end-of-sequence token: generation stops after it (it is part of the output). */
  eosTokenId?: number;
  /** Generation stops when the output ends with one of these; the stop sequence is not returned. */
  stopSequences?: readonly (readonly number[])[];
  /** When known: prompt tokens are checked against it, and draft probability rows must have this width. */
  vocabSize?: number;
}

/**
 * Per-request figures. A draft is *judged* when the position it was proposed for is committed while
 * the draft is still in D: the target's token there either agrees with it (accepted) or not.
 */
export interface GenerationMetrics {
  /** Draft tokens the drafter returned, including drafts later discarded (stale or preempted). */
  drafted: number;
  /** Drafts that became output tokens: accepted by a verification, or equal to a bonus token. */
  accepted: number;
  /** accepted / judged drafts, in [0, 1]; 0 when no draft was judged (e.g. nonsi). */
  acceptanceRate: number;
  /** Tokens committed per verification that committed any, in [1, k + 1]; 0 when none committed. */
  meanAcceptedLength: number;
  /** Verify calls that ran on a replica: started minus failed (cancelled ones included). */
  targetForwards: number;
  /** Rejections that cancelled in-flight work (a drafter call or a later block); each bumps the epoch. */
  preemptions: number;
  /** Drafter calls started. */
  draftCalls: number;
  /** Verify calls started, including re-dispatches of failed ones. */
  verifyCalls: number;
  /** Verify calls aborted before their result was used: by preemptions and at the end of generation. */
  cancelledVerifications: number;
  /** The mean k in force when the run's blocks were made (the fixed lookahead, or what 'auto' chose). */
  meanLookahead: number;
  /** Verify calls started per verification that committed tokens: speculation's overhead (1 for SI and non-SI). */
  blocksPerCommit: number;
  /** From the call to the first committed token. */
  ttftMs: number;
  /** (wallMs - ttftMs) / (output tokens - 1); 0 with fewer than two output tokens. */
  tpotMs: number;
  /** From the call to the result. */
  wallMs: number;
}

/** Why generation stopped. */
export type FinishReason = 'length' | 'eos' | 'stop';

/** A finished generation. */
export interface GenerationResult {
  /**
   * Generated tokens only (no prompt), at most maxNewTokens; includes the end-of-sequence token when
   * it ended generation, and excludes the stop sequence when one did (as most servers do).
   */
  tokens: number[];
  finishReason: FinishReason;
  metrics: GenerationMetrics;
}

/** Observability hooks (tracing); all optional, called synchronously. A hook that throws fails the run. */
export interface SchedulerEvents {
  /** `drafter`: the drafter replica's id (`'drafter'` when it has none). */
  draftStart?(e: { epoch: number; prefixLength: number; maxTokens: number; drafter: string }): void;
  /**
   * `used`: appended to D; `stale`: arrived for a prefix that is no longer current; `failed` (with the
   * error) includes timeouts and malformed results; `cancelled`: aborted by the scheduler.
   */
  draftEnd?(e: { epoch: number; tokens: number; outcome: 'used' | 'stale' | 'failed' | 'cancelled'; error?: unknown }): void;
  /**
   * `start`: absolute position of the block's first draft; `block` is stable across re-dispatches.
   * `class`: `lane` when the block covers the end of V (the request cannot move without it), else
   * `speculative`.
   */
  /** `lookahead`: the k in force when the block was made (the fixed one, or what 'auto' chose). */
  verifyStart?(e: { replica: string; block: number; epoch: number; start: number; size: number; class: WorkClass; lookahead: number }): void;
  /**
   * `committed`: the result was committed (accepted says how many drafts); `rejected`: the result
   * arrived but was discarded, because an earlier block's rejection invalidated its prefix or its
   * verdict contradicted verified tokens; `cancelled`: aborted, or no longer needed at the end;
   * `failed`: the replica call failed or returned a malformed result (`error` says how; the block is
   * re-dispatched). `class` is the class it was dispatched as; `preempted` is set on a speculative
   * verification the shared scheduler cancelled to give its replica to a lane (the block waits again).
   * So replica time splits into lane, speculative-used (committed) and wasted (the rest).
   */
  verifyEnd?(e: {
    replica: string;
    block: number;
    epoch: number;
    accepted: number;
    outcome: 'committed' | 'rejected' | 'cancelled' | 'failed';
    class: WorkClass;
    preempted?: boolean;
    error?: unknown;
  }): void;
  /**
   * Tokens just appended to V; verifiedLength counts the prompt; at is clock time. `judged` and
   * `accepted`: the drafts this commit judged and accepted (see {@link GenerationMetrics}: a draft
   * equal to a bonus token counts, each position once even where blocks overlap), so summed over a
   * generation's commits, accepted is its metrics' `accepted` and accepted / judged (0 when none was
   * judged) its `acceptanceRate`.
   */
  commit?(e: { tokens: number[]; verifiedLength: number; at: number; judged: number; accepted: number }): void;
  /** A rejection cancelled in-flight work; `epoch` is the new epoch, `position` the rejected position. */
  preempt?(e: { epoch: number; position: number }): void;
}

/** What the scheduler talks to when one generation has the replicas to itself (a private scheduler). */
export interface SchedulerPorts {
  drafter: Drafter;
  targets: readonly TargetReplica[];
  clock: Clock;
}

/**
 * What the scheduler talks to when many generations share the replicas: the orchestrator's (or the
 * simulated pool's) schedulers, one for the targets and one for the drafters, shared by every
 * generation so lanes go first and speculation uses only spare capacity.
 */
export interface SharedSchedulerPorts {
  targetScheduler: TargetScheduler;
  drafterScheduler: DrafterScheduler;
  clock: Clock;
}

/** Per-call options of {@link generate}. */
export interface GenerateOptions {
  /** The client's cancellation: everything in flight is aborted and generate rejects with its reason. */
  signal?: AbortSignal;
  /**
   * Newly verified output tokens, in order. Tokens that may still turn out to be the start of a stop
   * sequence are held back, so the concatenation of all calls equals the result's tokens.
   */
  onTokens?: (tokens: number[]) => void;
  events?: SchedulerEvents;
  /** Aborts a drafter call that takes longer (a hanging drafter); drafting resumes after the next commit. */
  draftTimeoutMs?: number;
}

/** Thrown by {@link generate} for a configuration {@link validateGenerateConfig} rejects (a caller's mistake). */
export class InvalidGenerateConfigError extends RangeError {
  override readonly name = 'InvalidGenerateConfigError';
}

/** Thrown by {@link generate} when every target replica keeps failing; `cause` is the last failure. */
export class TargetsUnavailableError extends Error {
  override readonly name = 'TargetsUnavailableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The reason of the signal the scheduler aborts when it no longer needs a port call's work. */
export class WorkCancelledError extends Error {
  /** The conventional name, so RPC layers map it to CANCELLED. */
  override readonly name = 'AbortError';

  /** Made without a stack: a run makes one for every superseded verification, and the stack shows only the scheduler. */
  constructor(message: string) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = limit;
  }
}

/**
 * The share of the drafters' time that a saturated pool's lanes, with the drafting ahead that a
 * rejection cancels, may fill before a run stops drafting ahead (see lanesKeepDraftersBusy). Nearer
 * full, a lane's own drafter call queues behind drafting ahead for longer than drafting ahead saves it,
 * and the cancelled calls cost the replicas' hosts. At 4 clients on 4 targets and 2 drafters (the load
 * bench's pairs as measured, ~95% with the cancelled calls) the event mode gives DSI/SI 1.004 -> 1.014
 * (a=0.8 k=3) and 1.007 -> 1.007 (a=0.5 k=1) with 3.3 -> 0.8 and 4.4 -> 1.2 preemptions a request, and
 * no change at 3, 5, 6, 8 or 16 clients; the real services, three runs each side by side, 0.978 -> 1.012
 * and 0.996 -> 1.038 with a third less drafter CPU a request.
 */
export const DRAFTER_UTILIZATION_LIMIT = 0.8;

/** lookahead 'auto' decoding plainly on shared drafters drafts for one commit in this many (see plainDraftHorizon). */
const PLAIN_PROBE_EVERY = 8;

/** The reason of a drafter call's signal when {@link GenerateOptions.draftTimeoutMs} expires. */
export class DraftTimeoutError extends Error {
  override readonly name = 'TimeoutError';
}

/**
 * Checks a request before any model work. Returns a one-line message naming the first bad field, or
 * undefined. Pass `targetCount` (the replicas available) to check that there is at least one.
 */
export function validateGenerateConfig(config: GenerateConfig, targetCount?: number): string | undefined {
  const { requestId, mode, prompt, maxNewTokens, lookahead, sampling, eosTokenId, stopSequences, vocabSize } = config;
  if (typeof requestId !== 'string' || requestId.length === 0) return 'requestId must be a non-empty string';
  if (!MODES.includes(mode)) return `mode must be one of ${MODES.join(', ')}, got ${JSON.stringify(mode)}`;
  if (vocabSize !== undefined && !(Number.isSafeInteger(vocabSize) && vocabSize >= 1)) {
    return `vocabSize must be a positive integer, got ${vocabSize}`;
  }
  if (!Array.isArray(prompt) || prompt.length === 0) return 'prompt must hold at least one token';
  const badPromptToken = prompt.find((token) => !isToken(token, vocabSize));
  if (badPromptToken !== undefined) return `prompt token ${badPromptToken} is not a token id${vocabRange(vocabSize)}`;
  if (!(Number.isSafeInteger(maxNewTokens) && maxNewTokens >= 1)) return `maxNewTokens must be an integer >= 1, got ${maxNewTokens}`;
  if (mode !== 'nonsi' && lookahead !== 'auto' && !(Number.isInteger(lookahead) && lookahead >= 1 && lookahead <= MAX_LOOKAHEAD)) {
    return `lookahead must be 'auto' or an integer in [1, ${MAX_LOOKAHEAD}] for mode ${mode}, got ${JSON.stringify(lookahead)}`;
  }
  if (typeof sampling !== 'object' || sampling === null) return 'sampling is required';
  const samplingProblem = validateSamplingParams(sampling);
  if (samplingProblem) return `sampling: ${samplingProblem}`;
  if (eosTokenId !== undefined && !isToken(eosTokenId, vocabSize)) return `eosTokenId ${eosTokenId} is not a token id${vocabRange(vocabSize)}`;
  if (stopSequences !== undefined) {
    if (!Array.isArray(stopSequences)) return 'stopSequences must be a list of token sequences';
    for (let i = 0; i < stopSequences.length; i++) {
      const sequence = stopSequences[i];
      if (!Array.isArray(sequence) || sequence.length === 0) return `stopSequences[${i}] must hold at least one token`;
      const bad = sequence.find((token) => !isToken(token, vocabSize));
      if (bad !== undefined) return `stopSequences[${i}] token ${bad} is not a token id${vocabRange(vocabSize)}`;
    }
  }
  if (targetCount !== undefined && !(targetCount >= 1)) return 'at least one target replica is required';
  return undefined;
}

function isToken(token: unknown, vocabSize: number | undefined): boolean {
  return typeof token === 'number' && Number.isSafeInteger(token) && token >= 0 && (vocabSize === undefined || token < vocabSize);
}

function vocabRange(vocabSize: number | undefined): string {
  return vocabSize === undefined ? ' (an integer >= 0)' : ` in [0, ${vocabSize})`;
}

/**
 * Generates with the configured mode over the given ports and resolves with the target's output and
 * the request's metrics. Pass `{ drafter, targets, clock }` for a generation that has the replicas to
 * itself, or the orchestrator's shared schedulers (`{ targetScheduler, drafterScheduler, clock }`) when
 * many generations run at once; a single generation on an idle shared pool behaves exactly the same. Rejects with an {@link InvalidGenerateConfigError} for a bad configuration,
 * with the signal's reason when the client aborts, and with a {@link TargetsUnavailableError} when the
 * replicas fail 3 x replicas times in a row. On every outcome nothing is left in flight: every port
 * call the scheduler no longer needs has had its signal aborted.
 */
export async function generate(config: GenerateConfig, ports: SchedulerPorts | SharedSchedulerPorts, options: GenerateOptions = {}): Promise<GenerationResult> {
  const pools: Pools =
    'targetScheduler' in ports
      ? { targets: ports.targetScheduler, drafters: ports.drafterScheduler, clock: ports.clock }
      : { targets: new TargetScheduler(ports.targets), drafters: new DrafterScheduler([ports.drafter]), clock: ports.clock };
  const problem = validateGenerateConfig(config, pools.targets.replicaCount);
  if (problem) throw new InvalidGenerateConfigError(problem);
  const { draftTimeoutMs } = options;
  if (draftTimeoutMs !== undefined && !(draftTimeoutMs > 0 && Number.isFinite(draftTimeoutMs))) {
    throw new InvalidGenerateConfigError(`draftTimeoutMs must be a positive number, got ${draftTimeoutMs}`);
  }
  if (options.signal?.aborted) throw options.signal.reason;
  return new Promise<GenerationResult>((resolve, reject) => {
    new GenerationRun(config, pools, options, resolve, reject).start();
  });
}

/** The ports a run uses: the schedulers of the replicas it shares (or has to itself) and the clock. */
interface Pools {
  targets: TargetScheduler;
  drafters: DrafterScheduler;
  clock: Clock;
}

/** The limits that make one state machine behave as non-SI, SI or DSI. */
interface ModeLimits {
  /** k; 0 disables drafting (non-SI). */
  lookahead: number;
  /** Verifications in flight at once; undefined: one per target replica. The lane may always go. */
  maxParallelVerifications?: number;
  draftWhileVerifying: boolean;
  /** SI: the lane waits for the drafter call instead of verifying whatever drafts exist. */
  laneWaitsForDrafts: boolean;
  /** Most drafts kept beyond V, in blocks of k; undefined: one more block than there are target replicas. */
  draftHorizonBlocks?: number;
  /** lookahead 'auto': the run sets these limits after every commit ({@link chooseLookahead}). */
  auto?: boolean;
}

function modeLimits(config: GenerateConfig): ModeLimits {
  if (config.lookahead === 'auto' && config.mode !== 'nonsi') {
    return { ...modeLimits({ ...config, lookahead: AUTO_INITIAL_LOOKAHEAD }), auto: true };
  }
  const k = config.lookahead === 'auto' ? 0 : config.lookahead;
  switch (config.mode) {
    case 'nonsi':
      return { lookahead: 0, maxParallelVerifications: 1, draftWhileVerifying: false, laneWaitsForDrafts: false, draftHorizonBlocks: 0 };
    case 'si':
      return { lookahead: k, maxParallelVerifications: 1, draftWhileVerifying: false, laneWaitsForDrafts: true, draftHorizonBlocks: 1 };
    case 'dsi':
      return { lookahead: k, draftWhileVerifying: true, laneWaitsForDrafts: false };
  }
}

interface DraftTask {
  epoch: number;
  /** Length of V ++ D when the call started: the absolute position of the first token it returns. */
  prefixLength: number;
  maxTokens: number;
  controller: AbortController;
  lease: ReplicaLease<Drafter>;
  /** Clock time of the call's start. */
  startedAt: number;
  /** Cancels the draftTimeoutMs sleep. */
  timeout?: AbortController;
}

interface Block {
  id: number;
  epoch: number;
  /** Absolute position of drafts[0]. */
  start: number;
  drafts: number[];
  /** The k in force when it was made. */
  lookahead: number;
  /** q rows of the drafts (rejection rule). */
  draftProbs?: Float32Array;
  /**
   * waiting: needs a replica (new, its replica failed, or the shared scheduler preempted it);
   * verifying: in flight; done: awaits its commit.
   */
  state: 'waiting' | 'verifying' | 'done';
  /** The replica it was last dispatched to. */
  replica?: string;
  /** The class it was last dispatched as. */
  class?: WorkClass;
  /** Whether, when last dispatched, the run's lanes waited for their drafts (SI's way). */
  waitedForDrafts?: boolean;
  call?: VerifyTask;
  result?: VerifyResult;
}

interface VerifyTask {
  block: Block;
  lease: ReplicaLease<TargetReplica>;
  controller: AbortController;
  /** Clock time of the call's start. */
  startedAt: number;
}

/** The verification a run would start on a free replica now: a waiting block or a new one. */
type NextVerification =
  | { class: WorkClass; block: Block; ready: true; waitsForDrafts?: undefined }
  | { class: WorkClass; block?: undefined; start: number; size: number; ready: boolean; waitsForDrafts?: boolean };

/**
 * A port (drafter or target replica) may declare `recyclesSignals: true`: it lets go of a call's
 * signal when the call settles (removes every listener it added and never reads the signal again).
 * The scheduler may then hand the signal of a call that succeeded (never aborted) to a later call of
 * the same generation instead of creating an AbortController per call, which is a large part of a
 * simulation's cost. Without the declaration every call gets a signal of its own.
 */
export interface SignalRecycling {
  readonly recyclesSignals?: boolean;
  /**
   * The port only reads a call's arrays (never changes them, never depends on their identity), so
   * calls with the same prefix may share one array instead of a copy each (most of a simulation's
   * garbage: prefixes are as long as the generation).
   */
  readonly sharesPrefixes?: boolean;
  /**
   * The port uses only `aborted`, `reason`, `throwIfAborted()` and `abort` listeners of a call's signal
   * (never hands it to Node APIs that check its class), so the scheduler may give it a
   * {@link PlainAbortController}'s signal: a simulation's calls are too many for an EventTarget each.
   */
  readonly plainSignals?: boolean;
  /**
   * The port reads a call's prefix as `stem[0 .. stemLength) ++ prefix` (see DraftCall.stem): the
   * scheduler then passes in `prefix` only the tokens after the verified ones (the drafts it carries),
   * so a call copies no long array.
   */
  readonly stemPrefixes?: boolean;
}

function recyclesSignals(port: object): boolean {
  return (port as SignalRecycling).recyclesSignals === true;
}

function stemPrefixes(port: object): boolean {
  return (port as SignalRecycling).stemPrefixes === true;
}

function plainSignals(port: object): boolean {
  return (port as SignalRecycling).plainSignals === true;
}

function sharesPrefixes(port: object): boolean {
  return (port as SignalRecycling).sharesPrefixes === true;
}

const NO_TOKENS: readonly number[] = Object.freeze([]);

/** How many recent prefixes a run keeps for sharing (see {@link SignalRecycling.sharesPrefixes}). */
const SHARED_SEQUENCES = 4;

/** How many consecutive failed Verify calls, per replica, make the generation give up. */
const FAILURES_PER_REPLICA = 3;

class GenerationRun {
  private readonly clock: Clock;
  private readonly limits: ModeLimits;
  private readonly targets: TargetScheduler;
  private readonly drafters: DrafterScheduler;
  private readonly promptLength: number;
  /** The last absolute position worth drafting, plus one: the target supplies the final token. */
  private readonly draftLimit: number;
  private readonly returnProbs: boolean;
  private readonly startedAt: number;

  /** V: prompt plus committed output. */
  private readonly verified: number[];
  /** D: drafts at positions verified.length, verified.length + 1, ... */
  private drafts: number[] = [];
  private draftRows: (Float32Array | undefined)[] = [];
  private epoch = 0;
  private blocks: Block[] = [];
  private nextBlockId = 0;
  private draftTask?: DraftTask;
  /** Set when a drafter call failed or returned nothing: drafting resumes after the next commit. */
  private drafterResting = false;
  private vocab?: number;
  /** Signals of succeeded calls on ports that recycle them (see {@link SignalRecycling}), never aborted. */
  private readonly spareControllers: AbortController[] = [];
  /** The same for ports that take plain signals (see {@link SignalRecycling.plainSignals}). */
  private readonly sparePlainControllers: AbortController[] = [];
  /**
   * The last few prefixes handed to ports that share prefixes, each V ++ D's first `length` tokens
   * and unchanged since (dropped once a position it covers changes). Never changed once handed out.
   */
  private sharedSequences: number[][] = [];

  /** How this run takes part in the target and drafter schedulers. */
  private readonly verifier: ReplicaTenant<TargetReplica>;
  private readonly draftRequester: ReplicaTenant<Drafter>;
  /** Scheduler tickets of the moment the current claims began to wait (fairness). */
  private laneSince?: number;
  private speculativeSince?: number;
  private draftSince?: number;
  /** Clock time at which the current drafter claim began to wait. */
  private draftWantedAt?: number;

  private consecutiveFailures = 0;
  private finished = false;
  private streamed = 0;
  private readonly abortListener?: () => void;

  // Metrics.
  private drafted = 0;
  private acceptedDrafts = 0;
  private judgedDrafts = 0;
  private committedTokens = 0;
  private committingVerifications = 0;
  private draftCalls = 0;
  private verifyCalls = 0;
  private failedVerifications = 0;
  private cancelledVerifications = 0;
  private preemptions = 0;
  private lookaheadSum = 0;
  private blocksMade = 0;
  private firstCommitAt?: number;
  /** lookahead 'auto': the k of its last sequential (SI-like) choice, kept unless another is clearly better. */
  private sequentialLookahead?: number;
  /** lookahead 'auto': whether the last choice speculated (not 'nonsi'); undefined before the first. */
  private speculating?: boolean;
  /** lookahead 'auto': commits decoded plainly with the drafters shared (see plainDraftHorizon). */
  private plainCommits = 0;
  /** lookahead 'auto': the request's acceptance per block position. */
  private readonly acceptance = new PositionAcceptance();
  /** The pool's measurements (shared with the other generations on it): what waiting for drafts is worth. */
  private readonly measured: PoolMeasurements;

  constructor(
    private readonly config: GenerateConfig,
    pools: Pools,
    private readonly options: GenerateOptions,
    private readonly resolve: (result: GenerationResult) => void,
    private readonly reject: (error: unknown) => void,
  ) {
    this.clock = pools.clock;
    this.targets = pools.targets;
    this.drafters = pools.drafters;
    this.measured = pools.targets.measurements;
    this.limits = modeLimits(config);
    this.verified = [...config.prompt];
    this.promptLength = config.prompt.length;
    this.draftLimit = this.promptLength + config.maxNewTokens - 1;
    this.returnProbs = config.sampling.rule === 'rejection';
    this.vocab = config.vocabSize;
    this.startedAt = this.clock.now();
    this.verifier = {
      name: config.requestId,
      claim: () => this.verificationClaim(),
      grant: (lease) => this.onTargetGranted(lease),
      preemptible: (lease) => this.preemptible(lease),
      preempt: (lease) => this.onPreempted(lease),
    };
    this.draftRequester = {
      name: config.requestId,
      claim: () => this.draftClaim(),
      grant: (lease) => this.onDrafterGranted(lease),
      preemptible: (lease) => this.draftPreemptible(lease),
      preempt: (lease) => this.onDraftPreempted(lease),
    };
    const { signal } = options;
    if (signal) {
      this.abortListener = () => this.guard(() => this.fail(signal.reason));
      signal.addEventListener('abort', this.abortListener, { once: true });
    }
  }

  start(): void {
    this.guard(() => {
      this.retune();
      this.targets.join(this.verifier);
      if (this.limits.lookahead > 0) this.drafters.join(this.draftRequester);
    });
  }

  // ---------------------------------------------------------------- dispatch

  private get verifiedEnd(): number {
    return this.verified.length;
  }

  /** End (exclusive) of V ++ D. */
  private get draftedEnd(): number {
    return this.verified.length + this.drafts.length;
  }

  /** Drafts at or after this position are not worth having: past the last useful position or an eos draft. */
  private draftEnd(): number {
    const { eosTokenId } = this.config;
    const eosIndex = eosTokenId === undefined ? -1 : this.drafts.indexOf(eosTokenId);
    return eosIndex < 0 ? this.draftLimit : Math.min(this.draftLimit, this.verifiedEnd + eosIndex + 1);
  }

  private draftRoom(): number {
    // A saturated pool has no replica for blocks beyond the lanes: draft the lane's block and the next,
    // unless the lane's block can be drafted while the lane waits for its replica anyway.
    const blocks =
      this.limits.draftHorizonBlocks ?? (this.targets.saturated ? (this.lanesWaitLongerThanDrafting() || this.lanesKeepDraftersBusy() ? 1 : 2) : this.targets.replicaCount + 1);
    const horizon = blocks * this.limits.lookahead;
    return Math.min(this.limits.lookahead, horizon - this.drafts.length, this.draftEnd() - this.draftedEnd);
  }

  /**
   * On a saturated pool where lanes wait for their drafts (SI's way, {@link sequentialBeatsNonSI}):
   * whether the lanes' own drafter calls leave the drafters too little time for drafting ahead.
   * Drafting the next block during a lane's verification is wasted when a draft of the lane (or its
   * bonus token) is rejected, P = 1 - a^(k+1), so it makes (1 + P) drafter calls a lane; it pays only
   * while that fits in the drafters' slots. The lanes' rate: as many per ms as the target slots verify,
   * and no more than the runs' cycles of a Verify call and a drafter call allow; a lane's drafter call:
   * the fitted fixed cost plus k times the cost per token. Drafting ahead beyond that took the drafters
   * from other requests' lanes (a drafter call that became a lane's is never taken back): 6 clients on
   * 4 targets and 2 drafters, DSI at 0.92x SI in the event mode before, 1.00x after. "Fits" leaves the
   * drafters a fifth of their time ({@link DRAFTER_UTILIZATION_LIMIT}). False before the pool has timed
   * a verification and a drafter call.
   */
  private lanesKeepDraftersBusy(): boolean {
    const m = this.measured;
    const draftMs = m.draftCallMs(this.limits.lookahead);
    if (m.verifications === 0 || draftMs === undefined) return false;
    const targets = this.targets;
    const verifyMs = m.meanVerifyMs();
    const lanesPerMs = Math.min((targets.replicaCount * targets.slotsPerReplica) / verifyMs, targets.tenantCount / (verifyMs + draftMs));
    const missed = 1 - m.acceptance() ** (this.limits.lookahead + 1);
    return (1 + missed) * lanesPerMs * draftMs > DRAFTER_UTILIZATION_LIMIT * this.drafters.replicaCount * this.drafters.slotsPerReplica && this.sequentialBeatsNonSI();
  }

  /**
   * On a saturated pool: whether a lane waits longer for a replica than its block takes to draft, so
   * drafting it after the last lane's result delays nothing and drafting ahead would only add drafter
   * calls that a rejection cancels. The wait: the lanes queued per slot ahead of it, (tenants / slots
   * - 1), times the mean Verify call; the drafting: the drafter call's fitted fixed cost plus k times
   * its cost per token, plus the mean queueing of a lane's drafter call. False before the pool has
   * timed a verification and a drafter call.
   */
  private lanesWaitLongerThanDrafting(): boolean {
    const m = this.measured;
    const draftMs = m.draftCallMs(this.limits.lookahead);
    if (m.verifications === 0 || draftMs === undefined) return false;
    const targets = this.targets;
    const lanesPerSlot = targets.tenantCount / (targets.replicaCount * targets.slotsPerReplica);
    const laneWaitMs = (lanesPerSlot - 1) * m.meanVerifyMs();
    return m.meanLaneDraftQueueMs() + draftMs < laneWaitMs;
  }

  private canStartDraft(): boolean {
    if (this.limits.lookahead === 0 || this.drafterResting || this.draftTask) return false;
    if (!this.limits.draftWhileVerifying && this.blocks.length > 0) return false;
    return this.draftRoom() > 0;
  }

  /**
   * Whether a lane that waits for its drafts (SI) must wait now: its drafter call is on its way, or it
   * has no drafts and one can start. Drafting while verifying ('auto' overlapping), D may already hold
   * the lane's full block while the drafter works further ahead: the lane need not wait for that.
   */
  private laneLacksDrafts(): boolean {
    if (this.limits.draftWhileVerifying && this.drafts.length >= this.laneBlockSize()) return false;
    return this.draftTask !== undefined || (this.drafts.length === 0 && this.canStartDraft());
  }

  /** Drafts the lane block at the end of V would hold when full. */
  private laneBlockSize(): number {
    return Math.max(0, Math.min(this.limits.lookahead, this.draftEnd() - this.verifiedEnd));
  }

  /**
   * The verification this run would start on a free replica now (module comment, "Blocks" and "The
   * lane"): a waiting lane block, a new lane (SI: once its drafter call is done), a waiting later
   * block, or the next complete block, within the mode's limit of verifications in flight.
   */
  private nextVerification(): NextVerification | undefined {
    const head = this.blocks[0];
    if (head?.state === 'waiting') return { class: 'lane', block: head, ready: true };
    if (!head) {
      if (this.limits.laneWaitsForDrafts && this.laneLacksDrafts()) return undefined;
      const full = this.laneBlockSize();
      const size = Math.min(full, this.drafts.length);
      // Ready: full of drafts, or no drafter call will bring more.
      const ready = size >= full || (!this.draftTask && !this.canStartDraft());
      // Only a saturated pool asks whether the drafts are worth the wait; a crowded one (fewer than two
      // slots a run: no replica for speculative work beside the lane) waits where SI's way wins.
      // lookahead 'auto' decoding plainly ('nonsi') never waits: its lanes keep pace with the replica's forwards.
      const waitsForDrafts = !ready && this.speculating !== false && (this.targets.saturated ? this.worthWaitingForDrafts(size) : this.targets.crowded && this.sequentialBeatsNonSI());
      return { class: 'lane', start: this.verifiedEnd, size, ready, waitsForDrafts };
    }
    const blocks = this.blocks;
    let inFlight = 0;
    let waiting: Block | undefined;
    for (let i = 0; i < blocks.length; i++) {
      const state = blocks[i].state;
      if (state === 'verifying') inFlight++;
      else if (state === 'waiting') waiting ??= blocks[i];
    }
    if (inFlight >= (this.limits.maxParallelVerifications ?? this.targets.replicaCount)) return undefined;
    if (waiting) return { class: 'speculative', block: waiting, ready: true };
    const last = this.blocks[this.blocks.length - 1];
    const start = last.start + last.drafts.length;
    const available = this.draftedEnd - start;
    const complete = available >= this.limits.lookahead || (available > 0 && this.draftedEnd >= this.draftEnd());
    if (this.limits.lookahead === 0 || !complete) return undefined;
    return { class: 'speculative', start, size: Math.min(this.limits.lookahead, available), ready: true };
  }

  /**
   * Whether the lane (`size` drafts now, `full` when complete) should wait for its pending drafter
   * call on a saturated pool, where replica time limits throughput. Going now commits E(size) tokens
   * (E(n) = 1 + a + ... + a^n) in one forward of t ms and, when all of it is accepted (a^(size + 1)),
   * the call's drafts still serve the next lane; otherwise the next lane starts empty and faces the
   * same choice. Waiting idles the replica `wait` ms, then verifies the fuller block. With g the
   * tokens per replica-ms of a verification of a full block, E(k) / t, going now is worth more
   * exactly when E(size) > g (t - a^(size + 1) wait). Figures from the pool's measurements: a the
   * acceptance (Laplace: (accepted + 1) / (judged + 2)), t the mean verification, wait the call's
   * expected remaining time (the mean drafter time per token, plus the mean queueing of a lane's
   * drafter call while it is not yet running).
   * Before the pool has timed a verification and a drafter call, the drafts are worth the wait.
   */
  private worthWaitingForDrafts(size: number): boolean {
    const m = this.measured;
    if (m.verifications === 0 || m.draftTokens === 0) return true;
    if (this.sequentialBeatsNonSI()) return true;
    const now = this.clock.now();
    const t = m.meanVerifyMs();
    const msPerToken = m.draftMs / m.draftTokens;
    const task = this.draftTask;
    let wait: number;
    if (task) {
      wait = Math.max(0, task.startedAt + msPerToken * task.maxTokens - now);
    } else {
      wait = Math.max(0, m.meanLaneDraftQueueMs() - (now - (this.draftWantedAt ?? now))) + msPerToken * this.draftRoom();
    }
    const a = m.acceptance();
    const g = expectedCommitted(a, this.limits.lookahead) / t;
    return g * (t - a ** (size + 1) * wait) > expectedCommitted(a, size);
  }

  /**
   * lookahead 'auto' decoding plainly: the drafts kept ahead, 1 block (a draft made while the lane
   * verifies rides in the next lane when it is ready, and keeps the acceptance estimate fresh) while
   * the request has a drafter to itself; with drafters shared, only every {@link PLAIN_PROBE_EVERY}th
   * commit. Every drafter call costs the hosts CPU, and with many requests decoding plainly those
   * calls were most of it: load bench, batched, a = 0.5, 16 and 32 clients, auto plain at 0.92x
   * non-SI with a drafter call a lane.
   */
  private plainDraftHorizon(): number {
    const drafters = this.drafters;
    if (drafters.replicaCount >= drafters.tenantCount) return 1;
    return this.plainCommits++ % PLAIN_PROBE_EVERY === 0 ? 1 : 0;
  }

  /**
   * On a busy pool: whether SI's way (every lane waits for its k drafts) commits more per ms than
   * non-SI's (every lane goes at once, one token), from the pool's measurements. SI commits E(k) per
   * lane, no faster than its share of the target slots allows (share x E(k) per Verify call), nor its
   * share of the drafters (drafter share x E(k) per drafter call), nor its own cycle of a drafter call
   * and a Verify call; non-SI one token per Verify call, within its share. Where SI's way wins, a lane
   * waits for its drafts whatever the drafters' queue: going with fewer drafts makes more lanes, each
   * needing a drafter call, and the drafters' queue only grows (4 clients on 4 targets and 2 drafters,
   * k = 5, a 4 ms round trip: DSI at 0.94x SI in the event mode, 27% more forwards; now 1.00x). Where
   * non-SI's way wins (a slow drafter), {@link worthWaitingForDrafts} weighs each lane. False until the
   * pool has judged {@link MIN_JUDGED_FOR_REGIME} drafts.
   */
  private sequentialBeatsNonSI(): boolean {
    const m = this.measured;
    const k = this.limits.lookahead;
    const draftMs = m.draftCallMs(k);
    if (m.judgedDrafts < MIN_JUDGED_FOR_REGIME || draftMs === undefined) return false;
    const t = m.meanVerifyMs();
    const share = this.targets.slotShare;
    const sequential = expectedCommitted(m.acceptance(), k) * Math.min(1 / (t + draftMs), share / t, this.drafters.slotShare / draftMs);
    return sequential > Math.min(1, share) / t;
  }

  /**
   * lookahead 'auto': k and the mode's limits for the coming blocks, from the request's acceptance
   * per position (the pool's as the prior), the pool's mean Verify call and drafter ms per token, and
   * the request's share of the pool's slots (lookahead.ts). Until the pool has timed a verification
   * and a drafter call, the initial limits hold.
   */
  private retune(): void {
    const limits = this.limits;
    if (!limits.auto) return;
    const m = this.measured;
    const draftCost = m.draftCost();
    if (m.verifications === 0 || !draftCost) return;
    const prior = m.acceptance();
    const targets = this.targets;
    const forward = m.forwardView();
    const replicaShare = targets.replicaCount / Math.max(1, targets.tenantCount);
    const inputs: LookaheadInputs = {
      mode: this.config.mode === 'si' ? 'si' : 'dsi',
      acceptance: (position) => this.acceptance.rate(position, prior),
      verifyMs: forward?.serviceMs ?? m.meanVerifyMs(),
      verifyTokens: forward?.callTokens,
      verifyMsPerToken: forward?.msPerCallToken,
      draftMsPerToken: draftCost.perTokenMs,
      draftCallMs: draftCost.overheadMs,
      share: targets.slotShare,
      replicaShare,
      drafterShare: this.drafters.slotShare,
      drafterReplicaShare: this.drafters.replicaCount / Math.max(1, this.drafters.tenantCount),
      maxLookahead: MAX_LOOKAHEAD,
      current: this.sequentialLookahead,
      speculating: this.speculating,
    };
    // A batching replica with no replica to spare for a request (each serves one request or more)
    // runs its requests in one forward only while they keep one cadence: a lane that waits for a
    // drafter call arrives with the forward of the others' plain lanes under way, and one request's
    // longer block delays every forward it shares. So the choice is the pool's there, from the pool's
    // acceptance: every request chooses alike (its own few drafts flipped it around the break-even),
    // charged the mean wait at the replica of the lanes that waited for drafts. Event mode, 4 targets
    // and 2 drafters batching 8, auto over the better of non-SI and the best fixed-k SI: a = 0.5 at
    // 16 clients 0.80 -> 1.00, a = 0.8 at 32 clients 0.92 -> 0.98 (with the cost per token).
    const pooled = targets.slotsPerReplica > 1 && replicaShare <= 1;
    const choice = chooseLookahead(
      pooled
        ? { ...inputs, acceptance: () => prior, waitingLaneQueueMs: forward?.waitingLaneQueueMs, laneDraftQueueMs: m.meanLaneDraftQueueMs(), verifyForwardMs: forward?.forwardMs, batching: true }
        : inputs,
    );
    if (choice.behaviour !== 'dsi') this.sequentialLookahead = choice.lookahead;
    this.speculating = choice.behaviour !== 'nonsi';
    // A crowded pool of unbatched replicas below saturation (fewer than two replicas a request, one
    // idle now and then): the limits of a fixed k (modeLimits), so the pool's own rules decide (the
    // lane waits for its drafts where SI's way wins; blocks beyond it go to replicas no lane wants).
    // Event mode, 4 targets, 2 drafters, auto against the best of non-SI and fixed-k SI, 12 seeds: 3
    // clients a = 0.8 1.041 -> 1.055, a = 0.5 1.056 -> 1.103; 4 clients 0.981 -> 0.983 (libs/core's
    // a = 0.8 test: 0.976 -> 0.984). Not on batching replicas: crowded there means 16 requests and
    // more, whose speculative blocks ride in the lanes' forwards: 2.4x the forwards for 1% (event mode,
    // 24 clients), and each call costs host CPU (load bench, 32 clients, a = 0.5: DSI 0.90x SI in the
    // run with it, 3.5 cancelled verifications a request; 0.99x in the run before).
    const poolRules =
      this.config.mode === 'dsi' &&
      (choice.behaviour === 'si' || choice.behaviour === 'overlap') &&
      !targets.saturated &&
      targets.crowded &&
      targets.slotsPerReplica === 1;
    const next: ModeLimits = poolRules
      ? modeLimits({ ...this.config, lookahead: choice.lookahead })
      : {
          lookahead: choice.lookahead,
          maxParallelVerifications: choice.parallel,
          draftWhileVerifying: choice.behaviour !== 'si',
          laneWaitsForDrafts: choice.behaviour === 'si' || choice.behaviour === 'overlap',
          draftHorizonBlocks: choice.behaviour === 'dsi' ? choice.parallel + 1 : choice.behaviour === 'overlap' ? 2 : choice.behaviour === 'nonsi' ? this.plainDraftHorizon() : 1,
        };
    limits.lookahead = next.lookahead;
    limits.maxParallelVerifications = next.maxParallelVerifications;
    limits.draftWhileVerifying = next.draftWhileVerifying;
    limits.laneWaitsForDrafts = next.laneWaitsForDrafts;
    limits.draftHorizonBlocks = next.draftHorizonBlocks;
  }

  /** What this run asks of the target scheduler now. */
  private verificationClaim(): ReplicaClaim | undefined {
    const next = this.finished ? undefined : this.nextVerification();
    if (next?.class !== 'lane') this.laneSince = undefined;
    if (next?.class !== 'speculative') this.speculativeSince = undefined;
    if (!next) return undefined;
    if (next.class === 'lane') {
      this.laneSince ??= this.targets.ticket();
      return { class: 'lane', ready: next.ready, waitsForDrafts: next.waitsForDrafts, distance: 0, since: this.laneSince };
    }
    this.speculativeSince ??= this.targets.ticket();
    const start = next.block ? next.block.start : next.start;
    return { class: 'speculative', ready: true, distance: start - this.verifiedEnd, since: this.speculativeSince };
  }

  /** The target scheduler grants a replica: build the block now (with the drafts there are) and verify it. */
  private onTargetGranted(lease: ReplicaLease<TargetReplica>): boolean {
    let used = false;
    this.guard(() => {
      const next = this.nextVerification();
      if (!next) return;
      if (next.class === 'lane') this.laneSince = undefined;
      else this.speculativeSince = undefined;
      const block = next.block ?? this.newBlock(next.start, next.size);
      this.dispatch(block, lease, next.class);
      used = true;
    });
    return used;
  }

  private newBlock(start: number, size: number): Block {
    const from = start - this.verifiedEnd;
    const block: Block = { id: this.nextBlockId++, epoch: this.epoch, start, drafts: this.drafts.slice(from, from + size), lookahead: this.limits.lookahead, state: 'waiting' };
    if (this.returnProbs) block.draftProbs = concatRows(this.draftRows.slice(from, from + size), this.vocab ?? 0);
    this.blocks.push(block);
    this.lookaheadSum += this.limits.lookahead;
    this.blocksMade++;
    return block;
  }

  private dispatch(block: Block, lease: ReplicaLease<TargetReplica>, workClass: WorkClass): void {
    const target = lease.replica;
    const task: VerifyTask = { block, lease, controller: this.controllerFor(target), startedAt: this.clock.now() };
    block.state = 'verifying';
    block.call = task;
    block.replica = target.id;
    block.class = workClass;
    block.waitedForDrafts = this.limits.laneWaitsForDrafts;
    this.verifyCalls++;
    const call: VerifyCall = {
      requestId: this.config.requestId,
      prefix: stemPrefixes(target) ? this.afterStem(block.start) : this.sequence(block.start, sharesPrefixes(target)),
      drafts: block.drafts,
      stem: this.verified,
      stemLength: Math.min(block.start, this.verified.length),
      sampling: this.config.sampling,
    };
    if (block.draftProbs) call.draftProbs = block.draftProbs;
    this.emit('verifyStart', { replica: target.id, block: block.id, epoch: block.epoch, start: block.start, size: block.drafts.length, class: workClass, lookahead: block.lookahead });
    invoke(() => target.verify(call, task.controller.signal)).then(
      (result) => this.guard(() => this.onVerified(task, result)),
      (error: unknown) => this.guard(() => this.onVerifyFailed(task, error)),
    );
  }

  /** A fresh controller for a call on `port` (a plain one if it takes them), or a spare one when the port recycles signals. */
  private controllerFor(port: object): AbortController {
    const plain = plainSignals(port);
    return (recyclesSignals(port) && (plain ? this.sparePlainControllers : this.spareControllers).pop()) || (plain ? PlainAbortController.create() : new AbortController());
  }

  /** After a call on `port` succeeded: keep its controller for a later call when the port recycles signals. */
  private recycle(port: object, controller: AbortController): void {
    if (recyclesSignals(port) && !controller.signal.aborted) (plainSignals(port) ? this.sparePlainControllers : this.spareControllers).push(controller);
  }

  /** The index of the block in flight on `lease`, or -1. */
  private blockOf(lease: ReplicaLease<TargetReplica>): number {
    const blocks = this.blocks;
    for (let i = 0; i < blocks.length; i++) if (blocks[i].call?.lease === lease) return i;
    return -1;
  }

  /** The distance from V of a speculative block in flight; undefined for the lane (never preempted). */
  private preemptible(lease: ReplicaLease<TargetReplica>): number | undefined {
    const index = this.blockOf(lease);
    return index > 0 ? this.blocks[index].start - this.verifiedEnd : undefined;
  }

  /** The target scheduler takes a speculative block's replica for a lane: the block waits again. */
  private onPreempted(lease: ReplicaLease<TargetReplica>): void {
    this.guard(() => {
      const index = this.blockOf(lease);
      const block = index < 0 ? undefined : this.blocks[index];
      const task = block?.call;
      if (!block || !task) return;
      block.call = undefined;
      block.state = 'waiting';
      this.cancelledVerifications++;
      lease.release('cancelled');
      task.controller.abort(new WorkCancelledError(`verification of block ${block.id} was preempted by a lane`));
      this.emit('verifyEnd', { replica: lease.replica.id, block: block.id, epoch: block.epoch, accepted: 0, outcome: 'cancelled', class: block.class ?? 'speculative', preempted: true });
    });
  }

  /** V ++ D up to (not including) absolute position `end`. */
  private sequence(end: number, shared = false): number[] {
    const recent = this.sharedSequences;
    if (shared) {
      for (let i = 0; i < recent.length; i++) if (recent[i].length === end) return recent[i];
    }
    const sequence = end <= this.verifiedEnd ? this.verified.slice(0, end) : this.verified.concat(this.drafts.slice(0, end - this.verifiedEnd));
    if (shared) {
      if (recent.length >= SHARED_SEQUENCES) recent.shift();
      recent.push(sequence);
    }
    return sequence;
  }

  /** V ++ D from V's end up to (not including) `end`: a stemmed call's prefix (see {@link SignalRecycling.stemPrefixes}). */
  private afterStem(end: number): readonly number[] {
    return end <= this.verifiedEnd ? NO_TOKENS : this.drafts.slice(0, end - this.verifiedEnd);
  }

  /** Forgets the shared prefixes that hold another token than `token` at `position`. */
  private sequenceSetAt(position: number, token: number): void {
    const recent = this.sharedSequences;
    if (recent.some((sequence) => sequence.length > position && sequence[position] !== token)) {
      this.sharedSequences = recent.filter((sequence) => !(sequence.length > position && sequence[position] !== token));
    }
  }

  /** Forgets the shared prefixes that cover `position`: V ++ D's token there goes. */
  private sequenceChangesAt(position: number): void {
    const recent = this.sharedSequences;
    if (recent.length > 0) this.sharedSequences = recent.filter((sequence) => sequence.length <= position);
  }

  // ---------------------------------------------------------------- verification results

  private onVerified(task: VerifyTask, result: VerifyResult): void {
    const { block, lease } = task;
    if (block.call !== task) return; // cancelled: its result no longer matters
    const problem = malformedVerifyResult(result, block.drafts, this.config.vocabSize);
    if (problem) {
      this.onVerifyFailed(task, new Error(`replica ${lease.replica.id} returned a malformed result: ${problem}`));
      return;
    }
    lease.release('succeeded');
    this.recycle(lease.replica, task.controller);
    const callMs = this.clock.now() - task.startedAt;
    this.measured.verifyMs += callMs;
    this.measured.verifications++;
    if (result.report) this.measured.recordForward(callMs, block.drafts.length + 1, result.report, block.class === 'lane' ? (block.waitedForDrafts === true ? 'waited' : 'plain') : undefined);
    this.consecutiveFailures = 0;
    block.call = undefined;
    block.state = 'done';
    block.result = result;
    while (!this.finished && this.blocks.length > 0 && this.blocks[0].state === 'done') {
      this.commitBlock(this.blocks.shift() as Block);
    }
  }

  private onVerifyFailed(task: VerifyTask, error: unknown): void {
    const { block, lease } = task;
    if (block.call !== task) return;
    lease.release('failed');
    block.call = undefined;
    block.state = 'waiting';
    this.failedVerifications++;
    this.consecutiveFailures++;
    const replica = lease.replica.id;
    this.emit('verifyEnd', { replica, block: block.id, epoch: block.epoch, accepted: 0, outcome: 'failed', class: block.class ?? 'lane', error });
    const limit = FAILURES_PER_REPLICA * Math.max(1, this.targets.replicaCount);
    if (this.consecutiveFailures >= limit) {
      const message = `target replicas failed ${this.consecutiveFailures} times in a row; last: replica ${replica}: ${errorMessage(error)}`;
      this.fail(new TargetsUnavailableError(message, { cause: error }));
    }
  }

  /** Commits the head block's result (see the module comment). */
  private commitBlock(block: Block): void {
    const result = block.result as VerifyResult;
    const size = block.drafts.length;
    const overlap = this.verifiedEnd - block.start;
    const replica = block.replica ?? '';
    if (overlap > result.accepted) {
      // The verdict contradicts a token V already holds: nothing to commit; restart from V.
      this.emit('verifyEnd', { replica, block: block.id, epoch: block.epoch, accepted: result.accepted, outcome: 'rejected', class: block.class ?? 'lane' });
      this.discardSpeculation(this.verifiedEnd);
      return;
    }
    this.emit('verifyEnd', { replica, block: block.id, epoch: block.epoch, accepted: result.accepted, outcome: 'committed', class: block.class ?? 'lane' });
    this.committingVerifications++;
    const judgedBefore = this.judgedDrafts;
    const acceptedBefore = this.acceptedDrafts;
    const appended: number[] = [];
    let finish: FinishReason | undefined;
    // Accepted drafts after the overlap: D's front moves into V.
    for (let i = overlap; i < result.accepted && !finish; i++) {
      this.shiftDraft();
      this.judgedDrafts++;
      this.acceptedDrafts++;
      this.acceptance.record(i, true);
      finish = this.append(result.tokens[i], appended);
    }
    let rejectedAt: number | undefined;
    if (!finish) {
      const truth = result.tokens[result.accepted];
      const position = this.verifiedEnd;
      if (result.accepted < size) {
        this.judgedDrafts++;
        this.acceptance.record(result.accepted, false);
        rejectedAt = position;
      } else if (this.drafts.length > 0) {
        this.judgedDrafts++;
        // The draft after a fully accepted block is the first of the next one.
        this.acceptance.record(0, this.drafts[0] === truth);
        if (this.drafts[0] === truth) {
          this.acceptedDrafts++; // the bonus token confirms the next draft: speculation continues
          this.shiftDraft();
        } else {
          rejectedAt = position;
        }
      }
      finish = this.append(truth, appended);
    }
    this.committedTokens += appended.length;
    const judged = this.judgedDrafts - judgedBefore;
    const accepted = this.acceptedDrafts - acceptedBefore;
    const m = this.measured;
    m.judgedDrafts += judged;
    m.acceptedDrafts += accepted;
    this.afterCommit(appended, finish, judged, accepted);
    if (finish) {
      this.finish(finish);
      return;
    }
    if (rejectedAt !== undefined) this.discardSpeculation(rejectedAt);
    else this.cancelOutrunDraft();
  }

  private shiftDraft(): void {
    this.drafts.shift();
    this.draftRows.shift();
  }

  /** Appends one verified token; returns why generation ends with it, if it does. */
  private append(token: number, appended: number[]): FinishReason | undefined {
    // V ++ D changes at this position unless the token is the draft that was there.
    if (this.sharedSequences.length > 0) this.sequenceSetAt(this.verified.length, token);
    this.verified.push(token);
    appended.push(token);
    const outputLength = this.verified.length - this.promptLength;
    if (this.matchedStopSequence() > 0) return 'stop';
    if (token === this.config.eosTokenId) return 'eos';
    if (outputLength >= this.config.maxNewTokens) return 'length';
    return undefined;
  }

  private afterCommit(appended: number[], finish: FinishReason | undefined, judged: number, accepted: number): void {
    const at = this.clock.now();
    this.firstCommitAt ??= at;
    this.drafterResting = false;
    this.retune();
    this.emit('commit', { tokens: appended, verifiedLength: this.verifiedEnd, at, judged, accepted });
    // A finishing commit streams in finish(), which knows what a stop sequence removes.
    if (!finish) this.stream(this.verifiedEnd - this.heldBack());
  }

  /** Streams output tokens up to absolute position `end`. */
  private stream(end: number): void {
    const from = this.promptLength + this.streamed;
    if (end <= from) return;
    const tokens = this.verified.slice(from, end);
    this.streamed += tokens.length;
    this.options.onTokens?.(tokens);
  }

  /** Length of the stop sequence the output ends with (0: none). */
  private matchedStopSequence(): number {
    for (const stop of this.config.stopSequences ?? []) {
      if (this.outputEndsWith(stop, stop.length)) return stop.length;
    }
    return 0;
  }

  /** Output tokens that might be the start of a stop sequence: not streamed yet. */
  private heldBack(): number {
    let longest = 0;
    for (const stop of this.config.stopSequences ?? []) {
      for (let length = stop.length - 1; length > longest; length--) {
        if (this.outputEndsWith(stop, length)) {
          longest = length;
          break;
        }
      }
    }
    return longest;
  }

  /** Whether the output ends with the first `length` tokens of `sequence`. */
  private outputEndsWith(sequence: readonly number[], length: number): boolean {
    const end = this.verified.length;
    if (end - this.promptLength < length) return false;
    for (let i = 0; i < length; i++) {
      if (this.verified[end - length + i] !== sequence[i]) return false;
    }
    return true;
  }

  /**
   * A rejection (or contradiction) at `position`: D is cleared and every later block and the drafter
   * call are cancelled. When in-flight work was cancelled that is a preemption: the epoch increases.
   */
  private discardSpeculation(position: number): void {
    const cancelledWork = this.blocks.length > 0 || this.draftTask !== undefined;
    this.sequenceChangesAt(this.verifiedEnd);
    this.drafts = [];
    this.draftRows = [];
    this.cancelBlocks('rejected');
    this.cancelDraft();
    if (cancelledWork) {
      this.epoch++;
      this.preemptions++;
      this.emit('preempt', { epoch: this.epoch, position });
    }
  }

  /** A drafter call whose every token V already covers is of no use: cancel it and draft afresh. */
  private cancelOutrunDraft(): void {
    const task = this.draftTask;
    if (task && task.prefixLength + task.maxTokens <= this.verifiedEnd) this.cancelDraft();
  }

  /** Cancels every dispatched block: in flight -> 'cancelled'; completed but uncommitted -> `completedOutcome`. */
  private cancelBlocks(completedOutcome: 'rejected' | 'cancelled'): void {
    const blocks = this.blocks;
    this.blocks = [];
    for (const block of blocks) {
      const task = block.call;
      if (block.state === 'verifying' && task) {
        task.lease.release('cancelled');
        block.call = undefined;
        this.cancelledVerifications++;
        task.controller.abort(new WorkCancelledError(`verification of block ${block.id} is no longer needed`));
        this.emit('verifyEnd', { replica: task.lease.replica.id, block: block.id, epoch: block.epoch, accepted: 0, outcome: 'cancelled', class: block.class ?? 'lane' });
      } else if (block.state === 'done') {
        this.emit('verifyEnd', { replica: block.replica ?? '', block: block.id, epoch: block.epoch, accepted: block.result?.accepted ?? 0, outcome: completedOutcome, class: block.class ?? 'lane' });
      }
    }
  }

  // ---------------------------------------------------------------- drafting

  /** What this run asks of the drafter scheduler now: a call when drafting may start. */
  private draftClaim(): ReplicaClaim | undefined {
    if (this.finished || !this.canStartDraft()) {
      this.draftSince = undefined;
      this.draftWantedAt = undefined;
      return undefined;
    }
    this.draftSince ??= this.drafters.ticket();
    this.draftWantedAt ??= this.clock.now();
    // A lane needs this call when D does not yet fill the lane block; otherwise it drafts ahead.
    const workClass: WorkClass = this.drafts.length < this.laneBlockSize() ? 'lane' : 'speculative';
    return { class: workClass, ready: true, distance: this.drafts.length, since: this.draftSince };
  }

  /** The drafter scheduler grants a drafter: start the call. */
  private onDrafterGranted(lease: ReplicaLease<Drafter>): boolean {
    let used = false;
    this.guard(() => {
      if (!this.canStartDraft()) return;
      if (lease.class === 'lane' && this.draftWantedAt !== undefined) {
        this.measured.laneDraftQueueMs += this.clock.now() - this.draftWantedAt;
        this.measured.laneDraftCalls++;
      }
      this.draftSince = undefined;
      this.draftWantedAt = undefined;
      this.startDraft(lease);
      used = true;
    });
    return used;
  }

  /** The distance of a drafter call that only drafts ahead (D already fills the lane block); undefined when a lane needs it. */
  private draftPreemptible(lease: ReplicaLease<Drafter>): number | undefined {
    if (this.draftTask?.lease !== lease || this.drafts.length < this.laneBlockSize()) return undefined;
    return this.drafts.length;
  }

  /** The drafter scheduler takes a drafter back for another run's lane: the call is cancelled, drafting resumes later. */
  private onDraftPreempted(lease: ReplicaLease<Drafter>): void {
    this.guard(() => {
      if (this.draftTask?.lease === lease) this.cancelDraft();
    });
  }

  private startDraft(lease: ReplicaLease<Drafter>): void {
    const maxTokens = this.draftRoom();
    const task: DraftTask = { epoch: this.epoch, prefixLength: this.draftedEnd, maxTokens, controller: this.controllerFor(lease.replica), lease, startedAt: this.clock.now() };
    this.draftTask = task;
    this.draftCalls++;
    const prefixLength = this.draftedEnd;
    const prefix = stemPrefixes(lease.replica) ? this.afterStem(prefixLength) : this.sequence(prefixLength, sharesPrefixes(lease.replica));
    const { sampling, requestId } = this.config;
    const drafter = lease.replica;
    this.emit('draftStart', { epoch: task.epoch, prefixLength: task.prefixLength, maxTokens, drafter: drafter.id ?? 'drafter' });
    invoke(() => drafter.draft({ requestId, prefix, maxTokens, stem: this.verified, stemLength: Math.min(prefixLength, this.verified.length), sampling, returnProbs: this.returnProbs }, task.controller.signal)).then(
      (result) => this.guard(() => this.onDrafted(task, result)),
      (error: unknown) => this.guard(() => this.onDraftFailed(task, error)),
    );
    const { draftTimeoutMs } = this.options;
    if (draftTimeoutMs !== undefined) {
      const timeout = new AbortController();
      task.timeout = timeout;
      this.clock.sleep(draftTimeoutMs, timeout.signal).then(
        () => this.guard(() => this.onDraftTimeout(task, draftTimeoutMs)),
        () => undefined, // the call ended first and cancelled the timer
      );
    }
  }

  private endDraft(task: DraftTask, outcome: LeaseOutcome): void {
    this.draftTask = undefined;
    task.lease.release(outcome);
    task.timeout?.abort(new WorkCancelledError('the drafter call ended'));
  }

  private onDrafted(task: DraftTask, result: DraftResult): void {
    if (this.draftTask !== task) return; // cancelled or timed out
    const problem = this.malformedDraftResult(result, task.maxTokens);
    this.endDraft(task, problem ? 'failed' : 'succeeded');
    if (!problem) this.recycle(task.lease.replica, task.controller);
    if (problem) {
      this.drafterResting = true;
      this.emit('draftEnd', { epoch: task.epoch, tokens: 0, outcome: 'failed', error: new Error(`the drafter returned a malformed result: ${problem}`) });
      return;
    }
    const { tokens } = result;
    this.drafted += tokens.length;
    const m = this.measured;
    // The call's cost without its wait at the drafter (a batching drafter queues a call that arrives
    // mid-forward; a lane's call may queue there for the next one): the wait is the drafters' load,
    // which the lane's drafter queue below and the drafter share account for, not the call's cost.
    const elapsed = this.clock.now() - task.startedAt;
    const queuedMs = Math.min(Math.max(0, result.queueMs ?? 0), elapsed);
    const ms = elapsed - queuedMs;
    if (task.lease.class === 'lane') m.laneDraftQueueMs += queuedMs;
    m.draftMs += ms;
    m.draftTokens += task.maxTokens;
    m.draftCallsTimed++;
    m.draftTokensSquared += task.maxTokens * task.maxTokens;
    m.draftTokenMs += task.maxTokens * ms;
    // The call may have started before V grew past D's end (bonus tokens with D empty): its first
    // tokens then overlap V and must agree with it.
    const overlap = this.draftedEnd - task.prefixLength;
    let usable = task.epoch === this.epoch && overlap >= 0;
    for (let i = 0; usable && i < overlap; i++) usable = i < tokens.length && tokens[i] === this.verified[task.prefixLength + i];
    if (usable) {
      const room = Math.max(0, this.draftEnd() - this.draftedEnd);
      const fresh = tokens.slice(overlap, overlap + room);
      const eosIndex = this.config.eosTokenId === undefined ? -1 : fresh.indexOf(this.config.eosTokenId);
      const kept = eosIndex < 0 ? fresh.length : eosIndex + 1;
      for (let i = 0; i < kept; i++) {
        this.drafts.push(fresh[i]);
        this.draftRows.push(result.probs && this.vocab ? result.probs.subarray((overlap + i) * this.vocab, (overlap + i + 1) * this.vocab) : undefined);
      }
    }
    if (tokens.length === 0) this.drafterResting = true;
    this.emit('draftEnd', { epoch: task.epoch, tokens: tokens.length, outcome: usable ? 'used' : 'stale' });
  }

  private onDraftFailed(task: DraftTask, error: unknown): void {
    if (this.draftTask !== task) return;
    this.endDraft(task, 'failed');
    this.drafterResting = true;
    this.emit('draftEnd', { epoch: task.epoch, tokens: 0, outcome: 'failed', error });
  }

  private onDraftTimeout(task: DraftTask, ms: number): void {
    if (this.draftTask !== task) return;
    this.draftTask = undefined;
    task.lease.release('failed');
    const error = new DraftTimeoutError(`drafter call took longer than ${ms} ms`);
    task.controller.abort(error);
    this.drafterResting = true;
    this.emit('draftEnd', { epoch: task.epoch, tokens: 0, outcome: 'failed', error });
  }

  private cancelDraft(): void {
    const task = this.draftTask;
    if (!task) return;
    this.endDraft(task, 'cancelled');
    task.controller.abort(new WorkCancelledError('the drafts are no longer needed'));
    this.emit('draftEnd', { epoch: task.epoch, tokens: 0, outcome: 'cancelled' });
  }

  private malformedDraftResult(result: DraftResult, maxTokens: number): string | undefined {
    const tokens = result?.tokens;
    if (!Array.isArray(tokens) || tokens.length > maxTokens) return `expected at most ${maxTokens} tokens`;
    if (tokens.some((token) => !isToken(token, this.vocab))) return 'a draft is not a token id';
    if (!this.returnProbs || tokens.length === 0) return undefined;
    const { probs } = result;
    if (!probs) return 'the rejection rule needs draft probabilities';
    const vocab = this.vocab ?? probs.length / tokens.length;
    if (!Number.isInteger(vocab) || vocab < 1 || probs.length !== tokens.length * vocab) return 'draft probabilities have the wrong shape';
    this.vocab = vocab;
    return undefined;
  }

  // ---------------------------------------------------------------- ending

  private finish(reason: FinishReason): void {
    const stopLength = reason === 'stop' ? this.matchedStopSequence() : 0;
    const outputEnd = this.verified.length - stopLength;
    this.stream(outputEnd);
    this.shutdown();
    const now = this.clock.now();
    const tokens = this.verified.slice(this.promptLength, outputEnd);
    const wallMs = now - this.startedAt;
    const ttftMs = (this.firstCommitAt ?? now) - this.startedAt;
    this.resolve({
      tokens,
      finishReason: reason,
      metrics: {
        drafted: this.drafted,
        accepted: this.acceptedDrafts,
        acceptanceRate: this.judgedDrafts > 0 ? this.acceptedDrafts / this.judgedDrafts : 0,
        meanAcceptedLength: this.committingVerifications > 0 ? this.committedTokens / this.committingVerifications : 0,
        targetForwards: this.verifyCalls - this.failedVerifications,
        preemptions: this.preemptions,
        draftCalls: this.draftCalls,
        verifyCalls: this.verifyCalls,
        cancelledVerifications: this.cancelledVerifications,
        meanLookahead: this.blocksMade > 0 ? this.lookaheadSum / this.blocksMade : 0,
        blocksPerCommit: this.committingVerifications > 0 ? this.verifyCalls / this.committingVerifications : 0,
        ttftMs,
        tpotMs: tokens.length > 1 ? (wallMs - ttftMs) / (tokens.length - 1) : 0,
        wallMs,
      },
    });
  }

  /** Ends the run with an error: the client's abort reason, exhausted replicas, or a throwing hook. */
  private fail(error: unknown): void {
    if (this.finished) return;
    this.shutdown();
    this.reject(error);
  }

  /** Ends the run: every dispatched block is cancelled (a completed but uncommitted one too) and so is the drafter call. */
  private shutdown(): void {
    this.finished = true;
    if (this.abortListener) this.options.signal?.removeEventListener('abort', this.abortListener);
    this.cancelBlocks('cancelled');
    this.cancelDraft();
    this.targets.leave(this.verifier);
    this.drafters.leave(this.draftRequester);
  }

  /**
   * Calls an observability hook. A hook that throws fails the run, except while the run is already
   * ending: then the cleanup must complete.
   */
  private emit<Name extends keyof SchedulerEvents>(name: Name, event: Parameters<NonNullable<SchedulerEvents[Name]>>[0]): void {
    const hook = this.options.events?.[name] as ((e: typeof event) => void) | undefined;
    if (!hook) return;
    try {
      hook.call(this.options.events, event);
    } catch (error) {
      if (!this.finished) throw error;
    }
  }

  /**
   * Runs a state transition; an exception (a throwing hook, a bug) fails the run instead of escaping.
   * The schedulers are held meanwhile, so they decide once the state is whole again: first the
   * targets, then the drafters (whether SI may draft depends on whether its block went out).
   */
  private guard(transition: () => void): void {
    if (this.finished) return;
    this.targets.hold();
    this.drafters.hold();
    try {
      transition();
    } catch (error) {
      if (!this.finished) this.fail(error);
    } finally {
      this.targets.resume();
      this.drafters.resume();
    }
  }
}

function malformedVerifyResult(result: VerifyResult, drafts: readonly number[], vocabSize: number | undefined): string | undefined {
  const accepted = result?.accepted;
  const tokens = result?.tokens;
  if (!Number.isInteger(accepted) || accepted < 0 || accepted > drafts.length) return `accepted must be in [0, ${drafts.length}], got ${accepted}`;
  if (!Array.isArray(tokens) || tokens.length !== accepted + 1) return `expected ${accepted + 1} tokens, got ${Array.isArray(tokens) ? tokens.length : tokens}`;
  for (let i = 0; i < accepted; i++) {
    if (tokens[i] !== drafts[i]) return `accepted token ${i} differs from the draft`;
  }
  if (!isToken(tokens[accepted], vocabSize)) return `the target token ${tokens[accepted]} is not a token id`;
  return undefined;
}

/** Drafts the pool must have judged before its acceptance decides a busy pool's way (a few early verdicts swing it). */
const MIN_JUDGED_FOR_REGIME = 64;

/** Expected tokens a verification of n drafts commits at acceptance a: 1 + a + ... + a^n. */
function expectedCommitted(a: number, n: number): number {
  return a >= 1 ? n + 1 : (1 - a ** (n + 1)) / (1 - a);
}

/** Calls a port, turning a synchronous throw into a rejection. */
function invoke<T>(call: () => Promise<T>): Promise<T> {
  try {
    return Promise.resolve(call());
  } catch (error) {
    return Promise.reject(error);
  }
}

function concatRows(rows: readonly (Float32Array | undefined)[], vocab: number): Float32Array {
  const out = new Float32Array(rows.length * vocab);
  rows.forEach((row, i) => {
    if (row) out.set(row, i * vocab);
  });
  return out;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
