import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { ensureDefaultModels } from '@dsi/modelgen';
import { createSyntheticModel, OnnxModel, TextTokenizer, type LanguageModel } from '@dsi/models';
import { testModelsDir } from '@dsi/models/test-models';
import {
  FinishReason,
  GenerateRequest,
  GenerateStreamRequest,
  Mode,
  OrchestratorServiceClient,
  VerificationRule,
  type GenerateResponse,
  type GenerateStreamResponse,
  type GenerationParams,
} from '@dsi/proto';
import { DsiServer, LoadingSlot } from '@dsi/rpc';
import { drafterService } from '@dsi/drafter-service';
import { targetService } from '@dsi/target-service';
import { ReplicaPool, type ReplicaClient } from './replicas';
import { orchestratorService } from './service';

const REPLICA_COUNTS = [1, 2, 4, 7];
/** 0 is auto (the wire's default): the scheduler picks k as it goes. */
const LOOKAHEADS = [0, 1, 2, 3, 5, 8];

/** A drafter, seven target replicas and one orchestrator per replica count, all real servers on loopback. */
class Stack {
  readonly servers: DsiServer[] = [];
  readonly models: LanguageModel[] = [];
  readonly pools: ReplicaPool<ReplicaClient>[] = [];
  readonly clients = new Map<number, OrchestratorServiceClient>();
  targetAddresses: string[] = [];

  async start(load: (role: 'drafter' | 'target') => Promise<LanguageModel>, tokenizer: TextTokenizer): Promise<void> {
    const drafterModel = await load('drafter');
    this.models.push(drafterModel);
    const drafterServer = await this.serve(drafterService(LoadingSlot.of(drafterModel)));
    for (let i = 0; i < 7; i++) {
      const model = await load('target');
      this.models.push(model);
      this.targetAddresses.push((await this.serve(targetService(LoadingSlot.of(model)))).address);
    }
    for (const count of REPLICA_COUNTS) {
      const pool = ReplicaPool.targets({ addresses: this.targetAddresses.slice(0, count) });
      const drafters = ReplicaPool.drafters({ addresses: [drafterServer.address] });
      await Promise.all([pool.start(), drafters.start()]);
      this.pools.push(pool, drafters);
      const orchestrator = await this.serve(orchestratorService({ drafters, targets: pool, tokenizer, eosTokenId: 257 }));
      this.clients.set(count, new OrchestratorServiceClient(orchestrator.address, credentials.createInsecure()));
    }
  }

  private async serve(registration: Parameters<typeof DsiServer.prototype.constructor>[0][number]): Promise<DsiServer> {
    const server = new DsiServer([registration], { port: 0 });
    await server.start();
    server.markServing();
    this.servers.push(server);
    return server;
  }

  generate(replicas: number, params: Partial<GenerationParams>): Promise<GenerateResponse> {
    const client = this.clients.get(replicas)!;
    return new Promise((resolve, reject) =>
      client.generate(GenerateRequest.fromPartial({ params }), (error, response) => (error ? reject(error) : resolve(response!))),
    );
  }

  async stop(): Promise<void> {
    for (const client of this.clients.values()) client.close();
    for (const pool of this.pools) pool.stop();
    await Promise.all(this.servers.map((s) => s.shutdown()));
    await Promise.all(this.models.map((m) => m.close()));
  }
}

const RULES = [
  ['greedy', { rule: VerificationRule.VERIFICATION_RULE_GREEDY }],
  ['seeded', { rule: VerificationRule.VERIFICATION_RULE_SEEDED, seed: 2024, temperature: 0.9 }],
] as const;

/** Every mode, k and replica count gives exactly the non-SI tokens. */
async function expectLossless(stack: Stack, prompt: string, maxNewTokens: number): Promise<void> {
  for (const [, sampling] of RULES) {
    const reference = await stack.generate(1, { prompt, mode: Mode.MODE_NON_SI, maxNewTokens, sampling });
    expect(reference.tokens).toHaveLength(maxNewTokens);
    for (const replicas of REPLICA_COUNTS) {
      for (const lookahead of LOOKAHEADS) {
        for (const mode of [Mode.MODE_SI, Mode.MODE_DSI]) {
          if (mode === Mode.MODE_SI && replicas > 1) continue; // SI uses one replica: no need to repeat it
          const response = await stack.generate(replicas, { prompt, mode, lookahead, maxNewTokens, sampling });
          expect({ mode, replicas, lookahead, tokens: response.tokens }).toEqual({ mode, replicas, lookahead, tokens: reference.tokens });
        }
      }
    }
  }
}

