import { argmax, ORACLE_MASKED_LOGIT as MASKED_LOGIT, ORACLE_PEAK_LOGIT as PEAK_LOGIT, softmax, uniform, VirtualClock, type Clock } from '@dsi/core';
import { ModelInputError } from './backend';
import { createSyntheticModel, type SyntheticOptions } from './synthetic';

const VOCAB = 259;

/** A virtual clock whose sleeps finish at once, recording what was asked. */
class InstantClock implements Clock {
  time = 0;
  readonly sleeps: number[] = [];
  now(): number {
    return this.time;
  }
  async sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    if (signal?.aborted) throw signal.reason;
    this.time += ms;
  }
}

/** A virtual clock whose sleeps finish only when the test says so (or are aborted). */
class ManualClock implements Clock {
  readonly sleeps: number[] = [];
  private readonly pending: Array<() => void> = [];
  now(): number {
    return 0;
  }
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    return new Promise((resolve, reject) => {
      signal?.addEventListener('abort', () => {
        this.pending.splice(this.pending.indexOf(resolve), 1);
        reject(signal.reason);
      }, { once: true });
      this.pending.push(resolve);
    });
  }
  /** Finishes the oldest pending sleep. */
  finishOne(): void {
    this.pending.shift()?.();
  }
}

/** Lets queued promise callbacks run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Reproducible ordinary tokens (bytes) for contexts. */
const randomTokens = (seed: number, length: number) => Array.from({ length }, (_, i) => Math.floor(uniform(seed, i, 7, 0) * 256));

function model(options: Partial<SyntheticOptions> = {}) {
  return createSyntheticModel({ role: 'target', seed: 1, clock: new InstantClock(), ...options });
}

function greedyRows(logits: Float32Array, rows: number): number[] {
  return Array.from({ length: rows }, (_, r) => argmax(logits, r * VOCAB, VOCAB));
}

describe('the synthetic oracle', () => {
  it.each([0.5, 0.8, 0.9])('a drafter with acceptance %f agrees with the target within 0.01 over 10 000 positions, independently', async (acceptance) => {
    const options = { seed: 42, contextLength: 20000, acceptance };
    const target = model({ ...options, role: 'target' });
    const drafter = model({ ...options, role: 'drafter' });
    const context = randomTokens(3, 10001);
    const truth = greedyRows((await target.logits('r', context, 1)).logits, 10000);
    const guess = greedyRows((await drafter.logits('r', context, 1)).logits, 10000);
    const agree = truth.map((token, i) => token === guess[i]);
    const rate = agree.filter(Boolean).length / agree.length;
    expect(Math.abs(rate - acceptance)).toBeLessThan(0.01);
    // Independence: consecutive agreements happen at rate a^2 (sd < 0.005 here).
    let pairs = 0;
    for (let i = 1; i < agree.length; i++) if (agree[i - 1] && agree[i]) pairs++;
    expect(Math.abs(pairs / (agree.length - 1) - acceptance ** 2)).toBeLessThan(0.015);
  });

  it('peaks at an ordinary token, masks eos and the other special ids, and leaves a real distribution', async () => {
    const target = model({ seed: 5 });
    const { logits, rows } = await target.logits('r', randomTokens(1, 300), 0);
    expect(target.info).toEqual({ name: 'synthetic-target', backend: 'synthetic', vocabSize: 259, contextLength: 4096, eosTokenId: 257 });
    const problems: string[] = [];
    for (let r = 0; r < rows; r++) {
      const row = logits.subarray(r * VOCAB, (r + 1) * VOCAB);
      const peak = argmax(row);
      if (peak >= 256 || row[peak] !== PEAK_LOGIT) problems.push(`row ${r}: peak ${peak} = ${row[peak]}`);
      if (row[256] !== MASKED_LOGIT || row[257] !== MASKED_LOGIT || row[258] !== MASKED_LOGIT) problems.push(`row ${r}: special ids not masked`);
      for (let i = 0; i < 256; i++) if (i !== peak && !(Math.abs(row[i]) <= 1)) problems.push(`row ${r}: logit ${i} = ${row[i]}`);
      const p = softmax(row, 0, VOCAB, 1);
      if (!(p[peak] > 0.8 && p[peak] < 0.95) || p[257] !== 0) problems.push(`row ${r}: p(peak) = ${p[peak]}, p(eos) = ${p[257]}`);
    }
    expect(problems).toEqual([]);
  });

  it('is deterministic per seed and depends on the whole prefix', async () => {
    const context = randomTokens(2, 500);
    const a = greedyRows((await model({ seed: 9 }).logits('r', context, 0)).logits, 500);
    const b = greedyRows((await model({ seed: 9 }).logits('x', context, 0)).logits, 500);
    const c = greedyRows((await model({ seed: 10 }).logits('r', context, 0)).logits, 500);
    expect(b).toEqual(a);
    expect(c.filter((token, i) => token !== a[i]).length).toBeGreaterThan(480);
    const changedFirst = [(context[0] + 1) % 256, ...context.slice(1)];
    const d = greedyRows((await model({ seed: 9 }).logits('r', changedFirst, 0)).logits, 500);
    expect(d.filter((token, i) => token !== a[i]).length).toBeGreaterThan(480);
  });

  it('generates the same text token by token (cached) as in one uncached forward', async () => {
    const target = model({ seed: 4 });
    const tokens = [1, 2, 3];
    for (let step = 0; step < 50; step++) {
      const { logits, rows } = await target.logits('gen', tokens, tokens.length - 1);
      expect(rows).toBe(1);
      tokens.push(argmax(logits));
    }
    const fresh = greedyRows((await model({ seed: 4 }).logits('', tokens, 2)).logits, tokens.length - 2);
    expect(fresh.slice(0, 50)).toEqual(tokens.slice(3));
  });
});

