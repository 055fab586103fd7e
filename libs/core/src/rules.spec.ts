import {
  draftToken,
  SamplingParams,
  STREAM_RESIDUAL,
  targetToken,
  validateSamplingParams,
  VerificationRule,
  verifyBlock,
} from './rules';
import { sampleIndex, softmax, uniform } from './sampling';

/** Reproducible logits rows in [-scale, scale]. */
function randomLogits(seed: number, rows: number, vocab: number, scale = 3): Float32Array {
  const logits = new Float32Array(rows * vocab);
  for (let i = 0; i < logits.length; i++) logits[i] = scale * (2 * uniform(seed, i, 99, 0) - 1);
  return logits;
}

function totalVariation(counts: number[], probs: ArrayLike<number>): number {
  const total = counts.reduce((a, b) => a + b, 0);
  return 0.5 * counts.reduce((sum, count, i) => sum + Math.abs(count / total - probs[i]), 0);
}

function chiSquare(counts: number[], probs: ArrayLike<number>): number {
  const total = counts.reduce((a, b) => a + b, 0);
  return counts.reduce((sum, count, i) => sum + (count - total * probs[i]) ** 2 / (total * probs[i]), 0);
}

/** The statistical bound of the brief: shrinks like 1/sqrt(N); ~8x the expected TV of a fair sample. */
const tvBound = (vocab: number, draws: number) => 3 * Math.sqrt(vocab / draws);
/** 0.999 quantile of chi-square with 4 degrees of freedom (vocab 5). */
const CHI2_4_999 = 18.47;

describe('validateSamplingParams', () => {
  it.each<[SamplingParams, string | undefined]>([
    [{ rule: 'greedy', temperature: 0 }, undefined],
    [{ rule: 'greedy', temperature: 1, seed: 3 }, undefined],
    [{ rule: 'seeded', temperature: 0.7, seed: 0 }, undefined],
    [{ rule: 'rejection', temperature: 1, seed: 2 ** 53 - 1 }, undefined],
    [{ rule: 'nucleus' as VerificationRule, temperature: 1 }, 'unknown verification rule "nucleus"'],
    [{ rule: 'greedy', temperature: -1 }, 'temperature must be >= 0, got -1'],
    [{ rule: 'greedy', temperature: NaN }, 'temperature must be a number, got NaN'],
    [{ rule: 'rejection', temperature: Infinity, seed: 1 }, 'temperature must be finite, got Infinity'],
    [{ rule: 'seeded', temperature: 1 }, 'the seeded rule needs a seed'],
    [{ rule: 'rejection', temperature: 1 }, 'the rejection rule needs a seed'],
    [{ rule: 'seeded', temperature: 0, seed: 1 }, 'temperature must be > 0 for the seeded rule (use greedy for temperature 0)'],
    [{ rule: 'rejection', temperature: 0, seed: 1 }, 'temperature must be > 0 for the rejection rule (use greedy for temperature 0)'],
    [{ rule: 'seeded', temperature: 1, seed: 1.5 }, 'seed must be an integer in [0, 2^53), got 1.5'],
    [{ rule: 'seeded', temperature: 1, seed: -1 }, 'seed must be an integer in [0, 2^53), got -1'],
  ])('%j -> %s', (params, message) => {
    expect(validateSamplingParams(params)).toBe(message);
  });

  it('makes the rules throw a RangeError instead of guessing', () => {
    expect(() => targetToken([1, 2], 2, { rule: 'seeded', temperature: 1 }, 0)).toThrow(RangeError);
  });
});

describe.each<[VerificationRule]>([['greedy'], ['seeded']])('the %s rule', (rule) => {
  const vocab = 32;
  const k = 5;
  const start = 100;
  const params: SamplingParams = { rule, temperature: 0.9, seed: 1234 };
  const logits = randomLogits(7, k + 1, vocab);
  const continuation = Array.from({ length: k + 1 }, (_, i) => targetToken(logits, vocab, params, start + i, i * vocab));

  it('accepts all drafts equal to the target continuation and appends the bonus token', () => {
    expect(verifyBlock({ targetLogits: logits, vocab, drafts: continuation.slice(0, k), start, params })).toEqual({
      accepted: k,
      tokens: continuation,
    });
  });

  it.each([0, 1, 2, 3, 4])('rejects a draft changed at %i exactly there, correcting it with the target token', (j) => {
    const drafts = continuation.slice(0, k);
    drafts[j] = (drafts[j] + 1) % vocab;
    expect(verifyBlock({ targetLogits: logits, vocab, drafts, start, params })).toEqual({
      accepted: j,
      tokens: continuation.slice(0, j + 1),
    });
  });

  it('with zero drafts is one target step', () => {
    expect(verifyBlock({ targetLogits: logits, vocab, drafts: [], start, params })).toEqual({ accepted: 0, tokens: [continuation[0]] });
  });
});

