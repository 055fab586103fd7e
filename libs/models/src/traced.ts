import { metrics, type Meter, type Tracer } from '@opentelemetry/api';
import { DsiAttributes as A, DsiSpans, GenAiAttributes as G, withSpan } from '@dsi/telemetry';
import type { LanguageModel } from './backend';

/**
 * The model with a `dsi.forward` span around every forward (a child of the gRPC server span of the
 * Draft or Verify that asked for it): tokens computed, tokens reused from the KV cache, time in the
 * model, calls that shared the forward (`dsi.batch.requests`); and the replica's metrics: forwards, tokens computed and reused (their ratio is the KV
 * cache's hit rate), forward duration. Everything else passes through.
 */
export function tracedModel(model: LanguageModel, tracer: Tracer, meter: Meter = metrics.getMeter('dsi-replica')): LanguageModel {
  const attributes = { [G.REQUEST_MODEL]: model.info.name };
  const forwards = meter.createCounter('dsi.forwards', { description: 'model forwards on this replica' });
  const computed = meter.createCounter('dsi.forward.tokens_computed', { description: 'tokens run through the model' });
  const reused = meter.createCounter('dsi.forward.tokens_reused', { description: 'tokens whose keys and values came from the KV cache' });
  const duration = meter.createHistogram('dsi.forward.duration', { description: 'time in the model per forward', unit: 'ms' });
  return {
    info: model.info,
    logits: (requestId, tokens, from, signal) =>
      withSpan(tracer, DsiSpans.FORWARD, { [G.REQUEST_MODEL]: model.info.name, [A.REQUEST_ID]: requestId, 'dsi.tokens.total': tokens.length }, async (span) => {
        const result = await model.logits(requestId, tokens, from, signal);
        forwards.add(1, attributes);
        computed.add(result.computedTokens, attributes);
        reused.add(result.reusedTokens, attributes);
        if (result.modelMs !== undefined) duration.record(result.modelMs, attributes);
        span.setAttributes({
          [A.TOKENS_COMPUTED]: result.computedTokens,
          [A.TOKENS_REUSED]: result.reusedTokens,
          ...(result.modelMs !== undefined ? { 'dsi.model_ms': result.modelMs } : {}),
          'dsi.batch.requests': result.batchRequests ?? 1,
        });
        return result;
      }),
    release: (requestId) => model.release(requestId),
    warmup: () => model.warmup(),
    close: () => model.close(),
  };
}
