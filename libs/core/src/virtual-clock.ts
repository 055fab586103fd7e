/**
 * A discrete-event clock: time stands still until {@link VirtualClock.run} advances it to the next
 * timer. Tests use it to drive the scheduler deterministically (exact virtual latencies, no waiting),
 * and the simulator's event mode uses it to run the very scheduler the orchestrator runs.
 */
import type { Clock } from './ports';

interface Timer {
  due: number;
  /** Registration order: equal-time timers fire first-in, first-out. */
  order: number;
  fire(): void;
}

/**
 * How many macrotask turns {@link VirtualClock.run} waits, with no timer pending, before it calls the
 * work blocked. One turn already drains every chained microtask; the extra turns are slack.
 */
const IDLE_TURNS = 8;

// Bound once: global lookups are slow inside jest's vm contexts, and this runs once per timer.
const { setImmediate: scheduleMacrotask } = globalThis;

/**
 * A macrotask boundary. The one place in libs/core that touches a real scheduling primitive: by the
 * time a setImmediate callback runs, Node has drained the whole microtask queue, including microtasks
 * queued by microtasks, so every promise chain that can make progress without a timer has settled.
 */
function settleMicrotasks(): Promise<void> {
  return new Promise((resolve) => scheduleMacrotask(resolve));
}

/** Thrown by {@link VirtualClock.run} when the work waits for something no timer will ever bring. */
export class VirtualClockStalledError extends Error {
  override readonly name = 'VirtualClockStalledError';
}

/** A {@link Clock} whose time advances only inside {@link VirtualClock.run}, timer by timer. */
export class VirtualClock implements Clock {
  private current: number;
  /** Sorted by (due, order). */
  private readonly timers: Timer[] = [];
  private registered = 0;
  private running = false;

  constructor(startMs = 0) {
    this.current = startMs;
  }

  /** Virtual milliseconds. */
  now(): number {
    return this.current;
  }

  /** Timers registered and not yet fired or aborted (0 after a clean shutdown of the work). */
  get pendingTimers(): number {
    return this.timers.length;
  }

  /**
   * Resolves when virtual time reaches now + ms (negative or NaN counts as 0). Aborting the signal
   * removes the timer and rejects with the signal's reason.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    const delay = ms > 0 ? ms : 0;
    return new Promise<void>((resolve, reject) => {
      const timer: Timer = { due: this.current + delay, order: this.registered++, fire: resolve };
      if (signal) {
        const onAbort = (): void => {
          this.remove(timer);
          reject(signal.reason);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        timer.fire = () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        };
      }
      this.insert(timer);
    });
  }

  /**
   * Drives time until `work` settles and returns its outcome: let every pending microtask settle,
   * then advance to the earliest timer and fire it (one timer per step, so the consequences of one
   * event are complete before the next fires), and repeat. Rejects with a
   * {@link VirtualClockStalledError} when the work is still pending but no timer is left (it waits
   * for something outside this clock). One run at a time per clock.
   */
  async run<T>(work: Promise<T>): Promise<T> {
    if (this.running) throw new Error('VirtualClock.run is already driving this clock');
    this.running = true;
    let settled = false;
    const outcome = work.then(
      () => {
        settled = true;
      },
      () => {
        settled = true;
      },
    );
    try {
      let idleTurns = 0;
      for (;;) {
        await settleMicrotasks();
        if (settled) break;
        const timer = this.timers.shift();
        if (!timer) {
          if (++idleTurns > IDLE_TURNS) {
            throw new VirtualClockStalledError(`the work is still pending at ${this.current} ms but no timer is left`);
          }
          continue;
        }
        idleTurns = 0;
        if (timer.due > this.current) this.current = timer.due;
        timer.fire();
      }
    } finally {
      this.running = false;
    }
    await outcome;
    return work;
  }

  private insert(timer: Timer): void {
    // Upper bound of `due`: after every timer due at the same time, so equal-time timers stay FIFO.
    let low = 0;
    let high = this.timers.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.timers[middle].due <= timer.due) low = middle + 1;
      else high = middle;
    }
    this.timers.splice(low, 0, timer);
  }

  private remove(timer: Timer): void {
    const index = this.timers.indexOf(timer);
    if (index >= 0) this.timers.splice(index, 1);
  }
}
