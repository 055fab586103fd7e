import { DsiError, resourceExhausted } from '@dsi/rpc';

/** How many generations an orchestrator runs at once and how many may wait for a turn. */
export interface AdmissionLimits {
  /**
   * Most generations running at once; read at every decision, so a default that follows the healthy
   * replicas (see {@link defaultMaxActiveRequests}) moves with them. At least 1 is used.
   */
  maxActive: number | (() => number);
  /** Most requests waiting for a turn (FIFO); one more is refused with RESOURCE_EXHAUSTED. */
  maxQueued: number;
}

/** Told after every change of the active or queued count, with the change of each (for up-down counters). */
export type AdmissionListener = (change: { active: number; queued: number }) => void;

/** The default queue bound: about a minute of 64-token requests on a small pool. */
export const DEFAULT_MAX_QUEUED_REQUESTS = 256;

/**
 * The default bound on running generations: two per healthy target replica (each replica has a lane
 * to verify while the other request's result travels back), at least 1.
 */
export function defaultMaxActiveRequests(healthyTargets: number): number {
  return Math.max(1, 2 * healthyTargets);
}

interface Waiter {
  admit: () => void;
}

/**
 * Admission of Generate requests (docs/architecture.md, "Many requests at once"): up to `maxActive`
 * run, the next `maxQueued` wait in arrival order, and beyond that a request is refused at once with
 * RESOURCE_EXHAUSTED naming the limits and their flags. A waiting request whose signal aborts (its
 * deadline passed, or the client cancelled) leaves the queue and rejects with the signal's reason
 * (DEADLINE_EXCEEDED or CANCELLED), so it never holds a place it will not use.
 */
export class Admission {
  private active = 0;
  private readonly queue: Waiter[] = [];

  constructor(
    private readonly limits: AdmissionLimits,
    private readonly listener?: AdmissionListener,
  ) {}

  /** Generations running now. */
  get activeCount(): number {
    return this.active;
  }

  /** Requests waiting for a turn now. */
  get queuedCount(): number {
    return this.queue.length;
  }

  /** The bound on running generations now. */
  get maxActive(): number {
    const { maxActive } = this.limits;
    return Math.max(1, Math.floor(typeof maxActive === 'function' ? maxActive() : maxActive));
  }

  /**
   * Resolves with the function that ends this request's turn (call it exactly once, when the generation
   * is over) once the request may run; rejects with RESOURCE_EXHAUSTED when the queue is full, and with
   * the signal's reason when it aborts while the request waits.
   */
  enter(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(DsiError.from(signal.reason));
    if (this.queue.length === 0 && this.active < this.maxActive) return Promise.resolve(this.start());
    if (this.queue.length >= this.limits.maxQueued) {
      return Promise.reject(
        resourceExhausted(
          `the orchestrator is at its limit: ${this.active} requests running (--max-active-requests ${this.maxActive}) and ` +
            `${this.queue.length} waiting (--max-queued-requests ${this.limits.maxQueued}); retry later`,
        ),
      );
    }
    return new Promise<() => void>((resolve, reject) => {
      const onAbort = (): void => {
        const at = this.queue.indexOf(waiter);
        if (at < 0) return;
        this.queue.splice(at, 1);
        this.listener?.({ active: 0, queued: -1 });
        reject(DsiError.from(signal?.reason));
      };
      const waiter: Waiter = {
        admit: () => {
          signal?.removeEventListener('abort', onAbort);
          this.listener?.({ active: 0, queued: -1 });
          resolve(this.start());
        },
      };
      this.queue.push(waiter);
      this.listener?.({ active: 0, queued: 1 });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** Admits waiting requests while there is room (call it when the bound may have grown). */
  pump(): void {
    while (this.queue.length > 0 && this.active < this.maxActive) (this.queue.shift() as Waiter).admit();
  }

  private start(): () => void {
    this.active++;
    this.listener?.({ active: 1, queued: 0 });
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.active--;
      this.listener?.({ active: -1, queued: 0 });
      this.pump();
    };
  }
}
