import { type Context, context, type ContextManager, propagation, ROOT_CONTEXT, type TextMapGetter } from '@opentelemetry/api';

/**
 * The context manager of a process that passes trace context through by hand: `context.with(ctx, fn)`
 * makes `ctx` active while `fn` runs synchronously, and nothing follows promises or callbacks. It
 * needs no async hooks, which the AsyncLocalStorage manager enables for every promise and native
 * callback of the process. Code that needs a context after an `await` keeps it itself (the
 * orchestrator's GenerationTrace does) and makes it active around the call that sends it on.
 */
export class SynchronousContextManager implements ContextManager {
  private current: Context = ROOT_CONTEXT;

  active(): Context {
    return this.current;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(ctx: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    const previous = this.current;
    this.current = ctx;
    try {
      return fn.call(thisArg, ...args);
    } finally {
      this.current = previous;
    }
  }

  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== 'function') return target;
    const call = target as (...args: unknown[]) => unknown;
    const run = (self: unknown, args: unknown[]): unknown => this.with(ctx, () => call.apply(self, args));
    return function (this: unknown, ...args: unknown[]): unknown {
      return run(this, args);
    } as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.current = ROOT_CONTEXT;
    return this;
  }
}

/** Whether this process passes trace context through by hand (telemetry started with no exporter). */
let byHand = false;

/** Set by the telemetry pipeline: true while a pass-through pipeline is the process's. */
export function setTracePassThrough(on: boolean): void {
  byHand = on;
}

/**
 * Whether trace context travels by hand in this process: telemetry is passing it through (nothing
 * exports), so the gRPC instrumentation is not installed and the RPC layer itself reads the incoming
 * `traceparent` ({@link incomingTraceContext}) and writes the active one on outgoing calls
 * ({@link outgoingTraceHeaders}).
 */
export function tracePassesByHand(): boolean {
  return byHand;
}

/**
 * The W3C headers (`traceparent`, `tracestate`, `baggage`) to send on an outgoing call: those of the
 * active context when trace context travels by hand and one is active; otherwise undefined (the gRPC
 * instrumentation, when installed, writes them itself).
 */
export function outgoingTraceHeaders(): Record<string, string> | undefined {
  if (!byHand) return undefined;
  const active = context.active();
  if (active === ROOT_CONTEXT) return undefined;
  const carrier: Record<string, string> = {};
  propagation.inject(active, carrier);
  return Object.keys(carrier).length > 0 ? carrier : undefined;
}

/** Reads headers through a function: `get(name)` returns the first value of a header, if any. */
const headerGetter: TextMapGetter<(name: string) => string | undefined> = {
  keys: () => ['traceparent', 'tracestate', 'baggage'],
  get: (get, key) => get(key),
};

/**
 * The trace context an incoming call carries: when it travels by hand, the caller's W3C headers read
 * through `header` (a caller that sent none gives the root context); otherwise the active context,
 * which the gRPC instrumentation has made the call's server span.
 */
export function incomingTraceContext(header: (name: string) => string | undefined): Context {
  return byHand ? propagation.extract(ROOT_CONTEXT, header, headerGetter) : context.active();
}

/** Runs `fn` with `traceContext` active: a call it starts synchronously carries that context on. */
export function withTraceContext<T>(traceContext: Context, fn: () => T): T {
  return context.with(traceContext, fn);
}
