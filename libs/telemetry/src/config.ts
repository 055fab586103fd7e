import { DiagLogLevel, type Sampler } from '@opentelemetry/api';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
} from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';

/** The process environment as the edge passes it in (`process.env` in production, a literal in tests). */
export type Environment = Record<string, string | undefined>;

/** Thrown by `startTelemetry` when an `OTEL_*` variable has a value we cannot honour, or on a second start. */
export class TelemetryError extends Error {
  override readonly name = 'TelemetryError';
}

/** Name of a chosen span exporter, as listed in `Telemetry.exporters` for the startup log. */
export type ExporterName = 'otlp-grpc' | 'otlp-http/json' | 'console' | 'file';

/** One span exporter to create, with where it sends spans. */
export type ExporterPlan =
  | { name: 'otlp-grpc'; url: string }
  | { name: 'otlp-http/json'; url: string }
  | { name: 'console' }
  | { name: 'file'; path: string };

/** Everything `startTelemetry` takes from the environment, parsed and validated once. */
export interface TelemetryConfig {
  /** `OTEL_SDK_DISABLED=true`: no provider, no exporters, a no-op tracer. */
  disabled: boolean;
  exporters: ExporterPlan[];
  sampler: Sampler;
  /** Level of the OpenTelemetry diagnostic logger (export failures are logged at ERROR). */
  logLevel: DiagLogLevel;
  /** Resource attributes from `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`; they override the code's. */
  resourceAttributes: Record<string, string>;
}

const OTLP_GRPC_DEFAULT_URL = 'http://localhost:4317';
const OTLP_HTTP_DEFAULT_BASE = 'http://localhost:4318';
const TRACES_EXPORTERS = ['otlp', 'console', 'none'] as const;
const OTLP_PROTOCOLS = ['grpc', 'http/protobuf', 'http/json'] as const;
const LOG_LEVELS: Record<string, DiagLogLevel> = {
  none: DiagLogLevel.NONE,
  error: DiagLogLevel.ERROR,
  warn: DiagLogLevel.WARN,
  info: DiagLogLevel.INFO,
  debug: DiagLogLevel.DEBUG,
  verbose: DiagLogLevel.VERBOSE,
  all: DiagLogLevel.ALL,
};

/** A variable's trimmed value; empty counts as unset, as the OpenTelemetry spec says. */
function read(env: Environment, name: string): string | undefined {
  const value = env[name]?.trim();
  return value ? value : undefined;
}

function oneOf<T extends string>(name: string, value: string, allowed: readonly T[]): T {
  const normalised = value.toLowerCase();
  if ((allowed as readonly string[]).includes(normalised)) return normalised as T;
  throw new TelemetryError(`${name}=${value} is not supported; expected one of: ${allowed.join(', ')}`);
}

function otlpExporter(env: Environment): ExporterPlan {
  const tracesEndpoint = read(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
  const endpoint = read(env, 'OTEL_EXPORTER_OTLP_ENDPOINT');
  const protocolVariable = read(env, 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL')
    ? 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL'
    : 'OTEL_EXPORTER_OTLP_PROTOCOL';
  const protocol = oneOf(protocolVariable, read(env, protocolVariable) ?? 'http/protobuf', OTLP_PROTOCOLS);
  if (protocol === 'grpc') return { name: 'otlp-grpc', url: tracesEndpoint ?? endpoint ?? OTLP_GRPC_DEFAULT_URL };
  // The signal-specific endpoint is used as is; the base endpoint gets the traces path appended.
  const url = tracesEndpoint ?? `${(endpoint ?? OTLP_HTTP_DEFAULT_BASE).replace(/\/+$/, '')}/v1/traces`;
  // http/protobuf is sent as JSON too: only the JSON exporter is installed, and OTLP/HTTP receivers
  // (the Collector, Jaeger) accept both encodings on the same path.
  return { name: 'otlp-http/json', url };
}

function parseSampler(env: Environment): Sampler {
  const name = read(env, 'OTEL_TRACES_SAMPLER') ?? 'parentbased_always_on';
  const ratio = (): number => {
    const text = read(env, 'OTEL_TRACES_SAMPLER_ARG') ?? '1';
    const value = Number(text);
    if (!Number.isFinite(value) || value < 0 || value > 1) {
      throw new TelemetryError(`OTEL_TRACES_SAMPLER_ARG=${text} is not a ratio in [0, 1]`);
    }
    return value;
  };
  switch (name.toLowerCase()) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return new TraceIdRatioBasedSampler(ratio());
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio()) });
    default:
      throw new TelemetryError(
        `OTEL_TRACES_SAMPLER=${name} is not supported; expected always_on, always_off, traceidratio, ` +
          'parentbased_always_on, parentbased_always_off or parentbased_traceidratio',
      );
  }
}

