import { context, propagation, SpanStatusCode, trace } from '@opentelemetry/api';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  InMemorySpanExporter,
  NodeTracerProvider,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-node';
import { SynchronousContextManager } from './pass-through';
import { errorType, grpcStatusName, withSpan } from './spans';

describe('errorType', () => {
  class RpcError extends Error {
    constructor(
      readonly code: number,
      message: string,
    ) {
      super(message);
    }
  }

  it.each([
    ['a grpc-js ServiceError-like error', Object.assign(new Error('3 INVALID_ARGUMENT: k'), { code: 3 }), 'INVALID_ARGUMENT'],
    ['our own coded error class', new RpcError(14, 'replica down'), 'UNAVAILABLE'],
    ['a plain object with a gRPC code', { code: 1, details: 'cancelled' }, 'CANCELLED'],
    ['a numeric code outside gRPC', new RpcError(99, 'odd'), 'RpcError'],
    ['a Node system error (string code)', Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'Error'],
    ['a TypeError', new TypeError('x is undefined'), 'TypeError'],
    ['a thrown string', 'boom', '_OTHER'],
    ['undefined', undefined, '_OTHER'],
  ])('names %s', (_case, error, expected) => {
    expect(errorType(error)).toBe(expected);
  });

  it('maps every gRPC code and nothing else', () => {
    expect(grpcStatusName(0)).toBe('OK');
    expect(grpcStatusName(16)).toBe('UNAUTHENTICATED');
    expect(grpcStatusName(17)).toBeUndefined();
    expect(grpcStatusName(-1)).toBeUndefined();
    expect(grpcStatusName(2.5)).toBeUndefined();
  });
});

describe('withSpan', () => {
  const exporter = new InMemorySpanExporter();
  const provider = new NodeTracerProvider({ sampler: new AlwaysOnSampler(), spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const tracer = provider.getTracer('test');

  beforeAll(() => provider.register());
  afterEach(() => exporter.reset());
  afterAll(async () => {
    await provider.shutdown();
    trace.disable();
    context.disable();
    propagation.disable();
  });

  it('returns the result, ends the span and makes it the parent of spans started inside', async () => {
    const result = await withSpan(tracer, 'outer', { 'dsi.sim.k': 5 }, async (outer) => {
      await new Promise((resolve) => setImmediate(resolve));
      tracer.startSpan('inner').end();
      return outer.spanContext().spanId;
    });

    const [inner, outer] = exporter.getFinishedSpans();
    expect(outer.name).toBe('outer');
    expect(outer.spanContext().spanId).toBe(result);
    expect(outer.attributes).toEqual({ 'dsi.sim.k': 5 });
    expect(outer.status.code).toBe(SpanStatusCode.UNSET);
    expect(inner.parentSpanContext?.spanId).toBe(result);
    expect(trace.getActiveSpan()).toBeUndefined();
  });

  it('rethrows the very error it recorded, with the gRPC status name as error.type', async () => {
    const error = Object.assign(new Error('3 INVALID_ARGUMENT: a must be in [0, 1]'), { code: 3 });
    await expect(withSpan(tracer, 'simulate', {}, async () => Promise.reject(error))).rejects.toBe(error);

    const [span] = exporter.getFinishedSpans();
    expect(span.ended).toBe(true);
    expect(span.status).toEqual({ code: SpanStatusCode.ERROR, message: error.message });
    expect(span.attributes['error.type']).toBe('INVALID_ARGUMENT');
  });

  it('under a sampled-out span, calls inside carry that span (its sampling decision), not the parent', async () => {
    const quiet = new NodeTracerProvider({ sampler: new AlwaysOffSampler() }).getTracer('off');
    const parent = trace.setSpan(context.active(), tracer.startSpan('parent'));
    const inside = await context.with(parent, () => withSpan(quiet, 'sampled-out', {}, async (span) => ({ span: span.spanContext(), active: trace.getActiveSpan()?.spanContext() })));
    expect(inside.span.traceFlags).toBe(0);
    expect(inside.active).toEqual(inside.span);
  });
});

describe('withSpan with nothing recording', () => {
  beforeAll(() => context.setGlobalContextManager(new SynchronousContextManager()));
  afterAll(() => context.disable());

  it('leaves the caller context active (what a call inside would carry on is the parent span), and still ends in the same way', async () => {
    // No provider registered: the API's no-op tracer, whose span stands for its parent.
    const tracer = trace.getTracer('no-op');
    const parent = trace.wrapSpanContext({ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1 });
    const outer = trace.setSpan(context.active(), parent);
    const seen = await context.with(outer, () =>
      withSpan(tracer, 'forward', { a: 1 }, async (span) => ({ span: span.spanContext(), active: trace.getActiveSpan()?.spanContext(), recording: span.isRecording() })),
    );
    expect(seen).toEqual({ span: parent.spanContext(), active: parent.spanContext(), recording: false });
    const error = new Error('boom');
    await expect(withSpan(tracer, 'forward', {}, async () => Promise.reject(error))).rejects.toBe(error);
  });
});
