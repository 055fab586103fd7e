/*
 * `dsi trace`: one generation request of a span file as a timeline. Pure: span records in, a model,
 * an SVG, an HTML page and a summary out (the command does the file I/O).
 *
 * Lanes: one for the drafter (`dsi.draft` spans) and one per target replica (`dsi.verify` spans by
 * `dsi.replica`), bars coloured by outcome, `dsi.forward` spans of the drafter and target processes as
 * a dark stripe inside the bar they served, preemptions (`dsi.preemption` events) as dashed red lines
 * across every lane, and the verified-token frontier (`dsi.commit` events) as a step line below.
 */
import { DsiAttributes, DsiEvents, DsiSpans, type SpanRecord } from '@dsi/telemetry';
import { UsageError } from '../errors';

type Attributes = SpanRecord['attributes'];
type AttributeValue = Attributes[string];

/** Which request of a span file to show; neither: the `dsi.generate` span that ended last. */
export interface TraceSelection {
  /** A trace id, or an unambiguous prefix of one (case-insensitive). */
  traceId?: string;
  /** A `dsi.request_id`. */
  requestId?: string;
}

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

export interface TimelinePreemption {
  timeMs: number;
  epoch?: number;
  position?: number;
}

export interface TimelineFrontierPoint {
  timeMs: number;
  verifiedLength: number;
}

/** What `dsi trace` reports (terminal and `--json`). */
export interface TraceSummary {
  trace_id: string;
  request_id: string | null;
  mode: string | null;
  lookahead: number | null;
  finish_reason: string | null;
  /** Generated tokens (`dsi.tokens` on dsi.generate, else the committed ones). */
  tokens: number | null;
  wall_ms: number;
  lanes: { lane: string; kind: 'drafter' | 'target'; busy_ms: number; utilisation: number; spans: number }[];
  verifications: { total: number; committed: number; rejected: number; cancelled: number; failed: number; other: number };
  /** Target time spent on verifications that were cancelled (their results were never used). */
  wasted: { cancelled_ms: number; cancelled: number };
  drafts: { total: number; used: number; stale: number; cancelled: number; failed: number; other: number; tokens: number };
  /** Drafts accepted / drafts verified, over committed and rejected verifications. */
  acceptance: { accepted: number; verified: number; rate: number | null };
  preemptions: number;
  commits: number;
  /** Verified tokens (prompt + output) at the start and after the last commit. */
  verified_length: { start: number; end: number };
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

/** A `dsi.generate` span of a span file, for listings. */
export interface RequestInfo {
  traceId: string;
  spanId: string;
  requestId: string | null;
  mode: string | null;
  endUnixNano: string;
}

// ---------------------------------------------------------------------------------------------------
// Reading span records

function attr(attributes: Attributes | undefined, key: string): AttributeValue | undefined {
  return attributes ? attributes[key] : undefined;
}

function num(attributes: Attributes | undefined, key: string): number | undefined {
  const value = attr(attributes, key);
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value);
  return undefined;
}

function str(attributes: Attributes | undefined, key: string): string | undefined {
  const value = attr(attributes, key);
  if (value === undefined || value === null) return undefined;
  return String(value);
}

function nanos(value: string, what: string): bigint {
  try {
    return BigInt(value);
  } catch {
    throw new UsageError(`${what} has a malformed time ${JSON.stringify(value)} (expected decimal Unix nanoseconds)`);
  }
}

