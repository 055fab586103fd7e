/*
 * What a timeline says in numbers: busy time and utilisation per lane, verification and draft
 * outcomes, time wasted on cancelled verifications, acceptance, preemptions; as data (`--json`) and as
 * a few lines for the terminal.
 */
import { ms, pct } from './format';
import type { TimelineBar, TimelineModel } from './model';

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

function round(value: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** The summary of a timeline; `buildTimeline` calls it, so a model always carries its own. */
export function summarize(model: Omit<TimelineModel, 'summary'>): TraceSummary {
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
