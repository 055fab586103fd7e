import { argmax, counterHash, gumbel, gumbelRow, logSoftmax, sampleIndex, softmax, uniform } from './sampling';

// Reference implementation of the documented construction in BigInt, to check the 32-bit lane code.
const MASK = (1n << 64n) - 1n;
const G = 0x9e3779b97f4a7c15n;
function mixRef(z: bigint): bigint {
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK;
  return z ^ (z >> 31n);
}
function word(value: number): bigint {
  return BigInt.asUintN(64, BigInt(Math.trunc(value)));
}
function hashRef(seed: number, position: number, stream: number, index: number): number {
  let h = mixRef((word(seed) + G) & MASK);
  for (const w of [position, stream, index]) h = mixRef(((h ^ word(w)) + G) & MASK);
  return Number(h >> 12n);
}

/** Chi-square statistic of observed counts against expected probabilities. */
function chiSquare(counts: number[], probs: ArrayLike<number>): number {
  const total = counts.reduce((a, b) => a + b, 0);
  let stat = 0;
  counts.forEach((count, i) => {
    const expected = total * probs[i];
    stat += (count - expected) ** 2 / expected;
  });
  return stat;
}

describe('counter-based random source', () => {
  it('the BigInt reference reproduces SplitMix64: seed 0 gives 0xe220a8397b1dcdaf first', () => {
    expect(mixRef(G)).toBe(0xe220a8397b1dcdafn);
  });

  it('matches the documented splitmix64 chain bit for bit, including large and negative coordinates', () => {
    const coordinates: Array<[number, number, number, number]> = [
      [0, 0, 0, 0],
      [1, 2, 3, 4],
      [42, 4095, 1, 0],
      [2 ** 53 - 1, 2 ** 32 + 7, 2, 258],
      [0xffffffff, 0x100000000, 3, 31999],
      [-1, 17, 4, 5],
    ];
    for (let i = 0; i < 200; i++) coordinates.push([i * 7919 + 13, i * 104729, i % 5, (i * 31) % 1000]);
    for (const [seed, position, stream, index] of coordinates) {
      expect(counterHash(seed, position, stream, index)).toBe(hashRef(seed, position, stream, index));
    }
  });

  it('is a pure function of its coordinates, strictly inside (0, 1)', () => {
    expect(uniform(7, 100, 2, 3)).toBe(uniform(7, 100, 2, 3));
    expect(uniform(7, 100, 2, 3)).not.toBe(uniform(7, 100, 2, 4));
    expect(uniform(7, 100, 2, 3)).not.toBe(uniform(7, 100, 3, 3));
    expect(uniform(7, 100, 2, 3)).not.toBe(uniform(7, 101, 2, 3));
    expect(uniform(7, 100, 2, 3)).not.toBe(uniform(8, 100, 2, 3));
    for (let i = 0; i < 10000; i++) {
      const u = uniform(3, i, 0, 0);
      expect(u > 0 && u < 1).toBe(true);
    }
  });

  it.each([
    ['positions', (i: number) => uniform(5, i, 0, 0)],
    ['indices', (i: number) => uniform(5, 0, 0, i)],
    ['seeds', (i: number) => uniform(i, 0, 0, 0)],
    ['streams', (i: number) => uniform(5, 9, i, 1)],
  ])('is uniform along %s (chi-square over 20 bins, 50 000 draws)', (_name, draw) => {
    const bins = new Array<number>(20).fill(0);
    for (let i = 0; i < 50000; i++) bins[Math.floor(draw(i) * 20)]++;
    // 19 degrees of freedom: the 0.999 quantile is 43.82.
    expect(chiSquare(bins, new Array(20).fill(1 / 20))).toBeLessThan(43.82);
  });

  it('has no correlation between neighbouring positions, indices or streams', () => {
    const n = 50000;
    const pairs: Array<[string, (i: number) => [number, number]]> = [
      ['position', (i) => [uniform(1, i, 0, 0), uniform(1, i + 1, 0, 0)]],
      ['index', (i) => [uniform(1, 0, 0, i), uniform(1, 0, 0, i + 1)]],
      ['stream', (i) => [uniform(1, i, 2, 0), uniform(1, i, 3, 0)]],
    ];
    for (const [, pair] of pairs) {
      let sxy = 0;
      for (let i = 0; i < n; i++) {
        const [x, y] = pair(i);
        sxy += (x - 0.5) * (y - 0.5);
      }
      // Correlation estimate; its standard deviation is 1/sqrt(n) ~ 0.0045.
      const correlation = sxy / n / (1 / 12);
      expect(Math.abs(correlation)).toBeLessThan(0.02);
    }
  });

  it('gumbel has the standard Gumbel mean (Euler-Mascheroni) and gumbelRow equals gumbel per index', () => {
    let sum = 0;
    const n = 50000;
    for (let i = 0; i < n; i++) sum += gumbel(11, i, 0);
    expect(Math.abs(sum / n - 0.5772156649)).toBeLessThan(0.03); // sd of the mean ~ 1.28/sqrt(n) = 0.0057
    const row = gumbelRow(11, 77, 300);
    for (let i = 0; i < 300; i++) expect(row[i]).toBe(gumbel(11, 77, i));
  });
});

