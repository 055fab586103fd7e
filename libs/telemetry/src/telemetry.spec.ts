import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { context, propagation, trace } from '@opentelemetry/api';
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-node';
import { DsiAttributes, DsiSpans } from './attributes';
import { TelemetryError } from './config';
import { readSpanFile } from './span-file';
import { withSpan } from './spans';
import { startTelemetry, type Telemetry } from './telemetry';

const run = promisify(execFile);
const registerSwc = path.join(__dirname, 'testing/register-swc.js');

describe('startTelemetry', () => {
  let dir: string;
  let file: string;
  let telemetry: Telemetry | undefined;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'dsi-telemetry-'));
    file = path.join(dir, 'spans.jsonl');
  });

  afterEach(async () => {
    await telemetry?.shutdown();
    telemetry = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it('with only DSI_TRACE_FILE, writes spans to the file with the service resource and parent -> child edges', async () => {
    telemetry = startTelemetry({ serviceName: 'dsi-simulator', serviceVersion: '0.1.0', env: { DSI_TRACE_FILE: file } });
    expect(telemetry.exporters).toEqual(['file']);
    expect(telemetry.serviceName).toBe('dsi-simulator');

    let traceparent: string | undefined;
    await withSpan(telemetry.tracer, DsiSpans.HEATMAP, { [DsiAttributes.HEATMAP_CELLS]: 2 }, async () => {
      await new Promise((resolve) => setTimeout(resolve, 1));
      // Spans from the global API join the same trace: the provider and context manager are registered.
      await withSpan(trace.getTracer('another-module'), DsiSpans.HEATMAP_CELL, {}, async () => {
        const carrier: Record<string, string> = {};
        propagation.inject(context.active(), carrier);
        traceparent = carrier.traceparent;
      });
    });
    await telemetry.forceFlush();

    const [cell, heatmap] = readSpanFile(file);
    expect([cell.name, heatmap.name]).toEqual([DsiSpans.HEATMAP_CELL, DsiSpans.HEATMAP]);
    expect(cell.parentSpanId).toBe(heatmap.spanId);
    expect(cell.traceId).toBe(heatmap.traceId);
    expect(heatmap.attributes).toEqual({ [DsiAttributes.HEATMAP_CELLS]: 2 });
    expect(heatmap.resource).toMatchObject({ 'service.name': 'dsi-simulator', 'service.version': '0.1.0' });
    expect(heatmap.scope).toEqual({ name: 'dsi-simulator', version: '0.1.0' });
    expect(cell.scope.name).toBe('another-module');
    // W3C trace context, as a gRPC client would send it to the next service.
    expect(traceparent).toBe(`00-${cell.traceId}-${cell.spanId}-01`);
  });

  it('with OTEL_SDK_DISABLED=true, records nothing and writes no file', async () => {
    telemetry = startTelemetry({ serviceName: 'dsi-target', env: { OTEL_SDK_DISABLED: 'true', DSI_TRACE_FILE: file } });
    expect(telemetry.exporters).toEqual([]);

    await withSpan(telemetry.tracer, 'work', {}, async (span) => expect(span.isRecording()).toBe(false));
    expect(trace.getTracer('global').startSpan('global').isRecording()).toBe(false);
    await telemetry.forceFlush();
    expect(existsSync(file)).toBe(false);
  });

  it('chooses OTLP over gRPC from the endpoint and protocol variables, with gRPC instrumentation on', async () => {
    telemetry = startTelemetry({
      serviceName: 'dsi-orchestrator',
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', DSI_TRACE_FILE: file },
    });
    expect(telemetry.exporters).toEqual(['otlp-grpc', 'file']);
  });

  it('fails fast on an unsupported exporter instead of silently losing traces', () => {
    expect(() => startTelemetry({ serviceName: 'dsi-drafter', env: { OTEL_TRACES_EXPORTER: 'jaeger' } })).toThrow(TelemetryError);
  });

  it('shuts down cleanly when the collector cannot be reached (the spans are reported lost, not the process failed)', async () => {
    const written: string[] = [];
    const write = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    try {
      telemetry = startTelemetry({
        serviceName: 'dsi-target',
        instrumentGrpc: false,
        env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_TIMEOUT: '2000' },
      });
      telemetry.tracer.startSpan('lost').end();
      await expect(telemetry.shutdown()).resolves.toBeUndefined();
    } finally {
      write.mockRestore();
    }
    expect(written.join('')).toMatch(/telemetry: spans not delivered at shutdown/);
  }, 20_000);

  it('allows one pipeline at a time, and a new one after shutdown (which is idempotent)', async () => {
    const memory = new InMemorySpanExporter();
    const first = startTelemetry({
      serviceName: 'first',
      instrumentGrpc: false,
      extraSpanProcessors: [new SimpleSpanProcessor(memory)],
    });
    expect(first.exporters).toEqual([]);
    expect(() => startTelemetry({ serviceName: 'second' })).toThrow(/already running for first/);
    first.tracer.startSpan('from-first').end();
    // Read before shutdown: shutting down clears an in-memory exporter.
    expect(memory.getFinishedSpans().map((span) => span.name)).toEqual(['from-first']);
    const stopping = first.shutdown();
    expect(first.shutdown()).toBe(stopping);
    await stopping;

    telemetry = startTelemetry({ serviceName: 'second', env: { DSI_TRACE_FILE: file } });
    trace.getTracer('global').startSpan('from-second').end();
    await telemetry.forceFlush();
    expect(readSpanFile(file).map((record) => [record.name, record.resource['service.name']])).toEqual([
      ['from-second', 'second'],
    ]);
  });
});

