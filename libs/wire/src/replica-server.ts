/**
 * The server side the drafter and target replicas share: the slot their model loads into, the checks
 * that turn a caller's mistake into INVALID_ARGUMENT, the Release and GetModelInfo handlers, and
 * their startup (load and warm the model while health reports NOT_SERVING).
 */
import { validateSamplingParams, type SamplingParams } from '@dsi/core';
import { loadModel, ModelInputError, tracedModel, type LanguageModel, type ModelSource } from '@dsi/models';
import type { ModelInfo as WireModelInfo } from '@dsi/proto';
import { invalidArgument, LoadingSlot, unary, type ServiceContext, type ServiceRegistration, type ServiceStartup } from '@dsi/rpc';
import { modelInfoToWire } from './replica';

/** A replica's model once loaded; calls before then get UNAVAILABLE (see {@link LoadingSlot}). */
export type ModelSlot = LoadingSlot<LanguageModel>;

/** A caller's mistake caught by the model (bad token id, too long) becomes INVALID_ARGUMENT; anything else passes. */
export function asInvalidArgument(error: unknown): unknown {
  return error instanceof ModelInputError ? invalidArgument(error.message, { cause: error }) : error;
}

/** Rejects sampling parameters the rules cannot use (unknown rule, bad temperature, missing seed). */
export function requireValidSampling(params: SamplingParams): void {
  const problem = validateSamplingParams(params);
  if (problem) throw invalidArgument(problem);
}

/** What a replica's model accepts, from its `info`: the limits {@link requireTokens} checks a call against. */
export interface TokenLimits {
  /** Token ids are in [0, vocabSize). */
  vocabSize: number;
  /** The tokens of one call (the prefix, plus a Verify's drafts) fit in this many positions. */
  contextLength: number;
}

/**
 * Rejects, before any model work, tokens the model cannot take, naming the wire field and the limit: an
 * empty prefix, a prefix (with a Verify's drafts) beyond the context length, and a token outside the
 * vocabulary. The drafter and the target share it, so both answer the same call the same way.
 */
export function requireTokens(limits: TokenLimits, prefix: readonly number[], drafts: readonly number[] = []): void {
  const { vocabSize, contextLength } = limits;
  if (prefix.length === 0) throw invalidArgument('prefix is empty: give at least one token');
  if (prefix.length > contextLength) throw invalidArgument(`prefix has ${prefix.length} tokens; the model's context length is ${contextLength}`);
  const total = prefix.length + drafts.length;
  if (total > contextLength) {
    throw invalidArgument(`prefix and drafts have ${prefix.length} + ${drafts.length} = ${total} tokens; the model's context length is ${contextLength}`);
  }
  requireVocabulary('prefix', prefix, vocabSize);
  requireVocabulary('drafts', drafts, vocabSize);
}

function requireVocabulary(field: string, tokens: readonly number[], vocabSize: number): void {
  const bad = tokens.findIndex((t) => !Number.isSafeInteger(t) || t < 0 || t >= vocabSize);
  if (bad >= 0) throw invalidArgument(`${field}[${bad}]=${tokens[bad]} is outside the vocabulary [0, ${vocabSize})`);
}

/** Rejects a per-call count outside [min, max], naming the wire field (`max_tokens=100000 is outside [1, 64]`). */
export function requireCount(field: string, count: number, min: number, max: number): void {
  if (!Number.isInteger(count) || count < min || count > max) {
    throw invalidArgument(`${field}=${count} is outside [${min}, ${max}]`);
  }
}

/** The Release and GetModelInfo handlers both replica services share. */
export function replicaHandlers(slot: ModelSlot, maxTokensPerCall: number) {
  return {
    release: unary<{ requestId: string }, { released: boolean }>(async (request) => {
      if (!request.requestId) throw invalidArgument('request_id is empty');
      return { released: await slot.get().release(request.requestId) };
    }),
    getModelInfo: unary<object, { model: WireModelInfo }>(async () => ({ model: modelInfoToWire(slot.get().info, maxTokensPerCall) })),
  };
}

/**
 * How a drafter or target replica starts: its registration over an empty slot, then (bound, health
 * NOT_SERVING) the model loaded, traced and warmed into the slot; closing frees the model if it loaded.
 */
export function replicaStartup(model: ModelSource, context: ServiceContext, registration: (slot: ModelSlot) => ServiceRegistration): ServiceStartup {
  const slot = new LoadingSlot<LanguageModel>('the model');
  return {
    registrations: [registration(slot)],
    warmUp: async () => {
      context.log(`loading the ${model.backend} model${model.backend === 'onnx' ? ` from ${model.dir}` : ''}`);
      slot.set(tracedModel(await loadModel(model), context.tracer));
    },
    close: () => slot.peek()?.close(),
  };
}
