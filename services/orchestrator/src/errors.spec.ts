import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { ensureDefaultModels } from '@dsi/modelgen';
import { createSyntheticModel, TextTokenizer, type LanguageModel } from '@dsi/models';
import { testModelsDir } from '@dsi/models/test-models';
import { GenerateRequest, GenerateStreamRequest, Mode, OrchestratorServiceClient, type GenerationParams } from '@dsi/proto';
import { drafterService } from '@dsi/drafter-service';
import { targetService } from '@dsi/target-service';
import { DsiServer, invalidArgument, LoadingSlot, unary, type ServiceRegistration } from '@dsi/rpc';
import { trace } from '@opentelemetry/api';
import { ReplicaPool, type ReplicaClient } from './replicas';
import { orchestratorService } from './service';
import { orchestratorStartup } from './startup';

/**
 * Errors through real servers on loopback: what the client of Generate sees when its request is
 * beyond the target's limits, and when the replicas answer with an error of their own.
 */

/** How each target of an orchestrator behaves. */
type TargetKind = 'model' | 'loading' | 'rejects' | 'crashes';

const REPLICA_REJECTION = 'prefix has 40 tokens; the model\'s context length is 32';

class ErrorStack {
  private readonly servers: DsiServer[] = [];
  private readonly models: LanguageModel[] = [];
  private readonly pools: ReplicaPool<ReplicaClient>[] = [];
  private readonly clients = new Map<TargetKind, OrchestratorServiceClient>();
  /** Each orchestrator's target addresses. */
  readonly targets = new Map<TargetKind, string[]>();
  private readonly closers: (() => Promise<void>)[] = [];
  private drafterAddress = '';
  /** Lines the target servers logged (internal errors with their causes). */
  readonly targetLog: string[] = [];

  async start(tokenizer: TextTokenizer): Promise<void> {
    const drafterModel = createSyntheticModel({ role: 'drafter', seed: 5, acceptance: 0.8 });
    this.models.push(drafterModel);
    const drafter = await this.serve(drafterService(LoadingSlot.of(drafterModel)));
    this.drafterAddress = drafter.address;
    for (const kind of ['model', 'loading', 'rejects', 'crashes'] as const) {
      const addresses: string[] = [];
      for (let i = 0; i < 2; i++) addresses.push((await this.serve(this.target(kind), (line) => this.targetLog.push(line))).address);
      this.targets.set(kind, addresses);
      const pool = ReplicaPool.targets({ addresses });
      const drafters = ReplicaPool.drafters({ addresses: [drafter.address] });
      await Promise.all([pool.start(), drafters.start()]);
      this.pools.push(pool, drafters);
      const orchestrator = await this.serve(orchestratorService({ drafters, targets: pool, tokenizer, eosTokenId: 257 }));
      this.clients.set(kind, new OrchestratorServiceClient(orchestrator.address, credentials.createInsecure(), { 'grpc.max_send_message_length': 8 << 20 }));
    }
  }

  /** A target replica: a synthetic model, one still loading, or one whose Verify always fails. */
  private target(kind: TargetKind): ServiceRegistration {
    if (kind === 'loading') return targetService(new LoadingSlot<LanguageModel>('the model'));
    const model = createSyntheticModel({ role: 'target', seed: 5 });
    this.models.push(model);
    const registration = targetService(LoadingSlot.of(model));
    if (kind === 'model') return registration;
    const verify = unary(async () => {
      if (kind === 'rejects') throw invalidArgument(REPLICA_REJECTION);
      throw new Error('the accelerator fell off the bus');
    });
    return { ...registration, implementation: { ...registration.implementation, verify } };
  }

  private async serve(registration: ServiceRegistration, log?: (line: string) => void): Promise<DsiServer> {
    const server = new DsiServer([registration], { port: 0, log });
    await server.start();
    server.markServing();
    this.servers.push(server);
    return server;
  }

