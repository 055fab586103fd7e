/**
 * The real clock: the {@link Clock} that the orchestrator's scheduler and the synthetic model backend
 * run on outside tests and simulations (which inject a {@link VirtualClock} instead). Its own module so
 * a service can take it without loading any model backend, and so libs/core stays free of timers.
 */
import type { Clock } from '@dsi/core';

/** The last stretch of a {@link realClock} sleep spent polling with setImmediate (timers fire late by ~1 ms). */
export const DEFAULT_SPIN_MS = 2;

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/**
 * Wall-clock time with sleeps that end within a fraction of a millisecond of their deadline: a timer
 * for all but the last `spinMs`, then setImmediate polling of `performance.now()` (yielding to the
 * event loop every turn, so other work goes on, but the process keeps a core busy while it polls).
 * With `spinMs` 0 a sleep is timers only (one, and another when the first fires early): no CPU, but it
 * ends up to ~1 ms late. A sleep of 0 ms (or less) ends after one setImmediate, whatever `spinMs`:
 * the I/O the event loop has already received is handled first (a batching replica gathers a burst
 * of calls that way). Rejects with the signal's reason on abort.
 */
export function wallClock(spinMs = DEFAULT_SPIN_MS): Clock {
  if (!(Number.isFinite(spinMs) && spinMs >= 0)) throw new RangeError(`spinMs must be a finite number >= 0, got ${spinMs}`);
  return {
    now: () => performance.now(),
    sleep: (ms, signal) => sleepUntil(performance.now() + ms, ms, spinMs, signal),
  };
}

/** The orchestrator's and the synthetic backend's default clock: {@link wallClock} with {@link DEFAULT_SPIN_MS}. */
export const realClock: Clock = wallClock();

function sleepUntil(deadline: number, ms: number, spinMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortReason(signal));
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    let immediate: NodeJS.Immediate | undefined;
    const onAbort = () => {
      if (timer) clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
      reject(abortReason(signal as AbortSignal));
    };
    const poll = () => {
      timer = undefined;
      immediate = undefined;
      const now = performance.now();
      if (now >= deadline) {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      } else if (spinMs === 0) {
        // A timer fires up to ~1 ms early (the event loop's clock is whole milliseconds): wait again
        // rather than poll, which would keep a core busy for the rest.
        timer = setTimeout(poll, deadline - now);
      } else {
        immediate = setImmediate(poll);
      }
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    // A sleep of 0 yields to what the event loop has waiting (I/O already arrived), then resumes.
    if (ms <= 0) immediate = setImmediate(poll);
    else if (spinMs === 0) timer = setTimeout(poll, ms);
    else if (ms > spinMs) timer = setTimeout(poll, ms - spinMs);
    else poll();
  });
}
