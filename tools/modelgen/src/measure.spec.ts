import { acceptanceFromMatches, argmaxRow, repeatingTailPeriod } from './measure';
import { bytePrior, DEFAULT_MODEL_SPEC, generableTokenIds, logitBias } from './model';
import { fnv1a, mulberry32, WeightRng } from './prng';

const flags = (s: string) => [...s].map((c) => c === '1');

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

describe('helpers', () => {
  it('argmaxRow picks the first maximum of a row', () => {
    const m = Float32Array.from([0, 5, 5, 1, -1, -2, -3, -1]);
    expect(argmaxRow(m, 0, 4)).toBe(1);
    expect(argmaxRow(m, 1, 4)).toBe(0);
  });

  it('repeatingTailPeriod detects short loops only', () => {
    expect(repeatingTailPeriod(Array(30).fill(7))).toBe(1);
    expect(repeatingTailPeriod([1, 2, 3, ...Array.from({ length: 30 }, (_, i) => [4, 5, 6][i % 3])])).toBe(3);
    expect(repeatingTailPeriod(Array.from({ length: 64 }, (_, i) => (i * 7) % 31))).toBe(0);
    expect(repeatingTailPeriod([1, 1, 1])).toBe(0); // shorter than the window
  });
});

describe('deterministic weights', () => {
  it('mulberry32 and fnv1a match their reference implementations (pinned values)', () => {
    const u = mulberry32(1);
    expect([u(), u(), u()].map((x) => Math.round(x * 2 ** 32))).toEqual([2693262067, 11749833, 2265367787]);
    expect(fnv1a('')).toBe(0x811c9dc5);
    expect(fnv1a('a')).toBe(0xe40c292c);
  });

  it('draws per-tensor streams with the requested spread, independent of draw order', () => {
    const rng = new WeightRng(42);
    const a = rng.normal('x', 100000, 0.5);
    const b = rng.normal('y', 10, 1);
    expect(new WeightRng(42).normal('y', 10, 1)).toEqual(b);
    let mean = 0;
    let sq = 0;
    for (const v of a) {
      mean += v / a.length;
      sq += (v * v) / a.length;
    }
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(Math.sqrt(sq - mean * mean)).toBeCloseTo(0.5, 2);
    expect(new WeightRng(43).normal('x', 4, 0.5)).not.toEqual(a.subarray(0, 4));
  });

  it('biases generation to newline + printable ASCII with an English-like prior', () => {
    const ids = generableTokenIds();
    expect(ids).toEqual([10, ...Array.from({ length: 95 }, (_, i) => 32 + i)]);
    const bias = logitBias(DEFAULT_MODEL_SPEC);
    const prior = bytePrior();
    for (let t = 0; t < DEFAULT_MODEL_SPEC.vocabSize; t++) {
      if (prior.has(t)) expect(bias[t]).toBeCloseTo(DEFAULT_MODEL_SPEC.logitBias.priorScale * (prior.get(t) as number), 5);
      else expect(bias[t]).toBe(-100);
    }
    expect(prior.get(32)).toBeGreaterThan(prior.get(101) as number); // ' ' > 'e'
    expect(prior.get(101)).toBeGreaterThan(prior.get(122) as number); // 'e' > 'z'
  });
});
