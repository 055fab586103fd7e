import { OracleModel } from '@dsi/core';
import { expectedSi } from './exact';
import { predictSynthetic, type SyntheticStack } from './predict';

const stack: SyntheticStack = { seed: 1, a: 0.7, drafterMs: 5, targetMs: 50, servers: 4, overheadMs: 0 };
const bytes = (text: string) => [...Buffer.from(text, 'utf8')];

/** Target-only greedy decoding of the oracle: what the real stack returns in every mode. */
function targetContinuation(seed: number, prompt: number[], tokens: number): number[] {
  const target = new OracleModel({ role: 'target', seed });
  const sequence = [...prompt];
  const hashes = target.hashes(sequence);
  for (let i = 0; i < tokens; i++) {
    const token = target.next(hashes[sequence.length]);
    sequence.push(token);
    hashes.push(target.nextHash(hashes[sequence.length - 1], sequence.length, token));
  }
  return sequence.slice(prompt.length);
}

describe('the synthetic-stack prediction (event mode with a per-call overhead)', () => {
  it('produces, in every mode, the target\'s own greedy continuation of the prompt', async () => {
    const prompt = bytes('bench one');
    const expected = targetContinuation(stack.seed, prompt, 40);
    for (const mode of ['nonsi', 'si', 'dsi'] as const) {
      expect((await predictSynthetic(stack, mode, prompt, 40, 3)).tokens).toEqual(expected);
    }
    expect((await predictSynthetic({ ...stack, seed: 2 }, 'dsi', prompt, 40, 3)).tokens).not.toEqual(expected);
  });

  it('matches hand-computed schedules: non-SI pays forward plus overhead per token, SI per round', async () => {
    const prompt = bytes('hello');
    const simple = { ...stack, overheadMs: 2 };
    // Non-SI: 10 Verify calls of 2 + 50.
    expect((await predictSynthetic(simple, 'nonsi', prompt, 10, 4)).wallMs).toBe(520);
    // SI, a drafter that always agrees: rounds of a Draft (2 + 4 * 5) and a Verify (2 + 50) giving 4 + 1 tokens.
    expect((await predictSynthetic({ ...simple, a: 1 }, 'si', prompt, 10, 4)).wallMs).toBe(2 * (22 + 52));
    // SI, a drafter that never agrees: one token per round, drafting only the tokens still useful
    // (min(k, left - 1): 4, 4, 3, 2, 1, then no Draft call for the last token).
    const drafts = [4, 4, 3, 2, 1].map((n) => 2 + n * 5);
    expect((await predictSynthetic({ ...simple, a: 0 }, 'si', prompt, 6, 4)).wallMs).toBe(drafts.reduce((s, x) => s + x, 0) + 6 * 52);
    // DSI never loses to non-SI, and with an agreeing drafter and enough replicas it wins by far.
    const dsi = await predictSynthetic({ ...simple, a: 1, servers: 5 }, 'dsi', prompt, 40, 4);
    expect(dsi.wallMs).toBeLessThan((40 * 52) / 3);
    expect((await predictSynthetic({ ...simple, a: 0 }, 'dsi', prompt, 10, 4)).wallMs).toBeLessThanOrEqual(520);
  });

  it('agrees with the exact SI expectation over prompts, where the assumptions coincide (no overhead)', async () => {
    const tokens = 100;
    const params = { a: 0.8, c: 0.1, k: 4 };
    const pair = { ...stack, a: params.a, drafterMs: params.c * stack.targetMs };
    const costs: number[] = [];
    for (let i = 0; i < 120; i++) costs.push((await predictSynthetic(pair, 'si', bytes(`prompt ${i}`), tokens, params.k)).wallMs);
    const mean = costs.reduce((s, x) => s + x, 0) / costs.length;
    const se = Math.sqrt(costs.reduce((s, x) => s + (x - mean) ** 2, 0) / (costs.length - 1) / costs.length);
    const exact = expectedSi({ ...params, t: 1, tokens }).cost * stack.targetMs;
    expect(Math.abs(mean - exact)).toBeLessThanOrEqual(3 * se);
  });
});
