import { randomUUID } from 'node:crypto';
import {
  OrchestratorServiceService,
  type GenerateRequest,
  type GenerateResponse,
  type GenerateStreamRequest,
  type GenerateStreamResponse,
  type GenerationParams,
} from '@dsi/proto';
import { generate, validateGenerateConfig, type GenerateConfig } from '@dsi/core';
import { metrics, trace, type Tracer } from '@opentelemetry/api';
import { generationInstruments, type GenerationInstruments } from '@dsi/telemetry';
import { GenerationTrace } from './tracing';
import { realClock, type TextTokenizer } from '@dsi/models';
import { invalidArgument, serverStream, unary, unavailable, type ServiceRegistration } from '@dsi/rpc';
import { finishReasonToWire, generationMetricsToWire, modeFromWire, modeToWire, samplingFromWire } from '@dsi/wire';
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
  /** Tracer for the dsi.generate / dsi.draft / dsi.verify spans; default: the global provider's. */
  tracer?: Tracer;
  /** Counters and histograms; default: instruments on the global meter provider's meter. */
  instruments?: GenerationInstruments;
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

  function configOf(params: GenerationParams | undefined, requestId: string): GenerateConfig {
    if (!params) throw invalidArgument('params is missing');
    const mode = modeFromWire(params.mode);
    if (!mode) throw invalidArgument(`mode=${params.mode} is not one of MODE_NON_SI, MODE_SI, MODE_DSI`);
    const prompt = params.promptTokens.length > 0 ? params.promptTokens : options.tokenizer.encode(params.prompt);
    const maxNewTokens = params.maxNewTokens ?? 64;
    if (maxNewTokens > limit) throw invalidArgument(`max_new_tokens=${maxNewTokens} is above the limit ${limit}`);
    const config: GenerateConfig = {
      requestId,
      mode,
      prompt,
      maxNewTokens,
      lookahead: params.lookahead ?? options.defaultLookahead ?? 5,
      sampling: samplingFromWire(params.sampling),
      eosTokenId: options.eosTokenId,
      stopSequences: params.stop.filter((s) => s.length > 0).map((s) => options.tokenizer.encode(s)),
    };
    const problem = validateGenerateConfig(config);
    if (problem) throw invalidArgument(problem);
    return config;
  }

  async function run(params: GenerationParams | undefined, signal: AbortSignal, onTokens?: (tokens: number[]) => void): Promise<GenerateResponse> {
    const requestId = `gen-${randomUUID()}`;
    const config = configOf(params, requestId);
    let targets = options.targets.healthy();
    if (targets.length === 0) {
      await options.targets.refresh();
      targets = options.targets.healthy();
    }
    if (targets.length === 0) throw unavailable('no healthy target replica: check the targets and their health');
    const spans = new GenerationTrace(options.tracer ?? trace.getTracer('dsi-orchestrator'), config, instruments);
    try {
      const result = await spans
        .within(() =>
          generate(
            config,
            { drafter: spans.drafter(options.drafter), targets: targets.map((t) => spans.target(t)), clock: realClock },
            { signal, onTokens, events: spans.events() },
          ),
        )
        .catch((error: unknown) => {
          spans.fail(error);
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
