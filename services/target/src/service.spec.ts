import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { ensureDefaultModels } from '@dsi/modelgen';
import { createSyntheticModel, OnnxModel } from '@dsi/models';
import { testModelsDir } from '@dsi/models/test-models';
import { TargetServiceClient, VerificationRule, VerifyRequest, type VerifyResponse } from '@dsi/proto';
import { DsiServer, LoadingSlot } from '@dsi/rpc';
import { targetService } from './service';

interface Replica {
  model: OnnxModel;
  server: DsiServer;
  client: TargetServiceClient;
}

const replicas: Replica[] = [];
let vocab: number;

beforeAll(async () => {
  const pair = await ensureDefaultModels(testModelsDir());
  for (let i = 0; i < 2; i++) {
    const model = await OnnxModel.load(pair.target);
    const server = new DsiServer([targetService(LoadingSlot.of(model), { maxBlock: 16 })], { port: 0 });
    await server.start();
    server.markServing();
    replicas.push({ model, server, client: new TargetServiceClient(server.address, credentials.createInsecure()) });
  }
  vocab = replicas[0].model.info.vocabSize;
});

afterAll(async () => {
  for (const { model, server, client } of replicas) {
    client.close();
    await server.shutdown();
    await model.close();
  }
});

function verify(request: Partial<VerifyRequest>, replica = 0): Promise<VerifyResponse> {
  return new Promise((resolve, reject) =>
    replicas[replica].client.verify(VerifyRequest.fromPartial(request), (error, response) => (error ? reject(error) : resolve(response!))),
  );
}

async function verifyError(request: Partial<VerifyRequest>): Promise<ServiceError> {
  return (await verify(request).catch((error: ServiceError) => error)) as ServiceError;
}

const prompt = Array.from('The quick brown fox', (ch) => ch.charCodeAt(0));
const rules = [
  ['greedy', { rule: VerificationRule.VERIFICATION_RULE_GREEDY }],
  ['seeded', { rule: VerificationRule.VERIFICATION_RULE_SEEDED, seed: 1234, temperature: 0.8 }],
] as const;

/** The target's own continuation, one plain step (zero drafts) at a time: what non-SI decoding emits. */
async function continuation(sampling: object, length: number, replica = 0): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < length; i++) {
    const step = await verify({ requestId: 'continuation', prefix: [...prompt, ...out], drafts: [], sampling }, replica);
    expect(step.accepted).toBe(0);
    expect(step.tokens).toHaveLength(1);
    out.push(step.tokens[0]);
  }
  return out;
}

describe.each(rules)('Verify with the %s rule on the default ONNX target', (_name, sampling) => {
  let truth: number[];
  beforeAll(async () => {
    truth = await continuation(sampling, 9);
  });

  it('accepts a block equal to the target\'s own continuation, plus its next token', async () => {
    const response = await verify({ requestId: 'block', prefix: prompt, drafts: truth.slice(0, 8), sampling });
    expect(response.accepted).toBe(8);
    expect(response.tokens).toEqual(truth.slice(0, 9));
    expect(response.stats?.computedTokens).toBeGreaterThan(0);
  });

  it.each([0, 1, 3, 7])('rejects a draft changed at position %i exactly there, returning the target\'s token', async (j) => {
    const drafts = truth.slice(0, 8);
    drafts[j] = (drafts[j] + 1) % 256;
    const response = await verify({ requestId: `changed-${j}`, prefix: prompt, drafts, sampling });
    expect(response.accepted).toBe(j);
    expect(response.tokens).toEqual(truth.slice(0, j + 1));
  });

  it('answers after a rollback exactly as a fresh replica does', async () => {
    const wrong = truth.slice(0, 6).map((t) => (t + 3) % 256);
    await verify({ requestId: 'rollback', prefix: [...prompt, ...wrong], drafts: [], sampling }); // caches wrong tokens
    const afterRollback = await verify({ requestId: 'rollback', prefix: [...prompt, ...truth.slice(0, 2)], drafts: truth.slice(2, 6), sampling });
    expect(afterRollback.stats?.reusedTokens).toBe(prompt.length - 0); // the shared prompt only
    const fresh = await verify({ prefix: [...prompt, ...truth.slice(0, 2)], drafts: truth.slice(2, 6), sampling }, 1);
    expect(afterRollback.tokens).toEqual(fresh.tokens);
    expect(afterRollback.accepted).toBe(4);
  });

  it('gets identical answers from two replicas of the same model', async () => {
    expect(await continuation(sampling, 9, 1)).toEqual(truth);
  });
});

describe('Verify with the rejection rule', () => {
  const sampling = { rule: VerificationRule.VERIFICATION_RULE_REJECTION, seed: 99, temperature: 1 };

  it('needs the drafter\'s distributions, one row per draft', async () => {
    const error = await verifyError({ prefix: prompt, drafts: [65, 66], sampling });
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toBe(`draft_probs has 0 values; the rejection rule needs drafts x vocab = 2 x ${vocab}`);
  });

  it('is reproducible from its seed and returns accepted + 1 tokens', async () => {
    const q = new Array(2 * vocab).fill(1 / vocab);
    const request = { prefix: prompt, drafts: [101, 32], sampling, draftProbs: q };
    const first = await verify(request);
    expect(first.tokens).toHaveLength(first.accepted + 1);
    const again = await verify(request, 1);
    expect([again.accepted, again.tokens]).toEqual([first.accepted, first.tokens]);
  });
});

