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
  generate,
  InvalidGenerateConfigError,
  TargetsUnavailableError,
  validateGenerateConfig,
  type GenerateConfig,
  type TargetReplica,
} from '@dsi/core';
import { metrics, trace, type Tracer } from '@opentelemetry/api';
import { generationInstruments, type GenerationInstruments } from '@dsi/telemetry';
import { GenerationTrace } from './tracing';
import { realClock, type TextTokenizer } from '@dsi/models';
import { DsiError, invalidArgument, resourceExhausted, serverStream, statusCodeName, unary, unavailable, type ServiceRegistration } from '@dsi/rpc';
import { finishReasonToWire, generationMetricsToWire, modeFromWire, modeToWire, samplingFromWire } from '@dsi/wire';
import { TargetLimitsSource, type TargetLimits } from './limits';
import type { GrpcDrafter, ReplicaPool } from './replicas';

/** What the orchestrator needs and its limits. */
export interface OrchestratorOptions {
  drafter: GrpcDrafter;
  targets: ReplicaPool;
  /** Turns prompt and stop text into token ids and output ids into text (the target's tokenizer). */
  tokenizer: TextTokenizer;
  /** End-of-sequence token id of the target, when it has one. */
  eosTokenId?: number;
  /** Largest max_new_tokens a request may ask for. Default 4096. */
  maxNewTokensLimit?: number;
  /** Default lookahead k. Default 5. */
  defaultLookahead?: number;
  /**
   * The target's vocabulary and context length, which every request is checked against before any
   * replica sees it: fixed, or a source that learns them. Default: asked of the healthy replicas
   * (GetModelInfo) until one answers.
   */
  targetLimits?: TargetLimits | TargetLimitsSource;
  /**
   * Most characters of prompt text (and of all stop texts together) the orchestrator tokenizes; longer
   * ones get RESOURCE_EXHAUSTED before any work. Default {@link PROMPT_CHARS_PER_TOKEN} x the target's
   * context length.
   */
  maxPromptChars?: number;
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

  /** The target port, recording each failure that was not a cancellation by the scheduler. */
  target(inner: TargetReplica): TargetReplica {
    return {
      id: inner.id,
      verify: async (call, signal) => {
        try {
          const result = await inner.verify(call, signal);
          this.last.delete(inner.id);
          return result;
        } catch (error) {
          if (!signal.aborted) {
            this.last.set(inner.id, error);
            this.lastReplica = inner.id;
          }
          throw error;
        }
      },
    };
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
 * over the healthy target replicas with the libs/core scheduler and the real clock. A client deadline
 * or cancel aborts every downstream draft and verification; each request's KV caches are released on
 * the replicas when it ends.
 */
export function orchestratorService(options: OrchestratorOptions): ServiceRegistration {
  const limit = options.maxNewTokensLimit ?? 4096;
  const instruments = options.instruments ?? generationInstruments(metrics.getMeter('dsi-orchestrator'));

  const limitsSource = options.targetLimits instanceof TargetLimitsSource ? options.targetLimits : new TargetLimitsSource(options.targetLimits);

  /** Checks the request against the wire's rules and the target's limits, in the wire's names, and builds the scheduler's config. */
  function configOf(params: GenerationParams | undefined, requestId: string, limits: TargetLimits | undefined): GenerateConfig {
    if (!params) throw invalidArgument('params is missing');
    const mode = modeFromWire(params.mode);
    if (!mode) throw invalidArgument(`mode=${params.mode} is not one of MODE_NON_SI, MODE_SI, MODE_DSI`);
    const maxNewTokens = params.maxNewTokens ?? 64;
    if (maxNewTokens > limit) throw invalidArgument(`max_new_tokens=${maxNewTokens} is above the limit ${limit}`);
    const maxChars = options.maxPromptChars ?? PROMPT_CHARS_PER_TOKEN * (limits?.contextLength ?? ASSUMED_CONTEXT_LENGTH);
    const why = options.maxPromptChars !== undefined || !limits ? '' : ` (${PROMPT_CHARS_PER_TOKEN} per token of the target's context length ${limits.contextLength})`;
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
    requireTokenIds(params.promptTokens.length > 0 ? 'prompt_tokens' : 'prompt', prompt, limits?.vocabSize);
    const config: GenerateConfig = {
      requestId,
      mode,
      prompt,
      maxNewTokens,
      lookahead: params.lookahead ?? options.defaultLookahead ?? 5,
      sampling: samplingFromWire(params.sampling),
      eosTokenId: options.eosTokenId,
      stopSequences: stops.map((s) => options.tokenizer.encode(s)),
    };
    const problem = validateGenerateConfig(config);
    if (problem) throw invalidArgument(withWireNames(problem));
    return config;
  }

  async function run(params: GenerationParams | undefined, signal: AbortSignal, onTokens?: (tokens: number[]) => void): Promise<GenerateResponse> {
    const requestId = `gen-${randomUUID()}`;
    const limits = await limitsSource.get(options.targets.healthy().map((t) => t.id));
    const config = configOf(params, requestId, limits);
    let targets = options.targets.healthy();
    if (targets.length === 0) {
      await options.targets.refresh();
      targets = options.targets.healthy();
    }
    if (targets.length === 0) throw unavailable('no healthy target replica: check the targets and their health');
    const spans = new GenerationTrace(options.tracer ?? trace.getTracer('dsi-orchestrator'), config, instruments);
    const failures = new ReplicaFailures();
    try {
      const result = await spans
        .within(() =>
          generate(
            config,
            {
              drafter: spans.drafter(options.drafter),
              targets: targets.map((t) => spans.target(failures.target(t))),
              clock: realClock,
            },
            { signal, onTokens, events: spans.events() },
          ),
        )
        .catch((error: unknown) => {
          spans.fail(error);
          if (error instanceof TargetsUnavailableError) throw failures.toClientError(error, targets.length);
          if (error instanceof InvalidGenerateConfigError) throw invalidArgument(withWireNames(error.message), { cause: error });
          throw error;
        });
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
      options.drafter.release(requestId);
      for (const target of targets) target.release(requestId);
    }
  }

  return {
    name: 'dsi.v1.OrchestratorService',
    definition: OrchestratorServiceService,
    implementation: {
      generate: unary<GenerateRequest, GenerateResponse>((request, { signal }) => run(request.params, signal)),
      generateStream: serverStream<GenerateStreamRequest, GenerateStreamResponse>(async (request, { signal, send }) => {
        const verified: number[] = [];
        const text = new TextStream(options.tokenizer);
        let sending = Promise.resolve();
        const done = await run(request.params, signal, (tokens) => {
          verified.push(...tokens);
          const delta = { tokens, text: text.next(verified) };
          sending = sending.then(() => send({ delta }));
          sending.catch(() => undefined); // awaited below
        });
        await sending;
        await send({ done });
      }),
    },
  };
}
