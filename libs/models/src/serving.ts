import { validateSamplingParams, type SamplingParams } from '@dsi/core';
import { invalidArgument, unary, unavailable } from '@dsi/rpc';
import type { ModelInfo as WireModelInfo } from '@dsi/proto';
import { ModelInputError, type LanguageModel } from './backend';
import { modelInfoToWire } from './wire';

/**
 * Holds a replica's model once it is loaded, so the server can bind and answer health (NOT_SERVING)
 * while the model loads; a call that arrives before then gets UNAVAILABLE.
 */
export class ModelSlot {
  private model?: LanguageModel;

  /** A slot that already holds `model`. */
  static of(model: LanguageModel): ModelSlot {
    const slot = new ModelSlot();
    slot.set(model);
    return slot;
  }

  set(model: LanguageModel): void {
    this.model = model;
  }

  /** The model; throws UNAVAILABLE while it is loading. */
  get(): LanguageModel {
    if (!this.model) throw unavailable('the model is still loading; retry when health reports SERVING');
    return this.model;
  }

  /** The model if loaded (for shutdown). */
  peek(): LanguageModel | undefined {
    return this.model;
  }
}

/** A caller's mistake caught by the model (bad token id, too long) becomes INVALID_ARGUMENT. */
export function asInvalidArgument(error: unknown): unknown {
  return error instanceof ModelInputError ? invalidArgument(error.message, { cause: error }) : error;
}

/** Rejects sampling parameters the rules cannot use (unknown rule, bad temperature, missing seed). */
export function requireValidSampling(params: SamplingParams): void {
  const problem = validateSamplingParams(params);
  if (problem) throw invalidArgument(problem);
}

/** Rejects an empty prefix, and a per-call count outside [min, max], naming the field. */
export function requireCallShape(prefixLength: number, field: string, count: number, min: number, max: number): void {
  if (prefixLength === 0) throw invalidArgument('prefix is empty: give at least one token');
  if (!Number.isInteger(count) || count < min || count > max) {
    throw invalidArgument(`${field}=${count} is outside [${min}, ${max}]`);
  }
}

/** The Release and GetModelInfo handlers both model services share. */
export function replicaHandlers(slot: ModelSlot, maxTokensPerCall: number) {
  return {
    release: unary<{ requestId: string }, { released: boolean }>(async (request) => {
      if (!request.requestId) throw invalidArgument('request_id is empty');
      return { released: await slot.get().release(request.requestId) };
    }),
    getModelInfo: unary<object, { model: WireModelInfo }>(async () => ({ model: modelInfoToWire(slot.get().info, maxTokensPerCall) })),
  };
}
