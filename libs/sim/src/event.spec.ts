import { eventRun, simulateEvent } from './event';
import { withoutStackTraces } from './simulated';
import { expectedDsi, expectedSi } from './exact';

function meanAndError(values: number[]): { mean: number; se: number } {
  const mean = values.reduce((s, x) => s + x, 0) / values.length;
  const variance = values.reduce((s, x) => s + (x - mean) ** 2, 0) / (values.length - 1);
  return { mean, se: Math.sqrt(variance / values.length) };
}

describe('event method: the scheduler on a virtual clock', () => {
  it.each([
    { a: 0.9, c: 0.1, k: 5 },
    { a: 0.5, c: 0.2, k: 3 },
    { a: 0.7, c: 0.05, k: 8 },
  ])('agrees with the exact SI expectation where the assumptions coincide (%j)', async ({ a, c, k }) => {
    const tokens = 150;
    const result = await simulateEvent({ a, c, k, tokens, repeats: 80, servers: 7 });
    const { mean, se } = meanAndError(result.si.costs);
    const exact = expectedSi({ a, c, k, t: 1, tokens }).cost;
    expect(Math.abs(mean - exact)).toBeLessThanOrEqual(3 * se);
  });

  it('is faster than the study\'s DSI rule by the extra token, and never slower than non-SI', async () => {
    for (const { a, c, k } of [{ a: 0.9, c: 0.1, k: 5 }, { a: 0.3, c: 0.3, k: 2 }]) {
      const tokens = 150;
      const result = await simulateEvent({ a, c, k, tokens, repeats: 40, servers: 7 });
      const { mean, se } = meanAndError(result.dsi.costs);
      expect(mean).toBeLessThanOrEqual(expectedDsi({ a, c, k, t: 1, tokens }).cost + 3 * se);
      expect(Math.max(...result.dsi.costs)).toBeLessThanOrEqual(tokens + 1e-9);
      expect(result.nonsi.cost).toBe(tokens);
    }
  });

  it('queues verifications when there are fewer servers than ceil(t/(k c))', async () => {
    const p = { a: 0.95, c: 0.05, k: 2, t: 1, tokens: 120, seed: 5 };
    const one = await eventRun('dsi', { ...p, servers: 1 });
    const enough = await eventRun('dsi', { ...p, servers: 10 });
    expect(one.cost).toBeGreaterThan(enough.cost * 1.5);
    expect(one.tokens).toEqual(enough.tokens);
  });

  it('adds the first-forward latency, the per-token verify cost and the round trip', async () => {
    const base = { a: 0.8, c: 0.1, k: 4, t: 1, tokens: 50, servers: 7, seed: 9 };
    expect((await eventRun('nonsi', base)).cost).toBe(50);
    expect((await eventRun('nonsi', { ...base, ttft: 4 })).cost).toBe(53);
    expect((await eventRun('nonsi', { ...base, rtt: 0.5 })).cost).toBe(75);
    const plain = await eventRun('si', base);
    const costly = await eventRun('si', { ...base, verifyPerToken: 0.1 });
    expect(costly.cost).toBeGreaterThan(plain.cost);
    expect(costly.tokens).toEqual(plain.tokens);
  });

  it('produces the same tokens in every mode', async () => {
    const p = { a: 0.6, c: 0.2, k: 3, t: 1, tokens: 80, servers: 4, seed: 21 };
    const [nonsi, si, dsi] = await Promise.all([eventRun('nonsi', p), eventRun('si', p), eventRun('dsi', p)]);
    expect(si.tokens).toEqual(nonsi.tokens);
    expect(dsi.tokens).toEqual(nonsi.tokens);
  });

  it("settles the clock by draining microtasks (the default) with exactly the macrotask results: tokens, costs, work", async () => {
    const cases = [
      { a: 0.9, k: 5, servers: 7, c: 0.1 },
      { a: 0.7, k: 1, servers: 4, c: 0.1 },
      { a: 0.5, k: 3, servers: 2, c: 0.3, ttft: 3, rtt: 0.2, verifyPerToken: 0.1 },
      { a: 0.95, k: 8, servers: 3, c: 0.05, rtt: 0.05 },
      { a: 0.3, k: 2, servers: 1, c: 0.2, ttft: 2 },
    ];
    for (const mode of ['nonsi', 'si', 'dsi'] as const) {
      for (const [i, shape] of cases.entries()) {
        const p = { t: 1, tokens: 120, seed: 30 + i, ...shape };
        const fast = await eventRun(mode, p);
        expect(fast).toEqual(await eventRun(mode, p, { settle: 'macrotask' }));
        expect(fast).toEqual(await eventRun(mode, p, { settle: 'microtasks' }));
        expect(fast.tokens).toHaveLength(120);
      }
    }
  });
});

describe('withoutStackTraces', () => {
  it('captures no stacks while simulations run and restores the limit after the last overlapping one, failed or not', async () => {
    const limit = Error.stackTraceLimit;
    let release = (): void => undefined;
    const first = withoutStackTraces(() => new Promise<void>((resolve) => (release = resolve)));
    expect(Error.stackTraceLimit).toBe(0);
    await expect(withoutStackTraces(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(Error.stackTraceLimit).toBe(0);
    release();
    await first;
    expect(Error.stackTraceLimit).toBe(limit);
    await withoutStackTraces(async () => expect(new Error('quiet').stack).toBe('Error: quiet'));
    expect(Error.stackTraceLimit).toBe(limit);
  });
});

