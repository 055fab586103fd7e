import { ForwardStats, ModelInfo as WireModelInfo, VerificationRule as WireRule } from '@dsi/proto';
import type { SamplingParams, VerificationRule } from '@dsi/core';
import { modelInfoToWire, ruleFromWire, ruleToWire, samplingFromWire, samplingToWire, statsToWire } from './replica';

describe('replica wire', () => {
  it.each<VerificationRule>(['greedy', 'seeded', 'rejection'])('carries the %s rule there and back', (rule) => {
    expect(ruleFromWire(ruleToWire(rule))).toBe(rule);
  });

  it('reads an unset rule as greedy and keeps an unknown number visible for validation', () => {
    expect(ruleFromWire(undefined)).toBe('greedy');
    expect(ruleFromWire(WireRule.VERIFICATION_RULE_UNSPECIFIED)).toBe('greedy');
    expect(ruleFromWire(42 as WireRule)).toBe('rule 42');
  });

  it('defaults the temperature to 1 and leaves the seed unset when the caller sends no sampling', () => {
    expect(samplingFromWire(undefined)).toEqual({ rule: 'greedy', temperature: 1, seed: undefined });
    expect(samplingFromWire({ rule: WireRule.VERIFICATION_RULE_SEEDED })).toEqual({ rule: 'seeded', temperature: 1, seed: undefined });
  });

  it('carries sampling parameters there and back', () => {
    const params: SamplingParams = { rule: 'rejection', temperature: 0.7, seed: 9 };
    expect(samplingFromWire(samplingToWire(params))).toEqual(params);
  });

  it('describes a model with the replica\'s per-call limit, in a message that encodes', () => {
    const wire = modelInfoToWire({ name: 'tiny', backend: 'onnx', vocabSize: 259, contextLength: 512, eosTokenId: 2 }, 16);
    expect(WireModelInfo.decode(WireModelInfo.encode(wire).finish())).toEqual({
      name: 'tiny',
      backend: 'onnx',
      vocabSize: 259,
      contextLength: 512,
      eosTokenId: 2,
      maxTokensPerCall: 16,
    });
  });

  it('adds up the cost of forwards, counting an unmeasured model time or wait as 0, and reports the largest batch and the batches\' tokens', () => {
    const forward = (computedTokens: number, reusedTokens: number, modelMs?: number) => ({ logits: new Float32Array(0), rows: 1, computedTokens, reusedTokens, modelMs });
    const stats = statsToWire([forward(5, 0, 2.5), forward(1, 5), forward(1, 6, 0.5)]);
    expect(stats).toEqual({ computedTokens: 7, reusedTokens: 11, forwards: 3, modelMs: 3, batchRequests: 1, queueMs: 0, batchTokens: 7 });
    // The most calls any one of the forwards shared (a batching replica); absent means 1.
    expect(statsToWire([forward(1, 5), { ...forward(1, 6), batchRequests: 3 }, { ...forward(1, 7), batchRequests: 2 }]).batchRequests).toBe(3);
    // A batched forward's wait and its tokens over every call it ran.
    expect(statsToWire([{ ...forward(3, 5, 20), batchRequests: 4, queueMs: 1.5, batchTokens: 11 }])).toMatchObject({ queueMs: 1.5, batchTokens: 11, batchRequests: 4 });
    expect(statsToWire([])).toEqual(ForwardStats.fromPartial({}));
  });
});
