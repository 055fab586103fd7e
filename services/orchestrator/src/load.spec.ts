import { credentials, Metadata, status, type CallOptions, type ServiceError } from '@grpc/grpc-js';
import { metrics } from '@opentelemetry/api';
import { ensureDefaultModels } from '@dsi/modelgen';
import { createSyntheticModel, OnnxModel, TextTokenizer, type LanguageModel } from '@dsi/models';
import { testModelsDir } from '@dsi/models/test-models';
import { GenerateRequest, Mode, OrchestratorServiceClient, VerificationRule, type GenerateResponse, type GenerationParams } from '@dsi/proto';
import { drafterService } from '@dsi/drafter-service';
import { targetService } from '@dsi/target-service';
import { DsiServer, LoadingSlot, type ServiceRegistration } from '@dsi/rpc';
import { generationInstruments, type GenerationInstruments } from '@dsi/telemetry';
import { ReplicaPool, type ReplicaClient } from './replicas';
import { orchestratorService, type OrchestratorOptions } from './service';

/**
 * Many requests at once through real servers on loopback (synthetic backend): every generation runs
 * on the orchestrator's shared replica schedulers, behind its admission limits.
 */

/** A registration whose `method` counts its calls in `counts` under `name`. */
function counting(registration: ServiceRegistration, method: 'verify' | 'draft', counts: Map<string, number>, name: () => string): ServiceRegistration {
  const implementation = registration.implementation as Record<string, (...args: unknown[]) => unknown>;
  const original = implementation[method];
  const wrapped = (...args: unknown[]) => {
    counts.set(name(), (counts.get(name()) ?? 0) + 1);
    return original(...args);
  };
  return { ...registration, implementation: { ...implementation, [method]: wrapped } } as ServiceRegistration;
}

/** What the orchestrator's admission and replica-time instruments recorded. */
class RecordedInstruments {
  active = 0;
  queued = 0;
  readonly replicaTime = new Map<string, number>();
  readonly instruments: GenerationInstruments = {
    ...generationInstruments(metrics.getMeter('load-spec')),
    activeRequests: { add: (value: number) => void (this.active += value) },
    queuedRequests: { add: (value: number) => void (this.queued += value) },
    replicaTime: {
      add: (ms: number, attributes?: Record<string, unknown>) => {
        const use = String(attributes?.['dsi.replica_time.use']);
        this.replicaTime.set(use, (this.replicaTime.get(use) ?? 0) + ms);
      },
    },
  };
}

/** Latencies of the synthetic replicas: small, but long enough that concurrent requests overlap. */
const TARGET_MS = 5;
const DRAFTER_MS = 1;

/** Four target replicas and two drafters, each counting its calls by address, and orchestrators over them. */
class LoadStack {
  private readonly servers: DsiServer[] = [];
  private readonly models: LanguageModel[] = [];
  private readonly pools: ReplicaPool<ReplicaClient>[] = [];
  private readonly clients: OrchestratorServiceClient[] = [];
  readonly verifyCalls = new Map<string, number>();
  readonly draftCalls = new Map<string, number>();
  targetAddresses: string[] = [];
  drafterAddresses: string[] = [];
  tokenizer!: TextTokenizer;
  /** The most calls one forward of a replica ran together (`maxBatchRequests` above 1 batches). */
  largestBatch = { drafter: 0, target: 0 };

