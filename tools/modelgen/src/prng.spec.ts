import { fnv1a, mulberry32, WeightRng } from './prng';

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
});
