/**
 * The real clock: the {@link Clock} that the orchestrator's scheduler and the synthetic model backend
 * run on outside tests and simulations (which inject a {@link VirtualClock} instead). Its own module so
 * a service can take it without loading any model backend, and so libs/core stays free of timers.
 */
import type { Clock } from '@dsi/core';

/** The last stretch of a {@link realClock} sleep spent polling with setImmediate (timers fire late by ~1 ms). */
const SPIN_MS = 2;

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

/**
 * Wall-clock time with sub-millisecond sleeps, for the orchestrator and the synthetic backend's
 * configured latencies: a timer for all but the last {@link SPIN_MS}, then setImmediate polling of
 * `performance.now()` (yielding to the event loop every turn), so a sleep ends within a fraction of a
 * millisecond of its deadline without blocking other work. Rejects with the signal's reason on abort.
 */
export const realClock: Clock = {
  now: () => performance.now(),
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortReason(signal));
        return;
      }
      const deadline = performance.now() + ms;
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
        if (performance.now() >= deadline) {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        } else {
          immediate = setImmediate(poll);
        }
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      if (ms > SPIN_MS) timer = setTimeout(poll, ms - SPIN_MS);
      else poll();
    });
  },
};
