import { ORACLE_MASKED_LOGIT, ORACLE_PEAK_LOGIT, OracleModel, OracleReplica, OracleReplicaClosedError, oracleForwardMs, type PrefixHashes } from './oracle';
import { argmax, uniform } from './sampling';
import { VirtualClock } from './virtual-clock';

/** Reproducible ordinary tokens (bytes) for contexts. */
const randomTokens = (seed: number, length: number) => Array.from({ length }, (_, i) => Math.floor(uniform(seed, i, 7, 0) * 256));

/** The greedy token after every prefix of `tokens` (positions 1 .. length). */
function greedyAfterEachPrefix(model: OracleModel, tokens: number[]): number[] {
  return model.hashes(tokens).slice(1).map((hash) => model.next(hash));
}

describe('the oracle model', () => {
  it.each([0.3, 0.8, 0.95])('a drafter with acceptance %f agrees with the target within 0.01, independently per position', (acceptance) => {
    const context = randomTokens(3, 20000);
    const truth = greedyAfterEachPrefix(new OracleModel({ role: 'target', seed: 42 }), context);
    const guess = greedyAfterEachPrefix(new OracleModel({ role: 'drafter', seed: 42, acceptance }), context);
    const agree = truth.map((token, i) => token === guess[i]);
    expect(Math.abs(agree.filter(Boolean).length / agree.length - acceptance)).toBeLessThan(0.01);
    let pairs = 0;
    for (let i = 1; i < agree.length; i++) if (agree[i - 1] && agree[i]) pairs++;
    expect(Math.abs(pairs / (agree.length - 1) - acceptance ** 2)).toBeLessThan(0.015);
  });

  it('a target ignores acceptance and a drafter that always agrees is the target', () => {
    const context = randomTokens(5, 300);
    const truth = greedyAfterEachPrefix(new OracleModel({ role: 'target', seed: 8 }), context);
    expect(greedyAfterEachPrefix(new OracleModel({ role: 'target', seed: 8, acceptance: 0 }), context)).toEqual(truth);
    expect(greedyAfterEachPrefix(new OracleModel({ role: 'drafter', seed: 8, acceptance: 1 }), context)).toEqual(truth);
    const never = greedyAfterEachPrefix(new OracleModel({ role: 'drafter', seed: 8, acceptance: 0 }), context);
    expect(never.filter((token, i) => token === truth[i])).toEqual([]);
  });

  it('peaks its logits on its greedy token, masks the non-byte ids, and draws only bytes', () => {
    for (const role of ['target', 'drafter'] as const) {
      const model = new OracleModel({ role, seed: 2, acceptance: 0.5 });
      const hashes = model.hashes(randomTokens(4, 200));
      const row = new Float32Array(259);
      for (const hash of hashes) {
        model.fillLogits(row, 0, hash);
        expect(argmax(row)).toBe(model.next(hash));
        expect(row[model.next(hash)]).toBe(ORACLE_PEAK_LOGIT);
        expect([row[256], row[257], row[258]]).toEqual([ORACLE_MASKED_LOGIT, ORACLE_MASKED_LOGIT, ORACLE_MASKED_LOGIT]);
      }
    }
    expect(new OracleModel({ role: 'target', seed: 1 }).eosTokenId).toBe(257);
    const small = new OracleModel({ role: 'target', seed: 1, vocabSize: 10 });
    expect(small.eosTokenId).toBeUndefined();
    expect(small.hashes(randomTokens(6, 500).map((t) => t % 10)).every((hash) => small.next(hash) < 10)).toBe(true);
  });

  it('hashes incrementally exactly as from scratch, and each hash depends on the seed and the whole prefix', () => {
    const model = new OracleModel({ role: 'target', seed: 9 });
    const tokens = randomTokens(1, 100);
    const whole = model.hashes(tokens);
    expect(whole).toHaveLength(101);
    expect(model.hashes(tokens, model.hashes(tokens.slice(0, 40)))).toEqual(whole);
    const changedFirst = model.hashes([(tokens[0] + 1) % 256, ...tokens.slice(1)]);
    expect(changedFirst.filter((hash, n) => hash === whole[n])).toEqual([whole[0]]);
    const otherSeed = new OracleModel({ role: 'target', seed: 10 }).hashes(tokens);
    expect(otherSeed.filter((hash, n) => hash === whole[n])).toEqual([]);
  });

  it('refuses a bad configuration', () => {
    expect(() => new OracleModel({ role: 'drafter', seed: 1, acceptance: 1.5 })).toThrow('acceptance=1.5 is outside [0, 1]');
    expect(() => new OracleModel({ role: 'target', seed: -3 })).toThrow('seed=-3');
    expect(() => new OracleModel({ role: 'target', seed: 1, vocabSize: 1 })).toThrow('vocabSize=1 must be an integer >= 2');
    expect(() => new OracleModel({ role: 'judge' as 'target', seed: 1 })).toThrow('role=judge');
    expect(() => new OracleReplica(new OracleModel({ role: 'target', seed: 1 }), { tpotMs: -1 }, new VirtualClock())).toThrow('tpotMs=-1 must be a finite number >= 0');
  });
});

