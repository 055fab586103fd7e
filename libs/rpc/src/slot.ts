import { unavailable } from './errors';

/**
 * Holds what a service loads after it has bound (a model, a tokenizer), so the server can answer
 * health (NOT_SERVING) while it loads; a call that needs it before then gets UNAVAILABLE. It knows
 * nothing of what it holds.
 */
export class LoadingSlot<T> {
  private value?: T;

  /** @param what names the value in the UNAVAILABLE message, e.g. `the model`. */
  constructor(private readonly what = 'the service') {}

  /** A slot that already holds `value` (for tests and in-process servers that load up front). */
  static of<T>(value: T, what?: string): LoadingSlot<T> {
    const slot = new LoadingSlot<T>(what);
    slot.set(value);
    return slot;
  }

  /** Fills the slot once loading has finished; calls succeed from then on. */
  set(value: T): void {
    this.value = value;
  }

  /** The value for a call; throws UNAVAILABLE (retry when health reports SERVING) while it is loading. */
  get(): T {
    if (this.value === undefined) throw unavailable(`${this.what} is still loading; retry when health reports SERVING`);
    return this.value;
  }

  /** The value if loaded, without throwing: for shutdown, which closes only what was loaded. */
  peek(): T | undefined {
    return this.value;
  }
}
