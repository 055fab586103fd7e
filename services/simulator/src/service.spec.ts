import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { HeatmapRequest, SimulateRequest, SimulationMethod, SimulatorServiceClient, type HeatmapResponse, type SimulateResponse } from '@dsi/proto';
import { DsiServer } from '@dsi/rpc';
import { heatmapGrid, DEFAULT_HEATMAP } from '@dsi/sim';
import { simulatorService } from './service';

const root = path.resolve(__dirname, '../../..');
const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
let server: DsiServer;
let client: SimulatorServiceClient;

beforeAll(async () => {
  server = new DsiServer([simulatorService({ threads: 2, tracer: provider.getTracer('test') })], { port: 0 });
  await server.start();
  server.markServing();
  client = new SimulatorServiceClient(server.address, credentials.createInsecure());
});

afterAll(async () => {
  client.close();
  await server.shutdown();
});

function simulate(config: object): Promise<SimulateResponse> {
  return new Promise((resolve, reject) =>
    client.simulate(SimulateRequest.fromPartial({ config }), (error, response) => (error ? reject(error) : resolve(response!))),
  );
}

function heatmap(request: Partial<HeatmapRequest>): Promise<HeatmapResponse[]> {
  return new Promise((resolve, reject) => {
    const messages: HeatmapResponse[] = [];
    const stream = client.heatmap(HeatmapRequest.fromPartial(request));
    stream.on('data', (m: HeatmapResponse) => messages.push(m));
    stream.on('error', reject);
    stream.on('end', () => resolve(messages));
  });
}

describe('SimulatorService/Simulate', () => {
  it('gives the study numbers with every field left unset', async () => {
    const response = await simulate({});
    expect(response.si?.costs.map((c) => Number(c.toFixed(9)))).toEqual([332.8, 316.0, 314.7, 321.0, 326.7]);
    expect(response.dsi?.iterations).toEqual([252, 243, 245, 249, 247]);
    expect(response.config).toMatchObject({ a: 0.9, c: 0.1, k: 5, tokens: 1000, servers: 7, seed: 42, method: SimulationMethod.SIMULATION_METHOD_SEED });
  });

  it('computes exact expectations on request', async () => {
    const response = await simulate({ method: SimulationMethod.SIMULATION_METHOD_EXACT });
    expect(response.si?.cost).toBeCloseTo(320.513, 3);
    expect(response.dsi?.cost).toBeCloseTo(217.819, 3);
  });

  it('runs the orchestrator\'s scheduler on a virtual clock with the event method', async () => {
    const response = await simulate({ method: SimulationMethod.SIMULATION_METHOD_EVENT, tokens: 100, repeats: 3, rtt: 0.1 });
    expect(response.config?.method).toBe(SimulationMethod.SIMULATION_METHOD_EVENT);
    expect(response.nonsi?.cost).toBeCloseTo(110, 9); // 100 forwards of t + rtt
    expect(response.dsi?.costs).toHaveLength(3);
    expect(response.dsi!.cost).toBeLessThan(response.si!.cost);
  });

  it.each([
    [{ servers: 3, k: 1, c: 0.3 }, 'servers=3 is below ceil(t/(k*c)) = 4'],
    [{ a: 2 }, 'a=2 is outside [0, 1]'],
    [{ k: -1 }, 'k=-1 is below 1'],
    [{ method: 7 }, 'method=7 is not one of seed, exact, event'],
    [{ rtt: 0.5 }, 'rtt is only used by the event method'],
    [{ method: SimulationMethod.SIMULATION_METHOD_EVENT, verifyPerToken: -1 }, 'verify_per_token=-1 is below 0'],
    [{ method: SimulationMethod.SIMULATION_METHOD_EVENT, concurrency: 0 }, 'concurrency=0 is below 1'],
    [{ method: SimulationMethod.SIMULATION_METHOD_EVENT, concurrency: 1_000_000 }, 'concurrency=1000000 is above the limit 10000'],
    [{ method: SimulationMethod.SIMULATION_METHOD_EVENT, arrivalRate: 0 }, 'arrival_rate=0 must be positive'],
    [{ method: SimulationMethod.SIMULATION_METHOD_EVENT, arrivalRate: -2 }, 'arrival_rate=-2 must be positive'],
    [{ method: SimulationMethod.SIMULATION_METHOD_EVENT, concurrency: 4, arrivalRate: 1 }, 'concurrency (closed loop) and arrival_rate (open loop) are exclusive: set one'],
    [{ method: SimulationMethod.SIMULATION_METHOD_EVENT, concurrency: 4, requests: 0 }, 'requests=0 is below 1'],
    [{ method: SimulationMethod.SIMULATION_METHOD_EVENT, requests: 4 }, 'requests is only used with concurrency or arrival_rate'],
    [{ method: SimulationMethod.SIMULATION_METHOD_EVENT, drafters: 0 }, 'drafters=0 is below 1'],
    [{ concurrency: 4 }, 'concurrency is only used by the event method'],
    [{ method: SimulationMethod.SIMULATION_METHOD_EXACT, arrivalRate: 1 }, 'arrival_rate is only used by the event method'],
  ])('answers %j with INVALID_ARGUMENT: %s', async (config, message) => {
    const error = (await simulate(config).catch((e: ServiceError) => e)) as ServiceError;
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toBe(message);
  });

  it('simulates many requests at once with the event method and concurrency, per mode', async () => {
    const response = await simulate({ method: SimulationMethod.SIMULATION_METHOD_EVENT, tokens: 16, servers: 2, drafters: 2, concurrency: 4, requests: 8 });
    expect(response.config).toMatchObject({ method: SimulationMethod.SIMULATION_METHOD_EVENT, concurrency: 4, requests: 8, drafters: 2 });
    // Non-SI keeps both replicas busy: 2 tokens per unit of time.
    expect(response.load?.nonsi?.throughput).toBe(2);
    expect(response.load?.nonsi?.targetUtilisation).toBe(1);
    for (const figures of [response.load?.si, response.load?.dsi]) {
      expect(figures).toMatchObject({ requests: 8, tokens: 128, meanTokensPerRequest: 16 });
      expect(figures!.latencyP99).toBeGreaterThanOrEqual(figures!.latencyP50);
    }
    expect(response.dsi?.costs).toHaveLength(8);
  });

  it('simulates Poisson arrivals with the event method and arrival_rate', async () => {
    const response = await simulate({ method: SimulationMethod.SIMULATION_METHOD_EVENT, tokens: 8, arrivalRate: 0.05, requests: 5 });
    expect(response.config).toMatchObject({ arrivalRate: 0.05, requests: 5, drafters: 1 });
    // Arrivals about 20 apart, 8 tokens each: nobody waits, every non-SI request takes 8.
    expect(response.load?.nonsi).toMatchObject({ latencyP50: 8, latencyP99: 8, ttftP50: 1 });
  });

  it('records a span per call carrying the parameters', async () => {
    exporter.reset();
    await simulate({ a: 0.6, k: 3 });
    const span = exporter.getFinishedSpans().find((s) => s.name === 'dsi.simulate');
    expect(span?.attributes).toMatchObject({ 'dsi.sim.a': 0.6, 'dsi.sim.k': 3, 'dsi.sim.c': 0.1, 'dsi.sim.method': 'seed' });
  });
});

