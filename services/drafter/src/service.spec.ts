import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { argmax } from '@dsi/core';
import { ensureDefaultModels } from '@dsi/modelgen';
import { OnnxModel } from '@dsi/models';
import { testModelsDir } from '@dsi/models/test-models';
import { DraftRequest, DrafterServiceClient, VerificationRule, type DraftResponse } from '@dsi/proto';
import { DsiServer, LoadingSlot } from '@dsi/rpc';
import { drafterService } from './service';

let model: OnnxModel;
let server: DsiServer;
let client: DrafterServiceClient;

beforeAll(async () => {
  const pair = await ensureDefaultModels(testModelsDir());
  model = await OnnxModel.load(pair.drafter);
  server = new DsiServer([drafterService(LoadingSlot.of(model), { maxTokens: 16 })], { port: 0 });
  await server.start();
  server.markServing();
  client = new DrafterServiceClient(server.address, credentials.createInsecure());
});

afterAll(async () => {
  client.close();
  await server.shutdown();
  await model.close();
});

function draft(request: Partial<DraftRequest>): Promise<DraftResponse> {
  return new Promise((resolve, reject) =>
    client.draft(DraftRequest.fromPartial(request), (error, response) => (error ? reject(error) : resolve(response!))),
  );
}

const prompt = Array.from('Once upon a time', (ch) => ch.charCodeAt(0));

describe('DrafterService/Draft on the default ONNX drafter', () => {
  it('drafts the model\'s own greedy continuation, one cached forward per token', async () => {
    const response = await draft({ requestId: 'greedy', prefix: prompt, maxTokens: 6 });
    const expected: number[] = [];
    for (let i = 0; i < 6; i++) {
      const forward = await model.logits('', [...prompt, ...expected], prompt.length + i - 1);
      expected.push(argmax(forward.logits, 0, model.info.vocabSize));
    }
    expect(response.tokens).toEqual(expected);
    expect(response.stats?.forwards).toBe(6);
    expect(response.stats?.computedTokens).toBe(prompt.length + 5);
    // The next call continues from the cache: only the new tokens are computed.
    const next = await draft({ requestId: 'greedy', prefix: [...prompt, ...response.tokens], maxTokens: 2 });
    expect(next.stats?.reusedTokens).toBeGreaterThanOrEqual(prompt.length + 5);
  });

  it('is reproducible under the seeded rule and differs across seeds', async () => {
    const sampling = (seed: number) => ({ rule: VerificationRule.VERIFICATION_RULE_SEEDED, seed, temperature: 1.5 });
    const a = await draft({ prefix: prompt, maxTokens: 12, sampling: sampling(1) });
    const b = await draft({ prefix: prompt, maxTokens: 12, sampling: sampling(1) });
    const c = await draft({ prefix: prompt, maxTokens: 12, sampling: sampling(2) });
    expect(a.tokens).toEqual(b.tokens);
    expect(a.tokens).not.toEqual(c.tokens);
  });

  it('returns one probability row per drafted token under the rejection rule', async () => {
    const response = await draft({
      prefix: prompt,
      maxTokens: 4,
      sampling: { rule: VerificationRule.VERIFICATION_RULE_REJECTION, seed: 5, temperature: 1 },
      returnProbs: true,
    });
    const vocab = response.vocabSize;
    expect(response.probs).toHaveLength(4 * vocab);
    for (let row = 0; row < 4; row++) {
      const sum = response.probs.slice(row * vocab, (row + 1) * vocab).reduce((s, p) => s + p, 0);
      expect(sum).toBeCloseTo(1, 4);
      expect(response.probs[row * vocab + response.tokens[row]]).toBeGreaterThan(0);
    }
  });

  it.each<[string, Partial<DraftRequest>, string]>([
    ['an empty prefix', { prefix: [], maxTokens: 1 }, 'prefix is empty: give at least one token'],
    ['max_tokens 0', { prefix: [1], maxTokens: 0 }, 'max_tokens=0 is outside [1, 16]'],
    ['max_tokens above the limit', { prefix: [1], maxTokens: 17 }, 'max_tokens=17 is outside [1, 16]'],
    ['max_tokens 10^5', { prefix: [1], maxTokens: 100_000 }, 'max_tokens=100000 is outside [1, 16]'],
    ['a token outside the vocabulary', { prefix: [1, 259], maxTokens: 1 }, 'prefix[1]=259 is outside the vocabulary [0, 259)'],
    ['a prefix beyond the context', { prefix: new Array(1025).fill(65), maxTokens: 1 }, "prefix has 1025 tokens; the model's context length is 1024"],
    ['a 3,000,000-token prefix', { prefix: new Array(3_000_000).fill(65), maxTokens: 4 }, "prefix has 3000000 tokens; the model's context length is 1024"],
    ['the rejection rule without a seed', { prefix: [1], maxTokens: 1, sampling: { rule: VerificationRule.VERIFICATION_RULE_REJECTION, temperature: 1 } }, 'the rejection rule needs a seed'],
  ])('answers %s with INVALID_ARGUMENT', async (_case, request, message) => {
    const error = (await draft(request).catch((e: ServiceError) => e)) as ServiceError;
    expect({ code: error.code, details: error.details }).toEqual({ code: status.INVALID_ARGUMENT, details: expect.stringContaining(message) });
  });

  it('drafts nothing, and says so with OK, for a prefix that fills the context exactly', async () => {
    const response = await draft({ prefix: new Array(1024).fill(65), maxTokens: 4 });
    expect(response.tokens).toEqual([]);
  });

  it('describes its model', async () => {
    const info = await new Promise<{ model?: { vocabSize: number; maxTokensPerCall: number; backend: string } }>((resolve, reject) =>
      client.getModelInfo({}, (error, response) => (error ? reject(error) : resolve(response!))),
    );
    expect(info.model).toMatchObject({ vocabSize: 259, maxTokensPerCall: 16, backend: 'onnx' });
  });
});