  /** An orchestrator as its process starts it (the limits asked of the replicas at startup), over these replicas. */
  async startOrchestrator(kind: TargetKind, tokenizerDir: string, log: (line: string) => void): Promise<OrchestratorServiceClient> {
    const startup = await orchestratorStartup(
      { drafter: this.drafterAddress, targets: { addresses: this.targets.get(kind)! }, tokenizerDir, maxNewTokensLimit: 4096 },
      { tracer: trace.getTracer('test'), log },
    );
    this.closers.push(async () => startup.close?.());
    const server = await this.serve(startup.registrations[0]);
    return new OrchestratorServiceClient(server.address, credentials.createInsecure());
  }

  generate(kind: TargetKind, params: Partial<GenerationParams>): Promise<ServiceError> {
    const client = this.clients.get(kind)!;
    return new Promise((resolve, reject) =>
      client.generate(GenerateRequest.fromPartial({ params }), (error) => (error ? resolve(error) : reject(new Error('Generate succeeded')))),
    );
  }

  async generateStream(kind: TargetKind, params: Partial<GenerationParams>): Promise<ServiceError> {
    const stream = this.clients.get(kind)!.generateStream(GenerateStreamRequest.fromPartial({ params }));
    try {
      for await (const _message of stream) void _message;
    } catch (error) {
      return error as ServiceError;
    }
    throw new Error('GenerateStream succeeded');
  }

  async stop(): Promise<void> {
    for (const close of this.closers) await close();
    for (const client of this.clients.values()) client.close();
    for (const pool of this.pools) pool.stop();
    await Promise.all(this.servers.map((s) => s.shutdown()));
    await Promise.all(this.models.map((m) => m.close()));
  }
}

const stack = new ErrorStack();
let tokenizerDir: string;

beforeAll(async () => {
  const pair = await ensureDefaultModels(testModelsDir());
  tokenizerDir = pair.target;
  await stack.start(TextTokenizer.load(pair.target));
}, 60_000);
afterAll(() => stack.stop());

/**
 * The messages an expected message stands for: `{target0}`, `{target1}` are that orchestrator's target
 * addresses in the order the orchestrator lists them, `{target}` either (whichever replica failed last).
 */
function expand(kind: TargetKind, message: string): string[] {
  const [first, second] = [...stack.targets.get(kind)!].sort();
  const fixed = message.replaceAll('{target0}', first).replaceAll('{target1}', second);
  return fixed.includes('{target}') ? [first, second].map((address) => fixed.replaceAll('{target}', address)) : [fixed];
}

const CONTEXT = 4096; // the synthetic target's context length, which the orchestrator asks it for
const MiB = 1 << 20;