describe('the synthetic KV cache', () => {
  it('reuses the common prefix, recomputes from `from` at least, and rolls back on divergence', async () => {
    const target = model();
    const uncached = model();
    const calls: Array<[number[], number, number, number]> = [
      // tokens, from, expected reused, expected computed
      [[1, 2, 3], 0, 0, 3],
      [[1, 2, 3, 4, 5], 3, 3, 2],
      [[1, 2, 3, 4, 5, 6, 7, 8], 4, 4, 4], // a verification: k = 3 drafts after 5 verified tokens
      [[1, 2, 3, 4, 9, 10], 4, 4, 2], // drafts 5.. rejected: only the common prefix [1 2 3 4] is reused
      [[1, 2, 3, 4, 9, 10, 11], 6, 6, 1], // the cache now holds the diverged sequence
      [[1, 2, 3, 4, 9, 10, 11], 2, 2, 5], // logits from an earlier position must be recomputed
    ];
    for (const [tokens, from, reused, computed] of calls) {
      const result = await target.logits('r', tokens, from);
      expect([result.rows, result.reusedTokens, result.computedTokens]).toEqual([tokens.length - from, reused, computed]);
      expect(result.logits).toEqual((await uncached.logits('', tokens, from)).logits);
    }
  });

  it('keeps requests apart; an empty request id is never cached; release drops the cache', async () => {
    const target = model();
    await target.logits('a', [1, 2, 3], 0);
    expect((await target.logits('b', [1, 2, 3, 4], 3)).reusedTokens).toBe(0);
    expect((await target.logits('', [1, 2, 3, 4], 3)).reusedTokens).toBe(0);
    expect((await target.logits('', [1, 2, 3, 4], 3)).reusedTokens).toBe(0);
    expect((await target.logits('a', [1, 2, 3, 4], 3)).reusedTokens).toBe(3);
    await expect(target.release('a')).resolves.toBe(true);
    await expect(target.release('a')).resolves.toBe(false);
    expect((await target.logits('a', [1, 2, 3, 4, 5], 4)).reusedTokens).toBe(0);
  });

  it('orders release after running work, so a finishing forward cannot bring the cache back', async () => {
    const clock = new ManualClock();
    const target = model({ clock, ttftMs: 5, tpotMs: 5 });
    const forward = target.logits('r', [1, 2], 0);
    await settle();
    let released: boolean | undefined;
    const release = target.release('r').then((value) => (released = value));
    await settle();
    expect(released).toBeUndefined();
    clock.finishOne();
    await forward;
    await release;
    expect(released).toBe(true);
    const next = target.logits('r', [1, 2, 3], 2);
    await settle();
    clock.finishOne();
    expect((await next).reusedTokens).toBe(0);
  });

  it('rejects bad input with ModelInputError', async () => {
    const target = model({ contextLength: 8 });
    const cases: Array<[number[], number, string]> = [
      [[], 0, 'the token sequence is empty'],
      [[1, 2, 3], 3, 'from=3 is outside [0, 2]'],
      [[1, 2, 3], -1, 'from=-1 is outside [0, 2]'],
      [[1, 259], 0, 'token 259 at position 1 is outside the vocabulary [0, 258]'],
      [[1, 2.5], 0, 'token 2.5 at position 1 is outside'],
      [new Array(9).fill(1), 0, '9 tokens exceed the context length 8'],
    ];
    for (const [tokens, from, message] of cases) {
      const call = target.logits('r', tokens, from);
      await expect(call).rejects.toBeInstanceOf(ModelInputError);
      await expect(call).rejects.toThrow(message);
    }
  });

  it('refuses a bad configuration at construction', () => {
    expect(() => model({ role: 'drafter', acceptance: 1.5 })).toThrow('acceptance=1.5 is outside [0, 1]');
    expect(() => model({ tpotMs: -1 })).toThrow('tpotMs=-1 must be a finite number >= 0');
    expect(() => model({ vocabSize: 1 })).toThrow('vocabSize=1 must be an integer >= 2');
    expect(() => model({ seed: -3 })).toThrow('seed=-3');
    expect(model({ vocabSize: 100 }).info.eosTokenId).toBeUndefined();
  });
});