/** Every `dsi.generate` span of the file, oldest end first. */
export function listRequests(spans: readonly SpanRecord[]): RequestInfo[] {
  return spans
    .map((span, index) => ({ span, index }))
    .filter(({ span }) => span.name === DsiSpans.GENERATE)
    .sort((x, y) => {
      const a = nanos(x.span.endTimeUnixNano, `span ${x.span.spanId}`);
      const b = nanos(y.span.endTimeUnixNano, `span ${y.span.spanId}`);
      return a < b ? -1 : a > b ? 1 : x.index - y.index;
    })
    .map(({ span }) => ({
      traceId: span.traceId,
      spanId: span.spanId,
      requestId: str(span.attributes, DsiAttributes.REQUEST_ID) ?? null,
      mode: str(span.attributes, DsiAttributes.MODE) ?? null,
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
 * ended last. Throws `UsageError` if the spans hold no request or none matches (listing a few there are).
 */
export function selectRequest(spans: readonly SpanRecord[], selection: TraceSelection = {}, source = 'the span file'): SpanRecord {
  const requests = listRequests(spans);
  if (requests.length === 0) {
    throw new UsageError(
      `${source} has no ${DsiSpans.GENERATE} span (${spans.length} spans read): ` +
        'trace a request through the orchestrator with DSI_TRACE_FILE set',
    );
  }
  let candidates = requests;
  if (selection.traceId !== undefined) {
    const wanted = selection.traceId.trim().toLowerCase();
    if (wanted === '') throw new UsageError('--trace-id is empty');
    const exact = candidates.filter((r) => r.traceId.toLowerCase() === wanted);
    const matches = exact.length > 0 ? exact : candidates.filter((r) => r.traceId.toLowerCase().startsWith(wanted));
    const traces = new Set(matches.map((r) => r.traceId));
    if (traces.size === 0) {
      throw new UsageError(`no ${DsiSpans.GENERATE} span with trace id ${selection.traceId} in ${source}; available: ${describeAvailable(requests)}`);
    }
    if (traces.size > 1) {
      throw new UsageError(`trace id prefix ${selection.traceId} is ambiguous in ${source}: ${[...traces].slice(0, 5).join(', ')}`);
    }
    candidates = matches;
  }
  if (selection.requestId !== undefined) {
    const matches = candidates.filter((r) => r.requestId === selection.requestId);
    if (matches.length === 0) {
      throw new UsageError(`no ${DsiSpans.GENERATE} span with request id ${selection.requestId} in ${source}; available: ${describeAvailable(candidates)}`);
    }
    candidates = matches;
  }
  const chosen = candidates[candidates.length - 1];
  const span = spans.find((s) => s.spanId === chosen.spanId && s.traceId === chosen.traceId && s.name === DsiSpans.GENERATE);
  if (!span) throw new Error(`internal: span ${chosen.spanId} vanished`);
  return span;
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
  const start = nanos(generate.startTimeUnixNano, `span ${generate.spanId}`);
  const rel = (time: string, what: string) => Number(nanos(time, what) - start) / 1e6;
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
    const outcome = str(a, DsiAttributes.OUTCOME) ?? (span.status?.code === 'ERROR' ? 'failed' : 'unknown');
    const bar: TimelineBar = {
      spanId: span.spanId,
      kind,
      outcome,
      startMs: rel(span.startTimeUnixNano, what),
      endMs: rel(span.endTimeUnixNano, what),
      epoch: num(a, DsiAttributes.EPOCH),
      compute: forwards
        .map((f) => ({ startMs: rel(f.startTimeUnixNano, `span ${f.spanId}`), endMs: rel(f.endTimeUnixNano, `span ${f.spanId}`) }))
        .sort((x, y) => x.startMs - y.startMs),
      tokensComputed: forwards.reduce((sum, f) => sum + (num(f.attributes, DsiAttributes.TOKENS_COMPUTED) ?? 0), 0),
      tokensReused: forwards.reduce((sum, f) => sum + (num(f.attributes, DsiAttributes.TOKENS_REUSED) ?? 0), 0),
    };
    if (kind === 'verify') {
      bar.blockIndex = num(a, DsiAttributes.BLOCK_INDEX);
      bar.blockStart = num(a, DsiAttributes.BLOCK_START);
      bar.blockSize = num(a, DsiAttributes.BLOCK_SIZE);
      bar.accepted = num(a, DsiAttributes.ACCEPTED);
    } else {
      bar.tokens = num(a, DsiAttributes.TOKENS);
      bar.prefixLength = num(a, DsiAttributes.PREFIX_LENGTH);
    }
    return bar;
  };

  const byStart = (x: TimelineBar, y: TimelineBar) => x.startMs - y.startMs || x.endMs - y.endMs;
  const draftBars = own.filter((s) => s.name === DsiSpans.DRAFT).map((s) => toBar(s, 'draft')).sort(byStart);
  const replicas = new Map<string, TimelineBar[]>();
  for (const span of own.filter((s) => s.name === DsiSpans.VERIFY)) {
    const replica = str(span.attributes, DsiAttributes.REPLICA) ?? '?';
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
    .map((e) => ({ timeMs: rel(e.timeUnixNano, `event ${e.name}`), epoch: num(e.attributes, DsiAttributes.EPOCH), position: num(e.attributes, DsiAttributes.POSITION) }))
    .sort((x, y) => x.timeMs - y.timeMs);
  const commits = events
    .filter((e) => e.name === DsiEvents.COMMIT)
    .map((e) => ({ timeMs: rel(e.timeUnixNano, `event ${e.name}`), tokens: num(e.attributes, DsiAttributes.TOKENS), verified: num(e.attributes, DsiAttributes.VERIFIED_LENGTH) }))
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
  const tokens = num(g, DsiAttributes.TOKENS) ?? (commits.length > 0 ? committedTokens : null);
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
    service: str(generate.resource, 'service.name') ?? null,
    requestId: str(g, DsiAttributes.REQUEST_ID) ?? null,
    mode: str(g, DsiAttributes.MODE) ?? null,
    lookahead: num(g, DsiAttributes.LOOKAHEAD) ?? null,
    tokens,
    finishReason: str(g, DsiAttributes.FINISH_REASON) ?? null,
    startUnixNano: generate.startTimeUnixNano,
    wallMs,
    endMs,
    lanes,
    preemptions,
    frontier,
  };
  return { ...model, summary: summarize(model) };
}

function round(value: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

function summarize(model: Omit<TimelineModel, 'summary'>): TraceSummary {
  const bars = model.lanes.flatMap((l) => l.bars);
  const verifies = bars.filter((b) => b.kind === 'verify');
  const drafts = bars.filter((b) => b.kind === 'draft');
  const count = (list: TimelineBar[], outcome: string) => list.filter((b) => b.outcome === outcome).length;
  const cancelled = verifies.filter((b) => b.outcome === 'cancelled');
  const judged = verifies.filter((b) => b.outcome === 'committed' || b.outcome === 'rejected');
  const accepted = judged.reduce((sum, b) => sum + (b.accepted ?? 0), 0);
  const verified = judged.reduce((sum, b) => sum + (b.blockSize ?? 0), 0);
  const known = (list: TimelineBar[], outcomes: string[]) => list.filter((b) => !outcomes.includes(b.outcome)).length;
  return {
    trace_id: model.traceId,
    request_id: model.requestId,
    mode: model.mode,
    lookahead: model.lookahead,
    finish_reason: model.finishReason,
    tokens: model.tokens,
    wall_ms: round(model.wallMs),
    lanes: model.lanes.map((l) => ({ lane: l.label, kind: l.kind, busy_ms: round(l.busyMs), utilisation: round(l.utilisation, 4), spans: l.bars.length })),
    verifications: {
      total: verifies.length,
      committed: count(verifies, 'committed'),
      rejected: count(verifies, 'rejected'),
      cancelled: cancelled.length,
      failed: count(verifies, 'failed'),
      other: known(verifies, ['committed', 'rejected', 'cancelled', 'failed']),
    },
    wasted: { cancelled_ms: round(cancelled.reduce((sum, b) => sum + (b.endMs - b.startMs), 0)), cancelled: cancelled.length },
    drafts: {
      total: drafts.length,
      used: count(drafts, 'used'),
      stale: count(drafts, 'stale'),
      cancelled: count(drafts, 'cancelled'),
      failed: count(drafts, 'failed'),
      other: known(drafts, ['used', 'stale', 'cancelled', 'failed']),
      tokens: drafts.reduce((sum, b) => sum + (b.tokens ?? 0), 0),
    },
    acceptance: { accepted, verified, rate: verified > 0 ? round(accepted / verified, 4) : null },
    preemptions: model.preemptions.length,
    commits: model.frontier.length - 1,
    verified_length: { start: model.frontier[0].verifiedLength, end: model.frontier[model.frontier.length - 1].verifiedLength },
  };
}

// ---------------------------------------------------------------------------------------------------
// Terminal summary

function ms(value: number): string {
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

function pct(value: number): string {
  return `${(value * 100).toFixed(0)}%`;
}

/** The summary as a few aligned lines for the terminal. */
export function formatSummary(summary: TraceSummary): string {
  const s = summary;
  const what = [s.mode ?? 'unknown mode', s.lookahead !== null ? `k=${s.lookahead}` : ''].filter(Boolean).join(', ');
  const lines: string[] = [];
  lines.push(`trace ${s.trace_id}${s.request_id ? `, request ${s.request_id}` : ''} (${what})`);
  lines.push(
    `  ${s.tokens ?? '?'} tokens in ${ms(s.wall_ms)} ms` +
      (s.tokens && s.wall_ms > 0 ? ` (${((s.tokens * 1000) / s.wall_ms).toFixed(1)} tokens/s)` : '') +
      (s.finish_reason ? `, finish ${s.finish_reason}` : ''),
  );
  const width = Math.max(4, ...s.lanes.map((l) => l.lane.length));
  lines.push(`  ${'lane'.padEnd(width)}  ${'busy ms'.padStart(9)}  ${'util'.padStart(5)}  ${'spans'.padStart(5)}`);
  for (const l of s.lanes) {
    lines.push(`  ${l.lane.padEnd(width)}  ${ms(l.busy_ms).padStart(9)}  ${pct(l.utilisation).padStart(5)}  ${String(l.spans).padStart(5)}`);
  }
  const v = s.verifications;
  lines.push(
    `  verifications: ${v.committed} committed, ${v.rejected} rejected, ${v.cancelled} cancelled` +
      `${v.failed ? `, ${v.failed} failed` : ''}${v.other ? `, ${v.other} other` : ''}` +
      ` (wasted ${ms(s.wasted.cancelled_ms)} ms on cancelled)`,
  );
  const d = s.drafts;
  if (d.total > 0) {
    lines.push(
      `  drafts: ${d.total} calls, ${d.tokens} tokens: ${d.used} used, ${d.stale} stale, ${d.cancelled} cancelled` +
        `${d.failed ? `, ${d.failed} failed` : ''}${d.other ? `, ${d.other} other` : ''}`,
    );
  }
  const a = s.acceptance;
  lines.push(`  acceptance: ${a.accepted}/${a.verified} drafts${a.rate !== null ? ` = ${a.rate.toFixed(3)}` : ''}`);
  lines.push(`  preemptions: ${s.preemptions}; commits: ${s.commits}; verified tokens ${s.verified_length.start} -> ${s.verified_length.end}`);
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------------
// SVG

/** Fill colours of bars by outcome, and of the other marks. */
export const TIMELINE_COLOURS = {
  committed: '#2f9e44',
  rejected: '#f08c00',
  cancelled: '#adb5bd',
  failed: '#e03131',
  used: '#1c7ed6',
  stale: '#a5d8ff',
  draftCancelled: '#a5d8ff',
  unknown: '#868e96',
  preemption: '#e03131',
  frontier: '#212529',
  compute: '#000000',
} as const;

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function r1(value: number): string {
  return String(Math.round(value * 10) / 10);
}

function niceStep(range: number, target: number): number {
  if (!(range > 0)) return 1;
  const raw = range / Math.max(1, target);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * magnitude;
}

function stepLabel(value: number, step: number): string {
  const digits = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step)));
  return value.toFixed(digits);
}

interface BarStyle {
  fill: string;
  text: string;
  legend: string;
}

function barStyle(bar: TimelineBar): BarStyle {
  if (bar.kind === 'verify') {
    switch (bar.outcome) {
      case 'committed':
        return { fill: TIMELINE_COLOURS.committed, text: '#fff', legend: 'verify: committed' };
      case 'rejected':
        return { fill: TIMELINE_COLOURS.rejected, text: '#212529', legend: 'verify: rejected (mismatch)' };
      case 'cancelled':
        return { fill: 'url(#hatch-cancelled)', text: '#212529', legend: 'verify: cancelled (wasted)' };
      case 'failed':
        return { fill: TIMELINE_COLOURS.failed, text: '#fff', legend: 'verify: failed' };
      default:
        return { fill: TIMELINE_COLOURS.unknown, text: '#fff', legend: 'verify: other' };
    }
  }
  switch (bar.outcome) {
    case 'used':
      return { fill: TIMELINE_COLOURS.used, text: '#fff', legend: 'draft: used' };
    case 'stale':
      return { fill: TIMELINE_COLOURS.stale, text: '#212529', legend: 'draft: stale' };
    case 'cancelled':
      return { fill: 'url(#hatch-draft)', text: '#212529', legend: 'draft: cancelled' };
    case 'failed':
      return { fill: TIMELINE_COLOURS.failed, text: '#fff', legend: 'draft: failed' };
    default:
      return { fill: TIMELINE_COLOURS.unknown, text: '#fff', legend: 'draft: other' };
  }
}

function barLabels(bar: TimelineBar): string[] {
  if (bar.kind === 'draft') return bar.tokens !== undefined ? [`+${bar.tokens}`] : [];
  const index = bar.blockIndex !== undefined ? `#${bar.blockIndex}` : '';
  const judged = (bar.outcome === 'committed' || bar.outcome === 'rejected') && bar.blockSize !== undefined && bar.blockSize > 0;
  const ratio = judged ? `${bar.accepted ?? '?'}/${bar.blockSize}` : '';
  return [[index, ratio].filter(Boolean).join(' '), index, ratio].filter((s, i, all) => s !== '' && all.indexOf(s) === i);
}

function barTooltip(bar: TimelineBar, lane: TimelineLane): string {
  const lines: string[] = [];
  if (bar.kind === 'verify') {
    lines.push(`verify block #${bar.blockIndex ?? '?'} on ${lane.replica ?? '?'}: ${bar.outcome}`);
    if (bar.blockSize !== undefined) {
      const positions = bar.blockStart !== undefined && bar.blockSize > 0 ? `, positions ${bar.blockStart}..${bar.blockStart + bar.blockSize - 1}` : '';
      lines.push(`${bar.accepted ?? '?'} of ${bar.blockSize} drafts accepted${positions}`);
    }
  } else {
    lines.push(`draft: ${bar.outcome}`);
    lines.push(`${bar.tokens ?? '?'} tokens after a prefix of ${bar.prefixLength ?? '?'}`);
  }
  if (bar.epoch !== undefined) lines.push(`epoch ${bar.epoch}`);
  lines.push(`${ms(bar.startMs)} -> ${ms(bar.endMs)} ms (${ms(bar.endMs - bar.startMs)} ms)`);
  if (bar.compute.length > 0) {
    const computeMs = unionMs(bar.compute);
    lines.push(`model forward ${ms(computeMs)} ms in ${bar.compute.length} call(s): ${bar.tokensComputed} tokens computed, ${bar.tokensReused} reused`);
  }
  return lines.join('\n');
}

function textWidth(text: string, fontSize: number): number {
  return text.length * fontSize * 0.6;
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}\u2026`;
}

/** The timeline as a standalone SVG document (hover tooltips through `<title>`). */
export function timelineSvg(model: TimelineModel): string {
  const laneH = 40;
  const barH = 24;
  const frontierH = 130;
  // Wide enough that a typical verification bar can hold its label (drafter calls are shorter and many).
  const maxBars = Math.max(1, ...model.lanes.map((l) => (l.kind === 'target' ? l.bars.length : l.bars.length / 3)));
  const plotW = Math.round(Math.min(3600, Math.max(900, maxBars * 48)));
  const labelChars = Math.min(30, Math.max(16, ...model.lanes.map((l) => l.label.length)));
  const left = Math.round(labelChars * 7 + 24);
  const right = 80;
  const top = 104;
  const lanesH = Math.max(1, model.lanes.length) * laneH;
  const frontierTop = top + lanesH + 18;
  const plotBottom = frontierTop + frontierH;
  const width = left + plotW + right;
  const span = model.endMs > 0 ? model.endMs : 1;
  const x = (t: number) => left + (Math.max(0, Math.min(span, t)) / span) * plotW;

  const s = model.summary;
  const out: string[] = [];
  const defs = [
    '<defs>',
    `<pattern id="hatch-cancelled" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#e9ecef"/><line x1="0" y1="0" x2="0" y2="6" stroke="${TIMELINE_COLOURS.cancelled}" stroke-width="3"/></pattern>`,
    `<pattern id="hatch-draft" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#e7f5ff"/><line x1="0" y1="0" x2="0" y2="6" stroke="${TIMELINE_COLOURS.draftCancelled}" stroke-width="3"/></pattern>`,
    '</defs>',
  ];

  // Title and subtitle.
  const mode = model.mode ? model.mode.toUpperCase() : 'request';
  const titleParts = [
    `${mode}${model.lookahead !== null ? `, k=${model.lookahead}` : ''}`,
    `${model.tokens ?? '?'} tokens in ${ms(model.wallMs)} ms`,
    model.tokens && model.wallMs > 0 ? `${((model.tokens * 1000) / model.wallMs).toFixed(1)} tokens/s` : '',
  ].filter(Boolean);
  const acceptance = s.acceptance.rate !== null ? `acceptance ${s.acceptance.accepted}/${s.acceptance.verified} = ${s.acceptance.rate.toFixed(2)}` : 'no drafts verified';
  const targets = model.lanes.filter((l) => l.kind === 'target').length;
  const subtitle = [
    model.requestId ? `request ${model.requestId}` : '',
    `trace ${model.traceId}`,
    `${targets} target replica${targets === 1 ? '' : 's'}`,
    acceptance,
    `${s.preemptions} preemption${s.preemptions === 1 ? '' : 's'}`,
    `${s.wasted.cancelled} cancelled verification${s.wasted.cancelled === 1 ? '' : 's'} (${ms(s.wasted.cancelled_ms)} ms wasted)`,
    model.finishReason ? `finish: ${model.finishReason}` : '',
  ].filter(Boolean);
  out.push(`<text x="${left}" y="28" font-size="18" font-weight="bold">${escapeXml(titleParts.join(' \u00b7 '))}</text>`);
  // The subtitle wraps at the plot's width (at most two lines; the rest is in the summary).
  const subtitleLines: string[] = [];
  for (const part of subtitle) {
    const last = subtitleLines.length - 1;
    const joined = last >= 0 ? `${subtitleLines[last]} \u00b7 ${part}` : part;
    if (last >= 0 && textWidth(joined, 12) * 0.92 <= plotW) subtitleLines[last] = joined;
    else subtitleLines.push(part);
  }
  subtitleLines.slice(0, 2).forEach((line, i) => {
    out.push(`<text x="${left}" y="${48 + i * 16}" font-size="12" fill="#495057">${escapeXml(line)}</text>`);
  });

  // Time grid (through the lanes and the frontier panel) and x axis.
  const step = niceStep(span, Math.max(4, Math.round(plotW / 110)));
  const grid: string[] = [];
  const ticks: string[] = [];
  for (let t = 0; t <= span + step * 1e-9; t += step) {
    const xt = r1(x(t));
    grid.push(`<line x1="${xt}" y1="${top}" x2="${xt}" y2="${plotBottom}" stroke="#e9ecef"/>`);
    ticks.push(
      `<line x1="${xt}" y1="${plotBottom}" x2="${xt}" y2="${plotBottom + 5}" stroke="#495057"/>`,
      `<text x="${xt}" y="${plotBottom + 18}" font-size="11" text-anchor="middle" fill="#495057">${stepLabel(t, step)}</text>`,
    );
  }
  out.push(`<g class="grid">`, ...grid, `</g>`);

  // Lanes.
  const legend = new Map<string, string>();
  let hasCompute = false;
  model.lanes.forEach((lane, i) => {
    const y0 = top + i * laneH;
    const yBar = y0 + (laneH - barH) / 2;
    out.push(
      `<g class="lane" data-lane="${escapeXml(lane.id)}">`,
      i % 2 === 0 ? `<rect x="${left}" y="${y0}" width="${plotW}" height="${laneH}" fill="#f8f9fa" fill-opacity="0.6"/>` : '',
      `<text class="lane-label" x="${left - 10}" y="${y0 + laneH / 2 - 2}" font-size="12" text-anchor="end">${escapeXml(truncate(lane.label, labelChars))}<title>${escapeXml(lane.label)}</title></text>`,
      `<text x="${left - 10}" y="${y0 + laneH / 2 + 12}" font-size="10" text-anchor="end" fill="#868e96">busy ${ms(lane.busyMs)} ms (${pct(lane.utilisation)})</text>`,
    );
    for (const bar of lane.bars) {
      const style = barStyle(bar);
      legend.set(style.legend, style.fill);
      const bx = x(bar.startMs);
      const bw = Math.max(1, x(bar.endMs) - bx);
      const parts: string[] = [
        `<g class="span">`,
        `<title>${escapeXml(barTooltip(bar, lane))}</title>`,
        `<rect class="bar" data-kind="${bar.kind}" data-outcome="${escapeXml(bar.outcome)}" x="${r1(bx)}" y="${yBar}" width="${r1(bw)}" height="${barH}" rx="2" fill="${style.fill}" stroke="#fff" stroke-width="0.75"/>`,
      ];
      for (const c of bar.compute) {
        const cs = Math.max(bar.startMs, c.startMs);
        const ce = Math.min(bar.endMs, c.endMs);
        if (ce <= cs) continue;
        hasCompute = true;
        parts.push(`<rect class="compute" x="${r1(x(cs))}" y="${yBar + barH - 4}" width="${r1(Math.max(0.5, x(ce) - x(cs)))}" height="3" fill="${TIMELINE_COLOURS.compute}" fill-opacity="0.45"/>`);
      }
      const fontSize = 10;
      const label = barLabels(bar).find((l) => textWidth(l, fontSize) + 6 <= bw);
      if (label) {
        parts.push(`<text x="${r1(bx + bw / 2)}" y="${yBar + barH / 2 + 3}" font-size="${fontSize}" text-anchor="middle" fill="${style.text}">${escapeXml(label)}</text>`);
      }
      parts.push(`</g>`);
      out.push(...parts);
    }
    out.push(`</g>`);
  });
  if (model.lanes.length === 0) {
    out.push(`<text x="${left + plotW / 2}" y="${top + laneH / 2 + 4}" font-size="12" text-anchor="middle" fill="#868e96">no dsi.draft or dsi.verify spans in this request</text>`);
  }
  out.push(`<rect x="${left}" y="${top}" width="${plotW}" height="${lanesH}" fill="none" stroke="#ced4da"/>`);

  // Verified-token frontier: a step line with its own y axis on the right.
  const f = model.frontier;
  const yMinRaw = f[0].verifiedLength;
  const yMaxRaw = Math.max(...f.map((p) => p.verifiedLength));
  const yStep = Math.max(1, niceStep(Math.max(1, yMaxRaw - yMinRaw), 5));
  const yMin = Math.floor(yMinRaw / yStep) * yStep;
  const yMax = Math.max(yMin + yStep, Math.ceil(yMaxRaw / yStep) * yStep);
  const fy = (v: number) => frontierTop + frontierH - ((v - yMin) / (yMax - yMin)) * (frontierH - 8);
  out.push(
    `<g class="frontier-panel">`,
    `<rect x="${left}" y="${frontierTop}" width="${plotW}" height="${frontierH}" fill="none" stroke="#ced4da"/>`,
    `<text x="${left - 10}" y="${frontierTop + frontierH / 2 - 2}" font-size="12" text-anchor="end">verified tokens</text>`,
    `<text x="${left - 10}" y="${frontierTop + frontierH / 2 + 12}" font-size="10" text-anchor="end" fill="#868e96">prompt + output, ${f[0].verifiedLength} \u2192 ${f[f.length - 1].verifiedLength}</text>`,
  );
  for (let v = yMin; v <= yMax + yStep * 1e-9; v += yStep) {
    const yv = r1(fy(v));
    out.push(
      `<line x1="${left}" y1="${yv}" x2="${left + plotW}" y2="${yv}" stroke="#f1f3f5"/>`,
      `<line x1="${left + plotW}" y1="${yv}" x2="${left + plotW + 5}" y2="${yv}" stroke="#495057"/>`,
      `<text x="${left + plotW + 8}" y="${Number(yv) + 4}" font-size="11" fill="#495057">${stepLabel(v, yStep)}</text>`,
    );
  }
  const rightAxisX = left + plotW + 58;
  const rightAxisY = frontierTop + frontierH / 2;
  out.push(`<text x="${rightAxisX}" y="${rightAxisY}" font-size="11" text-anchor="middle" fill="#495057" transform="rotate(90 ${rightAxisX} ${rightAxisY})">verified tokens</text>`);
  const path: string[] = [`M${r1(x(0))},${r1(fy(f[0].verifiedLength))}`];
  for (const p of f.slice(1)) path.push(`H${r1(x(p.timeMs))}`, `V${r1(fy(p.verifiedLength))}`);
  path.push(`H${r1(x(model.endMs))}`);
  out.push(`<path class="frontier" d="${path.join(' ')}" fill="none" stroke="${TIMELINE_COLOURS.frontier}" stroke-width="1.75"/>`);
  for (const p of f.slice(1)) {
    out.push(
      `<circle class="commit" cx="${r1(x(p.timeMs))}" cy="${r1(fy(p.verifiedLength))}" r="2.5" fill="${TIMELINE_COLOURS.frontier}"><title>${escapeXml(`commit at ${ms(p.timeMs)} ms: ${p.verifiedLength} verified tokens`)}</title></circle>`,
    );
  }
  out.push(`</g>`);

  // Preemptions: dashed red lines across every lane and the frontier, labelled above when room.
  let lastLabelEnd = -Infinity;
  for (const p of model.preemptions) {
    const px = r1(x(p.timeMs));
    const tip = `preemption at ${ms(p.timeMs)} ms: a rejection at position ${p.position ?? '?'} cancelled in-flight work${p.epoch !== undefined ? `; epoch is now ${p.epoch}` : ''}`;
    out.push(
      `<g class="preemption-marker">`,
      `<title>${escapeXml(tip)}</title>`,
      `<line class="preemption" x1="${px}" y1="${top - 8}" x2="${px}" y2="${plotBottom}" stroke="${TIMELINE_COLOURS.preemption}" stroke-width="1.5" stroke-dasharray="5 3"/>`,
    );
    const label = p.position !== undefined ? `\u2716 @${p.position}` : '\u2716';
    const lw = textWidth(label, 10);
    if (Number(px) - lw / 2 > lastLabelEnd + 4) {
      out.push(`<text x="${px}" y="${top - 12}" font-size="10" text-anchor="middle" fill="${TIMELINE_COLOURS.preemption}">${escapeXml(label)}</text>`);
      lastLabelEnd = Number(px) + lw / 2;
    }
    out.push(`</g>`);
  }

  // x axis.
  out.push(
    `<g class="x-axis">`,
    `<line x1="${left}" y1="${plotBottom}" x2="${left + plotW}" y2="${plotBottom}" stroke="#495057"/>`,
    ...ticks,
    `<text x="${left + plotW / 2}" y="${plotBottom + 38}" font-size="12" text-anchor="middle">time since the request started (ms)</text>`,
    `</g>`,
  );
  if (model.wallMs < model.endMs) {
    const ex = r1(x(model.wallMs));
    out.push(`<line x1="${ex}" y1="${top}" x2="${ex}" y2="${plotBottom}" stroke="#495057" stroke-dasharray="2 2"><title>request end</title></line>`);
  }

  // Legend (only what the picture shows, plus the markers).
  const items: string[] = [];
  let lx = left;
  let ly = plotBottom + 62;
  const place = (w: number) => {
    if (lx + w > left + plotW && lx > left) {
      lx = left;
      ly += 20;
    }
    const at = { x: lx, y: ly };
    lx += w;
    return at;
  };
  const order = [
    'draft: used', 'draft: stale', 'draft: cancelled', 'draft: failed', 'draft: other',
    'verify: committed', 'verify: rejected (mismatch)', 'verify: cancelled (wasted)', 'verify: failed', 'verify: other',
  ];
  for (const name of order) {
    const fill = legend.get(name);
    if (fill === undefined) continue;
    const at = place(textWidth(name, 11) + 34);
    items.push(
      `<rect x="${at.x}" y="${at.y - 10}" width="18" height="12" rx="2" fill="${fill}"/>`,
      `<text x="${at.x + 24}" y="${at.y}" font-size="11">${escapeXml(name)}</text>`,
    );
  }
  if (hasCompute) {
    const name = 'model forward inside a call';
    const at = place(textWidth(name, 11) + 34);
    items.push(
      `<rect x="${at.x}" y="${at.y - 10}" width="18" height="12" rx="2" fill="#dee2e6"/>`,
      `<rect x="${at.x}" y="${at.y - 1}" width="18" height="3" fill="${TIMELINE_COLOURS.compute}" fill-opacity="0.45"/>`,
      `<text x="${at.x + 24}" y="${at.y}" font-size="11">${name}</text>`,
    );
  }
  if (model.preemptions.length > 0) {
    const name = 'preemption (\u2716 @ rejected position)';
    const at = place(textWidth(name, 11) + 34);
    items.push(
      `<line x1="${at.x + 9}" y1="${at.y - 12}" x2="${at.x + 9}" y2="${at.y + 3}" stroke="${TIMELINE_COLOURS.preemption}" stroke-width="1.5" stroke-dasharray="4 2"/>`,
      `<text x="${at.x + 24}" y="${at.y}" font-size="11">${escapeXml(name)}</text>`,
    );
  }
  {
    const name = 'verified tokens (right axis)';
    const at = place(textWidth(name, 11) + 34);
    items.push(
      `<path d="M${at.x},${at.y} H${at.x + 8} V${at.y - 8} H${at.x + 18}" fill="none" stroke="${TIMELINE_COLOURS.frontier}" stroke-width="1.75"/>`,
      `<text x="${at.x + 24}" y="${at.y}" font-size="11">${name}</text>`,
    );
  }
  {
    const name = 'bar text: #block accepted/size';
    const at = place(textWidth(name, 11) + 10);
    items.push(`<text x="${at.x}" y="${at.y}" font-size="11" fill="#495057">${name}</text>`);
  }
  out.push(`<g class="legend">`, ...items, `</g>`);

  const height = ly + 16;
  return (
    [
      `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
      ...defs,
      `<rect width="100%" height="100%" fill="#fff"/>`,
      ...out.filter((line) => line !== ''),
      `</svg>`,
    ].join('\n') + '\n'
  );
}

// ---------------------------------------------------------------------------------------------------
// HTML

/** The timeline in a small standalone HTML page: title, the SVG (hover a bar for details), the summary. */
export function timelineHtml(model: TimelineModel): string {
  const s = model.summary;
  const title = `DSI trace ${model.requestId ?? model.traceId}`;
  const row = (name: string, value: string) => `<tr><th>${escapeXml(name)}</th><td>${escapeXml(value)}</td></tr>`;
  const v = s.verifications;
  const d = s.drafts;
  const facts = [
    row('trace id', s.trace_id),
    row('request id', s.request_id ?? '-'),
    row('mode, lookahead k', `${s.mode ?? '?'}, ${s.lookahead ?? '?'}`),
    row('tokens generated', `${s.tokens ?? '?'}${s.finish_reason ? ` (finish: ${s.finish_reason})` : ''}`),
    row('wall time', `${ms(s.wall_ms)} ms`),
    row('verifications', `${v.total}: ${v.committed} committed, ${v.rejected} rejected, ${v.cancelled} cancelled, ${v.failed} failed`),
    row('wasted on cancelled verifications', `${ms(s.wasted.cancelled_ms)} ms in ${s.wasted.cancelled}`),
    row('drafts', `${d.total} calls, ${d.tokens} tokens: ${d.used} used, ${d.stale} stale, ${d.cancelled} cancelled, ${d.failed} failed`),
    row('acceptance', `${s.acceptance.accepted}/${s.acceptance.verified}${s.acceptance.rate !== null ? ` = ${s.acceptance.rate.toFixed(3)}` : ''}`),
    row('preemptions', String(s.preemptions)),
    row('verified tokens', `${s.verified_length.start} \u2192 ${s.verified_length.end} in ${s.commits} commits`),
  ];
  const lanes = s.lanes.map(
    (l) => `<tr><td>${escapeXml(l.lane)}</td><td class="n">${ms(l.busy_ms)}</td><td class="n">${pct(l.utilisation)}</td><td class="n">${l.spans}</td></tr>`,
  );
  return [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    `<title>${escapeXml(title)}</title>`,
    '<style>',
    'body { font-family: Helvetica, Arial, sans-serif; margin: 24px; color: #212529; }',
    'h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }',
    'p.note { color: #495057; font-size: 13px; margin: 0 0 12px; }',
    '.timeline { overflow-x: auto; border: 1px solid #dee2e6; }',
    'table { border-collapse: collapse; font-size: 13px; }',
    'th, td { text-align: left; padding: 3px 12px 3px 0; border-bottom: 1px solid #f1f3f5; }',
    'td.n { text-align: right; font-variant-numeric: tabular-nums; }',
    '</style>',
    '</head>',
    '<body>',
    `<h1>${escapeXml(title)}</h1>`,
    '<p class="note">Hover a bar for its block, outcome, timing and model compute; scroll sideways for long requests.</p>',
    `<div class="timeline">${timelineSvg(model).trimEnd()}</div>`,
    '<h2>Summary</h2>',
    `<table>${facts.join('')}</table>`,
    '<h2>Lanes</h2>',
    `<table><tr><th>lane</th><th>busy ms</th><th>utilisation</th><th>spans</th></tr>${lanes.join('')}</table>`,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}
