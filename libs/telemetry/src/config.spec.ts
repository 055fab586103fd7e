import { DiagLogLevel } from '@opentelemetry/api';
import { type Environment, parseTelemetryConfig, TelemetryError } from './config';

const exporters = (env: Environment, traceFile?: string) => parseTelemetryConfig(env, traceFile).exporters;

describe('parseTelemetryConfig: exporter selection', () => {
  it.each<[string, Environment, unknown[]]>([
    ['nothing for a bare local run (no collector to retry)', {}, []],
    ['nothing when variables are present but empty', { OTEL_TRACES_EXPORTER: ' ', OTEL_EXPORTER_OTLP_ENDPOINT: '' }, []],
    ['the span file from DSI_TRACE_FILE', { DSI_TRACE_FILE: '/tmp/spans.jsonl' }, [{ name: 'file', path: '/tmp/spans.jsonl' }]],
    [
      'OTLP over HTTP (JSON) when only the endpoint is set, with the traces path appended',
      { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' },
      [{ name: 'otlp-http/json', url: 'http://collector:4318/v1/traces' }],
    ],
    [
      'OTLP over gRPC for protocol grpc, endpoint as is',
      { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4317', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' },
      [{ name: 'otlp-grpc', url: 'http://collector:4317' }],
    ],
    [
      'the traces-specific endpoint and protocol over the general ones',
      {
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://general:4317',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://traces:4318/custom/path',
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json',
      },
      [{ name: 'otlp-http/json', url: 'http://traces:4318/custom/path' }],
    ],
    [
      'OTLP at the default local collector when asked for by name',
      { OTEL_TRACES_EXPORTER: 'otlp' },
      [{ name: 'otlp-http/json', url: 'http://localhost:4318/v1/traces' }],
    ],
    [
      'OTLP gRPC at the default local collector when asked for by name',
      { OTEL_TRACES_EXPORTER: 'OTLP', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' },
      [{ name: 'otlp-grpc', url: 'http://localhost:4317' }],
    ],
    [
      'every listed exporter plus the file',
      { OTEL_TRACES_EXPORTER: 'otlp, console', DSI_TRACE_FILE: 'spans.jsonl' },
      [{ name: 'otlp-http/json', url: 'http://localhost:4318/v1/traces' }, { name: 'console' }, { name: 'file', path: 'spans.jsonl' }],
    ],
    [
      'only what OTEL_TRACES_EXPORTER lists, even with an endpoint set',
      { OTEL_TRACES_EXPORTER: 'console', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' },
      [{ name: 'console' }],
    ],
    ['no OTLP for none, even with an endpoint set', { OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }, []],
  ])('chooses %s', (_case, env, expected) => {
    expect(exporters(env)).toEqual(expected);
  });

  it('prefers the traceFile option over DSI_TRACE_FILE', () => {
    expect(exporters({ DSI_TRACE_FILE: 'env.jsonl' }, 'flag.jsonl')).toEqual([{ name: 'file', path: 'flag.jsonl' }]);
  });

  it('disables everything for OTEL_SDK_DISABLED=true, whatever else is set', () => {
    const config = parseTelemetryConfig(
      { OTEL_SDK_DISABLED: 'TRUE', OTEL_TRACES_EXPORTER: 'console', DSI_TRACE_FILE: 'spans.jsonl' },
      'flag.jsonl',
    );
    expect(config.disabled).toBe(true);
    expect(config.exporters).toEqual([]);
    expect(parseTelemetryConfig({ OTEL_SDK_DISABLED: 'false' }).disabled).toBe(false);
  });

  it.each<[Environment, RegExp]>([
    [{ OTEL_TRACES_EXPORTER: 'otlp,zipkin' }, /OTEL_TRACES_EXPORTER=zipkin .*otlp, console, none/],
    [{ OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_PROTOCOL: 'thrift' }, /OTEL_EXPORTER_OTLP_PROTOCOL=thrift/],
    [{ OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'udp' }, /OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=udp/],
    [{ OTEL_TRACES_SAMPLER: 'sometimes' }, /OTEL_TRACES_SAMPLER=sometimes/],
    [{ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '1.5' }, /OTEL_TRACES_SAMPLER_ARG=1.5/],
    [{ OTEL_LOG_LEVEL: 'loud' }, /OTEL_LOG_LEVEL=loud/],
    [{ OTEL_RESOURCE_ATTRIBUTES: 'k8s.pod.name' }, /"k8s.pod.name" is not key=value/],
  ])('rejects %j naming the variable', (env, message) => {
    expect(() => parseTelemetryConfig(env)).toThrow(TelemetryError);
    expect(() => parseTelemetryConfig(env)).toThrow(message);
  });
});

describe('parseTelemetryConfig: sampler, log level and resource', () => {
  it.each<[Environment, string]>([
    [{}, 'ParentBased{root=AlwaysOnSampler'],
    [{ OTEL_TRACES_SAMPLER: 'always_off' }, 'AlwaysOffSampler'],
    [{ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' }, 'ParentBased{root=TraceIdRatioBased{0.25}'],
  ])('builds the sampler for %j', (env, description) => {
    expect(parseTelemetryConfig(env).sampler.toString()).toContain(description);
  });

  it('logs SDK warnings and export failures by default, and follows OTEL_LOG_LEVEL', () => {
    expect(parseTelemetryConfig({}).logLevel).toBe(DiagLogLevel.WARN);
    expect(parseTelemetryConfig({ OTEL_LOG_LEVEL: 'debug' }).logLevel).toBe(DiagLogLevel.DEBUG);
  });

  it('reads OTEL_RESOURCE_ATTRIBUTES (percent-decoded) with OTEL_SERVICE_NAME on top', () => {
    const { resourceAttributes } = parseTelemetryConfig({
      OTEL_RESOURCE_ATTRIBUTES: 'k8s.pod.name=target-0, deployment.environment=dev%20cluster,service.name=from-attributes',
      OTEL_SERVICE_NAME: 'dsi-target-0',
    });
    expect(resourceAttributes).toEqual({
      'k8s.pod.name': 'target-0',
      'deployment.environment': 'dev cluster',
      'service.name': 'dsi-target-0',
    });
  });
});
