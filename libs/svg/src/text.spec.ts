import { textWidth, truncate } from './text';

describe('textWidth', () => {
  it('grows with the length and the font size', () => {
    expect(textWidth('#0 4/4', 10)).toBe(36);
    expect(textWidth('#0 4/4', 20)).toBe(72);
    expect(textWidth('', 12)).toBe(0);
  });
});

describe('truncate', () => {
  it('keeps text that fits and cuts longer text to the maximum, ellipsis included', () => {
    expect(truncate('drafter', 16)).toBe('drafter');
    expect(truncate('target 127.0.0.1:50061', 10)).toBe('target 12\u2026');
    expect(truncate('target 127.0.0.1:50061', 10)).toHaveLength(10);
  });
});
