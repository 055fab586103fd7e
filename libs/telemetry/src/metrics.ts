import { metrics, type Counter, type Histogram, type Meter, type UpDownCounter } from '@opentelemetry/api';
import { OTLPMetricExporter as OtlpGrpcMetricExporter } from '@opentelemetry/exporter-metrics-otlp-grpc';
import { OTLPMetricExporter as OtlpHttpMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider, PeriodicExportingMetricReader, type MetricReader } from '@opentelemetry/sdk-metrics';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import type { Environment } from './config';

/** How a process exports its metrics. */
export interface MetricsOptions {
  serviceName: string;
  /** The process environment (OTLP: enabled by `OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`). */
  env?: Environment;
  /** Serve Prometheus text format on this port at `/metrics` (`--metrics-port`). */
  prometheusPort?: number;
  /** Address the Prometheus endpoint binds. Default 127.0.0.1. */
  prometheusHost?: string;
  /** More readers (tests: an in-memory reader). */
  extraReaders?: MetricReader[];
}

/** A started metrics pipeline; its meter is also the global one. */
export interface DsiMetricsPipeline {
  readonly meter: Meter;
  /** Where Prometheus scrapes, when enabled. */
  readonly prometheusUrl?: string;
  readonly exporters: string[];
  shutdown(): Promise<void>;
}

/**
 * Starts metrics export for a process: OTLP (gRPC or HTTP/JSON, chosen by the standard variables, only
 * when an endpoint is set) and a Prometheus endpoint on `prometheusPort`. Disabled with
 * `OTEL_SDK_DISABLED=true`. Rates (acceptance, tokens per second) are derived in queries.
 */
export function startMetrics(options: MetricsOptions): DsiMetricsPipeline {
  const env = options.env ?? {};
  const readers: MetricReader[] = [...(options.extraReaders ?? [])];
  const exporters: string[] = [];
  let prometheusUrl: string | undefined;
  if (env.OTEL_SDK_DISABLED?.toLowerCase() !== 'true') {
    if (options.prometheusPort !== undefined) {
      const host = options.prometheusHost ?? '127.0.0.1';
      readers.push(new PrometheusExporter({ port: options.prometheusPort, host, endpoint: '/metrics' }));
      prometheusUrl = `http://${host}:${options.prometheusPort}/metrics`;
      exporters.push('prometheus');
    }
    const endpoint = env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT;
    if (endpoint && env.OTEL_METRICS_EXPORTER?.toLowerCase() !== 'none') {
      const protocol = env.OTEL_EXPORTER_OTLP_METRICS_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf';
      const url = env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT ?? (protocol === 'grpc' ? endpoint : `${endpoint.replace(/\/+$/, '')}/v1/metrics`);
      const exporter = protocol === 'grpc' ? new OtlpGrpcMetricExporter({ url }) : new OtlpHttpMetricExporter({ url });
      readers.push(new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: Number(env.OTEL_METRIC_EXPORT_INTERVAL ?? 10_000) }));
      exporters.push(protocol === 'grpc' ? 'otlp-grpc' : 'otlp-http/json');
    }
  }
  const provider = new MeterProvider({ resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: options.serviceName }), readers });
  metrics.setGlobalMeterProvider(provider);
  let stopping: Promise<void> | undefined;
  return {
    meter: provider.getMeter(options.serviceName),
    prometheusUrl,
    exporters,
    shutdown: () => {
      stopping ??= provider.shutdown().finally(() => metrics.disable());
      return stopping;
    },
  };
}

/** The orchestrator's instruments. Names are the OpenTelemetry ones; Prometheus shows them with `_` and a `_total` suffix. */
export interface GenerationInstruments {
  requests: Counter;
  drafts: Counter;
  draftedTokens: Counter;
  verifiedDrafts: Counter;
  acceptedTokens: Counter;
  acceptedByPosition: Counter;
  verifications: Counter;
  preemptions: Counter;
  targetForwards: Counter;
  generatedTokens: Counter;
  ttft: Histogram;
  tpot: Histogram;
  duration: Histogram;
  /** Generations running now (admitted, not finished). */
  activeRequests: UpDownCounter;
  /** Requests waiting for admission now. */
  queuedRequests: UpDownCounter;
  /**
   * Target replica time of verifications in ms, by `dsi.replica_time.use`: `lane` (a request's lane,
   * committed), `speculative_used` (a speculative block that committed) or `wasted` (cancelled,
   * rejected, preempted for a lane, or failed).
   */
  replicaTime: Counter;
}

/** Creates the orchestrator's counters and histograms on a meter. */
export function generationInstruments(meter: Meter): GenerationInstruments {
  const ms = { unit: 'ms' };
  return {
    requests: meter.createCounter('dsi.requests', { description: 'generation requests finished, by mode and finish reason' }),
    drafts: meter.createCounter('dsi.drafts', { description: 'drafter calls' }),
    draftedTokens: meter.createCounter('dsi.drafted_tokens', { description: 'draft tokens produced (including discarded ones)' }),
    verifiedDrafts: meter.createCounter('dsi.verified_drafts', { description: 'draft tokens judged: the position each was proposed for was committed (accepted / judged is the acceptance rate)' }),
    acceptedTokens: meter.createCounter('dsi.accepted_tokens', { description: 'draft tokens accepted into the output' }),
    acceptedByPosition: meter.createCounter('dsi.accepted_tokens_by_position', { description: 'accepted drafts by position within their block (dsi.position)' }),
    verifications: meter.createCounter('dsi.verifications', { description: 'verifications by outcome (committed, rejected, cancelled, failed)' }),
    preemptions: meter.createCounter('dsi.preemptions', { description: 'rejections that cancelled in-flight work' }),
    targetForwards: meter.createCounter('dsi.target_forwards', { description: 'target forwards (Verify calls)' }),
    generatedTokens: meter.createCounter('dsi.generated_tokens', { description: 'tokens generated' }),
    ttft: meter.createHistogram('dsi.ttft', { description: 'time to the first verified token', ...ms }),
    tpot: meter.createHistogram('dsi.tpot', { description: 'mean time per output token after the first', ...ms }),
    duration: meter.createHistogram('dsi.request.duration', { description: 'wall time of a generation request', ...ms }),
    activeRequests: meter.createUpDownCounter('dsi.requests.active', { description: 'generation requests running now' }),
    queuedRequests: meter.createUpDownCounter('dsi.requests.queued', { description: 'generation requests waiting for admission now' }),
    replicaTime: meter.createCounter('dsi.replica_time', {
      description: 'target replica time of verifications, by dsi.replica_time.use (lane, speculative_used, wasted)',
      ...ms,
    }),
  };
}
