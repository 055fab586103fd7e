/**
 * A discrete-event clock: time stands still until {@link VirtualClock.run} advances it to the next
 * timer. Tests use it to drive the scheduler deterministically (exact virtual latencies, no waiting),
 * and the simulator's event mode uses it to run the very scheduler the orchestrator runs.
 */
import type { Clock } from './ports';

/**
 * A pending timer. A class, not an object literal: V8 tracks literals' allocation sites and, seeing
 * these survive young-generation collections (a long run keeps a few pending at every moment),
 * pretenured the site, which slowed every later simulation in the process by a third.
 */
class Timer {
  constructor(
    readonly due: number,
    /** Registration order: equal-time timers fire first-in, first-out. */
    readonly order: number,
    public fire: () => void,
  ) {}
}

/**
 * How many macrotask turns {@link VirtualClock.run} waits, with no timer pending, before it calls the
 * work blocked. One turn already drains every chained microtask; the extra turns are slack.
 */
const IDLE_TURNS = 8;

/**
 * In `microtasks` mode, every this many steps one settle is a macrotask turn instead, so a long run
 * lets the event loop breathe (I/O, other timers) without changing anything it computes: a macrotask
 * turn settles at least as much as the microtask queue draining.
 */
const STEPS_PER_MACROTASK = 1024;

// Bound once: global lookups are slow inside jest's vm contexts, and these run once per timer.
const { setImmediate: scheduleMacrotask } = globalThis;
const scheduleTick: ((callback: () => void) => void) | undefined = globalThis.process?.nextTick;

/**
 * How {@link VirtualClock.run} lets the work settle before it fires the next timer:
 * - `macrotask` (the default): one macrotask turn (setImmediate). By the time it runs, Node has
 *   drained the whole microtask queue and the next-tick queue, so every promise chain that can make
 *   progress without a timer has, however long. Right for arbitrary code; a turn costs some
 *   microseconds (an event-loop iteration).
 * - `microtasks`: until the microtask queue is empty, detected by a `process.nextTick` callback that
 *   the loop queues: Node runs next-tick callbacks queued by a microtask only once the microtask queue
 *   has drained (microtasks queued by microtasks included), without an event-loop turn. Exactly the
 *   `macrotask` results for work made of promise chains, however long, whose only source of
 *   asynchrony is this clock (the scheduler with simulated ports: tested); not for work that itself
 *   queues next-tick callbacks, macrotasks, timers or I/O. About 5 to 10 times cheaper per timer.
 *   Every {@link STEPS_PER_MACROTASK} timers, and before a stall is reported, it settles with a
 *   macrotask turn instead. Where `process.nextTick` does not exist it settles like `macrotask`.
 */
export type VirtualClockSettle = 'macrotask' | 'microtasks';

/** Options of a {@link VirtualClock}. */
export interface VirtualClockOptions {
  /** Virtual time at the start (default 0). */
  startMs?: number;
  /** Default `macrotask`. */
  settle?: VirtualClockSettle;
}

/** Thrown by {@link VirtualClock.run} when the work waits for something no timer will ever bring. */
export class VirtualClockStalledError extends Error {
  override readonly name = 'VirtualClockStalledError';
}

const ONCE = { once: true } as const;
const RESOLVED = Promise.resolve();

/** A {@link Clock} whose time advances only inside {@link VirtualClock.run}, timer by timer. */
export class VirtualClock implements Clock {
  private current: number;
  /** Sorted by (due, order). */
  private readonly timers: Timer[] = [];
  private registered = 0;
  private running = false;
  /** Settle by draining the microtask queue (a next-tick callback) rather than a macrotask turn. */
  private readonly byTicks: boolean;

  /** Give the start time alone (as before), or {@link VirtualClockOptions}. */
  constructor(options: number | VirtualClockOptions = 0) {
    const { startMs = 0, settle = 'macrotask' } = typeof options === 'number' ? { startMs: options } : options;
    if (settle !== 'macrotask' && settle !== 'microtasks') throw new RangeError(`settle must be macrotask or microtasks, got ${settle}`);
    this.current = startMs;
    this.byTicks = settle === 'microtasks' && typeof scheduleTick === 'function';
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
      const timer = new Timer(this.current + delay, this.registered++, resolve);
      if (signal) {
        const onAbort = (): void => {
          this.remove(timer);
          reject(signal.reason);
        };
        signal.addEventListener('abort', onAbort, ONCE);
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
    try {
      await this.drive(work);
    } finally {
      this.running = false;
    }
    return work;
  }

  /**
   * The run loop, as callbacks rather than an async loop (no promise per step): each step runs once
   * the work has settled (a next-tick callback or a macrotask turn, see {@link VirtualClockSettle}),
   * fires the earliest timer and schedules the next step.
   */
  private drive(work: Promise<unknown>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const done = (): void => {
        settled = true;
      };
      work.then(done, done);
      let idleTurns = 0;
      let steps = 0;
      const step = (): void => {
        try {
          if (settled) {
            resolve();
            return;
          }
          const timer = this.timers.shift();
          if (!timer) {
            if (++idleTurns > IDLE_TURNS) {
              reject(new VirtualClockStalledError(`the work is still pending at ${this.current} ms but no timer is left`));
              return;
            }
            scheduleMacrotask(step);
            return;
          }
          idleTurns = 0;
          if (timer.due > this.current) this.current = timer.due;
          timer.fire();
          schedule();
        } catch (error) {
          reject(error);
        }
      };
      // Queued from a microtask, a next-tick callback runs once the microtask queue is empty; queued
      // from a next-tick callback or a macrotask it could run before the pending microtasks. So the
      // step's tick is queued by a microtask of its own (queued after the fired timer's reactions).
      const queueTick = (): void => (scheduleTick as (callback: () => void) => void)(step);
      const schedule = (): void => {
        if (this.byTicks && ++steps % STEPS_PER_MACROTASK !== 0) void RESOLVED.then(queueTick);
        else scheduleMacrotask(step);
      };
      schedule();
    });
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
