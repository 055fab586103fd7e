import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import {
  Mode as WireMode,
  OrchestratorServiceService,
  type GenerateRequest,
  type GenerateResponse,
  type GenerateStreamRequest,
  type GenerateStreamResponse,
  type GenerationParams,
} from '@dsi/proto';
import {
  DrafterScheduler,
  generate,
  InvalidGenerateConfigError,
  TargetScheduler,
  TargetsUnavailableError,
  validateGenerateConfig,
  type Drafter,
  type GenerateConfig,
  type Lookahead,
  type TargetReplica,
  type VerifyCall,
  type VerifyResult,
} from '@dsi/core';
import { metrics, trace, type Tracer } from '@opentelemetry/api';
import { generationInstruments, type GenerationInstruments } from '@dsi/telemetry';
import { GenerationTrace } from './tracing';
import { realClock, type TextTokenizer } from '@dsi/models';
import { type CallContext, DsiError, invalidArgument, resourceExhausted, serverStream, statusCodeName, unary, unavailable, type ServiceRegistration } from '@dsi/rpc';
import { finishReasonToWire, generationMetricsToWire, modeFromWire, modeToWire, samplingFromWire } from '@dsi/wire';
import { Admission, DEFAULT_MAX_QUEUED_REQUESTS, defaultMaxActiveRequests } from './admission';
import { TargetLimitsSource, type TargetLimits } from './limits';
import type { GrpcDrafter, GrpcTargetReplica, ReplicaPool } from './replicas';
import { rejectingUndecodableRequests } from '@dsi/rpc';
import { countStopSequencesOnWire, REQUEST_LIMIT_ENV, resolveRequestLimits } from './request-limits';

/** What the orchestrator needs and its limits. */
export interface OrchestratorOptions {
  /** The drafter replicas (one or more), health-watched; drafting is skipped while none is SERVING. */
  drafters: ReplicaPool<GrpcDrafter>;
  /** The target replicas, health-watched; generations run on the SERVING ones. */
  targets: ReplicaPool<GrpcTargetReplica>;
  /**
   * Most generations running at once; more wait in a queue. Default
   * {@link defaultMaxActiveRequests} of the healthy target replicas (2 per replica), following them.
   */
  maxActiveRequests?: number;
  /** Most requests waiting for a turn; more get RESOURCE_EXHAUSTED. Default {@link DEFAULT_MAX_QUEUED_REQUESTS}. */
  maxQueuedRequests?: number;
  /**
   * Calls sent to one drafter or target replica at once (default 1): replicas that batch the calls
   * arriving during a forward (`--max-batch-requests`) take several, and generations are admitted for
   * every slot (the default active limit becomes 2 per slot).
   */
  slotsPerReplica?: number;
  /** Turns prompt and stop text into token ids and output ids into text (the target's tokenizer). */
  tokenizer: TextTokenizer;
  /** End-of-sequence token id of the target, when it has one. */
  eosTokenId?: number;
  /** Largest max_new_tokens a request may ask for. Default 4096. */
  maxNewTokensLimit?: number;
  /** Lookahead of a request that leaves it unset (or 0). Default 'auto'. */
  defaultLookahead?: Lookahead;
  /**
   * The target's vocabulary and context length, which every request is checked against before any
   * replica sees it: fixed, or a source that learns them. Default: asked of the healthy replicas
   * (GetModelInfo) until one answers.
   */
  targetLimits?: TargetLimits | TargetLimitsSource;
  /**
   * Most characters of prompt text (and of all stop texts together) the orchestrator tokenizes; longer
   * ones get RESOURCE_EXHAUSTED before any work. Default `DSI_MAX_PROMPT_CHARS`, else
   * {@link PROMPT_CHARS_PER_TOKEN} x the target's context length.
   */
  maxPromptChars?: number;
  /**
   * Most prompt tokens (given, or tokenized from the text), whatever the target's context; more get
   * RESOURCE_EXHAUSTED. Default `DSI_MAX_PROMPT_TOKENS`, else 131072 (see ./request-limits).
   */
  maxPromptTokens?: number;
  /** Most entries in `stop`; more get RESOURCE_EXHAUSTED. Default `DSI_MAX_STOP_SEQUENCES`, else 32. */
  maxStopSequences?: number;
  /** Most characters of one stop sequence; more get RESOURCE_EXHAUSTED. Default `DSI_MAX_STOP_SEQUENCE_CHARS`, else 512. */
  maxStopSequenceChars?: number;
  /** Tracer for the dsi.generate / dsi.draft / dsi.verify spans; default: the global provider's. */
  tracer?: Tracer;
  /** Counters and histograms; default: instruments on the global meter provider's meter. */
  instruments?: GenerationInstruments;
}

