import {
  context,
  DiagConsoleLogger,
  diag,
  propagation,
  ProxyTracerProvider,
  SpanKind,
  trace,
  type Tracer,
} from '@opentelemetry/api';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter as OtlpGrpcTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { OTLPTraceExporter as OtlpHttpTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { registerInstrumentations } from '@opentelemetry/instrumentation';
import { GrpcInstrumentation } from '@opentelemetry/instrumentation-grpc';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  NodeTracerProvider,
  SimpleSpanProcessor,
  type Span,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import { type Environment, type ExporterName, type ExporterPlan, parseTelemetryConfig, TelemetryError } from './config';
import { setTracePassThrough, SynchronousContextManager } from './pass-through';
import { JsonLinesSpanExporter } from './span-file';

/** What a process tells `startTelemetry` about itself and its environment. */
export interface TelemetryOptions {
  /** `service.name` of every span, e.g. `dsi-target`; `OTEL_SERVICE_NAME` overrides it. */
  serviceName: string;
  /** `service.version`, e.g. the package version. */
  serviceVersion?: string;
  /**
   * `service.instance.id`: which process of the service this is (host:port locally; in a cluster
   * OTEL_RESOURCE_ATTRIBUTES names the pod and wins).
   */
  instanceId?: string;
  /** The process environment, passed from the edge (`process.env`); unset means no variables at all. */
  env?: Environment;
  /** Span file to append to; overrides `DSI_TRACE_FILE` (the CLI's `--trace-file`). */
  traceFile?: string;
  /**
   * Patch `@grpc/grpc-js` so every client and server call gets a span and propagates context. Default
   * true. Spans are recorded only where something exports them: with no exporter the context is passed
   * through by hand and grpc-js is never patched.
   */
  instrumentGrpc?: boolean;
  /** More processors for the provider, after the configured exporters; for tests (an in-memory exporter). */
  extraSpanProcessors?: SpanProcessor[];
}

/** A started telemetry pipeline: the process's tracer and the handles to flush and stop it. */
export interface Telemetry {
  /** Tracer for the process's own spans (scope = the service name); `trace.getTracer()` works too. */
  readonly tracer: Tracer;
  /** The effective `service.name`. */
  readonly serviceName: string;
  /** The exporters chosen, for the startup log; empty when telemetry is disabled or nothing is configured. */
  readonly exporters: ExporterName[];
  /** Exports every finished span now; call before reading a span file or handing off to another process. */
  forceFlush(): Promise<void>;
  /**
   * Flushes, then stops exporting and unregisters the global provider, context manager, propagator and
   * instrumentation, so `startTelemetry` may be called again. Idempotent: later calls return the same promise.
   */
  shutdown(): Promise<void>;
}

/** The pipeline currently registered as the OpenTelemetry global, if any (one per process). */
let active: Telemetry | undefined;

function createSpanProcessor(plan: ExporterPlan): SpanProcessor {
  switch (plan.name) {
    case 'otlp-grpc':
      return new BatchSpanProcessor(new OtlpGrpcTraceExporter({ url: plan.url }));
    case 'otlp-http/json':
      return new BatchSpanProcessor(new OtlpHttpTraceExporter({ url: plan.url }));
    case 'console':
      return new SimpleSpanProcessor(new ConsoleSpanExporter());
    case 'file':
      return new BatchSpanProcessor(new JsonLinesSpanExporter(plan.path));
  }
}

function disabledTelemetry(serviceName: string): Telemetry {
  // A provider with no delegate hands out no-op tracers, whatever the global holds.
  const tracer = new ProxyTracerProvider().getTracer(serviceName);
  return {
    tracer,
    serviceName,
    exporters: [],
    forceFlush: async () => {},
    shutdown: async () => {},
  };
}

/** `service.instance.id`: which process of a service (the pod, or host:port), so replicas are told apart. */
export const ATTR_SERVICE_INSTANCE_ID = 'service.instance.id';

let serverAddress: { host: string; port: number } | undefined;

/**
 * Tells telemetry where this process's gRPC server listens (`host:port`, as bound): its server spans
 * then carry `server.address` and `server.port`. Undefined forgets it.
 */
export function setServerAddress(address: string | undefined): void {
  if (address === undefined) {
    serverAddress = undefined;
    return;
  }
  const at = address.lastIndexOf(':');
  serverAddress = { host: address.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(address.slice(at + 1)) };
}

/** Adds `server.address` and `server.port` to server spans (the gRPC instrumentation's) as they start. */
class ServerAddressProcessor implements SpanProcessor {
  onStart(span: Span): void {
    if (span.kind === SpanKind.SERVER && serverAddress) span.setAttributes({ 'server.address': serverAddress.host, 'server.port': serverAddress.port });
  }
  onEnd(): void {}
  forceFlush(): Promise<void> {
    return Promise.resolve();
  }
  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * Telemetry of a process with nowhere to send spans (no exporter configured, the default of a bare
 * local run): it records none, since they would be dropped, but still carries the trace context
 * through: a client's traceparent reaches the replicas unchanged. It does so by hand, with neither
 * the gRPC instrumentation nor async hooks: the RPC layer reads the W3C headers of an incoming call
 * and writes the active context's on an outgoing one (`./pass-through`), and a synchronous context
 * manager makes a context active around the call that sends it. Recording spans that go nowhere cost
 * DSI, which makes the most calls, about a tenth of its throughput at 4 concurrent clients on 2 cores;
 * passing the context through the instrumentation and AsyncLocalStorage cost about a tenth of each
 * service's CPU (both measured side by side).
 */
function passThroughTelemetry(options: TelemetryOptions, serviceName: string): Telemetry {
  context.setGlobalContextManager(new SynchronousContextManager());
  propagation.setGlobalPropagator(new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }));
  setTracePassThrough(true);
  const stopPassingByHand = () => setTracePassThrough(false);
  let stopping: Promise<void> | undefined;
  const telemetry: Telemetry = {
    tracer: trace.getTracer(options.serviceName, options.serviceVersion),
    serviceName,
    exporters: [],
    forceFlush: async () => {},
    shutdown: () => {
      stopping ??= (async () => releaseGlobals(stopPassingByHand))();
      return stopping;
    },
  };
  active = telemetry;
  return telemetry;
}

