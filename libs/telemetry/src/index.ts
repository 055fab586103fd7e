/**
 * OpenTelemetry for every DSI process: `startTelemetry` (call it before anything loads `@grpc/grpc-js`),
 * span helpers, shared span and attribute names, and the JSON-lines span file used by local runs and tests.
 */
export { DsiAttributes, type DsiAttributeName, DsiEvents, DsiSpans, GenAiAttributes, RpcAttributes } from './attributes';
export {
  type Environment,
  type ExporterName,
  type ExporterPlan,
  parseTelemetryConfig,
  type TelemetryConfig,
  TelemetryError,
} from './config';
export {
  JsonLinesSpanExporter,
  readSpanFile,
  SpanFileError,
  type SpanKindName,
  type SpanRecord,
  type SpanStatusName,
  toSpanRecord,
} from './span-file';
/** A trace context (OpenTelemetry's `Context`), as a call carries it. */
export type { Context as TraceContext } from '@opentelemetry/api';
export { incomingTraceContext, outgoingTraceHeaders, SynchronousContextManager, tracePassesByHand, withTraceContext } from './pass-through';
export { errorType, grpcStatusName, type GrpcStatusName, recordSpanError, withSpan } from './spans';
export { ATTR_SERVICE_INSTANCE_ID, setServerAddress, startTelemetry, type Telemetry, type TelemetryOptions } from './telemetry';
export { generationInstruments, startMetrics, type DsiMetricsPipeline, type GenerationInstruments, type MetricsOptions } from './metrics';
