import { argmax } from '@dsi/core';
import { ensureDefaultModels, generableTokenIds, mulberry32 } from '@dsi/modelgen';
import type { LanguageModel } from './backend';
import { acceptanceFromMatches, BUILTIN_PROMPTS, greedyGenerate, measureAcceptance, repeatingTailPeriod, type AcceptanceReport } from './estimate';
import { OnnxModel } from './onnx';
import { createSyntheticModel } from './synthetic';
import { testModelsDir } from './test-models';

const flags = (s: string) => [...s].map((c) => c === '1');
const utf8 = (s: string) => [...Buffer.from(s, 'utf8')];

describe('acceptanceFromMatches (the study estimator)', () => {
  it('counts runs closed by a mismatch, drops the unclosed last run, a = m / (1 + m)', () => {
    // runs: 2 (closed), 1 (closed), 0 (closed); trailing 111 dropped.
    const s = acceptanceFromMatches([flags('110100111')]);
    expect(s.runs).toEqual([2, 1, 0]);
    expect(s.meanRunLength).toBe(1);
    expect(s.acceptanceRate).toBe(0.5);
    expect(s.agreement).toBeCloseTo(6 / 9, 12);
    expect(s.positions).toBe(9);
  });

  it('pools runs across sequences and handles the edge cases', () => {
    const s = acceptanceFromMatches([flags('1110'), flags('0'), flags('11')]);
    expect(s.runs).toEqual([3, 0]);
    expect(s.acceptanceRate).toBeCloseTo(1.5 / 2.5, 12);
    expect(acceptanceFromMatches([flags('1111')])).toMatchObject({ acceptanceRate: 1, runs: [], agreement: 1 });
    expect(acceptanceFromMatches([flags('000')])).toMatchObject({ acceptanceRate: 0, meanRunLength: 0, agreement: 0 });
  });

  it('estimates p for independent matches with probability p (geometric model)', () => {
    const u = mulberry32(7);
    const seqs = Array.from({ length: 200 }, () => Array.from({ length: 64 }, () => u() < 0.7));
    const s = acceptanceFromMatches(seqs);
    expect(s.acceptanceRate).toBeGreaterThan(0.67);
    expect(s.acceptanceRate).toBeLessThan(0.73);
  });
});

describe('repeatingTailPeriod', () => {
  it('detects short loops only', () => {
    expect(repeatingTailPeriod(Array(30).fill(7))).toBe(1);
    expect(repeatingTailPeriod([1, 2, 3, ...Array.from({ length: 30 }, (_, i) => [4, 5, 6][i % 3])])).toBe(3);
    expect(repeatingTailPeriod(Array.from({ length: 64 }, (_, i) => (i * 7) % 31))).toBe(0);
    expect(repeatingTailPeriod([1, 1, 1])).toBe(0); // shorter than the window
  });
});

