/*
 * Which request of a span file to show: every `dsi.generate` span is one generation request.
 */
import { DsiAttributes, DsiSpans, type SpanRecord } from '@dsi/telemetry';
import { TraceInputError } from './errors';
import { stringAttribute, unixNanos } from './records';

/** Which request of a span file to show; neither: the `dsi.generate` span that ended last. */
export interface TraceSelection {
  /** A trace id, or an unambiguous prefix of one (case-insensitive). */
  traceId?: string;
  /** A `dsi.request_id`. */
  requestId?: string;
}

/** A `dsi.generate` span of a span file: one line of a listing, or the candidates of a selection. */
export interface RequestInfo {
  traceId: string;
  spanId: string;
  requestId: string | null;
  mode: string | null;
  endUnixNano: string;
}

/** Every `dsi.generate` span of the file, oldest end first. */
export function listRequests(spans: readonly SpanRecord[]): RequestInfo[] {
  return spans
    .map((span, index) => ({ span, index }))
    .filter(({ span }) => span.name === DsiSpans.GENERATE)
    .sort((x, y) => {
      const a = unixNanos(x.span.endTimeUnixNano, `span ${x.span.spanId}`);
      const b = unixNanos(y.span.endTimeUnixNano, `span ${y.span.spanId}`);
      return a < b ? -1 : a > b ? 1 : x.index - y.index;
    })
    .map(({ span }) => ({
      traceId: span.traceId,
      spanId: span.spanId,
      requestId: stringAttribute(span.attributes, DsiAttributes.REQUEST_ID) ?? null,
      mode: stringAttribute(span.attributes, DsiAttributes.MODE) ?? null,
      endUnixNano: span.endTimeUnixNano,
    }));
}

function describeAvailable(requests: readonly RequestInfo[], max = 5): string {
  const recent = [...requests].reverse();
  const shown = recent.slice(0, max).map((r) => {
    const details = [r.requestId ? `request ${r.requestId}` : '', r.mode ?? ''].filter(Boolean).join(', ');
    return details ? `${r.traceId} (${details})` : r.traceId;
  });
  const more = recent.length > max ? ` and ${recent.length - max} more` : '';
  return `${shown.join(', ')}${more}`;
}

/**
 * The `dsi.generate` span to show: by trace id (or unique prefix) and/or request id, else the one that
 * ended last. Throws {@link TraceInputError} if the spans hold no request or none matches (listing a few there are);
 * `source` names the spans in that message (a file name).
 */
export function selectRequest(spans: readonly SpanRecord[], selection: TraceSelection = {}, source = 'the span file'): SpanRecord {
  const requests = listRequests(spans);
  if (requests.length === 0) {
    throw new TraceInputError(
      `${source} has no ${DsiSpans.GENERATE} span (${spans.length} spans read): ` +
        'trace a request through the orchestrator with DSI_TRACE_FILE set',
    );
  }
  let candidates = requests;
  if (selection.traceId !== undefined) {
    const wanted = selection.traceId.trim().toLowerCase();
    if (wanted === '') throw new TraceInputError('the trace id to select is empty');
    const exact = candidates.filter((r) => r.traceId.toLowerCase() === wanted);
    const matches = exact.length > 0 ? exact : candidates.filter((r) => r.traceId.toLowerCase().startsWith(wanted));
    const traces = new Set(matches.map((r) => r.traceId));
    if (traces.size === 0) {
      throw new TraceInputError(`no ${DsiSpans.GENERATE} span with trace id ${selection.traceId} in ${source}; available: ${describeAvailable(requests)}`);
    }
    if (traces.size > 1) {
      throw new TraceInputError(`trace id prefix ${selection.traceId} is ambiguous in ${source}: ${[...traces].slice(0, 5).join(', ')}`);
    }
    candidates = matches;
  }
  if (selection.requestId !== undefined) {
    const matches = candidates.filter((r) => r.requestId === selection.requestId);
    if (matches.length === 0) {
      throw new TraceInputError(`no ${DsiSpans.GENERATE} span with request id ${selection.requestId} in ${source}; available: ${describeAvailable(candidates)}`);
    }
    candidates = matches;
  }
  const chosen = candidates[candidates.length - 1];
  const span = spans.find((s) => s.spanId === chosen.spanId && s.traceId === chosen.traceId && s.name === DsiSpans.GENERATE);
  if (!span) throw new Error(`internal: span ${chosen.spanId} vanished`);
  return span;
}
