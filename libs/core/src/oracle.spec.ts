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

  it('trusts a stem only for the positions both calls vouch for with the same array: forwards equal the unvouched ones', async () => {
    // A generation's verified tokens (the stem) grow; calls carry the stem up to where their prefix
    // holds it, then drafts of their own that diverge from call to call.
    const verified = randomTokens(11, 6);
    const stemOf = (tokens: number[]) => {
      let length = 0;
      while (length < tokens.length && length < verified.length && tokens[length] === verified[length]) length++;
      return length;
    };
    const steps: Array<{ grow: number[]; prefix: () => number[]; suffix: number[]; foreign?: boolean }> = [
      { grow: [], prefix: () => verified.slice(0, 4), suffix: [7, 8] },
      { grow: [5, 6], prefix: () => verified.slice(), suffix: [9, 9, 9] },
      { grow: [], prefix: () => verified.slice(0, 5), suffix: [1] },
      { grow: [3, 3, 3], prefix: () => verified.slice(), suffix: [] },
      // Another generation's array with the same tokens but one: never trusted, so the difference is seen.
      { grow: [], prefix: () => [...verified.slice(0, 2), 99, ...verified.slice(3)], suffix: [4], foreign: true },
      { grow: [2], prefix: () => verified.slice(), suffix: [6, 6] },
    ];
    const trace = async (vouch: boolean) => {
      verified.length = 6;
      const clock = new VirtualClock();
      const replica = new OracleReplica(target, { ttftMs: 50, tpotMs: 10, verifyMsPerToken: 2 }, clock);
      const seen: unknown[] = [];
      await clock.run(
        (async () => {
          for (const step of steps) {
            verified.push(...step.grow);
            const prefix = step.prefix();
            const tokens = [...prefix, ...step.suffix];
            const from = Math.max(0, tokens.length - 2);
            const stem = !vouch ? undefined : step.foreign ? { stem: [...prefix], stemLength: prefix.length } : { stem: verified, stemLength: stemOf(prefix) };
            seen.push(await replica.forwardJoined('r', prefix, step.suffix, from, predictions(tokens, from), undefined, stem), clock.now());
          }
        })(),
      );
      return seen;
    };
    const plain = await trace(false);
    expect(await trace(true)).toEqual(plain);
    // The foreign call (step 5) diverges at position 2 from the cache: 2 tokens reused.
    expect((plain[8] as { reusedTokens: number }).reusedTokens).toBe(2);
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

describe('a batching oracle replica on a virtual clock', () => {
  const target = new OracleModel({ role: 'target', seed: 1 });
  const predictions = (tokens: readonly number[], from: number) => (hashes: PrefixHashes) =>
    Array.from({ length: tokens.length - from }, (_, r) => target.next(hashes.at(from + r + 1)));
  const latency = { ttftMs: 30, tpotMs: 10, verifyMsPerToken: 1 };

  /** Each call: [name, request, tokens, from, start time, abort time?]; what each call saw, and when. */
  async function serve(batching: ConstructorParameters<typeof OracleReplica>[3], calls: Array<[string, string, number[], number, number, number?]>) {
    const clock = new VirtualClock();
    const replica = new OracleReplica(target, latency, clock, batching);
    const seen: Record<string, string> = {};
    const results: Record<string, number[]> = {};
    await clock.run(
      Promise.all(
        calls.map(async ([name, request, tokens, from, at, abortAt]) => {
          const controller = new AbortController();
          if (abortAt !== undefined) void clock.sleep(abortAt).then(() => controller.abort(new Error('cancelled')));
          await clock.sleep(at);
          try {
            const forward = await replica.forward(request, tokens, from, predictions(tokens, from), controller.signal);
            seen[name] = `${clock.now()} reused ${forward.reusedTokens} computed ${forward.computedTokens} ms ${forward.modelMs}`;
            results[name] = forward.result;
          } catch (error) {
            seen[name] = `${clock.now()} ${(error as Error).message}`;
          }
        }),
      ),
    );
    expect(clock.pendingTimers).toBe(0);
    return { seen, results, replica };
  }

  it('runs the calls that arrive during a forward together in the next one, charging the slowest call plus the others tokens', async () => {
    const { seen } = await serve({ maxBatchRequests: 8, batchMsPerToken: 0.5 }, [
      ['a', 'a', [1, 2, 3], 0, 0],
      ['b', 'b', [4, 5], 0, 1],
      ['c', 'c', [6, 7, 8, 9], 0, 2],
      ['a2', 'a', [1, 2, 3, 4, 5], 3, 40],
    ]);
    // a alone 0..30; b and c arrive meanwhile and run together from 30: both prefills (30 ms), the
    // slowest with the most tokens (c, 4) plus 0.5 ms for each of b's 2 tokens = 31 ms, to 61; a2 waits
    // for that forward and runs alone: tpot 10 + 1 ms for its second token.
    expect(seen).toEqual({
      a: '30 reused 0 computed 3 ms 30',
      b: '61 reused 0 computed 2 ms 31',
      c: '61 reused 0 computed 4 ms 31',
      a2: '72 reused 3 computed 2 ms 11',
    });
  });

  it('waits for the last forward\'s requests that come back within a forward: two clients a round trip away share every forward after they met', async () => {
    // Two clients, each sending its next call 1 ms (a round trip) after its last one returns, and
    // nothing else. Started 3 ms apart they meet in the second forward; from then on the replica
    // waits for the one not back yet, and every forward serves both. A replica that started each
    // forward with whatever had queued would alternate them, one a forward, for ever.
    const clock = new VirtualClock();
    const replica = new OracleReplica(target, { ttftMs: 10, tpotMs: 10 }, clock, { maxBatchRequests: 8 });
    const batches: number[] = [];
    const client = async (request: string, startAt: number) => {
      await clock.sleep(startAt);
      const tokens = [1, 2, 3];
      for (let n = 0; n < 12; n++) {
        const forward = await replica.forward(request, tokens, tokens.length - 1, () => 0);
        if (request === 'a') batches.push(forward.batchRequests);
        tokens.push(4);
        await clock.sleep(1);
      }
    };
    await clock.run(Promise.all([client('a', 0), client('b', 3)]));
    // a 0..10 alone, b 10..20 (queued at 3), a 20..30 (each back at 1 ms: now both have a gap); at 30
    // the replica waits for a, and from 31 every forward holds both, 11 ms apart.
    expect(batches).toEqual([1, 1, ...new Array(10).fill(2)]);
    // b's 12th call, alone, waits 0.5 ms for a (done), and ends at 151.5. Alternating, the 24 calls would
    // take 24 forwards: 240 ms and more.
    expect(clock.now()).toBe(152.5);
  });

  it('never waits for a request that was not in the last forward, nor for one that did not come back within a forward', async () => {
    const clock = new VirtualClock();
    const replica = new OracleReplica(target, { ttftMs: 10, tpotMs: 10 }, clock, { maxBatchRequests: 8 });
    const at: Record<string, number> = {};
    const call = async (name: string, request: string, startAt: number) => {
      await clock.sleep(startAt);
      await replica.forward(request, [1, 2, 3], 2, () => 0);
      at[name] = clock.now();
    };
    // a runs 0..10 and comes back 1 ms later (its gap: 1 ms), 11..21. b arrives at 15: after a's forward
    // it waits 1.5 ms for a (1.5 times a's gap), which does not come, and runs 22.5..32.5. a is then
    // no longer expected: its call at 40 runs at once, and c, arriving at 45 during it, waits only for
    // it (c was in no forward before). d, alone at 70, runs at once.
    await clock.run(Promise.all([call('a1', 'a', 0), call('a2', 'a', 11), call('b', 'b', 15), call('a3', 'a', 40), call('c', 'c', 45), call('d', 'd', 70)]));
    expect(at).toEqual({ a1: 10, a2: 21, b: 32.5, a3: 50, c: 60, d: 80 });
  });

  it('with one request per forward (the default) serves exactly as the unbatched replica does', async () => {
    const calls: Array<[string, string, number[], number, number, number?]> = [
      ['a', 'r', [1, 2, 3], 0, 0],
      ['b', 'r', [1, 2, 3, 4, 5], 3, 1],
      ['c', 's', [9, 9], 0, 2, 35],
      ['d', 'r', [1, 2, 3, 4, 5, 6], 5, 3],
    ];
    const batched = await serve({ maxBatchRequests: 1 }, calls);
    const alsoOne = await serve({ maxBatchRequests: 2, maxBatchTokens: 1 }, calls);
    expect(batched.seen).toEqual({ a: '30 reused 0 computed 3 ms 30', b: '41 reused 3 computed 2 ms 11', c: '35 cancelled', d: '51 reused 5 computed 1 ms 10' });
    // A token budget of 1 lets only the first call of each forward in: the same order and times.
    expect(alsoOne.seen).toEqual(batched.seen);
  });

  it('fills a forward up to the request and token limits, in arrival order, and gives every call the logits it would get alone', async () => {
    const calls: Array<[string, string, number[], number, number, number?]> = [['first', 'x', [7], 0, 0]];
    for (let i = 0; i < 6; i++) calls.push([`r${i}`, `r${i}`, randomTokens(i, 3 + i), 0, 1]);
    const { seen, results } = await serve({ maxBatchRequests: 3, maxBatchTokens: 12, batchMsPerToken: 0 }, calls);
    // r0 (3 tokens), r1 (4), r2 (5) would be 12: all three; then r3 (6) and r4 (7) exceed 12 together, so r3 alone; then r4; then r5.
    expect(Object.fromEntries(Object.entries(seen).map(([k, v]) => [k, Number(v.split(' ')[0])]))).toEqual({ first: 30, r0: 60, r1: 60, r2: 60, r3: 90, r4: 120, r5: 150 });
    for (let i = 0; i < 6; i++) expect(results[`r${i}`]).toEqual(greedyAfterEachPrefix(target, randomTokens(i, 3 + i)));
  });

  it('a cancelled call leaves the batch before it runs; one cancelled while running is dropped and the rest finish; all cancelled frees the device', async () => {
    const { seen } = await serve({ maxBatchRequests: 4 }, [
      ['a', 'a', [1, 2, 3], 0, 0],
      ['queued', 'q', [4, 5, 6], 0, 1, 20],
      ['running', 'r', [4, 5, 6], 0, 2, 40],
      ['kept', 'k', [4, 5, 6], 0, 3],
      ['alone', 'l', [8, 8], 0, 61, 65],
      ['after', 'a', [1, 2, 3, 4], 3, 62],
    ]);
    // queued leaves at 20; running and kept run 30..60 and running is dropped at 40; alone (61) runs
    // from 61 and is cancelled at 65, which ends its forward: after (arrived at 62) runs 65..75.
    expect(seen).toEqual({
      a: '30 reused 0 computed 3 ms 30',
      queued: '20 cancelled',
      running: '40 cancelled',
      kept: '60 reused 0 computed 3 ms 30',
      alone: '65 cancelled',
      after: '75 reused 3 computed 1 ms 10',
    });
  });

  it('keeps each request cache right when two calls of one request share a forward, and releases after the forwards before it', async () => {
    const base = randomTokens(9, 10);
    const { seen, results, replica } = await serve({ maxBatchRequests: 4 }, [
      ['prefill', 'r', base.slice(0, 6), 0, 0],
      ['short', 'r', [...base.slice(0, 6), 1], 6, 1],
      ['long', 'r', [...base.slice(0, 6), 2, 3], 6, 2],
      ['next', 'r', [...base.slice(0, 6), 2, 3, 4], 8, 45],
    ]);
    expect(results.short).toEqual(greedyAfterEachPrefix(target, [...base.slice(0, 6), 1]).slice(6));
    expect(results.long).toEqual(greedyAfterEachPrefix(target, [...base.slice(0, 6), 2, 3]).slice(6));
    // The later call of the forward wins the cache: next reuses all 8 tokens of long.
    expect(seen.next).toBe('55 reused 8 computed 1 ms 10');
    const clock = new VirtualClock();
    const other = new OracleReplica(target, latency, clock, { maxBatchRequests: 2 });
    const order: string[] = [];
    await clock.run(
      Promise.all([
        other.forward('z', [1, 2], 0, () => order.push('forward')),
        other.release('z').then((had) => order.push(`release ${had}`)),
        other.forward('z', [1, 2, 3], 2, () => 0).then((forward) => order.push(`reused ${forward.reusedTokens}`)),
      ]),
    );
    expect(order).toEqual(['forward', 'release true', 'reused 0']);
    expect(await replica.release('r')).toBe(true);
  });

  it('refuses bad batching options', () => {
    const clock = new VirtualClock();
    expect(() => new OracleReplica(target, latency, clock, { maxBatchRequests: 0 })).toThrow(/maxBatchRequests=0/);
    expect(() => new OracleReplica(target, latency, clock, { maxBatchTokens: 2.5 })).toThrow(/maxBatchTokens=2.5/);
    expect(() => new OracleReplica(target, latency, clock, { batchMsPerToken: -1 })).toThrow(/batchMsPerToken=-1/);
  });
});

describe('a drifting oracle drafter', () => {
  it('agrees with the first acceptance before the switch position and with the second from it on', () => {
    const target = new OracleModel({ role: 'target', seed: 4 });
    const drafter = new OracleModel({ role: 'drafter', seed: 4, acceptance: 0.9, acceptanceAfter: 0.3, acceptanceSwitchAt: 5000 });
    const context = randomTokens(11, 10000);
    const hashes = target.hashes(context);
    let before = 0;
    let after = 0;
    for (let n = 1; n <= context.length; n++) {
      const agrees = drafter.next(hashes[n], n) === target.next(hashes[n], n);
      if (n < 5000) before += agrees ? 1 : 0;
      else after += agrees ? 1 : 0;
    }
    expect(Math.abs(before / 4999 - 0.9)).toBeLessThan(0.015);
    expect(Math.abs(after / 5001 - 0.3)).toBeLessThan(0.02);
    // Without the position, or for a target, nothing drifts.
    expect(drafter.next(hashes[6000])).toBe(new OracleModel({ role: 'drafter', seed: 4, acceptance: 0.9 }).next(hashes[6000]));
    expect(() => new OracleModel({ role: 'drafter', seed: 4, acceptanceAfter: 0.5 })).toThrow(/go together/);
    expect(() => new OracleModel({ role: 'drafter', seed: 4, acceptanceAfter: 1.5, acceptanceSwitchAt: 3 })).toThrow(/acceptanceAfter=1.5/);
  });
});