  async start(options: { targetMs?: number; maxBatchRequests?: number; onnx?: boolean } = {}): Promise<void> {
    const pair = await ensureDefaultModels(testModelsDir());
    this.tokenizer = TextTokenizer.load(pair.target);
    const targetMs = options.targetMs ?? TARGET_MS;
    const batching = { maxBatchRequests: options.maxBatchRequests ?? 1 };
    const onnx = (role: 'drafter' | 'target') => OnnxModel.load(pair[role], batching);
    for (let i = 0; i < 2; i++) {
      const model = this.model(
        options.onnx ? await onnx('drafter') : createSyntheticModel({ role: 'drafter', seed: 7, acceptance: 0.7, ttftMs: DRAFTER_MS, tpotMs: DRAFTER_MS, batching }),
        'drafter',
      );
      let address = '';
      const server = await this.serve(counting(drafterService(LoadingSlot.of(model)), 'draft', this.draftCalls, () => address));
      address = server.address;
      this.drafterAddresses.push(address);
    }
    for (let i = 0; i < 4; i++) {
      const model = this.model(options.onnx ? await onnx('target') : createSyntheticModel({ role: 'target', seed: 7, ttftMs: targetMs, tpotMs: targetMs, batching }), 'target');
      let address = '';
      const server = await this.serve(counting(targetService(LoadingSlot.of(model)), 'verify', this.verifyCalls, () => address));
      address = server.address;
      this.targetAddresses.push(address);
    }
  }

  /** An orchestrator over `targets` of the replicas and both drafters (or the first only). */
  async orchestrator(extra: Partial<OrchestratorOptions> & { targets?: number; drafters?: number } = {}): Promise<Orchestrator> {
    const { targets: targetCount = 4, drafters: drafterCount = 2, ...rest } = extra;
    const targets = ReplicaPool.targets({ addresses: this.targetAddresses.slice(0, targetCount) });
    const drafters = ReplicaPool.drafters({ addresses: this.drafterAddresses.slice(0, drafterCount) });
    await Promise.all([targets.start(), drafters.start()]);
    this.pools.push(targets, drafters);
    const server = await this.serve(orchestratorService({ targets, drafters, tokenizer: this.tokenizer, eosTokenId: 257, ...rest }));
    const client = new OrchestratorServiceClient(server.address, credentials.createInsecure());
    this.clients.push(client);
    return new Orchestrator(client);
  }

  async stop(): Promise<void> {
    for (const client of this.clients) client.close();
    for (const pool of this.pools) pool.stop();
    await Promise.all(this.servers.map((s) => s.shutdown()));
    await Promise.all(this.models.map((m) => m.close()));
  }

  private model(model: LanguageModel, role: 'drafter' | 'target'): LanguageModel {
    this.models.push(model);
    return {
      info: model.info,
      logits: async (...args) => {
        const forward = await model.logits(...args);
        this.largestBatch[role] = Math.max(this.largestBatch[role], forward.batchRequests ?? 1);
        return forward;
      },
      release: (requestId) => model.release(requestId),
      warmup: () => model.warmup(),
      close: () => model.close(),
    };
  }

  private async serve(registration: ServiceRegistration): Promise<DsiServer> {
    const server = new DsiServer([registration], { port: 0 });
    await server.start();
    server.markServing();
    this.servers.push(server);
    return server;
  }
}

/** A client of one orchestrator. */
class Orchestrator {
  constructor(private readonly client: OrchestratorServiceClient) {}

  generate(params: Partial<GenerationParams>, deadlineMs?: number): Promise<GenerateResponse> {
    const options: Partial<CallOptions> = deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs };
    return new Promise((resolve, reject) =>
      this.client.generate(GenerateRequest.fromPartial({ params }), new Metadata(), options, (error, response) => (error ? reject(error) : resolve(response!))),
    );
  }

  failure(params: Partial<GenerationParams>, deadlineMs?: number): Promise<ServiceError> {
    return this.generate(params, deadlineMs).then(
      () => Promise.reject(new Error('Generate succeeded')),
      (error: ServiceError) => error,
    );
  }
}

/** Resolves once `condition` holds, checking on every turn of the event loop (bounded). */
async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const giveUpAt = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

const MODES = [Mode.MODE_NON_SI, Mode.MODE_SI, Mode.MODE_DSI];
const MODE_NAMES = { [Mode.MODE_NON_SI]: 'NON_SI', [Mode.MODE_SI]: 'SI', [Mode.MODE_DSI]: 'DSI' } as Record<number, string>;