describe('the synthetic latency model', () => {
  it('sleeps ttft for a prefill, then tpot plus verify cost per extra computed token', async () => {
    const clock = new InstantClock();
    const target = model({ clock, ttftMs: 50, tpotMs: 10, verifyMsPerToken: 2 });
    await target.logits('r', [1, 2, 3, 4], 0); // prefill: 50
    await target.logits('r', [1, 2, 3, 4, 5], 4); // one new token: 10
    await target.logits('r', [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 5); // five computed: 10 + 4 * 2
    await target.logits('r', [1, 2, 3, 4, 5, 6, 7, 8, 11, 12], 7); // rollback, three computed: 10 + 2 * 2
    await target.logits('r', [1, 2, 3], 0); // nothing reusable: 50
    await target.release('r');
    await target.logits('r', [1, 2, 3, 4], 3); // cache dropped: 50
    await target.logits('s', [1, 2, 3, 4], 3); // another request: its own prefill, 50
    expect(clock.sleeps).toEqual([50, 10, 18, 14, 50, 50, 50]);
    expect(clock.time).toBe(242);
  });

  it('does not sleep at zero latency', async () => {
    const clock = new InstantClock();
    await model({ clock }).logits('r', [1, 2], 0);
    expect(clock.sleeps).toEqual([]);
  });

  it('serialises calls on one instance (one replica = one device)', async () => {
    const clock = new ManualClock();
    const target = model({ clock, ttftMs: 30, tpotMs: 7 });
    const order: string[] = [];
    const first = target.logits('a', [1, 2], 0).then(() => order.push('a'));
    const second = target.logits('b', [3, 4], 0).then(() => order.push('b'));
    const third = target.logits('a', [1, 2, 3], 2).then(() => order.push('a2'));
    await settle();
    expect(clock.sleeps).toEqual([30]);
    clock.finishOne();
    await first;
    await settle();
    expect(clock.sleeps).toEqual([30, 30]);
    clock.finishOne();
    await second;
    await settle();
    clock.finishOne();
    await third;
    expect(clock.sleeps).toEqual([30, 30, 7]);
    expect(order).toEqual(['a', 'b', 'a2']);
  });
});

describe('aborting a synthetic forward', () => {
  it('rejects with the reason at once and leaves the previous cache, and the next call works', async () => {
    const clock = new ManualClock();
    const target = model({ clock, ttftMs: 30, tpotMs: 7 });
    const prefill = target.logits('r', [1, 2, 3], 0);
    await settle();
    clock.finishOne();
    await prefill;

    const controller = new AbortController();
    const reason = new Error('cancelled by the orchestrator');
    const aborted = target.logits('r', [1, 2, 3, 7, 8, 9], 3, controller.signal);
    await settle();
    controller.abort(reason);
    await expect(aborted).rejects.toBe(reason);

    // The cache still holds [1 2 3]: a call diverging at 3 reuses 3, as if the aborted call never ran.
    const next = target.logits('r', [1, 2, 3, 4], 3);
    await settle();
    clock.finishOne();
    expect((await next).reusedTokens).toBe(3);
  });

  it('takes a waiting call out of the queue without stalling the others', async () => {
    const clock = new ManualClock();
    const target = model({ clock, ttftMs: 30 });
    const running = target.logits('a', [1], 0);
    const controller = new AbortController();
    const waiting = target.logits('b', [2], 0, controller.signal);
    const after = target.logits('c', [3], 0);
    await settle();
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' });
    clock.finishOne();
    await running;
    await settle();
    clock.finishOne();
    await expect(after).resolves.toMatchObject({ rows: 1 });
    expect(clock.sleeps).toEqual([30, 30]);
  });

  it('rejects an already-aborted call without touching the device', async () => {
    const clock = new InstantClock();
    const target = model({ clock, ttftMs: 30 });
    const reason = new Error('gone');
    await expect(target.logits('r', [1], 0, AbortSignal.abort(reason))).rejects.toBe(reason);
    expect(clock.sleeps).toEqual([]);
  });

  it('stops a real-clock sleep when aborted, long before its latency', async () => {
    const target = createSyntheticModel({ role: 'target', seed: 1, ttftMs: 600_000 });
    const controller = new AbortController();
    const call = target.logits('r', [1, 2], 0, controller.signal);
    await settle();
    controller.abort();
    // A ten-minute forward: only the abort can settle it within the test's timeout.
    await expect(call).rejects.toMatchObject({ name: 'AbortError' });
    await expect(target.logits('r', [1, 2], 0, AbortSignal.timeout(5))).rejects.toMatchObject({ name: 'TimeoutError' });
  });
});

describe('the synthetic latency model on a virtual clock', () => {
  it('takes exactly its configured latency per forward, and reports it as model time', async () => {
    const clock = new VirtualClock();
    const target = model({ clock, ttftMs: 20, tpotMs: 7, verifyMsPerToken: 1.5 });
    const ends: number[] = [];
    const modelMs: number[] = [];
    const forward = async (tokens: number[], from: number) => {
      const result = await target.logits('r', tokens, from);
      ends.push(clock.now());
      modelMs.push(result.modelMs ?? NaN);
    };
    await clock.run(
      (async () => {
        await forward([1, 2, 3], 0); // prefill: 20
        await forward([1, 2, 3, 4], 3); // one token: 7
        await forward([1, 2, 3, 4, 5, 6, 7], 3); // verifying 3 drafts after [1 2 3 4] computes 4 tokens: 7 + 3 * 1.5
      })(),
    );
    expect(modelMs).toEqual([20, 7, 11.5]);
    expect(ends).toEqual([20, 27, 38.5]);
  });

  it('queues concurrent calls on one replica: each starts when the previous one ends', async () => {
    const clock = new VirtualClock();
    const target = model({ clock, ttftMs: 30, tpotMs: 7 });
    const ends: Record<string, number> = {};
    const call = (name: string, requestId: string, tokens: number[], from: number) =>
      target.logits(requestId, tokens, from).then(() => (ends[name] = clock.now()));
    await clock.run(Promise.all([call('a', 'a', [1, 2], 0), call('b', 'b', [3, 4], 0), call('a2', 'a', [1, 2, 3], 2)]));
    expect(ends).toEqual({ a: 30, b: 60, a2: 67 });
    expect(clock.pendingTimers).toBe(0);
  });

  it('frees the device at the moment a running forward is aborted', async () => {
    const clock = new VirtualClock();
    const target = model({ clock, ttftMs: 30 });
    const controller = new AbortController();
    const aborted = target.logits('a', [1], 0, controller.signal).catch((error: unknown) => error);
    const next = target.logits('b', [2], 0).then(() => clock.now());
    const abortAt10 = clock.sleep(10).then(() => controller.abort());
    const [reason, nextEnd] = await clock.run(Promise.all([aborted, next, abortAt10]));
    expect(reason).toMatchObject({ name: 'AbortError' });
    expect(nextEnd).toBe(40);
  });
});

describe('a closed synthetic model', () => {
  it('refuses new work', async () => {
    const target = model();
    await target.warmup();
    await target.close();
    await expect(target.logits('r', [1], 0)).rejects.toThrow('closed');
  });
});
