import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { createSyntheticModel } from './synthetic';
import { tracedModel } from './traced';

describe('tracedModel', () => {
  it('records a dsi.forward span and the replica metrics for every forward', async () => {
    const spans = new InMemorySpanExporter();
    const tracer = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] }).getTracer('test');
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 });
    const meter = new MeterProvider({ readers: [reader] }).getMeter('test');
    const model = tracedModel(createSyntheticModel({ role: 'target', seed: 4 }), tracer, meter);

    await model.logits('r', [1, 2, 3, 4], 3);
    await model.logits('r', [1, 2, 3, 4, 5, 6], 4); // reuses 4 cached tokens, computes 2

    const forwardSpans = spans.getFinishedSpans().filter((s) => s.name === 'dsi.forward');
    expect(forwardSpans.map((s) => [s.attributes['dsi.tokens.computed'], s.attributes['dsi.tokens.reused']])).toEqual([
      [4, 0],
      [2, 4],
    ]);
    await reader.forceFlush();
    const values = Object.fromEntries(
      exporter
        .getMetrics()
        .flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics))
        .map((m) => [m.descriptor.name, m.dataPoints[0].value]),
    );
    expect(values['dsi.forwards']).toBe(2);
    expect(values['dsi.forward.tokens_computed']).toBe(6);
    expect(values['dsi.forward.tokens_reused']).toBe(4);
  });
});