/** The i-th request of the mixed load: every mode, greedy or seeded (with its own seed), lookahead 1..8. */
function mixedRequest(i: number): Partial<GenerationParams> {
  const seeded = i % 2 === 1;
  return {
    prompt: `request ${i % 5}: once upon a time`,
    mode: MODES[i % 3],
    lookahead: 1 + (i % 8),
    maxNewTokens: 16 + (i % 4) * 4,
    sampling: seeded
      ? { rule: VerificationRule.VERIFICATION_RULE_SEEDED, seed: 100 + (i % 3), temperature: 0.8 }
      : { rule: VerificationRule.VERIFICATION_RULE_GREEDY },
  };
}

describe('many requests at once', () => {
  const stack = new LoadStack();
  beforeAll(() => stack.start(), 60_000);
  afterAll(() => stack.stop());

  it('is lossless under load: 32 concurrent requests of mixed modes, rules and lookaheads give exactly the tokens each gives alone', async () => {
    const recorded = new RecordedInstruments();
    const orchestrator = await stack.orchestrator({ instruments: recorded.instruments });
    const requests = Array.from({ length: 32 }, (_, i) => mixedRequest(i));
    const alone: number[][] = [];
    for (const params of requests) alone.push((await orchestrator.generate(params)).tokens);
    const together = await Promise.all(requests.map((params) => orchestrator.generate(params)));
    requests.forEach((params, i) => {
      const label = `#${i} ${MODE_NAMES[params.mode!]} k=${params.lookahead} ${params.sampling!.rule === VerificationRule.VERIFICATION_RULE_SEEDED ? 'seeded' : 'greedy'}`;
      expect({ label, tokens: together[i].tokens }).toEqual({ label, tokens: alone[i] });
      expect(together[i].tokens).toHaveLength(params.maxNewTokens!);
    });
    // Every mode agrees with non-SI for the same prompt and rule: the output is the target's.
    for (let i = 3; i < 32; i++) {
      const reference = requests.findIndex((other, j) => j < i && other.prompt === requests[i].prompt && other.mode === Mode.MODE_NON_SI);
      const sameRule = reference >= 0 && JSON.stringify(requests[reference].sampling) === JSON.stringify(requests[i].sampling);
      if (sameRule) expect(alone[i].slice(0, alone[reference].length)).toEqual(alone[reference].slice(0, alone[i].length));
    }
    // Admission and replica time were accounted: nothing left running or waiting, the lanes' time counted.
    expect({ active: recorded.active, queued: recorded.queued }).toEqual({ active: 0, queued: 0 });
    expect(recorded.replicaTime.get('lane')).toBeGreaterThan(0);
    expect([...recorded.replicaTime.keys()].every((use) => ['lane', 'speculative_used', 'wasted'].includes(use))).toBe(true);
  }, 120_000);

  it('spreads non-SI requests over every target replica', async () => {
    const orchestrator = await stack.orchestrator();
    stack.verifyCalls.clear();
    const prompts = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta'];
    await Promise.all(prompts.map((prompt) => orchestrator.generate({ prompt, mode: Mode.MODE_NON_SI, maxNewTokens: 24 })));
    const calls = stack.targetAddresses.map((address) => stack.verifyCalls.get(address) ?? 0);
    const total = calls.reduce((sum, n) => sum + n, 0);
    expect(total).toBeGreaterThanOrEqual(8 * 24);
    // Each replica verifies a share (not everything queued on the first one).
    for (const [i, n] of calls.entries()) expect({ replica: i, share: n / total > 0.1 }).toEqual({ replica: i, share: true });
  }, 60_000);

  it('uses both drafter replicas', async () => {
    const orchestrator = await stack.orchestrator();
    stack.draftCalls.clear();
    await Promise.all(['one', 'two', 'three', 'four', 'five', 'six'].map((prompt) => orchestrator.generate({ prompt, mode: Mode.MODE_DSI, lookahead: 4, maxNewTokens: 24 })));
    const calls = stack.drafterAddresses.map((address) => stack.draftCalls.get(address) ?? 0);
    expect(calls.every((n) => n > 0)).toBe(true);
  }, 60_000);
});