/**
 * Characters of prompt text the orchestrator tokenizes per token of the target's context, by default:
 * far more than any tokenizer packs into a token, and a bound on the time tokenizing takes (a 3 MB
 * prompt would hold the event loop for seconds only to be rejected).
 */
export const PROMPT_CHARS_PER_TOKEN = 16;

/** The context length assumed for the prompt text limit while the target's is not known yet. */
const ASSUMED_CONTEXT_LENGTH = 4096;

/** Statuses that say the request itself was wrong (or too big): a replica's answer the client must see as is. */
const CALLERS_MISTAKES: ReadonlySet<status> = new Set([
  status.INVALID_ARGUMENT,
  status.OUT_OF_RANGE,
  status.FAILED_PRECONDITION,
  status.RESOURCE_EXHAUSTED,
  status.NOT_FOUND,
  status.PERMISSION_DENIED,
  status.UNAUTHENTICATED,
]);

/** The core validator's field names, as the wire (the .proto) names them. */
const WIRE_NAMES: readonly [RegExp, string][] = [
  [/\bmaxNewTokens\b/g, 'max_new_tokens'],
  [/\bstopSequences\b/g, 'stop'],
  [/\beosTokenId\b/g, 'eos_token_id'],
  [/\brequestId\b/g, 'request_id'],
  [/\bvocabSize\b/g, 'vocab_size'],
  [/\bfor mode nonsi\b/g, `for ${WireMode[WireMode.MODE_NON_SI]}`],
  [/\bfor mode si\b/g, `for ${WireMode[WireMode.MODE_SI]}`],
  [/\bfor mode dsi\b/g, `for ${WireMode[WireMode.MODE_DSI]}`],
];

/** A problem found by libs/core's validator, told in the wire's names (`max_new_tokens`, not `maxNewTokens`). */
export function withWireNames(problem: string): string {
  return WIRE_NAMES.reduce((text, [pattern, wireName]) => text.replace(pattern, wireName), problem);
}

/** Rejects a token outside [0, vocabSize) (or a negative or fractional one when the vocabulary is not known). */
function requireTokenIds(field: string, tokens: readonly number[], vocabSize: number | undefined): void {
  const bad = tokens.findIndex((t) => !Number.isSafeInteger(t) || t < 0 || (vocabSize !== undefined && t >= vocabSize));
  if (bad < 0) return;
  const range = vocabSize === undefined ? 'the token ids (integers >= 0)' : `the target's vocabulary [0, ${vocabSize})`;
  throw invalidArgument(`${field}[${bad}]=${tokens[bad]} is outside ${range}`);
}

/**
 * The last failure of each replica during one generation, so a generation the replicas failed can say
 * who answered what. A replica that succeeds again is forgiven.
 */
class ReplicaFailures {
  private readonly last = new Map<string, unknown>();
  private lastReplica?: string;

  /** One Verify call on `replica`, recording its failure unless it was a cancellation by the scheduler. */
  async verify(replica: TargetReplica, call: VerifyCall, signal: AbortSignal): Promise<VerifyResult> {
    try {
      const result = await replica.verify(call, signal);
      this.last.delete(replica.id);
      return result;
    } catch (error) {
      if (!signal.aborted) {
        this.last.set(replica.id, error);
        this.lastReplica = replica.id;
      }
      throw error;
    }
  }

  /**
   * What the client hears when the scheduler gave up on the target replicas: the last replica's own
   * status. A caller's mistake names that replica and keeps its message; any other status (UNAVAILABLE,
   * a replica's INTERNAL) names every replica that failed with what it answered. A failure that is no
   * replica's status is the orchestrator's own bug: the error is returned as is (INTERNAL, logged).
   */
  toClientError(error: TargetsUnavailableError, replicaCount: number): unknown {
    const id = this.lastReplica;
    const last = id === undefined ? undefined : this.last.get(id);
    if (!(last instanceof DsiError)) return error;
    if (CALLERS_MISTAKES.has(last.code)) return new DsiError(last.code, `target ${id}: ${last.rawMessage}`, { cause: error });
    const failed = [...this.last.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([replica, e]) => {
        const answer = DsiError.from(e, status.INTERNAL);
        return `${replica} (${statusCodeName(answer.code)}: ${answer.rawMessage})`;
      });
    const who = failed.length >= replicaCount ? 'every target replica failed' : 'target replicas kept failing';
    // A replica's CANCELLED was not the client's doing: to the client the replicas are unavailable.
    const code = last.code === status.CANCELLED ? status.UNAVAILABLE : last.code;
    return new DsiError(code, `${who}: ${failed.join(', ')}`, { cause: error });
  }
}

