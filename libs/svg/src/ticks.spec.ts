import { labelledIndices, labelStride, niceStep, tickLabel, tickValues } from './ticks';

describe('niceStep', () => {
  it('picks 1, 2 or 5 times a power of ten near range / target', () => {
    expect(niceStep(100, 10)).toBe(10);
    expect(niceStep(100, 8)).toBe(20);
    expect(niceStep(100, 30)).toBe(5);
    expect(niceStep(0.7, 5)).toBeCloseTo(0.2, 12);
    expect(niceStep(13, 5)).toBe(5);
  });

  it('falls back to 1 for an empty or invalid range', () => {
    expect(niceStep(0, 5)).toBe(1);
    expect(niceStep(-3, 5)).toBe(1);
    expect(niceStep(Number.NaN, 5)).toBe(1);
  });
});

describe('tickValues', () => {
  it('runs from the start to the end inclusive', () => {
    expect(tickValues(0, 100, 20)).toEqual([0, 20, 40, 60, 80, 100]);
    expect(tickValues(10, 25, 5)).toEqual([10, 15, 20, 25]);
  });

  it('keeps the last tick when accumulated rounding overshoots the end', () => {
    // 0.2 added three times is 0.6000000000000001, a hair past 0.6.
    const ticks = tickValues(0, 0.6, 0.2);
    expect(ticks).toHaveLength(4);
    expect(ticks[3]).toBeGreaterThan(0.6);
  });

  it('stops before the end when the step does not reach it', () => {
    expect(tickValues(0, 9, 5)).toEqual([0, 5]);
  });
});

describe('tickLabel', () => {
  it('writes as many decimals as the step needs', () => {
    expect(tickLabel(40, 20)).toBe('40');
    expect(tickLabel(0.30000000000000004, 0.1)).toBe('0.3');
    expect(tickLabel(0.25, 0.05)).toBe('0.25');
    expect(tickLabel(1e-9, 1e-9)).toBe('0.000000');
  });
});

describe('labelStride and labelledIndices', () => {
  it('labels every category when they fit', () => {
    expect(labelStride(5, 11)).toBe(1);
    expect(labelledIndices(5, 1)).toEqual([0, 1, 2, 3, 4]);
  });

  it('thins the labels to about the maximum and always names both ends', () => {
    expect(labelStride(21, 11)).toBe(2);
    expect(labelledIndices(21, 2)).toEqual([0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]);
    expect(labelStride(40, 11)).toBe(4);
    expect(labelledIndices(40, 4)).toEqual([0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 39]);
  });

  it('gives nothing to label on an empty axis', () => {
    expect(labelStride(0, 11)).toBe(1);
    expect(labelledIndices(0, 1)).toEqual([]);
  });
});
