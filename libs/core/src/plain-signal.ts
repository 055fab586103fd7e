/**
 * A plain-object abort signal for ports that declare {@link SignalRecycling.plainSignals}: the
 * scheduler's simulated ports (the event mode) make thousands of calls a run, and Node's AbortSignal
 * (an EventTarget: an Event object per abort, listener bookkeeping, brand checks) was a fifth of a
 * simulation's time. Same observable behaviour for what such a port may use: `aborted`, `reason`,
 * `throwIfAborted()`, and `addEventListener`/`removeEventListener` of `abort` listeners, which run
 * synchronously, in registration order, once, inside `abort()`; one added after the abort never runs.
 */
type AbortListener = (event: { type: 'abort' }) => void;

const ABORT_EVENT = Object.freeze({ type: 'abort' as const });

class PlainAbortSignal {
  aborted = false;
  reason: unknown = undefined;
  private listeners: AbortListener[] | undefined;

  addEventListener(type: string, listener: AbortListener | null): void {
    if (type !== 'abort' || !listener || this.aborted) return;
    const listeners = (this.listeners ??= []);
    // An EventTarget ignores a listener it already holds.
    if (!listeners.includes(listener)) listeners.push(listener);
  }

  removeEventListener(type: string, listener: AbortListener | null): void {
    const listeners = this.listeners;
    if (type !== 'abort' || !listeners || !listener) return;
    const index = listeners.indexOf(listener);
    if (index >= 0) listeners.splice(index, 1);
  }

  throwIfAborted(): void {
    if (this.aborted) throw this.reason;
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason === undefined ? new DOMException('This operation was aborted', 'AbortError') : reason;
    const listeners = this.listeners;
    this.listeners = undefined;
    if (listeners) for (const listener of listeners) listener.call(this, ABORT_EVENT);
  }
}

/** An AbortController over a {@link PlainAbortSignal}, typed as the real one for the ports' signatures. */
export class PlainAbortController {
  readonly signal = new PlainAbortSignal();

  abort(reason?: unknown): void {
    this.signal.abort(reason);
  }

  /** A new controller, typed as Node's for the ports' signatures. */
  static create(): AbortController {
    return new PlainAbortController() as unknown as AbortController;
  }
}