describe('bad input', () => {
  it.each([
    ['an empty prefix', { prefix: [], drafts: [1] }, 'prefix is empty: give at least one token'],
    ['a token outside the vocabulary', { prefix: [1, 2, 300], drafts: [] }, 'prefix[2]=300 is outside the vocabulary [0, 259)'],
    ['a negative draft', { prefix: [1], drafts: [-5] }, 'drafts[0]=-5 is outside the vocabulary [0, 259)'],
    ['a prefix beyond the context', { prefix: new Array(1100).fill(65), drafts: [] }, "prefix has 1100 tokens; the model's context length is 1024"],
    ['a 3,000,000-token prefix', { prefix: new Array(3_000_000).fill(65), drafts: [] }, "prefix has 3000000 tokens; the model's context length is 1024"],
    ['drafts beyond the context', { prefix: new Array(1020).fill(65), drafts: [65, 65, 65, 65, 65] }, "prefix and drafts have 1020 + 5 = 1025 tokens; the model's context length is 1024"],
    ['a block above the limit', { prefix: [1], drafts: new Array(17).fill(65) }, 'drafts has 17 tokens; a Verify takes at most 16'],
    ['an unknown rule', { prefix: [1], drafts: [], sampling: { rule: 9 as VerificationRule } }, 'rule'],
    ['a negative temperature', { prefix: [1], drafts: [], sampling: { rule: VerificationRule.VERIFICATION_RULE_GREEDY, temperature: -1 } }, 'temperature'],
    ['the seeded rule without a seed', { prefix: [1], drafts: [], sampling: { rule: VerificationRule.VERIFICATION_RULE_SEEDED } }, 'seed'],
  ])('answers %s with INVALID_ARGUMENT and keeps serving', async (_case, request, message) => {
    const error = await verifyError(request);
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.details).toContain(message);
    expect((await verify({ prefix: [72, 105], drafts: [] })).tokens).toHaveLength(1);
  });

  it('verifies a prefix and drafts that fill the context exactly', async () => {
    const response = await verify({ prefix: new Array(1020).fill(65), drafts: [65, 65, 65, 65] });
    expect(response.tokens.length).toBeGreaterThanOrEqual(1);
  });
});

describe('cancellation', () => {
  it('stops a queued Verify when its client cancels; the replica keeps answering', async () => {
    const long = Array.from({ length: 1000 }, (_, i) => 32 + ((i * 13) % 90));
    const busy = verify({ prefix: long, drafts: [] });
    const inFlight = async (n: number) => {
      while (replicas[0].server.inFlightCalls < n) await new Promise((resolve) => setImmediate(resolve));
    };
    await inFlight(1); // the long forward holds the replica
    const call = replicas[0].client.verify(VerifyRequest.fromPartial({ requestId: 'cancelled', prefix: prompt, drafts: [65] }), () => undefined);
    const cancelled = new Promise<ServiceError>((resolve) => call.on('status', (s) => resolve(s as ServiceError)));
    await inFlight(2); // queued behind it
    call.cancel();
    expect((await cancelled).code).toBe(status.CANCELLED);
    await busy;
    // The cancelled call never reached the model: nothing is cached for it.
    expect(await replicas[0].model.release('cancelled')).toBe(false);
  });
});

describe('batching on the synthetic backend (--max-batch-requests)', () => {
  const start = async (maxBatchRequests: number) => {
    const model = createSyntheticModel({ role: 'target', seed: 3, ttftMs: 150, tpotMs: 150, spinMs: 0, batching: { maxBatchRequests, batchMsPerToken: 0.5 } });
    const server = new DsiServer([targetService(LoadingSlot.of(model))], { port: 0 });
    await server.start();
    server.markServing();
    return { model, server, client: new TargetServiceClient(server.address, credentials.createInsecure()) };
  };
  const call = (client: TargetServiceClient, request: Partial<VerifyRequest>) =>
    new Promise<VerifyResponse>((resolve, reject) => client.verify(VerifyRequest.fromPartial(request), (error, response) => (error ? reject(error) : resolve(response!))));

  it('runs the Verify calls that arrive during a forward together in the next one, each with the answer it gets alone; a cancelled one leaves', async () => {
    const batched = await start(4);
    const alone = await start(1);
    try {
      const requests = [0, 1, 2, 3].map((i) => ({ requestId: `r${i}`, prefix: [...prompt, 65 + i], drafts: [66, 67, 68].slice(0, i) }));
      const first = call(batched.client, requests[0]);
      while (batched.server.inFlightCalls < 1) await new Promise((resolve) => setImmediate(resolve));
      // A fifth call arrives with the others and is cancelled before the forward it waits for.
      const doomed = batched.client.verify(VerifyRequest.fromPartial({ requestId: 'doomed', prefix: prompt, drafts: [] }), () => undefined);
      const rest = requests.slice(1).map((request) => call(batched.client, request));
      while (batched.server.inFlightCalls < 5) await new Promise((resolve) => setImmediate(resolve));
      doomed.cancel();
      const responses = await Promise.all([first, ...rest]);
      expect(responses.map((r) => r.stats?.batchRequests)).toEqual([1, 3, 3, 3]);
      for (const [i, request] of requests.entries()) {
        const reference = await call(alone.client, request);
        expect({ i, accepted: responses[i].accepted, tokens: responses[i].tokens }).toEqual({ i, accepted: reference.accepted, tokens: reference.tokens });
        expect(reference.stats?.batchRequests).toBe(1);
      }
      expect(await batched.model.release('doomed')).toBe(false);
    } finally {
      for (const { client, server, model } of [batched, alone]) {
        client.close();
        await server.shutdown();
        await model.close();
      }
    }
  });
});