describe('lossless through real services: the default ONNX pair', () => {
  const stack = new Stack();
  beforeAll(async () => {
    const pair = await ensureDefaultModels(testModelsDir());
    await stack.start((role) => OnnxModel.load(pair[role]), TextTokenizer.load(pair.target));
  }, 120_000);
  afterAll(() => stack.stop());

  it('gives identical tokens in NON_SI, SI and DSI for greedy and seeded, k in {auto,1,2,3,5,8}, replicas in {1,2,4,7}', async () => {
    await expectLossless(stack, 'Once upon a time', 20);
  }, 240_000);

  it('reports metrics within their bounds and speculation that paid off', async () => {
    const response = await stack.generate(4, { prompt: 'The quick brown fox', mode: Mode.MODE_DSI, lookahead: 5, maxNewTokens: 32 });
    const m = response.metrics!;
    expect(m.acceptanceRate).toBeGreaterThanOrEqual(0);
    expect(m.acceptanceRate).toBeLessThanOrEqual(1);
    expect(m.meanAcceptedLength).toBeGreaterThanOrEqual(1);
    expect(m.meanAcceptedLength).toBeLessThanOrEqual(6);
    expect(m.accepted).toBeLessThanOrEqual(32);
    expect(m.wallMs).toBeGreaterThan(0);
    expect(m.ttftMs).toBeLessThanOrEqual(m.wallMs);
    expect(m.meanLookahead).toBe(5);
    expect(m.blocksPerCommit).toBeGreaterThanOrEqual(1);
    // auto reports the k it chose.
    const auto = (await stack.generate(4, { prompt: 'The quick brown fox', mode: Mode.MODE_DSI, maxNewTokens: 32 })).metrics!;
    expect(auto.meanLookahead).toBeGreaterThanOrEqual(1);
    expect(auto.meanLookahead).toBeLessThanOrEqual(64);
    expect(response.text).toBe(Buffer.from(response.tokens).toString('latin1'));
    // How many of DSI's drafts are judged depends on timing (a lane goes out at once with the drafts
    // there are, possibly none, on a busy host); SI's lanes always wait for theirs, so its figures are
    // fixed by the tokens: the built-in drafter's guesses pay off.
    const si = (await stack.generate(4, { prompt: 'The quick brown fox', mode: Mode.MODE_SI, lookahead: 5, maxNewTokens: 32 })).metrics!;
    expect(si.accepted).toBeGreaterThan(0);
    expect(si.meanAcceptedLength).toBeGreaterThan(1);
  });

  it('excludes a stop sequence and reports why it stopped', async () => {
    const free = await stack.generate(2, { prompt: 'Hello', mode: Mode.MODE_DSI, maxNewTokens: 30 });
    // The built-in pair writes printable ASCII: one byte per token.
    const stopText = free.text.slice(10, 12);
    const stopped = await stack.generate(2, { prompt: 'Hello', mode: Mode.MODE_DSI, maxNewTokens: 30, stop: [stopText] });
    const at = free.text.indexOf(stopText);
    expect(stopped.text).toBe(free.text.slice(0, at));
    expect(stopped.finishReason).toBe(FinishReason.FINISH_REASON_STOP);
    expect(free.finishReason).toBe(FinishReason.FINISH_REASON_LENGTH);
  });
  it('streams only verified tokens, which add up to the final response', async () => {
    const client = stack.clients.get(2)!;
    const stream = client.generateStream(GenerateStreamRequest.fromPartial({ params: { prompt: 'def fibonacci(n):', mode: Mode.MODE_DSI, maxNewTokens: 24 } }));
    const messages: GenerateStreamResponse[] = [];
    for await (const message of stream) messages.push(message);
    const done = messages.at(-1)!.done!;
    const streamed = messages.flatMap((m) => m.delta?.tokens ?? []);
    expect(streamed).toEqual(done.tokens);
    expect(messages.map((m) => m.delta?.text ?? '').join('')).toBe(done.text);
    const reference = await stack.generate(1, { prompt: 'def fibonacci(n):', mode: Mode.MODE_NON_SI, maxNewTokens: 24 });
    expect(done.tokens).toEqual(reference.tokens);
  });
});