describe('SimulatorService/Heatmap', () => {
  it('streams every valid cell once, with progress counts', async () => {
    const messages = await heatmap({ ndim: 6 });
    const expected = heatmapGrid({ ...DEFAULT_HEATMAP, ndim: 6 });
    expect(messages).toHaveLength(expected.length);
    expect(new Set(messages.map((m) => m.cell?.index)).size).toBe(expected.length);
    expect(messages.map((m) => m.done)).toEqual(expected.map((_, i) => i + 1));
    expect(messages.every((m) => m.total === expected.length)).toBe(true);
    const span = exporter.getFinishedSpans().find((s) => s.name === 'dsi.heatmap');
    expect(span?.attributes).toMatchObject({ 'dsi.heatmap.ndim': 6, 'dsi.heatmap.cells': expected.length });
  });

  it('serves a shard of the grid', async () => {
    const messages = await heatmap({ ndim: 6, shardIndex: 1, shardCount: 4 });
    expect(messages.length).toBeGreaterThan(0);
    expect(messages.every((m) => m.cell!.index % 4 === 1)).toBe(true);
  });

  it('rejects a bad grid with INVALID_ARGUMENT', async () => {
    const error = (await heatmap({ ndim: 1000 }).catch((e: ServiceError) => e)) as ServiceError;
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toBe('ndim=1000 is outside [1, 100]');
    const shard = (await heatmap({ ndim: 4, shardIndex: 3, shardCount: 2 }).catch((e: ServiceError) => e)) as ServiceError;
    expect(shard.details).toBe('shard_index=3 is outside [0, 1]');
  });

  it('stops when the client cancels, and keeps serving', async () => {
    const stream = client.heatmap(HeatmapRequest.fromPartial({ ndim: 60, method: SimulationMethod.SIMULATION_METHOD_EXACT }));
    const cancelled = new Promise<ServiceError>((resolve) => stream.on('error', resolve));
    await new Promise((resolve) => stream.once('data', resolve));
    stream.cancel();
    expect((await cancelled).code).toBe(status.CANCELLED);
    expect((await simulate({ tokens: 10 })).si?.costs).toHaveLength(5);
  });
});

describe('reflection', () => {
  it('lists the simulator through buf curl, as grpcurl would', async () => {
    const { stdout } = await promisify(execFile)(
      path.join(root, 'node_modules/.bin/buf'),
      ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '--list-services', `http://${server.address}`],
      { cwd: root },
    );
    expect(stdout.split('\n')).toEqual(expect.arrayContaining(['dsi.v1.SimulatorService', 'grpc.health.v1.Health']));
  });

  it('calls Simulate with a JSON body through reflection', async () => {
    const { stdout } = await promisify(execFile)(
      path.join(root, 'node_modules/.bin/buf'),
      [
        'curl', '--protocol', 'grpc', '--http2-prior-knowledge',
        '-d', '{"config":{"method":"SIMULATION_METHOD_EXACT"}}',
        `http://${server.address}/dsi.v1.SimulatorService/Simulate`,
      ],
      { cwd: root },
    );
    expect(JSON.parse(stdout).dsi.cost).toBeCloseTo(217.819, 3);
  });
});