/** Undoes what a pipeline registered globally (instrumentations, tracer, context, propagation, logging). */
function releaseGlobals(unregisterInstrumentations: () => void): void {
  unregisterInstrumentations();
  trace.disable();
  context.disable();
  propagation.disable();
  diag.disable();
  active = undefined;
}

/**
 * Starts tracing for this process: call it first thing in a service's `main`, before anything imports
 * `@grpc/grpc-js` (even indirectly, e.g. `@dsi/rpc`), because the gRPC instrumentation can only patch
 * the module when it is loaded. In an entry point, load the rest of the program after it, e.g.
 * `const telemetry = startTelemetry({ serviceName: 'dsi-target', env: process.env }); require('./main')`.
 *
 * Registers, as the OpenTelemetry globals, a `NodeTracerProvider` with resource `service.name`
 * (+ `service.version`, `OTEL_RESOURCE_ATTRIBUTES`), W3C trace-context and baggage propagation, the
 * AsyncLocalStorage context manager and, unless `instrumentGrpc` is false, the gRPC instrumentation.
 * Exporters and sampler follow the standard variables read from `options.env` (see
 * `parseTelemetryConfig`); the OTLP exporters still read their own headers, timeout, compression and
 * TLS settings (`OTEL_EXPORTER_OTLP_*`) from `process.env`, as the OpenTelemetry SDK does.
 *
 * One pipeline per process: throws `TelemetryError` if one is running (shut it down first) or if a
 * variable has an unsupported value. With `OTEL_SDK_DISABLED=true` nothing is registered and the
 * returned tracer is a no-op. With no exporter (and no extra span processor) no span is recorded: the
 * trace context is only passed through, by hand ({@link passThroughTelemetry}).
 */
export function startTelemetry(options: TelemetryOptions): Telemetry {
  const config = parseTelemetryConfig(options.env ?? {}, options.traceFile);
  const attributes: Record<string, string> = { [ATTR_SERVICE_NAME]: options.serviceName };
  if (options.serviceVersion) attributes[ATTR_SERVICE_VERSION] = options.serviceVersion;
  if (options.instanceId) attributes[ATTR_SERVICE_INSTANCE_ID] = options.instanceId;
  // OTEL_RESOURCE_ATTRIBUTES wins (in a cluster it names the pod).
  Object.assign(attributes, config.resourceAttributes);
  const serviceName = attributes[ATTR_SERVICE_NAME];

  if (config.disabled) return disabledTelemetry(serviceName);
  if (active) {
    throw new TelemetryError(`telemetry is already running for ${active.serviceName}; shut it down before starting again`);
  }

  // Exporters first: if one cannot be created (an unwritable span file), no global state has changed yet.
  const exporting = [...config.exporters.map(createSpanProcessor), ...(options.extraSpanProcessors ?? [])];
  // First, so every exporter sees the attributes it adds when a span starts.
  const spanProcessors = exporting.length ? [new ServerAddressProcessor(), ...exporting] : [];
  diag.setLogger(new DiagConsoleLogger(), { logLevel: config.logLevel, suppressOverrideMessage: true });
  if (spanProcessors.length === 0) return passThroughTelemetry(options, serviceName);
  const provider = new NodeTracerProvider({
    resource: defaultResource().merge(resourceFromAttributes(attributes)),
    sampler: config.sampler,
    spanProcessors,
  });
  provider.register({
    propagator: new CompositePropagator({
      propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
    }),
  });
  const unregisterInstrumentations =
    options.instrumentGrpc === false
      ? () => {}
      : registerInstrumentations({
          tracerProvider: provider,
          // The OTLP gRPC exporter's own Export calls must not produce spans about exporting spans.
          instrumentations: [new GrpcInstrumentation({ ignoreGrpcMethods: ['Export'] })],
        });

  let stopping: Promise<void> | undefined;
  const telemetry: Telemetry = {
    tracer: provider.getTracer(options.serviceName, options.serviceVersion),
    serviceName,
    exporters: config.exporters.map((plan) => plan.name),
    forceFlush: () => provider.forceFlush(),
    shutdown: () => {
      stopping ??= (async () => {
        try {
          await provider.forceFlush();
          await provider.shutdown();
        } catch (error) {
          // Spans that cannot be delivered (the collector is down) are lost, but the process stopped
          // as asked: say so, and do not turn a clean shutdown into a failed exit.
          process.stderr.write(`telemetry: spans not delivered at shutdown: ${error instanceof Error ? error.message : String(error)}\n`);
        } finally {
          releaseGlobals(unregisterInstrumentations);
        }
      })();
      return stopping;
    },
  };
  active = telemetry;
  return telemetry;
}