describe('argmax', () => {
  it('returns the lowest index among ties and ignores NaN', () => {
    expect(argmax([1, 3, 3, 2])).toBe(1);
    expect(argmax([NaN, 1, 5, 5])).toBe(2);
    expect(argmax(new Float32Array([9, 0, 1, 2, 2]), 1, 4)).toBe(2);
  });
});

describe('softmax', () => {
  it('is stable for huge logits and sums to one', () => {
    const probs = softmax([1000, 1001, 999, -Infinity], 0, 4, 1);
    expect(probs.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    const e = Math.E;
    expect(probs[1]).toBeCloseTo(e / (1 + e + 1 / e), 12);
    expect(probs[3]).toBe(0);
    const logs = logSoftmax([1000, 1001, 999, -Infinity], 0, 4, 1);
    expect(logs[1]).toBeCloseTo(Math.log(e / (1 + e + 1 / e)), 12);
    expect(logs[3]).toBe(-Infinity);
  });

  it('divides by the temperature and reads a row at an offset', () => {
    const logits = new Float32Array([5, 5, 0, Math.log(2), 0]);
    const probs = softmax(logits, 2, 3, 0.5);
    // logits / 0.5 = [0, 2 ln 2, 0] -> weights [1, 4, 1]
    [1 / 6, 4 / 6, 1 / 6].forEach((expected, i) => expect(probs[i]).toBeCloseTo(expected, 6)); // ln 2 in float32
  });

  it('treats temperature 0 as the greedy limit and rejects bad temperatures or rows', () => {
    expect(Array.from(softmax([1, 3, 3], 0, 3, 0))).toEqual([0, 1, 0]);
    expect(() => softmax([1, 2], 0, 2, -1)).toThrow(RangeError);
    expect(() => softmax([1, 2], 0, 2, NaN)).toThrow(RangeError);
    expect(() => softmax([-Infinity, -Infinity], 0, 2, 1)).toThrow(/no finite maximum/);
  });
});

describe('sampleIndex', () => {
  it('inverts the CDF, never returns a zero-weight entry, and reports an empty distribution', () => {
    const weights = [0, 1, 0, 3, 0];
    expect(sampleIndex(weights, 0.1)).toBe(1);
    expect(sampleIndex(weights, 0.26)).toBe(3);
    expect(sampleIndex(weights, 1 - 1e-16)).toBe(3);
    expect(sampleIndex(weights, 1e-300)).toBe(1);
    expect(sampleIndex([0, 0], 0.5)).toBe(-1);
  });
});
