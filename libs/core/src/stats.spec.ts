import { mean, median, percentile, quantile, quantiles, StatisticsError } from './stats';

describe('summary statistics', () => {
  const latencies = [15, 20, 35, 40, 50];

  it('takes the median of odd and even lists, in any order', () => {
    expect(median([40, 15, 50, 20, 35])).toBe(35);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
  });

  it('interpolates percentiles between the closest ranks (rank (n - 1) q)', () => {
    expect(percentile(latencies, 0)).toBe(15);
    expect(percentile(latencies, 100)).toBe(50);
    expect(percentile(latencies, 40)).toBe(29); // rank 1.6: 20 + 0.6 * 15
    expect(percentile(latencies, 90)).toBe(46); // rank 3.6: 40 + 0.6 * 10
    const hundred = Array.from({ length: 100 }, (_, i) => 100 - i); // 100 .. 1
    expect(percentile(hundred, 99)).toBeCloseTo(99.01, 12);
    expect(percentile(hundred, 50)).toBe(50.5);
  });

  it('computes several quantiles with one sort and leaves the input alone', () => {
    const values = [3, 1, 2];
    expect(quantiles(values, [0, 0.5, 1])).toEqual([1, 2, 3]);
    expect(values).toEqual([3, 1, 2]);
    expect(quantile(values, 0.25)).toBe(1.5);
  });

  it('takes the mean', () => {
    expect(mean(latencies)).toBe(32);
  });

  it('refuses an empty list and a quantile outside [0, 1]', () => {
    expect(() => median([])).toThrow(StatisticsError);
    expect(() => mean([])).toThrow('the mean of an empty list is undefined');
    expect(() => quantile([1], 1.5)).toThrow('quantile q=1.5 is outside [0, 1]');
    expect(() => percentile([1], Number.NaN)).toThrow(StatisticsError);
  });
});