describe('greedy', () => {
  it('is the argmax, lowest index on ties, whatever the temperature', () => {
    expect(targetToken([0, 4, 4, 1], 4, { rule: 'greedy', temperature: 0 }, 0)).toBe(1);
    expect(targetToken([0, 4, 4, 1], 4, { rule: 'greedy', temperature: 2 }, 9)).toBe(1);
    expect(draftToken([0, 4, 4, 1], 4, { rule: 'greedy', temperature: 0 }, 0)).toEqual({ token: 1 });
  });
});

describe('seeded', () => {
  const vocab = 32;
  const flat = new Float32Array(vocab);

  it('is reproducible from (seed, position) alone, on any replica and logits container', () => {
    const logits = randomLogits(3, 1, vocab);
    const params: SamplingParams = { rule: 'seeded', temperature: 1, seed: 77 };
    for (let position = 0; position < 200; position++) {
      expect(targetToken(logits, vocab, params, position)).toBe(targetToken(Array.from(logits), vocab, { ...params }, position));
    }
  });

  it('differs across seeds and across positions', () => {
    let seedDifferences = 0;
    let positionDifferences = 0;
    for (let position = 0; position < 500; position++) {
      const a = targetToken(flat, vocab, { rule: 'seeded', temperature: 1, seed: 1 }, position);
      const b = targetToken(flat, vocab, { rule: 'seeded', temperature: 1, seed: 2 }, position);
      const c = targetToken(flat, vocab, { rule: 'seeded', temperature: 1, seed: 1 }, position + 1);
      if (a !== b) seedDifferences++;
      if (a !== c) positionDifferences++;
    }
    // Independent uniform draws over 32 tokens differ with probability 31/32.
    expect(seedDifferences).toBeGreaterThan(450);
    expect(positionDifferences).toBeGreaterThan(450);
  });

  it.each([
    [1, 20000],
    [0.6, 20000],
    [1, 80000],
  ])('Gumbel-max at temperature %f matches softmax over %i positions', (temperature, draws) => {
    const logits = [1.5, 0.2, -0.4, 0.9, 0];
    const p = softmax(logits, 0, 5, temperature);
    const counts = [0, 0, 0, 0, 0];
    const params: SamplingParams = { rule: 'seeded', temperature, seed: 2024 };
    for (let position = 0; position < draws; position++) counts[targetToken(logits, 5, params, position)]++;
    expect(totalVariation(counts, p)).toBeLessThan(tvBound(5, draws));
    expect(chiSquare(counts, p)).toBeLessThan(CHI2_4_999);
  });

  it('couples the drafter to the target: same noise, so equal logits always agree and close ones usually do', () => {
    const params: SamplingParams = { rule: 'seeded', temperature: 1, seed: 5 };
    const target = [1.5, 0.2, -0.4, 0.9, 0];
    const drafter = [1.2, 0.4, -0.4, 0.6, 0.3];
    const p = softmax(target, 0, 5, 1);
    const q = softmax(drafter, 0, 5, 1);
    const independent = p.reduce((sum, pi, i) => sum + pi * q[i], 0);
    let agreeSame = 0;
    let agreeClose = 0;
    const n = 5000;
    for (let position = 0; position < n; position++) {
      const truth = targetToken(target, 5, params, position);
      if (draftToken(target, 5, params, position).token === truth) agreeSame++;
      if (draftToken(drafter, 5, params, position).token === truth) agreeClose++;
    }
    expect(agreeSame).toBe(n);
    expect(agreeClose / n).toBeGreaterThan(2 * independent);
  });
});

