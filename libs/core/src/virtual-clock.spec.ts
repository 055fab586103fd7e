import { VirtualClock, VirtualClockStalledError } from './virtual-clock';

describe('VirtualClock', () => {
  it('stands still until run advances it, then jumps straight to each timer', async () => {
    const clock = new VirtualClock();
    const seen: number[] = [];
    const work = (async () => {
      await clock.sleep(30);
      seen.push(clock.now());
      await clock.sleep(12.5);
      seen.push(clock.now());
      return 'done';
    })();
    expect(clock.now()).toBe(0);
    await expect(clock.run(work)).resolves.toBe('done');
    expect(seen).toEqual([30, 42.5]);
    expect(clock.now()).toBe(42.5);
    expect(clock.pendingTimers).toBe(0);
  });

  it('fires timers in time order and equal-time timers first-in, first-out', async () => {
    const clock = new VirtualClock(100);
    const order: string[] = [];
    const sleeper = (name: string, ms: number) => clock.sleep(ms).then(() => order.push(`${name}@${clock.now()}`));
    const work = Promise.all([sleeper('a', 20), sleeper('b', 5), sleeper('c', 20), sleeper('d', 0), sleeper('e', -3), sleeper('f', 20)]);
    await clock.run(work);
    expect(order).toEqual(['d@100', 'e@100', 'b@105', 'a@120', 'c@120', 'f@120']);
  });

  it('lets the consequences of one timer settle before the next equal-time timer fires', async () => {
    const clock = new VirtualClock();
    const order: string[] = [];
    const first = clock.sleep(10).then(async () => {
      order.push('first');
      await Promise.resolve();
      await Promise.resolve();
      order.push('first, three microtasks later');
    });
    const second = clock.sleep(10).then(() => order.push('second'));
    await clock.run(Promise.all([first, second]));
    expect(order).toEqual(['first', 'first, three microtasks later', 'second']);
  });

  it('removes an aborted sleep and rejects it with the signal reason', async () => {
    const clock = new VirtualClock();
    const controller = new AbortController();
    const reason = new Error('no longer needed');
    const aborted = clock.sleep(50, controller.signal);
    const other = clock.sleep(80);
    expect(clock.pendingTimers).toBe(2);
    controller.abort(reason);
    expect(clock.pendingTimers).toBe(1);
    await expect(aborted).rejects.toBe(reason);
    await clock.run(other);
    expect(clock.now()).toBe(80);
  });

  it('rejects at once for an already aborted signal, registering nothing', async () => {
    const clock = new VirtualClock();
    const reason = new Error('gone');
    await expect(clock.sleep(5, AbortSignal.abort(reason))).rejects.toBe(reason);
    expect(clock.pendingTimers).toBe(0);
  });

  it('aborting after the timer fired changes nothing', async () => {
    const clock = new VirtualClock();
    const controller = new AbortController();
    await clock.run(clock.sleep(5, controller.signal));
    controller.abort();
    expect(clock.now()).toBe(5);
  });

  it('passes on the work rejection and can run again afterwards', async () => {
    const clock = new VirtualClock();
    const failure = new Error('boom');
    await expect(clock.run(clock.sleep(7).then(() => Promise.reject(failure)))).rejects.toBe(failure);
    await expect(clock.run(clock.sleep(3).then(() => clock.now()))).resolves.toBe(10);
  });

  it('reports work that waits for something no timer brings, instead of hanging', async () => {
    const clock = new VirtualClock();
    const never = new Promise<void>(() => undefined);
    await expect(clock.run(clock.sleep(4).then(() => never))).rejects.toThrow(VirtualClockStalledError);
    expect(clock.now()).toBe(4);
  });

  it('refuses to be driven by two runs at once', async () => {
    const clock = new VirtualClock();
    const first = clock.run(clock.sleep(1));
    await expect(clock.run(clock.sleep(2))).rejects.toThrow('already driving');
    await first;
    expect(clock.pendingTimers).toBe(1);
  });

  it('leaves timers the work did not wait for pending', async () => {
    const clock = new VirtualClock();
    const later = clock.sleep(100);
    await clock.run(clock.sleep(10));
    expect(clock.pendingTimers).toBe(1);
    await clock.run(later);
    expect(clock.now()).toBe(100);
  });

  describe("settle: 'microtasks'", () => {
    /** Two sleepers at each of `times` equal-time steps; the first's consequences take `chain` microtasks. */
    const chained = async (settle: 'macrotask' | 'microtasks', chain: number, times: number) => {
      const clock = new VirtualClock({ settle });
      const order: string[] = [];
      const first = (async () => {
        for (let i = 0; i < times; i++) {
          await clock.sleep(1);
          for (let hop = 0; hop < chain; hop++) await null;
          order.push(`first ${i} after ${chain} hops @${clock.now()}`);
        }
      })();
      const second = (async () => {
        for (let i = 0; i < times; i++) {
          await clock.sleep(1);
          order.push(`second ${i} @${clock.now()}`);
        }
      })();
      await clock.run(Promise.all([first, second]));
      return order;
    };

    it('lets every chain settle before the next timer fires, however long (it needs no hop count)', async () => {
      for (const chain of [0, 1, 3, 64, 5000]) {
        const micro = await chained('microtasks', chain, 5);
        expect(micro).toEqual(await chained('macrotask', chain, 5));
        expect(micro.slice(0, 2)).toEqual([`first 0 after ${chain} hops @1`, 'second 0 @1']);
      }
    });

    it('runs many timers (past its periodic macrotask turns) exactly like a macrotask run', async () => {
      const micro = await chained('microtasks', 2, 2500);
      expect(micro).toHaveLength(5000);
      expect(micro).toEqual(await chained('macrotask', 2, 2500));
    });

    it('settles the microtasks pending when run starts, from a macrotask too', async () => {
      const outcome = await new Promise<string[]>((resolve) =>
        setImmediate(() => {
          const clock = new VirtualClock({ settle: 'microtasks' });
          const order: string[] = [];
          const late = (async () => {
            for (let hop = 0; hop < 100; hop++) await null;
            order.push('late sleeper registers');
            await clock.sleep(0);
            order.push('late sleeper wakes');
          })();
          const early = clock.sleep(0).then(() => order.push('early sleeper wakes'));
          void clock.run(Promise.all([late, early])).then(() => resolve(order));
        }),
      );
      expect(outcome).toEqual(['late sleeper registers', 'early sleeper wakes', 'late sleeper wakes']);
    });

    it('removes aborted sleeps and passes on rejections', async () => {
      const clock = new VirtualClock({ settle: 'microtasks' });
      const controller = new AbortController();
      const reason = new Error('cancelled');
      const aborted = clock.sleep(5, controller.signal);
      aborted.catch(() => undefined);
      const work = clock.sleep(2).then(() => {
        controller.abort(reason);
        return clock.sleep(10).then(() => Promise.reject(new Error('boom')));
      });
      await expect(clock.run(work)).rejects.toThrow('boom');
      await expect(aborted).rejects.toBe(reason);
      expect(clock.now()).toBe(12);
      expect(clock.pendingTimers).toBe(0);
    });

    it('still reports work that waits for something no timer brings', async () => {
      const clock = new VirtualClock({ settle: 'microtasks' });
      const never = new Promise<void>(() => undefined);
      await expect(clock.run(clock.sleep(4).then(() => never))).rejects.toThrow(VirtualClockStalledError);
      expect(clock.now()).toBe(4);
    });

    it('accepts the start time among its options and refuses an unknown settle mode', () => {
      expect(new VirtualClock({ startMs: 7, settle: 'microtasks' }).now()).toBe(7);
      expect(() => new VirtualClock({ settle: 'sometimes' as 'macrotask' })).toThrow(RangeError);
    });
  });
});
