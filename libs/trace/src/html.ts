/*
 * The timeline in a small standalone HTML page, for a browser: the SVG and the summary as tables.
 */
import { escapeXml } from '@dsi/svg';
import { ms, pct } from './format';
import type { TimelineModel } from './model';
import { timelineSvg } from './svg';

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
