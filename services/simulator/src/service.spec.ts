import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { SpanStatusCode } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import {
  HeatmapRequest,
  PlanRequest,
  SimulateRequest,
  SimulationMethod,
  SimulatorServiceClient,
  type HeatmapResponse,
  type PlanResponse,
  type SimulateResponse,
} from '@dsi/proto';
import { checkHealth, DsiServer } from '@dsi/rpc';
import { heatmapGrid, DEFAULT_HEATMAP, planDeployment } from '@dsi/sim';
import { planFromWire } from '@dsi/wire';
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

function plan(request: Partial<PlanRequest>): Promise<PlanResponse[]> {
  return new Promise((resolve, reject) => {
    const messages: PlanResponse[] = [];
    const stream = client.plan(PlanRequest.fromPartial(request));
    stream.on('data', (m: PlanResponse) => messages.push(m));
    stream.on('error', reject);
    stream.on('end', () => resolve(messages));
  });
}

async function planError(request: Partial<PlanRequest>): Promise<ServiceError> {
  return (await plan(request).then(
    () => {
      throw new Error('expected the call to fail');
    },
    (e: ServiceError) => e,
  ));
}

describe('SimulatorService/Plan', () => {
  const pair = { a: 0.8, targetMs: 20, drafterMs: 2, roundTripMs: 0.5 };

  it('streams progress up to the total, then the plan planDeployment gives in-process, exactly', async () => {
    exporter.reset();
    const messages = await plan({ pair, options: { maxReplicas: 3, tokens: 200, prompts: 2 } });
    const expected = await planDeployment({ a: 0.8, targetMs: 20, drafterMs: 2, rttMs: 0.5 }, { maxReplicas: 3, tokens: 200, prompts: 2 });
    expect(messages.slice(0, -1).map((m) => m.progress)).toEqual([1, 2, 3, 4].map((done) => ({ done, total: 4 })));
    expect(messages.slice(0, -1).every((m) => m.plan === undefined)).toBe(true);
    const last = messages[messages.length - 1];
    expect(last.progress).toBeUndefined();
    expect(planFromWire(last.plan!)).toStrictEqual(expected);
    expect(expected.options).toMatchObject({ max_lookahead: 12, seed: 1 }); // the defaults of unset options
    const span = exporter.getFinishedSpans().find((s) => s.name === 'dsi.plan');
    expect(span?.attributes).toMatchObject({
      'dsi.plan.a': 0.8,
      'dsi.plan.target_ms': 20,
      'dsi.plan.drafter_ms': 2,
      'dsi.plan.round_trip_ms': 0.5,
      'dsi.plan.max_replicas': 3,
      'dsi.plan.tokens': 200,
      'dsi.plan.prompts': 2,
      'dsi.plan.max_lookahead': 12,
      'dsi.plan.seed': 1,
      'dsi.plan.recommended_replicas': expected.recommendation.replicas,
    });
    expect(span?.attributes['dsi.plan.concurrency']).toBeUndefined();
  });

  it('plans under load (DSI auto, throughput, the resolved requests) as in-process', async () => {
    const messages = await plan({ pair, options: { maxReplicas: 2, tokens: 10, maxLookahead: 2, concurrency: 2 } });
    const expected = await planDeployment({ a: 0.8, targetMs: 20, drafterMs: 2, rttMs: 0.5 }, { maxReplicas: 2, tokens: 10, maxLookahead: 2, concurrency: 2 });
    const result = planFromWire(messages[messages.length - 1].plan!);
    expect(result).toStrictEqual(expected);
    expect(result.options).toMatchObject({ concurrency: 2, requests: 8 });
    expect(result.rows[0].dsi_auto?.throughput_tps).toBeGreaterThan(0);
  });

  it.each<[string, Partial<PlanRequest>, string]>([
    ['a out of range', { pair: { ...pair, a: 1.5 } }, 'a: must be in [0, 1], got 1.5'],
    ['a negative target_ms', { pair: { ...pair, targetMs: -3 } }, 'target_ms: must be a latency >= 0 ms, got -3'],
    ['a zero target_ms', { pair: { ...pair, targetMs: 0 } }, 'target_ms: must be > 0'],
    ['no pair', {}, 'a: required'],
    ['no drafter_ms', { pair: { a: 0.5, targetMs: 10 } }, 'drafter_ms: required'],
    ['a negative round trip', { pair: { ...pair, roundTripMs: -1 } }, 'round_trip_ms: must be a latency >= 0 ms, got -1'],
    ['max_replicas 0', { pair, options: { maxReplicas: 0 } }, 'max_replicas: must be an integer in [1, 64], got 0'],
    ['both load options', { pair, options: { concurrency: 2, arrivalRate: 1 } }, 'arrival_rate: give concurrency or arrival_rate, not both'],
  ])('answers %s with INVALID_ARGUMENT naming the field', async (_, request, message) => {
    const error = await planError(request);
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toBe(message);
  });

  it('stops the planner when the client cancels, and keeps serving', async () => {
    exporter.reset();
    const stream = client.plan(PlanRequest.fromPartial({ pair, options: { maxReplicas: 16, tokens: 2000 } }));
    const cancelled = new Promise<ServiceError>((resolve) => stream.on('error', resolve));
    const first = await new Promise<PlanResponse>((resolve) => stream.once('data', resolve));
    expect(first.progress).toEqual({ done: 1, total: 17 });
    const cancelledAt = Date.now();
    stream.cancel();
    expect((await cancelled).code).toBe(status.CANCELLED);
    // The span ends when the planner returns: it stopped (after at most the event-mode run in progress).
    while (!exporter.getFinishedSpans().some((s) => s.name === 'dsi.plan')) {
      expect(Date.now() - cancelledAt).toBeLessThan(10_000);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const span = exporter.getFinishedSpans().find((s) => s.name === 'dsi.plan')!;
    expect(span.status.code).toBe(SpanStatusCode.ERROR);
    expect(await checkHealth(server.address)).toBe('SERVING');
    const messages = await plan({ pair, options: { maxReplicas: 1, tokens: 50, prompts: 1, maxLookahead: 2 } });
    expect(messages[messages.length - 1].plan?.rows).toHaveLength(1);
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

  it('streams a Plan with a JSON body through reflection', async () => {
    const { stdout } = await promisify(execFile)(
      path.join(root, 'node_modules/.bin/buf'),
      [
        'curl', '--protocol', 'grpc', '--http2-prior-knowledge',
        '-d', '{"pair":{"a":0.8,"target_ms":20,"drafter_ms":2},"options":{"max_replicas":1,"tokens":50,"prompts":1,"max_lookahead":2}}',
        `http://${server.address}/dsi.v1.SimulatorService/Plan`,
      ],
      { cwd: root },
    );
    const messages = stdout.trim().split(/\n(?=\{)/).map((m) => JSON.parse(m) as { progress?: object; plan?: { rows: unknown[]; boundMsPerToken: number } });
    expect(messages.slice(0, -1).map((m) => m.progress)).toEqual([{ done: 1, total: 2 }, { done: 2, total: 2 }]);
    expect(messages[messages.length - 1].plan?.rows).toHaveLength(1);
    expect(messages[messages.length - 1].plan?.boundMsPerToken).toBeCloseTo(0.2 * 20 + 0.8 * 2, 9);
  });
});
