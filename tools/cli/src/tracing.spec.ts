import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import readline from 'node:readline';
import { testModelsDir } from '@dsi/models/test-models';
import { startService, type StackService } from './stack';

// A fake OTLP/HTTP receiver in its own process: prints every exported request body as one JSON line
// before it answers, and answers a line on stdin with "synced": once the test reads that, it has read
// every body the receiver got before.
const RECEIVER = `
const http = require('node:http');
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    process.stdout.write(JSON.stringify({ path: req.url, body: JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') }) + '\\n');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{}');
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write('listening ' + server.address().port + '\\n'));
process.stdin.on('data', () => process.stdout.write('synced\\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
`;

interface OtlpSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes: Record<string, unknown>;
}

function flatten(body: { resourceSpans?: unknown[] }): OtlpSpan[] {
  const value = (v: Record<string, unknown>) => v.stringValue ?? v.intValue ?? v.doubleValue ?? v.boolValue;
  const spans: OtlpSpan[] = [];
  for (const rs of (body.resourceSpans ?? []) as { resource: { attributes: { key: string; value: Record<string, unknown> }[] }; scopeSpans: { spans: Record<string, unknown>[] }[] }[]) {
    const service = String(value(rs.resource.attributes.find((a) => a.key === 'service.name')!.value));
    for (const ss of rs.scopeSpans) {
      for (const s of ss.spans) {
        const attributes = Object.fromEntries(((s.attributes ?? []) as { key: string; value: Record<string, unknown> }[]).map((a) => [a.key, value(a.value)]));
        spans.push({ service, traceId: String(s.traceId), spanId: String(s.spanId), parentSpanId: (s.parentSpanId as string) || undefined, name: String(s.name), attributes });
      }
    }
  }
  return spans;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** The fake receiver, started: its port, the spans it has printed, and a way to read all it has got. */
async function startReceiver(): Promise<{ receiver: ChildProcess; port: string; received: OtlpSpan[]; sync(): Promise<void> }> {
  const receiver: ChildProcess = spawn(process.execPath, ['-e', RECEIVER], { stdio: ['pipe', 'pipe', 'inherit'] });
  let onSynced = () => undefined as void;
  const received: OtlpSpan[] = [];
  const port = await new Promise<string>((resolve) => {
    readline.createInterface({ input: receiver.stdout! }).on('line', (line) => {
      const listening = line.match(/^listening (\d+)$/);
      if (listening) return resolve(listening[1]);
      if (line === 'synced') return onSynced();
      received.push(...flatten(JSON.parse(line).body));
    });
  });
  const sync = () =>
    new Promise<void>((resolve) => {
      onSynced = resolve;
      receiver.stdin!.write('sync\n');
    });
  return { receiver, port, received, sync };
}

describe('tracing and metrics across processes', () => {
  it('exports one trace per DSI request from the orchestrator, the drafter and every target, with the parent -> child edges', async () => {
    const { receiver, port, received, sync } = await startReceiver();
    const env = {
      ...process.env,
      DSI_MODELS_DIR: testModelsDir(),
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_BSP_SCHEDULE_DELAY: '200',
    };
    const services: StackService[] = [];
    try {
      // A fast drafter and slow targets: blocks pile up in flight, so rejections cancel some.
      const synthetic = (ms: number) => ['--backend', 'synthetic', '--a', '0.6', '--tpot-ms', String(ms), '--ttft-ms', String(ms)];
      const [drafter, ...targets] = await Promise.all([
        startService('drafter', ['--port', '0', ...synthetic(2)], { env }),
        startService('target', ['--port', '0', ...synthetic(30)], { env }),
        startService('target', ['--port', '0', ...synthetic(30)], { env }),
      ]);
      services.push(drafter, ...targets);
      const metricsPort = await freePort();
      const orchestrator = await startService(
        'orchestrator',
        ['--port', '0', '--drafter', drafter.address, '--targets', targets.map((t) => t.address).join(','), '--metrics-port', String(metricsPort)],
        { env },
      );
      services.push(orchestrator);
      const { generateRemote } = await import('./remote');
      const response = await generateRemote(orchestrator.address, { prompt: 'trace me', mode: 'MODE_DSI', lookahead: 3, maxNewTokens: 40 });
      expect(response.tokens).toHaveLength(40);

      // Metrics on the Prometheus endpoint: rates derived from the counters stay in their bounds.
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      const total = (name: string, label = '') =>
        text
          .split('\n')
          .filter((line) => line.startsWith(`${name}{`) && line.includes(label))
          .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
      const accepted = total('dsi_accepted_tokens_total');
      const judged = total('dsi_verified_drafts_total');
      const committing = total('dsi_verifications_total', 'dsi_outcome="committed"') + total('dsi_verifications_total', 'dsi_outcome="rejected"');
      // The counters agree with the request's own metrics: the rate derived in a query is the response's.
      expect(judged).toBeGreaterThan(0);
      expect(accepted).toBe(response.metrics!.accepted);
      expect(accepted / judged).toBeCloseTo(response.metrics!.acceptanceRate, 9);
      expect((accepted + committing) / committing).toBeGreaterThanOrEqual(1);
      expect((accepted + committing) / committing).toBeLessThanOrEqual(3 + 1);
      expect(total('dsi_generated_tokens_total')).toBe(40);
      expect(total('dsi_requests_total', 'dsi_mode="dsi"')).toBe(1);
      expect(total('dsi_request_duration_count')).toBe(1);
      // Stopping drains and flushes every exporter (the receiver has printed every body before a
      // service's exit); then one round trip through the receiver's pipes reads them all here.
      await Promise.all(services.splice(0).map((s) => s.stop()));
      await sync();

      const generate = received.find((s) => s.name === 'dsi.generate' && s.attributes['dsi.request_id'] === response.requestId);
      expect(generate).toBeDefined();
      const inTrace = received.filter((s) => s.traceId === generate!.traceId);
      const byId = new Map(inTrace.map((s) => [s.spanId, s]));
      const parentOf = (s: OtlpSpan) => (s.parentSpanId ? byId.get(s.parentSpanId) : undefined);
      expect(new Set(inTrace.map((s) => s.service))).toEqual(new Set(['dsi-orchestrator', 'dsi-drafter', 'dsi-target']));

      // orchestrator -> drafter: dsi.draft -> client span -> the drafter's server span -> its forwards.
      const drafterServer = inTrace.filter((s) => s.service === 'dsi-drafter' && s.name.endsWith('DrafterService/Draft'));
      expect(drafterServer.length).toBeGreaterThan(0);
      for (const server of drafterServer) {
        const client = parentOf(server)!;
        expect(client.service).toBe('dsi-orchestrator');
        expect(parentOf(client)!.name).toBe('dsi.draft');
        expect(parentOf(parentOf(client)!)!.spanId).toBe(generate!.spanId);
      }
      // orchestrator -> target-N: dsi.verify (with its replica) -> client span -> the target's server span.
      const targetServers = inTrace.filter((s) => s.service === 'dsi-target' && s.name.endsWith('TargetService/Verify'));
      const replicasSeen = new Set<unknown>();
      for (const server of targetServers) {
        const verify = parentOf(parentOf(server)!)!;
        expect(verify.name).toBe('dsi.verify');
        replicasSeen.add(verify.attributes['dsi.replica']);
        expect(inTrace.some((s) => s.name === 'dsi.forward' && s.parentSpanId === server.spanId)).toBe(true);
      }
      expect(replicasSeen).toEqual(new Set(targets.map((t) => t.address)));
      // Every verification says how it ended; with a = 0.6 some were rejected or cancelled.
      const outcomes = inTrace.filter((s) => s.name === 'dsi.verify').map((s) => s.attributes['dsi.outcome']);
      expect(outcomes.every((o) => ['committed', 'rejected', 'cancelled', 'failed'].includes(String(o)))).toBe(true);
      expect(outcomes).toContain('cancelled');
      expect(outcomes).toContain('rejected');
    } finally {
      await Promise.all(services.map((s) => s.stop()));
      receiver.kill('SIGTERM');
    }
  });
  it('passes a caller traceparent through an orchestrator that exports nothing to the replicas that do', async () => {
    const { receiver, port, received, sync } = await startReceiver();
    const quiet: NodeJS.ProcessEnv = { ...process.env, DSI_MODELS_DIR: testModelsDir() };
    for (const name of Object.keys(quiet)) if (name.startsWith('OTEL_') || name === 'DSI_TRACE_FILE') delete quiet[name];
    const exporting = { ...quiet, OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_BSP_SCHEDULE_DELAY: '200' };
    const services: StackService[] = [];
    try {
      const synthetic = (ms: number) => ['--port', '0', '--backend', 'synthetic', '--a', '0.6', '--tpot-ms', String(ms), '--ttft-ms', String(ms)];
      const [drafter, ...targets] = await Promise.all([
        startService('drafter', synthetic(2), { env: exporting }),
        startService('target', synthetic(10), { env: exporting }),
        startService('target', synthetic(10), { env: exporting }),
      ]);
      services.push(drafter, ...targets);
      const orchestrator = await startService('orchestrator', ['--port', '0', '--drafter', drafter.address, '--targets', targets.map((t) => t.address).join(',')], { env: quiet });
      services.push(orchestrator);

      const { credentials, Metadata } = await import('@grpc/grpc-js');
      const { GenerateRequest, OrchestratorServiceClient } = await import('@dsi/proto');
      const { callUnary } = await import('@dsi/rpc');
      const client = new OrchestratorServiceClient(orchestrator.address, credentials.createInsecure());
      const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
      const callerSpanId = '00f067aa0ba902b7';
      const metadata = new Metadata();
      metadata.set('traceparent', `00-${traceId}-${callerSpanId}-01`);
      try {
        const request = GenerateRequest.fromJSON({ params: { prompt: 'pass me through', mode: 'MODE_DSI', lookahead: 3, maxNewTokens: 24 } });
        expect((await callUnary(client, 'generate', request, { metadata })).tokens).toHaveLength(24);
      } finally {
        client.close();
      }
      await Promise.all(services.splice(0).map((s) => s.stop()));
      await sync();

      // The orchestrator records nothing; every replica's server span is a child of the caller's span.
      expect(received.filter((s) => s.service === 'dsi-orchestrator')).toEqual([]);
      const servers = received.filter((s) => s.name.endsWith('TargetService/Verify') || s.name.endsWith('DrafterService/Draft'));
      expect(new Set(servers.map((s) => s.service))).toEqual(new Set(['dsi-drafter', 'dsi-target']));
      expect(servers.filter((s) => s.traceId !== traceId || s.parentSpanId !== callerSpanId)).toEqual([]);
    } finally {
      await Promise.all(services.map((s) => s.stop()));
      receiver.kill('SIGTERM');
    }
  });
});

describe('dsi trace on a recorded run', () => {
  it('draws one lane per drafter and replica and one bar per span, matching the file', async () => {
    const { execFile } = await import('node:child_process');
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const bin = path.resolve(__dirname, '../bin/dsi.js');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-trace-'));
    const spansFile = path.join(dir, 'run.jsonl');
    const run = (...args: string[]) =>
      new Promise<string>((resolve, reject) =>
        execFile(process.execPath, [bin, ...args], { env: { ...process.env, DSI_MODELS_DIR: testModelsDir() } }, (error, stdout, stderr) =>
          error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout),
        ),
      );
    await run('up', '--once', '--json', '--base-port', '0', '--backend', 'synthetic', '--target-ms', '10', '--a', '0.7', '--targets', '3', '--max-new-tokens', '30', '--trace-file', spansFile);
    const svgFile = path.join(dir, 'timeline.svg');
    const report = JSON.parse(await run('trace', spansFile, '--out', svgFile, '--json'));
    const svg = fs.readFileSync(svgFile, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);

    // The spans of the request the report picked (the last to finish: DSI).
    const spans = fs.readFileSync(spansFile, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    const generate = spans.find((s) => s.name === 'dsi.generate' && s.traceId === report.trace_id);
    expect(generate.attributes['dsi.mode']).toBe('dsi');
    const verifies = spans.filter((s) => s.traceId === report.trace_id && s.name === 'dsi.verify');
    const drafts = spans.filter((s) => s.traceId === report.trace_id && s.name === 'dsi.draft');
    const replicas = new Set(verifies.map((s) => s.attributes['dsi.replica']));
    for (const replica of replicas) expect(svg).toContain(`target ${replica}`);
    expect(svg).toContain('>drafter<');
    const count = (outcome: string) => verifies.filter((s) => s.attributes['dsi.outcome'] === outcome).length;
    expect(report.verifications).toMatchObject({ committed: count('committed'), rejected: count('rejected'), cancelled: count('cancelled') });
    expect(report.drafts.total).toBe(drafts.length);
    expect(report.lanes).toHaveLength(replicas.size + 1);
    // Every process its own service.instance.id: 1 orchestrator, 1 drafter, each of the 3 targets.
    const instances = (service: string) => new Set(spans.filter((s) => s.resource['service.name'] === service).map((s) => s.resource['service.instance.id']));
    expect(instances('dsi-orchestrator').size).toBe(1);
    expect(instances('dsi-drafter').size).toBe(1);
    expect(instances('dsi-target').size).toBe(3);
    expect([...instances('dsi-target')].every((id) => typeof id === 'string' && id.length > 0)).toBe(true);
    // Server spans say where they were served: the target's server spans carry its address and port.
    const served = spans.filter((s) => s.traceId === report.trace_id && s.kind === 'SERVER' && s.resource['service.name'] === 'dsi-target');
    expect(served.length).toBeGreaterThan(0);
    for (const span of served) expect(typeof span.attributes['server.port']).toBe('number');
    fs.rmSync(dir, { recursive: true });
  });
});