describe('the orchestrator checks a request against the target before any replica sees it', () => {
  it.each<[string, Partial<GenerationParams>, status, string]>([
    [
      'a prompt token beyond the vocabulary',
      { promptTokens: [72, 5000] },
      status.INVALID_ARGUMENT,
      'prompt_tokens[1]=5000 is outside the target\'s vocabulary [0, 259)',
    ],
    ['a negative prompt token', { promptTokens: [-1] }, status.INVALID_ARGUMENT, 'prompt_tokens[0]=-1 is outside the target\'s vocabulary [0, 259)'],
    [
      'a 5,000-character prompt',
      { prompt: 'a'.repeat(5000) },
      status.INVALID_ARGUMENT,
      `prompt has 5000 tokens; the target's context length is ${CONTEXT} (prompt + max_new_tokens must fit)`,
    ],
    [
      'a prompt that fits only without its max_new_tokens',
      { prompt: 'a'.repeat(4090), maxNewTokens: 64 },
      status.INVALID_ARGUMENT,
      `prompt has 4090 tokens and max_new_tokens=64; the target's context length is ${CONTEXT} (prompt + max_new_tokens must fit)`,
    ],
    [
      '3,000,000 prompt tokens',
      { promptTokens: new Array<number>(3_000_000).fill(65) },
      status.INVALID_ARGUMENT,
      `prompt has 3000000 tokens; the target's context length is ${CONTEXT} (prompt + max_new_tokens must fit)`,
    ],
    [
      'a 3 MB prompt',
      { prompt: 'a'.repeat(3_000_000) },
      status.RESOURCE_EXHAUSTED,
      `prompt has 3000000 characters; the orchestrator tokenizes at most ${16 * CONTEXT} (16 per token of the target's context length ${CONTEXT})`,
    ],
    ['a prompt beyond the server\'s message limit', { prompt: 'a'.repeat(5 * MiB) }, status.RESOURCE_EXHAUSTED, 'larger than max'],
    ['max_new_tokens 0, by its wire name', { prompt: 'x', maxNewTokens: 0 }, status.INVALID_ARGUMENT, 'max_new_tokens must be an integer >= 1, got 0'],
    ['max_new_tokens 10^9', { prompt: 'x', maxNewTokens: 1e9 }, status.INVALID_ARGUMENT, 'max_new_tokens=1000000000 is above the limit 4096'],
    [
      'lookahead 1000, naming the wire mode',
      { prompt: 'x', mode: Mode.MODE_DSI, lookahead: 1000 },
      status.INVALID_ARGUMENT,
      "lookahead must be 'auto' or an integer in [1, 64] for MODE_DSI, got 1000",
    ],
  ])('answers %s', async (_case, params, code, message) => {
    const error = await stack.generate('model', params);
    const details = message === 'larger than max' ? expect.stringContaining(message) : message;
    expect({ code: error.code, details: error.details }).toEqual({ code, details });
  }, 60_000);

  it('names every field by its wire name', async () => {
    const cases: Partial<GenerationParams>[] = [{ prompt: '' }, { prompt: 'x', maxNewTokens: -3 }, { prompt: 'x', mode: Mode.MODE_SI, lookahead: -2 }];
    for (const params of cases) {
      const error = await stack.generate('model', params);
      expect(error.code).toBe(status.INVALID_ARGUMENT);
      expect(error.details).not.toMatch(/maxNewTokens|stopSequences|eosTokenId|requestId|promptTokens|for mode (nonsi|si|dsi)\b/);
    }
  });
});

describe('a replica\'s own status reaches the client of Generate with its message', () => {
  it.each<[string, TargetKind, status, string]>([
    ['a replica\'s INVALID_ARGUMENT', 'rejects', status.INVALID_ARGUMENT, `target {target}: ${REPLICA_REJECTION}`],
    [
      'every replica UNAVAILABLE, naming each',
      'loading',
      status.UNAVAILABLE,
      'every target replica failed: {target0} (unavailable: the model is still loading; retry when health reports SERVING), ' +
        '{target1} (unavailable: the model is still loading; retry when health reports SERVING)',
    ],
    ['a replica\'s INTERNAL, which the replica logs with its cause', 'crashes', status.INTERNAL, 'every target replica failed: {target0} (internal: internal error), {target1} (internal: internal error)'],
  ])('passes on %s', async (_case, kind, code, message) => {
    for (const call of [stack.generate.bind(stack), stack.generateStream.bind(stack)]) {
      const error = await call(kind, { prompt: 'Hello', mode: Mode.MODE_DSI, maxNewTokens: 8 });
      const expected = expand(kind, message);
      const details = expected.includes(error.details) ? error.details : expected[0];
      expect({ code: error.code, details: error.details }).toEqual({ code, details });
    }
  });

  it('logs a replica\'s internal error with its cause in the replica', () => {
    expect(stack.targetLog.some((line) => line.includes('Verify failed with internal') && line.includes('the accelerator fell off the bus'))).toBe(true);
  });
});

describe('an orchestrator process', () => {
  it('asks the replicas for the target\'s limits at startup and checks requests against them', async () => {
    const lines: string[] = [];
    const client = await stack.startOrchestrator('model', tokenizerDir, (line) => lines.push(line));
    expect(lines).toContain(`target limits: vocabulary 259, context length ${CONTEXT}`);
    const error = await new Promise<ServiceError>((resolve) =>
      client.generate(GenerateRequest.fromPartial({ params: { promptTokens: [5000] } }), (e) => resolve(e!)),
    );
    expect({ code: error.code, details: error.details }).toEqual({
      code: status.INVALID_ARGUMENT,
      details: 'prompt_tokens[0]=5000 is outside the target\'s vocabulary [0, 259)',
    });
    client.close();
  });
});
