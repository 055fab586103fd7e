import { verifyWithModel } from '@dsi/models';
import { TargetServiceService, type VerifyRequest, type VerifyResponse } from '@dsi/proto';
import { invalidArgument, unary, type ServiceRegistration } from '@dsi/rpc';
import { asInvalidArgument, replicaHandlers, requireTokens, requireValidSampling, samplingFromWire, statsToWire, type ModelSlot } from '@dsi/wire';
import { DEFAULT_MAX_REQUEST_ID_LENGTH, limitFromEnv, MAX_REQUEST_ID_LENGTH_ENV, requestIdLimited, requireRequestIdLength } from '@dsi/rpc';
import { rejectingUndecodableRequests } from '@dsi/rpc';

/** Limits of one target replica. */
export interface TargetServiceOptions {
  /** Largest block of drafts one Verify may carry. Default 64. */
  maxBlock?: number;
  /**
   * Longest request_id accepted (Verify and Release); longer ones get INVALID_ARGUMENT. Default
   * `DSI_MAX_REQUEST_ID_LENGTH`, else {@link DEFAULT_MAX_REQUEST_ID_LENGTH}.
   */
  maxRequestIdLength?: number;
}

/**
 * The `dsi.v1.TargetService` registration over one model instance: Verify runs one forward over the
 * tokens the request's KV cache lacks and applies the verification rule; a cancelled call stops
 * queued work and never corrupts the cache. A request that does not decode, or breaks a limit (block size,
 * request_id length, the model's vocabulary and context), gets INVALID_ARGUMENT before any model work.
 */
export function targetService(slot: ModelSlot, options: TargetServiceOptions = {}): ServiceRegistration {
  const maxBlock = options.maxBlock ?? 64;
  const maxRequestIdLength = options.maxRequestIdLength ?? limitFromEnv(MAX_REQUEST_ID_LENGTH_ENV, DEFAULT_MAX_REQUEST_ID_LENGTH);
  const handlers = replicaHandlers(slot, maxBlock);
  return rejectingUndecodableRequests({
    name: 'dsi.v1.TargetService',
    definition: TargetServiceService,
    implementation: {
      verify: unary<VerifyRequest, VerifyResponse>(async (request, { signal }) => {
        const model = slot.get();
        const vocab = model.info.vocabSize;
        const { prefix, drafts } = request;
        requireRequestIdLength(request.requestId, maxRequestIdLength);
        if (drafts.length > maxBlock) throw invalidArgument(`drafts has ${drafts.length} tokens; a Verify takes at most ${maxBlock}`);
        requireTokens(model.info, prefix, drafts);
        const params = samplingFromWire(request.sampling);
        requireValidSampling(params);
        let draftProbs: Float32Array | undefined;
        if (params.rule === 'rejection') {
          if (request.draftProbs.length !== drafts.length * vocab) {
            throw invalidArgument(`draft_probs has ${request.draftProbs.length} values; the rejection rule needs drafts x vocab = ${drafts.length} x ${vocab}`);
          }
          const bad = request.draftProbs.findIndex((q) => !(q >= 0 && q <= 1));
          if (bad >= 0) throw invalidArgument(`draft_probs[${bad}]=${request.draftProbs[bad]} is not a probability in [0, 1]`);
          draftProbs = Float32Array.from(request.draftProbs);
        }
        const verdict = await verifyWithModel(model, { requestId: request.requestId, prefix, drafts, sampling: params, draftProbs }, signal).catch(
          (error: unknown) => {
            throw asInvalidArgument(error);
          },
        );
        return { accepted: verdict.accepted, tokens: verdict.tokens, stats: statsToWire([verdict.forward]) };
      }),
      release: requestIdLimited(handlers.release, maxRequestIdLength),
      getModelInfo: handlers.getModelInfo,
    },
  });
}
