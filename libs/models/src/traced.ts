import type { Tracer } from '@opentelemetry/api';
import { DsiAttributes as A, DsiSpans, GenAiAttributes as G, withSpan } from '@dsi/telemetry';
import type { LanguageModel } from './backend';

/**
 * The model with a `dsi.forward` span around every forward (a child of the gRPC server span of the
 * Draft or Verify that asked for it): tokens computed, tokens reused from the KV cache, time in the
 * model. Everything else passes through.
 */
export function tracedModel(model: LanguageModel, tracer: Tracer): LanguageModel {
  return {
    info: model.info,
    logits: (requestId, tokens, from, signal) =>
      withSpan(tracer, DsiSpans.FORWARD, { [G.REQUEST_MODEL]: model.info.name, [A.REQUEST_ID]: requestId, 'dsi.tokens.total': tokens.length }, async (span) => {
        const result = await model.logits(requestId, tokens, from, signal);
        span.setAttributes({
          [A.TOKENS_COMPUTED]: result.computedTokens,
          [A.TOKENS_REUSED]: result.reusedTokens,
          ...(result.modelMs !== undefined ? { 'dsi.model_ms': result.modelMs } : {}),
        });
        return result;
      }),
    release: (requestId) => model.release(requestId),
    warmup: () => model.warmup(),
    close: () => model.close(),
  };
}
