import { generate, VirtualClock, type DraftCall, type Drafter, type TargetReplica, type VerifyCall } from '@dsi/core';
import { eventRun, simulateEvent } from './event';
import { simulatedReplicas, withoutStackTraces } from './simulated';
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

describe('the simulated ports\' shortcuts (plain signals, stemmed prefixes)', () => {
  it('give exactly what ports given whole prefixes and real AbortSignals give, and every stem vouches truly', async () => {
    for (const [i, shape] of [
      { a: 0.7, k: 1, servers: 4, c: 0.1 },
      { a: 0.9, k: 5, servers: 3, c: 0.2, rtt: 0.1 },
      { a: 0.5, k: 3, servers: 2, c: 0.3, ttft: 3 },
    ].entries()) {
      const p = { t: 1, tokens: 150, seed: 50 + i, ...shape };
      const direct = await eventRun('dsi', p);
      // The same world behind ports that declare nothing: the scheduler gives them whole prefixes and
      // Node's AbortSignals; they check the stem's promise and hand the simulated port its own form.
      const clock = new VirtualClock({ settle: 'microtasks' });
      const { targetModel, drafters, targets } = simulatedReplicas(p, clock, { targets: p.servers, drafters: 1 });
      let vouched = 0;
      const stemmed = <C extends DraftCall | VerifyCall>(call: C): C => {
        const { stem, stemLength = 0 } = call;
        expect(stem).toBeDefined();
        for (let j = 0; j < stemLength; j++) expect(call.prefix[j]).toBe(stem?.[j]);
        vouched += stemLength;
        return { ...call, prefix: call.prefix.slice(stemLength) };
      };
      const drafter: Drafter = { id: drafters[0].id, draft: (call, signal) => drafters[0].draft(stemmed(call), signal) };
      const plainTargets: TargetReplica[] = targets.map((target) => ({ id: target.id, verify: (call, signal) => target.verify(stemmed(call), signal) }));
      const result = await withoutStackTraces(() =>
        clock.run(
          generate(
            { requestId: `event-${p.seed}`, mode: 'dsi', prompt: [1 + (p.seed % 200)], maxNewTokens: p.tokens, lookahead: p.k, sampling: { rule: 'greedy', temperature: 1 }, eosTokenId: targetModel.eosTokenId },
            { drafter, targets: plainTargets, clock },
          ),
        ),
      );
      expect(result.tokens).toEqual(direct.tokens);
      expect(clock.now()).toBe(direct.cost);
      expect([targets.reduce((sum, t) => sum + t.forwards, 0), drafters[0].calls]).toEqual([direct.targetForwards, direct.draftCalls]);
      expect(vouched).toBeGreaterThan(p.tokens);
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