describe('lossless through real services: the synthetic backend', () => {
  const stack = new Stack();
  beforeAll(async () => {
    const pair = await ensureDefaultModels(testModelsDir());
    await stack.start(async (role) => createSyntheticModel({ role, seed: 11, acceptance: 0.75 }), TextTokenizer.load(pair.target));
  }, 60_000);
  afterAll(() => stack.stop());

  it('gives identical tokens in NON_SI, SI and DSI for greedy and seeded, k in {auto,1,2,3,5,8}, replicas in {1,2,4,7}', async () => {
    await expectLossless(stack, 'Hello, world', 40);
  }, 120_000);

  it.each([
    ['an empty prompt', { prompt: '' }, 'prompt is empty: give prompt or prompt_tokens'],
    ['max_new_tokens = 0', { prompt: 'x', maxNewTokens: 0 }, 'max_new_tokens must be an integer >= 1, got 0'],
    ['max_new_tokens above the limit', { prompt: 'x', maxNewTokens: 100_000 }, 'max_new_tokens=100000 is above the limit 4096'],
    ['a negative lookahead', { prompt: 'x', mode: Mode.MODE_DSI, lookahead: -1 }, 'lookahead'],
    ['a lookahead of 65', { prompt: 'x', mode: Mode.MODE_DSI, lookahead: 65 }, 'lookahead'],
    ['an unknown mode', { prompt: 'x', mode: 9 as Mode }, 'mode=9 is not one of MODE_NON_SI, MODE_SI, MODE_DSI'],
    ['an unknown rule', { prompt: 'x', sampling: { rule: 8 as VerificationRule } }, 'rule'],
    ['a negative temperature', { prompt: 'x', sampling: { rule: VerificationRule.VERIFICATION_RULE_SEEDED, seed: 1, temperature: -0.5 } }, 'temperature'],
    ['the seeded rule without a seed', { prompt: 'x', sampling: { rule: VerificationRule.VERIFICATION_RULE_SEEDED } }, 'seed'],
  ])('answers %s with INVALID_ARGUMENT', async (_case, params, message) => {
    const error = (await stack.generate(2, params).catch((e: ServiceError) => e)) as ServiceError;
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toContain(message);
  });

});

describe('availability', () => {
  it('answers UNAVAILABLE when no target replica is healthy', async () => {
    const pool = ReplicaPool.targets({ addresses: ['127.0.0.1:1'] });
    const drafters = ReplicaPool.drafters({ addresses: ['127.0.0.1:1'] });
    await Promise.all([pool.start(), drafters.start()]);
    const pair = await ensureDefaultModels(testModelsDir());
    const server = new DsiServer([orchestratorService({ drafters, targets: pool, tokenizer: TextTokenizer.load(pair.target) })], { port: 0 });
    await server.start();
    server.markServing();
    const client = new OrchestratorServiceClient(server.address, credentials.createInsecure());
    const error = await new Promise<ServiceError>((resolve) => client.generate(GenerateRequest.fromPartial({ params: { prompt: 'hi' } }), (e) => resolve(e!)));
    expect(error.code).toBe(status.UNAVAILABLE);
    expect(error.details).toContain('no healthy target replica');
    client.close();
    pool.stop();
    drafters.stop();
    await server.shutdown();
  });
});

describe('cancellation', () => {
  const stack = new Stack();
  /** Every forward the replicas started, settled or not: a cut-off request must abort each one. */
  const forwards: Promise<unknown>[] = [];
  beforeAll(async () => {
    const pair = await ensureDefaultModels(testModelsDir());
    // Slow replicas: a forward takes 5 s, so a request is certainly mid-flight when it is cut off (its
    // deadline, 1 s, leaves room for the first forwards to start even on a loaded CI machine: with 150 ms
    // one CI run cut the request off before any forward had started).
    await stack.start(async (role) => {
      const model = createSyntheticModel({ role, seed: 3, acceptance: 0.8, ttftMs: 5000, tpotMs: 5000 });
      const logits = model.logits.bind(model);
      model.logits = (...args) => {
        const forward = logits(...args);
        forwards.push(forward);
        return forward;
      };
      return model;
    }, TextTokenizer.load(pair.target));
  }, 60_000);
  afterAll(() => stack.stop());

  it('a client deadline stops every downstream draft and verification', async () => {
    const client = stack.clients.get(4)!;
    forwards.length = 0;
    const error = await new Promise<ServiceError>((resolve) =>
      client.generate(GenerateRequest.fromPartial({ params: { prompt: 'slow', mode: Mode.MODE_DSI, maxNewTokens: 50 } }), { deadline: Date.now() + 1000 }, (e) => resolve(e!)),
    );
    expect(error.code).toBe(status.DEADLINE_EXCEEDED);
    // Every forward the request started on the drafter and the targets was aborted: none ran its
    // 5 s to the end, so the cut-off reached every replica and no model work is left running.
    expect(forwards.length).toBeGreaterThan(1);
    const outcomes = await Promise.allSettled(forwards);
    expect(outcomes.map((o) => o.status)).toEqual(forwards.map(() => 'rejected'));
  });
});
