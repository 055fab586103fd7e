import { randomUUID } from 'node:crypto';
import { DrafterServiceService, type DraftRequest, type DraftResponse } from '@dsi/proto';
import { draftToken } from '@dsi/core';
import { unary, type ServiceRegistration } from '@dsi/rpc';
import {
  asInvalidArgument,
  replicaHandlers,
  requireCallShape,
  requireValidSampling,
  samplingFromWire,
  statsToWire,
  type ForwardResult,
  type ModelSlot,
} from '@dsi/models';

/** Limits of one drafter replica. */
export interface DrafterServiceOptions {
  /** Most tokens one Draft may ask for. Default 64. */
  maxTokens?: number;
}

/**
 * The `dsi.v1.DrafterService` registration over one model instance: Draft runs the drafter
 * autoregressively (one cached forward per token), stopping early at end-of-sequence or a full
 * context; a cancelled call stops before its next forward.
 */
export function drafterService(slot: ModelSlot, options: DrafterServiceOptions = {}): ServiceRegistration {
  const maxTokens = options.maxTokens ?? 64;
  return {
    name: 'dsi.v1.DrafterService',
    definition: DrafterServiceService,
    implementation: {
      draft: unary<DraftRequest, DraftResponse>(async (request, { signal }) => {
        const model = slot.get();
        const { vocabSize: vocab, contextLength, eosTokenId } = model.info;
        requireCallShape(request.prefix.length, 'max_tokens', request.maxTokens, 1, maxTokens);
        const params = samplingFromWire(request.sampling);
        requireValidSampling(params);
        // A one-off call still caches between its own steps, then lets go.
        const cacheKey = request.requestId || `oneoff-${randomUUID()}`;
        const sequence = [...request.prefix];
        const tokens: number[] = [];
        const probs: number[] = [];
        const forwards: ForwardResult[] = [];
        try {
          while (tokens.length < request.maxTokens && sequence.length < contextLength) {
            signal.throwIfAborted();
            const forward = await model.logits(cacheKey, sequence, sequence.length - 1, signal);
            forwards.push(forward);
            const drafted = draftToken(forward.logits, vocab, params, sequence.length);
            tokens.push(drafted.token);
            if (request.returnProbs && drafted.probs) probs.push(...drafted.probs);
            sequence.push(drafted.token);
            if (drafted.token === eosTokenId) break;
          }
        } catch (error) {
          throw asInvalidArgument(error);
        } finally {
          if (!request.requestId) void model.release(cacheKey);
        }
        return { tokens, probs, vocabSize: vocab, stats: statsToWire(forwards) };
      }),
      ...replicaHandlers(slot, maxTokens),
    },
  };
}