/** A running generation as the shared ports find it by its request id: its spans and its replicas' failures. */
interface RunningGeneration {
  readonly spans: GenerationTrace;
  readonly failures: ReplicaFailures;
}

/** The drafter the scheduler gets when no drafter replica is known at all: drafting fails at once (non-SI). */
const NO_DRAFTER: Drafter = {
  id: 'no-drafter',
  draft: () => Promise.reject(unavailable('no drafter replica is known: drafting is skipped until one is')),
};

/** The last input and output of a derived list, so a scheduler sees the same array until its input changes. */
function memoized<In extends readonly unknown[], Out>(input: () => In, derive: (input: In) => Out): () => Out {
  let last: { input: In; output: Out } | undefined;
  return () => {
    const now = input();
    if (!last || now.length !== last.input.length || now.some((item, i) => item !== last!.input[i])) last = { input: now, output: derive(now) };
    return last.output;
  };
}

/**
 * The orchestrator's replicas as every generation shares them (docs/architecture.md, "Many requests at
 * once"): one TargetScheduler over the healthy target replicas and one DrafterScheduler over the
 * healthy drafters (every known drafter while none is healthy: each call then fails at once and the
 * generations go on as non-SI), both following the pools' health. Each replica's port is made once;
 * a call finds its generation's spans and failure record by the call's request id.
 */
class SharedReplicas {
  readonly targetScheduler: TargetScheduler;
  readonly drafterScheduler: DrafterScheduler;
  private readonly running = new Map<string, RunningGeneration>();
  private readonly targetPorts = new WeakMap<GrpcTargetReplica, TargetReplica>();
  private readonly drafterPorts = new WeakMap<Drafter, Drafter>();

  constructor(
    private readonly targets: ReplicaPool<GrpcTargetReplica>,
    private readonly drafters: ReplicaPool<GrpcDrafter>,
    slotsPerReplica = 1,
  ) {
    this.targetScheduler = new TargetScheduler(
      memoized(() => targets.healthy(), (healthy) => healthy.map((replica) => this.targetPort(replica))),
      { slotsPerReplica },
    );
    this.drafterScheduler = new DrafterScheduler(
      memoized(
        () => [drafters.healthy(), drafters.all()] as const,
        ([healthy, all]) => (healthy.length > 0 ? healthy : all.length > 0 ? all : [NO_DRAFTER]).map((drafter) => this.drafterPort(drafter)),
      ),
      { slotsPerReplica },
    );
  }

  /** Makes the decisions a change of the replicas allows (a replica back gets work at once). */
  schedule(): void {
    this.targetScheduler.schedule();
    this.drafterScheduler.schedule();
  }

  /** Registers a generation for the length of `run`. */
  async with<T>(requestId: string, generation: RunningGeneration, run: () => Promise<T>): Promise<T> {
    this.running.set(requestId, generation);
    try {
      return await run();
    } finally {
      this.running.delete(requestId);
      for (const drafter of this.drafters.all()) drafter.release(requestId);
      for (const target of this.targets.healthy()) target.release(requestId);
    }
  }

  private targetPort(replica: GrpcTargetReplica): TargetReplica {
    let port = this.targetPorts.get(replica);
    if (!port) {
      port = {
        id: replica.id,
        verify: (call, signal) => {
          const generation = this.running.get(call.requestId);
          if (!generation) return replica.verify(call, signal);
          return generation.spans.verifyCall(replica.id, () => generation.failures.verify(replica, call, signal));
        },
      };
      this.targetPorts.set(replica, port);
    }
    return port;
  }

  private drafterPort(drafter: Drafter): Drafter {
    let port = this.drafterPorts.get(drafter);
    if (!port) {
      port = {
        id: drafter.id,
        draft: (call, signal) => {
          const generation = this.running.get(call.requestId);
          return generation ? generation.spans.draftCall(() => drafter.draft(call, signal)) : drafter.draft(call, signal);
        },
      };
      this.drafterPorts.set(drafter, port);
    }
    return port;
  }
}

/**
 * Decodes a growing token list to text deltas without splitting a multi-byte character: a trailing
 * replacement character is held back until the bytes that complete it arrive.
 */
class TextStream {
  private emitted = 0;

  constructor(private readonly tokenizer: TextTokenizer) {}

  next(all: readonly number[]): string {
    let text = this.tokenizer.decode(all);
    if (text.endsWith('\uFFFD')) text = text.slice(0, -1);
    if (text.length <= this.emitted) return '';
    const delta = text.slice(this.emitted);
    this.emitted = text.length;
    return delta;
  }
}