describe('startTelemetry with a real OTLP/HTTP receiver', () => {
  interface Received {
    path: string | undefined;
    contentType: string | undefined;
    body: OtlpJsonRequest;
  }
  interface OtlpJsonRequest {
    resourceSpans: {
      resource: { attributes: { key: string; value: { stringValue?: string } }[] };
      scopeSpans: { spans: { name: string; traceId: string; spanId: string; parentSpanId?: string }[] }[];
    }[];
  }

  let server: Server;
  let received: Received[];
  let url: string;

  const readBody = async (request: IncomingMessage): Promise<Buffer> => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    return request.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body;
  };

  beforeAll(async () => {
    received = [];
    server = createServer((request, response) => {
      void readBody(request).then((body) => {
        received.push({
          path: request.url,
          contentType: request.headers['content-type'],
          body: JSON.parse(body.toString('utf8')) as OtlpJsonRequest,
        });
        response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  // In a child process: the OTLP/HTTP exporter loads node:http with a dynamic import(), which jest's
  // module registry refuses without --experimental-vm-modules. It also shows that shutdown() flushes.
  it('exports spans with our service.name to OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces, flushed by shutdown', async () => {
    const program = `
      const { startTelemetry, withSpan } = require(${JSON.stringify(path.join(__dirname, 'index.ts'))});
      const env = { OTEL_EXPORTER_OTLP_ENDPOINT: process.argv[1], OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' };
      const telemetry = startTelemetry({ serviceName: 'dsi-simulator', env });
      withSpan(telemetry.tracer, 'dsi.simulate', { 'dsi.sim.k': 5 }, async (span) => {
        await withSpan(telemetry.tracer, 'dsi.simulate.repeat', {}, async () => {});
        return span.spanContext().spanId;
      }).then(async (parentSpanId) => {
        await telemetry.shutdown();
        console.log(JSON.stringify({ exporters: telemetry.exporters, parentSpanId }));
      });
    `;
    const { stdout } = await run(process.execPath, ['-r', registerSwc, '-e', program, url], { cwd: __dirname, timeout: 20_000 });
    const { exporters, parentSpanId } = JSON.parse(stdout) as { exporters: string[]; parentSpanId: string };

    expect(exporters).toEqual(['otlp-http/json']);
    expect(received.map((request) => [request.path, request.contentType])).toEqual([['/v1/traces', 'application/json']]);
    const [resourceSpans] = received[0].body.resourceSpans;
    const serviceName = resourceSpans.resource.attributes.find((attribute) => attribute.key === 'service.name');
    expect(serviceName?.value.stringValue).toBe('dsi-simulator');
    const spans = resourceSpans.scopeSpans.flatMap((scope) => scope.spans);
    expect(spans.map((span) => span.name).sort()).toEqual(['dsi.simulate', 'dsi.simulate.repeat']);
    expect(spans.find((span) => span.name === 'dsi.simulate.repeat')?.parentSpanId).toBe(parentSpanId);
  });
});