describe.each([
  ['synthetic', false],
  ['ONNX (the default pair)', true],
])('many requests at once on %s replicas that batch (--max-batch-requests 4)', (_backend, onnx) => {
  const batched = new LoadStack();
  const unbatched = new LoadStack();
  beforeAll(() => Promise.all([batched.start({ maxBatchRequests: 4, onnx }), unbatched.start({ onnx })]), 60_000);
  afterAll(() => Promise.all([batched.stop(), unbatched.stop()]));

  it('gives exactly the unbatched tokens: 32 concurrent requests of mixed modes, rules and lookaheads, forwards shared', async () => {
    const orchestrator = await batched.orchestrator({ slotsPerReplica: 4 });
    const reference = await unbatched.orchestrator();
    const requests = Array.from({ length: 32 }, (_, i) => mixedRequest(i));
    const alone: number[][] = [];
    for (const params of requests) alone.push((await reference.generate(params)).tokens);
    const together = await Promise.all(requests.map((params) => orchestrator.generate(params)));
    requests.forEach((params, i) => {
      const label = `#${i} ${MODE_NAMES[params.mode!]} k=${params.lookahead} ${params.sampling!.rule === VerificationRule.VERIFICATION_RULE_SEEDED ? 'seeded' : 'greedy'}`;
      expect({ label, tokens: together[i].tokens }).toEqual({ label, tokens: alone[i] });
    });
    // The replicas really batched: forwards of both kinds ran several calls together, never more than 4.
    expect(batched.largestBatch.target).toBeGreaterThan(1);
    expect(batched.largestBatch.drafter).toBeGreaterThan(1);
    expect(Math.max(batched.largestBatch.target, batched.largestBatch.drafter)).toBeLessThanOrEqual(4);
    expect(unbatched.largestBatch).toEqual({ drafter: 1, target: 1 });
  }, 120_000);
});

describe('admission', () => {
  const stack = new LoadStack();
  // Slow targets: a 40-token request takes about a second, so the others certainly find it running.
  beforeAll(() => stack.start({ targetMs: 25 }), 60_000);
  afterAll(() => stack.stop());

  it('queues beyond --max-active-requests, refuses beyond --max-queued-requests, and a queued request honours its deadline', async () => {
    const recorded = new RecordedInstruments();
    const orchestrator = await stack.orchestrator({ maxActiveRequests: 1, maxQueuedRequests: 1, instruments: recorded.instruments });
    const params = { prompt: 'admission', mode: Mode.MODE_NON_SI, maxNewTokens: 40 };
    const alone = await orchestrator.generate(params);

    const running = orchestrator.generate(params);
    running.catch(() => undefined); // awaited below; a failure before then must not crash the run
    await until(() => recorded.active === 1, 'the first request runs');
    const queued = orchestrator.failure(params, 200);
    await until(() => recorded.queued === 1, 'the second request waits');
    const refused = await orchestrator.failure(params);
    expect({ code: refused.code, details: refused.details }).toEqual({
      code: status.RESOURCE_EXHAUSTED,
      details: expect.stringMatching(/--max-active-requests 1\b.*--max-queued-requests 1\b/),
    });

    const expired = await queued;
    expect(expired.code).toBe(status.DEADLINE_EXCEEDED);
    // It left the queue (the server sees the deadline a moment after the client): the place is free
    // for the next request, which is queued, not refused, and runs after the first.
    await until(() => recorded.queued === 0, 'the expired request leaves the queue');
    const [first, second] = await Promise.all([running, orchestrator.generate(params)]);
    expect(first.tokens).toEqual(alone.tokens);
    expect(second.tokens).toEqual(alone.tokens);
    expect({ active: recorded.active, queued: recorded.queued }).toEqual({ active: 0, queued: 0 });
  }, 60_000);
});
