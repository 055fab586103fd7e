/*
 * The timeline of one request: lanes for the drafter (`dsi.draft` spans) and each target replica
 * (`dsi.verify` spans by `dsi.replica`), the model forwards (`dsi.forward` spans of the drafter and
 * target processes) inside the calls they served, preemptions (`dsi.preemption` events) and the
 * verified-token frontier (`dsi.commit` events). Pure: span records in, a model out.
 */
import { DsiAttributes, DsiEvents, DsiSpans, type SpanRecord } from '@dsi/telemetry';
import { numberAttribute, stringAttribute, unixNanos } from './records';
import { selectRequest, type TraceSelection } from './select';
import { summarize, type TraceSummary } from './summary';

/** A time interval in milliseconds since the request started. */
export interface TimelineInterval {
  startMs: number;
  endMs: number;
}

/** One `dsi.draft` or `dsi.verify` span as a bar. */
export interface TimelineBar extends TimelineInterval {
  spanId: string;
  kind: 'draft' | 'verify';
  /** verify: committed | rejected | cancelled | failed; draft: used | stale | cancelled | failed; `unknown` if unset. */
  outcome: string;
  epoch?: number;
  /** verify: block index, first position, drafts in the block, drafts accepted. */
  blockIndex?: number;
  blockStart?: number;
  blockSize?: number;
  accepted?: number;
  /** draft: tokens drafted and the prefix they extend. */
  tokens?: number;
  prefixLength?: number;
  /** The model forwards (`dsi.forward` spans in the drafter or target process) that served this call. */
  compute: TimelineInterval[];
  tokensComputed: number;
  tokensReused: number;
}

/** One row of the timeline: the drafter, or one target replica. */
export interface TimelineLane {
  id: string;
  kind: 'drafter' | 'target';
  /** "drafter" or "target 127.0.0.1:50061". */
  label: string;
  replica?: string;
  bars: TimelineBar[];
  /** Time with at least one call in flight (union of the bars). */
  busyMs: number;
  /** busyMs / wall time. */
  utilisation: number;
}

/** A preemption (`dsi.preemption` event): a rejection that cancelled in-flight work, drawn across every lane. */
export interface TimelinePreemption {
  timeMs: number;
  epoch?: number;
  position?: number;
}

/** A step of the verified-token frontier: after a `dsi.commit` event, the verified tokens (prompt + output). */
export interface TimelineFrontierPoint {
  timeMs: number;
  verifiedLength: number;
}

/** One request of a span file, ready to draw. */
export interface TimelineModel {
  traceId: string;
  /** The dsi.generate span. */
  spanId: string;
  service: string | null;
  requestId: string | null;
  mode: string | null;
  lookahead: number | null;
  tokens: number | null;
  finishReason: string | null;
  startUnixNano: string;
  wallMs: number;
  /** Right end of the time axis: the wall time, or later if a span outlived the request. */
  endMs: number;
  lanes: TimelineLane[];
  preemptions: TimelinePreemption[];
  /** Verified tokens over time: the first point is the start (time 0), then one per commit. */
  frontier: TimelineFrontierPoint[];
  summary: TraceSummary;
}

/** Spans below `root` in its trace (children, grandchildren, ..., across processes), root excluded. */
function descendants(root: SpanRecord, children: Map<string, SpanRecord[]>): SpanRecord[] {
  const out: SpanRecord[] = [];
  const seen = new Set<string>([root.spanId]);
  const queue = [root.spanId];
  while (queue.length > 0) {
    const id = queue.shift() as string;
    for (const child of children.get(id) ?? []) {
      if (seen.has(child.spanId)) continue;
      seen.add(child.spanId);
      out.push(child);
      queue.push(child.spanId);
    }
  }
  return out;
}