/**
 * The `dsi.v1.OrchestratorService` registration: Generate and GenerateStream run NON_SI, SI or DSI
 * with the libs/core scheduler and the real clock, every generation on the same shared schedulers of
 * the healthy target and drafter replicas (lanes first, speculation only on spare capacity). At most
 * `maxActiveRequests` run at once and `maxQueuedRequests` wait (FIFO); beyond that RESOURCE_EXHAUSTED.
 * A client deadline or cancel takes a waiting request out of the queue, and aborts every downstream
 * draft and verification of a running one; each request's KV caches are released on the replicas
 * when it ends.
 */
export function orchestratorService(options: OrchestratorOptions): ServiceRegistration {
  const limit = options.maxNewTokensLimit ?? 4096;
  const requestLimits = resolveRequestLimits(options);
  const instruments = options.instruments ?? generationInstruments(metrics.getMeter('dsi-orchestrator'));

  const limitsSource = options.targetLimits instanceof TargetLimitsSource ? options.targetLimits : new TargetLimitsSource(options.targetLimits);

  const tooManyStops = (count: number) =>
    resourceExhausted(`stop has ${count} sequences; at most ${requestLimits.maxStopSequences} are accepted (${REQUEST_LIMIT_ENV.maxStopSequences})`);

  /** Checks the request against the wire's rules and the target's limits, in the wire's names, and builds the scheduler's config. */
  function configOf(params: GenerationParams | undefined, requestId: string, limits: TargetLimits | undefined): GenerateConfig {
    if (!params) throw invalidArgument('params is missing');
    const mode = modeFromWire(params.mode);
    if (!mode) throw invalidArgument(`mode=${params.mode} is not one of MODE_NON_SI, MODE_SI, MODE_DSI`);
    const maxNewTokens = params.maxNewTokens ?? 64;
    if (maxNewTokens > limit) throw invalidArgument(`max_new_tokens=${maxNewTokens} is above the limit ${limit}`);
    const maxChars = requestLimits.maxPromptChars ?? PROMPT_CHARS_PER_TOKEN * (limits?.contextLength ?? ASSUMED_CONTEXT_LENGTH);
    const why =
      requestLimits.maxPromptChars !== undefined
        ? ` (${REQUEST_LIMIT_ENV.maxPromptChars})`
        : limits
          ? ` (${PROMPT_CHARS_PER_TOKEN} per token of the target's context length ${limits.contextLength})`
          : '';
    const { maxStopSequences, maxStopSequenceChars, maxPromptTokens } = requestLimits;
    if (params.stop.length > maxStopSequences) throw tooManyStops(params.stop.length);
    const longStop = params.stop.findIndex((s) => s.length > maxStopSequenceChars);
    if (longStop >= 0) {
      throw resourceExhausted(
        `stop[${longStop}] has ${params.stop[longStop].length} characters; at most ${maxStopSequenceChars} are accepted (${REQUEST_LIMIT_ENV.maxStopSequenceChars})`,
      );
    }
    const stops = params.stop.filter((s) => s.length > 0);
    const stopChars = stops.reduce((sum, s) => sum + s.length, 0);
    if (stopChars > maxChars) throw resourceExhausted(`stop has ${stopChars} characters; the orchestrator tokenizes at most ${maxChars}${why}`);
    let prompt: number[];
    if (params.promptTokens.length > 0) {
      prompt = params.promptTokens;
    } else {
      if (params.prompt.length === 0) throw invalidArgument('prompt is empty: give prompt or prompt_tokens');
      if (params.prompt.length > maxChars) {
        throw resourceExhausted(`prompt has ${params.prompt.length} characters; the orchestrator tokenizes at most ${maxChars}${why}`);
      }
      prompt = options.tokenizer.encode(params.prompt);
    }
    if (limits) {
      const context = limits.contextLength;
      const fit = '(prompt + max_new_tokens must fit)';
      if (prompt.length > context) throw invalidArgument(`prompt has ${prompt.length} tokens; the target's context length is ${context} ${fit}`);
      if (maxNewTokens >= 1 && prompt.length + maxNewTokens > context) {
        throw invalidArgument(`prompt has ${prompt.length} tokens and max_new_tokens=${maxNewTokens}; the target's context length is ${context} ${fit}`);
      }
    }
    const promptField = params.promptTokens.length > 0 ? 'prompt_tokens' : 'prompt';
    if (prompt.length > maxPromptTokens) {
      throw resourceExhausted(`${promptField} has ${prompt.length} tokens; at most ${maxPromptTokens} are accepted (${REQUEST_LIMIT_ENV.maxPromptTokens})`);
    }
    requireTokenIds(promptField, prompt, limits?.vocabSize);
    const config: GenerateConfig = {
      requestId,
      mode,
      prompt,
      maxNewTokens,
      lookahead: params.lookahead ? params.lookahead : (options.defaultLookahead ?? 'auto'),
      sampling: samplingFromWire(params.sampling),
      eosTokenId: options.eosTokenId,
      stopSequences: stops.map((s) => options.tokenizer.encode(s)),
    };
    const problem = validateGenerateConfig(config);
    if (problem) throw invalidArgument(withWireNames(problem));
    return config;
  }

  const slots = options.slotsPerReplica ?? 1;
  const shared = new SharedReplicas(options.targets, options.drafters, slots);
  const admission = new Admission(
    {
      maxActive: options.maxActiveRequests ?? (() => defaultMaxActiveRequests(options.targets.healthy().length * slots)),
      maxQueued: options.maxQueuedRequests ?? DEFAULT_MAX_QUEUED_REQUESTS,
    },
    (change) => {
      if (change.active !== 0) instruments.activeRequests.add(change.active);
      if (change.queued !== 0) instruments.queuedRequests.add(change.queued);
    },
  );
  const onReplicasChanged = (): void => {
    shared.schedule();
    admission.pump(); // the default bound follows the healthy targets
  };
  options.targets.onChange(onReplicasChanged);
  options.drafters.onChange(onReplicasChanged);

  /** Fails with UNAVAILABLE when no target replica is healthy, after one more round of health checks. */
  async function requireTargets(): Promise<void> {
    if (options.targets.healthy().length > 0) return;
    await options.targets.refresh();
    if (options.targets.healthy().length === 0) throw unavailable('no healthy target replica: check the targets and their health');
  }

  async function run(params: GenerationParams | undefined, call: CallContext, onTokens?: (tokens: number[]) => void): Promise<GenerateResponse> {
    const { signal } = call;
    const requestId = `gen-${randomUUID()}`;
    const limits = await limitsSource.get(options.targets.healthy().map((t) => t.id));
    const config = configOf(params, requestId, limits);
    await requireTargets();
    const endTurn = await admission.enter(signal);
    try {
      await requireTargets(); // the replicas may have gone while the request waited
      const spans = new GenerationTrace(options.tracer ?? trace.getTracer('dsi-orchestrator'), config, instruments, call.traceContext);
      const failures = new ReplicaFailures();
      const result = await shared.with(requestId, { spans, failures }, () =>
        spans
          .within(() =>
            generate(
              config,
              { targetScheduler: shared.targetScheduler, drafterScheduler: shared.drafterScheduler, clock: realClock },
              { signal, onTokens, events: spans.events() },
            ),
          )
          .catch((error: unknown) => {
            spans.fail(error);
            if (error instanceof TargetsUnavailableError) throw failures.toClientError(error, shared.targetScheduler.replicaCount);
            if (error instanceof InvalidGenerateConfigError) throw invalidArgument(withWireNames(error.message), { cause: error });
            throw error;
          }),
      );
      spans.finish(result);
      return {
        text: options.tokenizer.decode(result.tokens),
        tokens: result.tokens,
        finishReason: finishReasonToWire(result.finishReason),
        requestId,
        mode: modeToWire(config.mode),
        metrics: generationMetricsToWire(result.metrics),
      };
    } finally {
      endTurn();
    }
  }

  // Too many stop sequences are refused before decoding: decoding them would cost more than the answer.
  const beforeDecode = (_method: string, bytes: Buffer) => {
    const stops = countStopSequencesOnWire(bytes);
    return stops > requestLimits.maxStopSequences ? tooManyStops(stops) : undefined;
  };
  return rejectingUndecodableRequests({
    name: 'dsi.v1.OrchestratorService',
    definition: OrchestratorServiceService,
    implementation: {
      generate: unary<GenerateRequest, GenerateResponse>((request, call) => run(request.params, call)),
      generateStream: serverStream<GenerateStreamRequest, GenerateStreamResponse>(async (request, call) => {
        const { send } = call;
        const verified: number[] = [];
        const text = new TextStream(options.tokenizer);
        let sending = Promise.resolve();
        const done = await run(request.params, call, (tokens) => {
          verified.push(...tokens);
          const delta = { tokens, text: text.next(verified) };
          sending = sending.then(() => send({ delta }));
          sending.catch(() => undefined); // awaited below
        });
        await sending;
        await send({ done });
      }),
    },
  }, beforeDecode);
}