/** `OTEL_RESOURCE_ATTRIBUTES` is `key=value,key=value` with percent-encoded values. */
function parseResourceAttributes(env: Environment): Record<string, string> {
  const attributes: Record<string, string> = {};
  for (const pair of (read(env, 'OTEL_RESOURCE_ATTRIBUTES') ?? '').split(',')) {
    if (pair.trim() === '') continue;
    const separator = pair.indexOf('=');
    const key = pair.slice(0, separator).trim();
    if (separator < 1 || key === '') {
      throw new TelemetryError(`OTEL_RESOURCE_ATTRIBUTES: "${pair}" is not key=value`);
    }
    try {
      attributes[key] = decodeURIComponent(pair.slice(separator + 1).trim());
    } catch {
      throw new TelemetryError(`OTEL_RESOURCE_ATTRIBUTES: the value of ${key} is not valid percent-encoding`);
    }
  }
  const serviceName = read(env, 'OTEL_SERVICE_NAME');
  if (serviceName) attributes[ATTR_SERVICE_NAME] = serviceName;
  return attributes;
}

/**
 * Chooses exporters, sampler and resource attributes from the standard OpenTelemetry variables and
 * `DSI_TRACE_FILE`. Pure: reads only `env`, so the selection rules are tested without starting an SDK.
 *
 * - `OTEL_SDK_DISABLED=true`: disabled, nothing else is read.
 * - `OTEL_TRACES_EXPORTER` (comma list of `otlp`, `console`, `none`) is authoritative when set. When it
 *   is unset, OTLP is used only if `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
 *   is set, so a bare local run does not retry a collector that is not there.
 * - OTLP protocol from `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else
 *   `http/protobuf`: `grpc` -> `otlp-grpc`; `http/protobuf` and `http/json` -> `otlp-http/json`.
 * - `traceFile`, else `DSI_TRACE_FILE`: also append spans to that file as JSON lines (`file`).
 *
 * Throws `TelemetryError` on a value it cannot honour, so a typo fails at startup instead of silently
 * losing traces.
 */
export function parseTelemetryConfig(env: Environment, traceFile?: string): TelemetryConfig {
  const disabled = read(env, 'OTEL_SDK_DISABLED')?.toLowerCase() === 'true';
  const logLevelText = read(env, 'OTEL_LOG_LEVEL');
  const logLevel = logLevelText ? LOG_LEVELS[oneOf('OTEL_LOG_LEVEL', logLevelText, Object.keys(LOG_LEVELS))] : DiagLogLevel.WARN;
  if (disabled) {
    return { disabled, exporters: [], sampler: new AlwaysOffSampler(), logLevel, resourceAttributes: {} };
  }

  const tracesExporter = read(env, 'OTEL_TRACES_EXPORTER');
  const requested = tracesExporter
    ? tracesExporter
        .split(',')
        .map((item) => item.trim())
        .filter((item) => item !== '')
        .map((item) => oneOf('OTEL_TRACES_EXPORTER', item, TRACES_EXPORTERS))
    : read(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT') || read(env, 'OTEL_EXPORTER_OTLP_ENDPOINT')
      ? ['otlp']
      : [];

  const exporters: ExporterPlan[] = [];
  if (requested.includes('otlp')) exporters.push(otlpExporter(env));
  if (requested.includes('console')) exporters.push({ name: 'console' });
  const file = traceFile?.trim() || read(env, 'DSI_TRACE_FILE');
  if (file) exporters.push({ name: 'file', path: file });

  return {
    disabled,
    exporters,
    sampler: parseSampler(env),
    logLevel,
    resourceAttributes: parseResourceAttributes(env),
  };
}
