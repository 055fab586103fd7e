import { type Attributes, type Context, context, isSpanContextValid, type Span, SpanStatusCode, trace, type Tracer } from '@opentelemetry/api';
import { ATTR_ERROR_TYPE } from '@opentelemetry/semantic-conventions';

/** gRPC status names by code (grpc/doc/statuscodes.md), kept here so telemetry never loads `@grpc/grpc-js`. */
const GRPC_STATUS_NAMES = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
] as const;

/** A gRPC status name such as `'INVALID_ARGUMENT'`. */
export type GrpcStatusName = (typeof GRPC_STATUS_NAMES)[number];

/** The gRPC status name for a numeric code (3 -> `'INVALID_ARGUMENT'`), or undefined outside 0..16. */
export function grpcStatusName(code: number): GrpcStatusName | undefined {
  return Number.isInteger(code) ? GRPC_STATUS_NAMES[code] : undefined;
}

/**
 * The `error.type` of a caught value, short enough to group failures by: the gRPC status name when the
 * error carries a numeric gRPC `code` (a grpc-js `ServiceError`, our RPC errors), else the error's
 * class name, else `'_OTHER'` (the semantic-convention fallback) for thrown non-errors.
 */
export function errorType(error: unknown): string {
  if (typeof error !== 'object' || error === null) return '_OTHER';
  const code: unknown = (error as { code?: unknown }).code;
  const status = typeof code === 'number' ? grpcStatusName(code) : undefined;
  if (status) return status;
  const className = error.constructor?.name;
  if (className && className !== 'Object') return className;
  return error instanceof Error ? error.name : '_OTHER';
}

/**
 * Marks a span as failed by `error`: status ERROR with the error's message, `error.type` (see
 * `errorType`) and an exception event. `withSpan` calls it; call it yourself for spans you end
 * manually, such as one covering a server stream.
 */
export function recordSpanError(span: Span, error: unknown): void {
  const message = error instanceof Error ? error.message : String(error);
  span.recordException(error instanceof Error ? error : message);
  span.setAttribute(ATTR_ERROR_TYPE, errorType(error));
  span.setStatus({ code: SpanStatusCode.ERROR, message });
}

/**
 * Runs `fn` inside a new active span (so spans and gRPC calls it starts become its children) and ends
 * the span when `fn` settles. If `fn` throws, the span records the error (`recordSpanError`) and the
 * error is rethrown unchanged; a successful span keeps status UNSET unless `fn` sets it. A span that
 * records nothing and stands for its parent (what a process that exports nothing makes: the no-op
 * tracer's span carries the parent's span context, or none) is not made active: children and calls
 * would see the same trace context either way, and a replica makes one for every forward.
 */
export function withSpan<T>(
  tracer: Tracer,
  name: string,
  attributes: Attributes,
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  const parent = context.active();
  const span = tracer.startSpan(name, { attributes }, parent);
  const run = async (): Promise<T> => {
    try {
      return await fn(span);
    } catch (error) {
      recordSpanError(span, error);
      throw error;
    } finally {
      span.end();
    }
  };
  return standsForParent(span, parent) ? run() : context.with(trace.setSpan(parent, span), run);
}

/** Whether a span adds nothing to its parent context: not recording, and the parent's span context or an invalid one. */
function standsForParent(span: Span, parent: Context): boolean {
  if (span.isRecording()) return false;
  const own = span.spanContext();
  if (!isSpanContextValid(own)) return true;
  const inherited = trace.getSpanContext(parent);
  return inherited !== undefined && inherited.traceId === own.traceId && inherited.spanId === own.spanId && inherited.traceFlags === own.traceFlags;
}