describe('the oracle latency model', () => {
  it('charges ttft for a prefill, else tpot plus the verify cost per extra computed token', () => {
    const latency = { ttftMs: 50, tpotMs: 10, verifyMsPerToken: 2 };
    expect(oracleForwardMs(latency, 0, 7)).toBe(50);
    expect(oracleForwardMs(latency, 4, 1)).toBe(10);
    expect(oracleForwardMs(latency, 4, 5)).toBe(18);
  });
});

describe('an oracle replica on a virtual clock', () => {
  const target = new OracleModel({ role: 'target', seed: 1 });
  /** The greedy tokens at positions from + 1 .. length: what a forward from `from` predicts. */
  const predictions = (tokens: readonly number[], from: number) => (hashes: PrefixHashes) =>
    Array.from({ length: tokens.length - from }, (_, r) => target.next(hashes.at(from + r + 1)));

  it('reuses the common prefix, recomputes from `from` at least, rolls back on divergence, and predicts as from scratch', async () => {
    const clock = new VirtualClock();
    const replica = new OracleReplica(target, { ttftMs: 50, tpotMs: 10, verifyMsPerToken: 2 }, clock);
    const calls: Array<[number[], number, number, number, number]> = [
      // tokens, from, expected reused, computed, ms
      [[1, 2, 3], 0, 0, 3, 50],
      [[1, 2, 3, 4, 5], 3, 3, 2, 12],
      [[1, 2, 3, 4, 5, 6, 7, 8], 4, 4, 4, 16],
      [[1, 2, 3, 4, 9, 10], 4, 4, 2, 12],
      [[1, 2, 3, 4, 9, 10, 11], 6, 6, 1, 10],
      [[1, 2, 3, 4, 9, 10, 11], 2, 2, 5, 18],
    ];
    await clock.run(
      (async () => {
        for (const [tokens, from, reused, computed, ms] of calls) {
          const started = clock.now();
          const forward = await replica.forward('r', tokens, from, predictions(tokens, from));
          expect([forward.reusedTokens, forward.computedTokens, forward.modelMs, clock.now() - started]).toEqual([reused, computed, ms, ms]);
          expect(forward.result).toEqual(greedyAfterEachPrefix(target, tokens).slice(from));
        }
      })(),
    );
  });

  it('forwards over prefix ++ suffix without building it exactly as over the joined sequence, at every split', async () => {
    // A sequence of forwards that grow, diverge in the prefix or in the suffix, and shrink.
    const base = randomTokens(3, 40);
    const sequences = [base.slice(0, 10), base.slice(0, 14), base.slice(0, 30), [...base.slice(0, 20), 7, 8, 9], [...base.slice(0, 21), 1], base.slice(0, 12), base, [...base.slice(0, 5), 250]];
    const trace = async (split: (tokens: number[]) => number | undefined) => {
      const clock = new VirtualClock();
      const replica = new OracleReplica(target, { ttftMs: 50, tpotMs: 10, verifyMsPerToken: 2 }, clock);
      const seen: unknown[] = [];
      await clock.run(
        (async () => {
          for (const [i, tokens] of sequences.entries()) {
            const from = Math.max(0, tokens.length - 1 - (i % 4));
            const at = split(tokens);
            const forward = at === undefined ? await replica.forward('r', tokens, from, predictions(tokens, from)) : await replica.forwardJoined('r', tokens.slice(0, at), tokens.slice(at), from, predictions(tokens, from));
            seen.push(forward, clock.now());
          }
        })(),
      );
      return seen;
    };
    const joined = await trace(() => undefined);
    for (const split of [() => 0, (tokens: number[]) => tokens.length, (tokens: number[]) => tokens.length >> 1, (tokens: number[]) => Math.max(0, tokens.length - 2), () => 11]) {
      expect(await trace((tokens) => Math.min(tokens.length, split(tokens)))).toEqual(joined);
    }
  });

  it('forgets a request at once, outside the device queue: its next forward is a prefill', async () => {
    const clock = new VirtualClock();
    const replica = new OracleReplica(target, { ttftMs: 50, tpotMs: 10 }, clock);
    const tokens = randomTokens(5, 6);
    const reused = async () => (await clock.run(replica.forward('r', tokens, tokens.length - 1, predictions(tokens, tokens.length - 1)))).reusedTokens;
    expect(await reused()).toBe(0);
    expect(await reused()).toBe(tokens.length - 1);
    expect(replica.forget('r')).toBe(true);
    expect(replica.forget('r')).toBe(false);
    expect(await reused()).toBe(0);
  });

  it('serves one call at a time in arrival order; an aborted forward frees the device and leaves the cache', async () => {
    const clock = new VirtualClock();
    const replica = new OracleReplica(target, { ttftMs: 30, tpotMs: 7 }, clock);
    const ends: Record<string, number | string> = {};
    const controller = new AbortController();
    const call = (name: string, tokens: number[], from: number, signal?: AbortSignal) =>
      replica.forward('r', tokens, from, () => name, signal).then(
        (forward) => (ends[name] = `${clock.now()} reused ${forward.reusedTokens}`),
        (error: Error) => (ends[name] = `${clock.now()} ${error.message}`),
      );
    const work = Promise.all([
      call('prefill', [1, 2, 3], 0),
      call('aborted', [1, 2, 3, 7, 8], 2, controller.signal),
      call('next', [1, 2, 3, 4], 3),
      clock.sleep(33).then(() => controller.abort(new Error('preempted'))),
    ]);
    await clock.run(work);
    // prefill 0..30; the aborted call runs from 30 (would end at 37) until 33; next runs 33..40 and
    // reuses all of [1 2 3], as if the aborted call had never run.
    expect(ends).toEqual({ prefill: '30 reused 0', aborted: '33 preempted', next: '40 reused 3' });
    expect(clock.pendingTimers).toBe(0);
  });

  it('keeps requests apart, never caches an empty request id, releases after running work, and refuses work once closed', async () => {
    const clock = new VirtualClock();
    const replica = new OracleReplica(target, {}, clock);
    const reused = async (requestId: string, tokens: number[]) => (await replica.forward(requestId, tokens, tokens.length - 1, () => 0)).reusedTokens;
    await clock.run(
      (async () => {
        await reused('a', [1, 2, 3]);
        expect(await reused('b', [1, 2, 3, 4])).toBe(0);
        expect(await reused('', [1, 2, 3, 4])).toBe(0);
        expect(await reused('', [1, 2, 3, 4])).toBe(0);
        expect(await reused('a', [1, 2, 3, 4])).toBe(3);
        expect(await replica.release('a')).toBe(true);
        expect(await replica.release('a')).toBe(false);
        expect(await reused('a', [1, 2, 3, 4, 5])).toBe(0);
      })(),
    );
    replica.close();
    await expect(replica.forward('a', [1], 0, () => 0)).rejects.toBeInstanceOf(OracleReplicaClosedError);
  });
});