describe('the default pair on the ONNX backend', () => {
  let target: OnnxModel;
  let drafter: OnnxModel;
  let report: AcceptanceReport;

  beforeAll(async () => {
    const pair = await ensureDefaultModels(testModelsDir());
    [target, drafter] = await Promise.all([OnnxModel.load(pair.target), OnnxModel.load(pair.drafter)]);
    report = await measureAcceptance(target, drafter);
  });

  afterAll(async () => {
    await Promise.all([target?.close(), drafter?.close()]);
  });

  it('generates varied, printable text from every built-in prompt (>= 20 distinct of 64, no short loop)', () => {
    const allowed = new Set(generableTokenIds());
    expect(report.prompts.map((p) => p.prompt)).toEqual(BUILTIN_PROMPTS);
    for (const p of report.prompts) {
      expect(p.generated).toHaveLength(64);
      expect(p.distinctTokens).toBeGreaterThanOrEqual(20);
      expect(repeatingTailPeriod(p.generated)).toBe(0);
      expect(repeatingTailPeriod(p.generated, 16, 8)).toBe(0);
      for (const t of p.generated) expect(allowed.has(t)).toBe(true);
    }
    // Different prompts lead to different continuations.
    expect(new Set(report.prompts.map((p) => p.text)).size).toBe(report.prompts.length);
    console.log(report.prompts.map((p) => `${JSON.stringify(p.prompt)} -> ${JSON.stringify(p.text)} (${p.distinctTokens} distinct)`).join('\n'));
  });

  it('has a drafter that agrees with the target often but not always (greedy acceptance 0.6-0.85; the README\'s a = 0.701)', () => {
    console.log(
      `acceptance a=${report.acceptanceRate.toFixed(3)} (m=${report.meanRunLength.toFixed(2)}, ${report.runs.length} runs), ` +
        `agreement=${report.agreement.toFixed(3)} over ${report.positions} positions; per prompt: ` +
        report.prompts.map((p) => `${p.acceptanceRate.toFixed(2)}/${p.agreement.toFixed(2)}`).join(', '),
    );
    expect(report.acceptanceRate).toBeGreaterThanOrEqual(0.6);
    expect(report.acceptanceRate).toBeLessThanOrEqual(0.85);
    expect(report.agreement).toBeGreaterThanOrEqual(0.6);
    expect(report.agreement).toBeLessThanOrEqual(0.9);
    expect(report.positions).toBe(64 * BUILTIN_PROMPTS.length);
    expect(report.acceptanceRate).toBeCloseTo(0.701, 2);
  });

  it('releases the caches it used (greedy generation runs on its own request)', async () => {
    expect(await target.cacheStats()).toEqual({ requests: 0, tokens: 0 });
    expect(await drafter.cacheStats()).toEqual({ requests: 0, tokens: 0 });
  });

  it('generates greedily with the cache what argmax of full forwards gives (drafter, 24 tokens)', async () => {
    const prompt = utf8('Once upon a time');
    const generated = await greedyGenerate(drafter, prompt, 24);
    expect(generated).toHaveLength(24);
    const { logits } = await drafter.logits('', [...prompt, ...generated.slice(0, -1)], prompt.length - 1);
    const vocab = drafter.info.vocabSize;
    expect(generated.map((_, k) => argmax(logits, k * vocab, vocab))).toEqual(generated);
  });
});

describe('the synthetic backend', () => {
  it('measures the acceptance it was configured with (a = 0.7, independent per position)', async () => {
    const seed = 7;
    const target = createSyntheticModel({ role: 'target', seed });
    const drafter = createSyntheticModel({ role: 'drafter', seed, acceptance: 0.7 });
    const prompts = Array.from({ length: 20 }, (_, i) => `prompt number ${i}`);
    const report = await measureAcceptance(target, drafter, { prompts, maxNewTokens: 64 });
    expect(report.prompts).toHaveLength(20);
    expect(report.positions).toBe(20 * 64);
    expect(report.acceptanceRate).toBeGreaterThan(0.65);
    expect(report.acceptanceRate).toBeLessThan(0.75);
    expect(report.agreement).toBeCloseTo(0.7, 1);
  });

});

describe('greedyGenerate', () => {
  /** A counting model: after token t it predicts t + 1 (mod 8), eos 5; it records the calls it gets. */
  function countingModel() {
    const calls: { requestId: string; tokens: number[]; from: number }[] = [];
    const released: string[] = [];
    const model: LanguageModel = {
      info: { name: 'counting', backend: 'synthetic', vocabSize: 8, contextLength: 64, eosTokenId: 5 },
      async logits(requestId, tokens, from) {
        calls.push({ requestId, tokens: [...tokens], from });
        const rows = tokens.length - from;
        const logits = new Float32Array(rows * 8);
        for (let r = 0; r < rows; r++) logits[r * 8 + ((tokens[from + r] + 1) % 8)] = 1;
        return { logits, rows, reusedTokens: from, computedTokens: rows };
      },
      async release(requestId) {
        released.push(requestId);
        return true;
      },
      async warmup() {},
      async close() {},
    };
    return { model, calls, released };
  }

  it('stops at the end-of-sequence token, one forward per new token on one request, then releases it', async () => {
    const { model, calls, released } = countingModel();
    expect(await greedyGenerate(model, [1, 2], 10)).toEqual([3, 4, 5]);
    expect(calls.map((c) => [c.tokens.length, c.from])).toEqual([
      [2, 1],
      [3, 2],
      [4, 3],
    ]);
    expect(new Set(calls.map((c) => c.requestId)).size).toBe(1);
    expect(released).toEqual([calls[0].requestId]);
  });

  it('stops at maxNewTokens without a forward it does not need', async () => {
    const { model, calls } = countingModel();
    expect(await greedyGenerate(model, [6], 2)).toEqual([7, 0]);
    expect(calls).toHaveLength(2);
  });
});
