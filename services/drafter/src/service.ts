import { randomUUID } from 'node:crypto';
import { draftWithModel } from '@dsi/models';
import { DrafterServiceService, type DraftRequest, type DraftResponse } from '@dsi/proto';
import { unary, type ServiceRegistration } from '@dsi/rpc';
import { asInvalidArgument, replicaHandlers, requireCount, requireTokens, requireValidSampling, samplingFromWire, statsToWire, type ModelSlot } from '@dsi/wire';
import { DEFAULT_MAX_REQUEST_ID_LENGTH, limitFromEnv, MAX_REQUEST_ID_LENGTH_ENV, requestIdLimited, requireRequestIdLength } from '@dsi/rpc';
import { rejectingUndecodableRequests } from '@dsi/rpc';

/** Limits of one drafter replica. */
export interface DrafterServiceOptions {
  /** Most tokens one Draft may ask for. Default 64. */
  maxTokens?: number;
  /**
   * Longest request_id accepted (Draft and Release); longer ones get INVALID_ARGUMENT. Default
   * `DSI_MAX_REQUEST_ID_LENGTH`, else {@link DEFAULT_MAX_REQUEST_ID_LENGTH}.
   */
  maxRequestIdLength?: number;
}

/**
 * The `dsi.v1.DrafterService` registration over one model instance: Draft runs the drafter
 * autoregressively (one cached forward per token), stopping early at end-of-sequence or a full
 * context (a prefix that fills it gets no tokens; a longer one, INVALID_ARGUMENT like on a target); a
 * cancelled call stops before its next forward. A request that does not decode, or breaks a limit
 * (max_tokens, request_id length, the model's vocabulary and context), gets INVALID_ARGUMENT first.
 */
export function drafterService(slot: ModelSlot, options: DrafterServiceOptions = {}): ServiceRegistration {
  const maxTokens = options.maxTokens ?? 64;
  const maxRequestIdLength = options.maxRequestIdLength ?? limitFromEnv(MAX_REQUEST_ID_LENGTH_ENV, DEFAULT_MAX_REQUEST_ID_LENGTH);
  const handlers = replicaHandlers(slot, maxTokens);
  return rejectingUndecodableRequests({
    name: 'dsi.v1.DrafterService',
    definition: DrafterServiceService,
    implementation: {
      draft: unary<DraftRequest, DraftResponse>(async (request, { signal }) => {
        const model = slot.get();
        requireRequestIdLength(request.requestId, maxRequestIdLength);
        requireTokens(model.info, request.prefix);
        requireCount('max_tokens', request.maxTokens, 1, maxTokens);
        const params = samplingFromWire(request.sampling);
        requireValidSampling(params);
        // A one-off call still caches between its own steps, then lets go.
        const cacheKey = request.requestId || `oneoff-${randomUUID()}`;
        try {
          const call = { requestId: cacheKey, prefix: request.prefix, maxTokens: request.maxTokens, sampling: params, returnProbs: request.returnProbs };
          const drafted = await draftWithModel(model, call, signal);
          return { tokens: drafted.tokens, probs: drafted.probs ? Array.from(drafted.probs) : [], vocabSize: model.info.vocabSize, stats: statsToWire(drafted.forwards) };
        } catch (error) {
          throw asInvalidArgument(error);
        } finally {
          if (!request.requestId) void model.release(cacheKey);
        }
      }),
      release: requestIdLimited(handlers.release, maxRequestIdLength),
      getModelInfo: handlers.getModelInfo,
    },
  });
}