/** Length of the union of intervals. */
export function unionMs(intervals: readonly TimelineInterval[]): number {
  const sorted = intervals.filter((i) => i.endMs > i.startMs).sort((a, b) => a.startMs - b.startMs);
  let total = 0;
  let start = -Infinity;
  let end = -Infinity;
  for (const i of sorted) {
    if (i.startMs > end) {
      if (end > start) total += end - start;
      start = i.startMs;
      end = i.endMs;
    } else if (i.endMs > end) {
      end = i.endMs;
    }
  }
  if (end > start) total += end - start;
  return total;
}

function compareAddresses(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

/** Builds the timeline of one request (see `selectRequest` for the choice). */
export function buildTimeline(spans: readonly SpanRecord[], selection: TraceSelection = {}, source?: string): TimelineModel {
  const generate = selectRequest(spans, selection, source);
  const start = unixNanos(generate.startTimeUnixNano, `span ${generate.spanId}`);
  const rel = (time: string, what: string) => Number(unixNanos(time, what) - start) / 1e6;
  const wallMs = Math.max(0, rel(generate.endTimeUnixNano, `span ${generate.spanId}`));

  const children = new Map<string, SpanRecord[]>();
  const seen = new Set<string>();
  for (const span of spans) {
    if (span.traceId !== generate.traceId || !span.parentSpanId || seen.has(span.spanId)) continue;
    seen.add(span.spanId);
    const list = children.get(span.parentSpanId);
    if (list) list.push(span);
    else children.set(span.parentSpanId, [span]);
  }
  const below = descendants(generate, children);
  // A nested dsi.generate (another request in the same trace) is not ours: cut its subtree.
  const foreign = new Set<string>();
  for (const span of below) {
    if (span.name === DsiSpans.GENERATE) for (const d of [span, ...descendants(span, children)]) foreign.add(d.spanId);
  }
  const own = below.filter((s) => !foreign.has(s.spanId));

  const toBar = (span: SpanRecord, kind: 'draft' | 'verify'): TimelineBar => {
    const a = span.attributes;
    const what = `span ${span.spanId}`;
    const forwards = descendants(span, children).filter((s) => s.name === DsiSpans.FORWARD);
    const outcome = stringAttribute(a, DsiAttributes.OUTCOME) ?? (span.status?.code === 'ERROR' ? 'failed' : 'unknown');
    const bar: TimelineBar = {
      spanId: span.spanId,
      kind,
      outcome,
      startMs: rel(span.startTimeUnixNano, what),
      endMs: rel(span.endTimeUnixNano, what),
      epoch: numberAttribute(a, DsiAttributes.EPOCH),
      compute: forwards
        .map((f) => ({ startMs: rel(f.startTimeUnixNano, `span ${f.spanId}`), endMs: rel(f.endTimeUnixNano, `span ${f.spanId}`) }))
        .sort((x, y) => x.startMs - y.startMs),
      tokensComputed: forwards.reduce((sum, f) => sum + (numberAttribute(f.attributes, DsiAttributes.TOKENS_COMPUTED) ?? 0), 0),
      tokensReused: forwards.reduce((sum, f) => sum + (numberAttribute(f.attributes, DsiAttributes.TOKENS_REUSED) ?? 0), 0),
    };
    if (kind === 'verify') {
      bar.blockIndex = numberAttribute(a, DsiAttributes.BLOCK_INDEX);
      bar.blockStart = numberAttribute(a, DsiAttributes.BLOCK_START);
      bar.blockSize = numberAttribute(a, DsiAttributes.BLOCK_SIZE);
      bar.accepted = numberAttribute(a, DsiAttributes.ACCEPTED);
    } else {
      bar.tokens = numberAttribute(a, DsiAttributes.TOKENS);
      bar.prefixLength = numberAttribute(a, DsiAttributes.PREFIX_LENGTH);
    }
    return bar;
  };

  const byStart = (x: TimelineBar, y: TimelineBar) => x.startMs - y.startMs || x.endMs - y.endMs;
  const draftBars = own.filter((s) => s.name === DsiSpans.DRAFT).map((s) => toBar(s, 'draft')).sort(byStart);
  const replicas = new Map<string, TimelineBar[]>();
  for (const span of own.filter((s) => s.name === DsiSpans.VERIFY)) {
    const replica = stringAttribute(span.attributes, DsiAttributes.REPLICA) ?? '?';
    const list = replicas.get(replica) ?? [];
    list.push(toBar(span, 'verify'));
    replicas.set(replica, list);
  }

  const lane = (id: string, kind: 'drafter' | 'target', label: string, bars: TimelineBar[], replica?: string): TimelineLane => {
    const busyMs = unionMs(bars);
    const result: TimelineLane = { id, kind, label, bars, busyMs, utilisation: wallMs > 0 ? busyMs / wallMs : 0 };
    if (replica !== undefined) result.replica = replica;
    return result;
  };
  const lanes: TimelineLane[] = [];
  if (draftBars.length > 0) lanes.push(lane('drafter', 'drafter', 'drafter', draftBars));
  for (const replica of [...replicas.keys()].sort(compareAddresses)) {
    lanes.push(lane(`target:${replica}`, 'target', `target ${replica}`, (replicas.get(replica) ?? []).sort(byStart), replica));
  }

  const events = [...(generate.events ?? [])];
  const preemptions: TimelinePreemption[] = events
    .filter((e) => e.name === DsiEvents.PREEMPTION)
    .map((e) => ({ timeMs: rel(e.timeUnixNano, `event ${e.name}`), epoch: numberAttribute(e.attributes, DsiAttributes.EPOCH), position: numberAttribute(e.attributes, DsiAttributes.POSITION) }))
    .sort((x, y) => x.timeMs - y.timeMs);
  const commits = events
    .filter((e) => e.name === DsiEvents.COMMIT)
    .map((e) => ({ timeMs: rel(e.timeUnixNano, `event ${e.name}`), tokens: numberAttribute(e.attributes, DsiAttributes.TOKENS), verified: numberAttribute(e.attributes, DsiAttributes.VERIFIED_LENGTH) }))
    .sort((x, y) => x.timeMs - y.timeMs);
  const first = commits[0];
  const initial = first && first.verified !== undefined && first.tokens !== undefined ? Math.max(0, first.verified - first.tokens) : 0;
  const frontier: TimelineFrontierPoint[] = [{ timeMs: 0, verifiedLength: initial }];
  let verified = initial;
  for (const c of commits) {
    verified = c.verified ?? verified + (c.tokens ?? 0);
    frontier.push({ timeMs: c.timeMs, verifiedLength: verified });
  }

  const g = generate.attributes;
  const committedTokens = commits.reduce((sum, c) => sum + (c.tokens ?? 0), 0);
  const tokens = numberAttribute(g, DsiAttributes.TOKENS) ?? (commits.length > 0 ? committedTokens : null);
  const allBars = lanes.flatMap((l) => l.bars);
  const endMs = Math.max(
    wallMs,
    ...allBars.map((b) => b.endMs),
    ...frontier.map((p) => p.timeMs),
    ...preemptions.map((p) => p.timeMs),
  );

  const model: Omit<TimelineModel, 'summary'> = {
    traceId: generate.traceId,
    spanId: generate.spanId,
    service: stringAttribute(generate.resource, 'service.name') ?? null,
    requestId: stringAttribute(g, DsiAttributes.REQUEST_ID) ?? null,
    mode: stringAttribute(g, DsiAttributes.MODE) ?? null,
    lookahead: numberAttribute(g, DsiAttributes.LOOKAHEAD) ?? null,
    tokens,
    finishReason: stringAttribute(g, DsiAttributes.FINISH_REASON) ?? null,
    startUnixNano: generate.startTimeUnixNano,
    wallMs,
    endMs,
    lanes,
    preemptions,
    frontier,
  };
  return { ...model, summary: summarize(model) };
}