describe('rejection sampling (Leviathan et al. 2023)', () => {
  const vocab = 5;
  // p and q are far apart: TV(p, q) = 0.4, and sum(min(p, q)) = 0.6 is the expected acceptance.
  const pProbs = [0.4, 0.3, 0.15, 0.1, 0.05];
  const qProbs = [0.1, 0.2, 0.3, 0.25, 0.15];
  const pLogits = new Float32Array(pProbs.map(Math.log));
  const qLogits = new Float32Array(qProbs.map(Math.log));
  const twoRows = new Float32Array([...pLogits, ...pLogits]);

  type Emit = (result: { accepted: number; tokens: number[] }, draft: number, position: number, params: SamplingParams) => number;
  const correct: Emit = (result) => result.tokens[0];
  const alwaysAccept: Emit = (_result, draft) => draft;
  const resampleFromP: Emit = (result, draft, position, params) =>
    result.accepted === 1 ? draft : sampleIndex(softmax(pLogits, 0, vocab, params.temperature), uniform(params.seed!, position, STREAM_RESIDUAL, 0));

  /** The first emitted token at `draws` independent positions: a draft from q, then a k = 1 verification. */
  function simulate(draws: number, temperature: number, seed: number, emit: Emit) {
    const params: SamplingParams = { rule: 'rejection', temperature, seed };
    const counts = new Array<number>(vocab).fill(0);
    let accepted = 0;
    for (let position = 0; position < draws; position++) {
      const draft = draftToken(qLogits, vocab, params, position);
      const result = verifyBlock({ targetLogits: twoRows, vocab, drafts: [draft.token], start: position, params, draftProbs: draft.probs });
      if (result.tokens.length !== result.accepted + 1) throw new Error(`bad block ${JSON.stringify(result)}`);
      accepted += result.accepted;
      counts[emit(result, draft.token, position, params)]++;
    }
    return { counts, acceptance: accepted / draws, p: softmax(pLogits, 0, vocab, temperature), q: softmax(qLogits, 0, vocab, temperature) };
  }

  it.each([
    [20000, 1, 11],
    [80000, 1, 12],
    [20000, 0.7, 13],
  ])('emits the target distribution: N = %i, T = %f (TV < 3 sqrt(V / N), chi-square < 18.47)', (draws, temperature, seed) => {
    const { counts, acceptance, p, q } = simulate(draws, temperature, seed, correct);
    expect(totalVariation(counts, p)).toBeLessThan(tvBound(vocab, draws));
    expect(chiSquare(counts, p)).toBeLessThan(CHI2_4_999);
    // Acceptance is sum(min(p, q)); its sampling sd is below 0.5 / sqrt(N).
    const expected = p.reduce((sum, pi, i) => sum + Math.min(pi, q[i]), 0);
    expect(Math.abs(acceptance - expected)).toBeLessThan(2.5 / Math.sqrt(draws));
  });

  it.each([
    ['always accepting the draft', 20000, alwaysAccept],
    ['always accepting the draft', 80000, alwaysAccept],
    ['resampling from p instead of the residual', 80000, resampleFromP],
  ])('the same test fails for a wrong rule: %s (N = %i)', (_name, draws, emit) => {
    const { counts, p } = simulate(draws, 1, 12, emit);
    expect(totalVariation(counts, p)).toBeGreaterThan(tvBound(vocab, draws));
  });

  it('accepts everything when q equals p, and appends a bonus token sampled from p', () => {
    const params: SamplingParams = { rule: 'rejection', temperature: 0.8, seed: 9 };
    const k = 3;
    const logits = randomLogits(21, k + 1, 40);
    for (let start = 0; start < 2000; start += k) {
      const choices = Array.from({ length: k }, (_, i) => draftToken(logits, 40, params, start + i, i * 40));
      const draftProbs = new Float32Array(k * 40);
      choices.forEach((choice, i) => draftProbs.set(choice.probs!, i * 40));
      const drafts = choices.map((choice) => choice.token);
      const result = verifyBlock({ targetLogits: logits, vocab: 40, drafts, start, params, draftProbs });
      expect(result).toEqual({ accepted: k, tokens: [...drafts, targetToken(logits, 40, params, start + k, k * 40)] });
    }
  });

  it('with zero drafts is one target sample', () => {
    const params: SamplingParams = { rule: 'rejection', temperature: 1, seed: 4 };
    expect(verifyBlock({ targetLogits: pLogits, vocab, drafts: [], start: 8, params, draftProbs: new Float32Array(0) })).toEqual({
      accepted: 0,
      tokens: [targetToken(pLogits, vocab, params, 8)],
    });
  });

  it('always rejects a draft the target gives no mass, and corrects from p when the residual is rounding noise', () => {
    // p(0) = 0. q moves 1e-8 of mass from token 1 to token 0: the residual max(0, p - q) is 1e-8 on token 1.
    const target = new Float32Array([-Infinity, 0.5, 0.1, -0.3, 0.2]);
    const p = softmax(target, 0, vocab, 1);
    const q = Float32Array.from(p);
    q[0] = 1e-8;
    q[1] -= 1e-8;
    const params: SamplingParams = { rule: 'rejection', temperature: 1, seed: 6 };
    const seen = new Set<number>();
    for (let position = 0; position < 200; position++) {
      const result = verifyBlock({ targetLogits: new Float32Array([...target, ...target]), vocab, drafts: [0], start: position, params, draftProbs: q });
      expect(result.accepted).toBe(0);
      expect(result.tokens[0]).toBe(sampleIndex(p, uniform(6, position, STREAM_RESIDUAL, 0)));
      seen.add(result.tokens[0]);
    }
    expect([...seen].sort()).toEqual([1, 2, 3, 4]);
  });

  it('refuses malformed input', () => {
    const params: SamplingParams = { rule: 'rejection', temperature: 1, seed: 1 };
    expect(() => verifyBlock({ targetLogits: twoRows, vocab, drafts: [1], start: 0, params })).toThrow(/draftProbs/);
    expect(() => verifyBlock({ targetLogits: pLogits, vocab, drafts: [1], start: 0, params, draftProbs: new Float32Array(5) })).toThrow(/need 2/);
    expect(() => verifyBlock({ targetLogits: twoRows, vocab, drafts: [5], start: 0, params, draftProbs: new Float32Array(5) })).toThrow(/outside/);
    expect(() => verifyBlock({ targetLogits: twoRows, vocab, drafts: [1], start: -1, params, draftProbs: new Float32Array(5) })).toThrow(/start/);
  });
});
