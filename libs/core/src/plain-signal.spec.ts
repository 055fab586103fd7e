import { PlainAbortController } from './plain-signal';

describe('a plain abort controller (for ports that declare plainSignals)', () => {
  it('behaves as an AbortController for what such a port uses: state, reason, listeners once and in order', () => {
    for (const make of [() => new AbortController(), () => PlainAbortController.create()]) {
      const controller = make();
      const { signal } = controller;
      const calls: string[] = [];
      const first = () => calls.push('first');
      const removed = () => calls.push('removed');
      signal.addEventListener('abort', first, { once: true });
      signal.addEventListener('abort', first); // the same listener twice counts once
      signal.addEventListener('abort', removed);
      signal.addEventListener('abort', () => calls.push('second'));
      signal.removeEventListener('abort', removed);
      expect(signal.aborted).toBe(false);
      expect(() => signal.throwIfAborted()).not.toThrow();
      const reason = new Error('preempted');
      controller.abort(reason);
      controller.abort(new Error('again')); // a second abort changes nothing
      signal.addEventListener('abort', () => calls.push('late')); // added after the abort: never runs
      expect(calls).toEqual(['first', 'second']);
      expect(signal.aborted).toBe(true);
      expect(signal.reason).toBe(reason);
      expect(() => signal.throwIfAborted()).toThrow(reason);
    }
  });

  it('gives an AbortError DOMException when aborted without a reason', () => {
    const controller = PlainAbortController.create();
    controller.abort();
    expect(controller.signal.reason).toBeInstanceOf(DOMException);
    expect((controller.signal.reason as DOMException).name).toBe('AbortError');
  });
});
