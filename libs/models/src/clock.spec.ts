import { realClock, wallClock } from './clock';

describe('the real clock', () => {
  it('never ends a sleep before its deadline, on the timer path and on the polling path', async () => {
    for (const ms of [0.5, 3, 12]) {
      const started = realClock.now();
      await realClock.sleep(ms);
      expect(realClock.now() - started).toBeGreaterThanOrEqual(ms);
    }
  });

  it('sleeps zero or negative durations without a timer and rejects an aborted signal', async () => {
    await expect(realClock.sleep(0)).resolves.toBeUndefined();
    await expect(realClock.sleep(-5)).resolves.toBeUndefined();
    await expect(realClock.sleep(5, AbortSignal.abort(new Error('no')))).rejects.toThrow('no');
  });

  it('rejects a running sleep with the signal\'s reason when it aborts', async () => {
    const controller = new AbortController();
    const reason = new Error('cancelled');
    // Ten minutes: only the abort can settle it within the test's timeout.
    const sleeping = realClock.sleep(600_000, controller.signal);
    await new Promise<void>((resolve) => setImmediate(resolve));
    controller.abort(reason);
    await expect(sleeping).rejects.toBe(reason);
  });

  it('without polling (spinMs 0) sleeps on timers only: never early, no setImmediate turns, aborts the same way; a bad spinMs is refused', async () => {
    const clock = wallClock(0);
    const immediates = jest.spyOn(global, 'setImmediate');
    try {
      // Fractional sleeps: a timer fires up to ~1 ms early (the event loop's clock is whole ms), and the
      // rest used to be polled with setImmediate, a core busy for up to a millisecond a sleep.
      for (const ms of [0.5, 3, 12, 2.3, 2.7, 1.5, 4.9, 2.04, 2.04, 2.04]) {
        const started = clock.now();
        await clock.sleep(ms);
        expect(clock.now() - started).toBeGreaterThanOrEqual(ms);
      }
      expect(immediates).not.toHaveBeenCalled();
    } finally {
      immediates.mockRestore();
    }
    const controller = new AbortController();
    const sleeping = clock.sleep(600_000, controller.signal);
    controller.abort(new Error('stop'));
    await expect(sleeping).rejects.toThrow('stop');
    expect(() => wallClock(-1)).toThrow('spinMs must be a finite number >= 0, got -1');
    expect(() => wallClock(Number.NaN)).toThrow(RangeError);
  });
});
