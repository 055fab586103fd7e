/*
 * The timeline as a standalone SVG: one lane per drafter and target replica with a bar per call,
 * coloured by outcome; model forwards as a dark stripe inside the bar they served; preemptions as
 * dashed red lines across every lane; the verified-token frontier as a step line below. Hover a bar
 * for its details (`<title>` tooltips).
 */
import { coord, escapeXml, niceStep, svgOpenTag, textWidth, tickLabel, tickValues, truncate } from '@dsi/svg';
import { ms, pct } from './format';
import { unionMs, type TimelineBar, type TimelineLane, type TimelineModel } from './model';

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
  for (const t of tickValues(0, span, step)) {
    const xt = coord(x(t));
    grid.push(`<line x1="${xt}" y1="${top}" x2="${xt}" y2="${plotBottom}" stroke="#e9ecef"/>`);
    ticks.push(
      `<line x1="${xt}" y1="${plotBottom}" x2="${xt}" y2="${plotBottom + 5}" stroke="#495057"/>`,
      `<text x="${xt}" y="${plotBottom + 18}" font-size="11" text-anchor="middle" fill="#495057">${tickLabel(t, step)}</text>`,
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
        `<rect class="bar" data-kind="${bar.kind}" data-outcome="${escapeXml(bar.outcome)}" x="${coord(bx)}" y="${yBar}" width="${coord(bw)}" height="${barH}" rx="2" fill="${style.fill}" stroke="#fff" stroke-width="0.75"/>`,
      ];
      for (const c of bar.compute) {
        const cs = Math.max(bar.startMs, c.startMs);
        const ce = Math.min(bar.endMs, c.endMs);
        if (ce <= cs) continue;
        hasCompute = true;
        parts.push(`<rect class="compute" x="${coord(x(cs))}" y="${yBar + barH - 4}" width="${coord(Math.max(0.5, x(ce) - x(cs)))}" height="3" fill="${TIMELINE_COLOURS.compute}" fill-opacity="0.45"/>`);
      }
      const fontSize = 10;
      const label = barLabels(bar).find((l) => textWidth(l, fontSize) + 6 <= bw);
      if (label) {
        parts.push(`<text x="${coord(bx + bw / 2)}" y="${yBar + barH / 2 + 3}" font-size="${fontSize}" text-anchor="middle" fill="${style.text}">${escapeXml(label)}</text>`);
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
  for (const v of tickValues(yMin, yMax, yStep)) {
    const yv = coord(fy(v));
    out.push(
      `<line x1="${left}" y1="${yv}" x2="${left + plotW}" y2="${yv}" stroke="#f1f3f5"/>`,
      `<line x1="${left + plotW}" y1="${yv}" x2="${left + plotW + 5}" y2="${yv}" stroke="#495057"/>`,
      `<text x="${left + plotW + 8}" y="${Number(yv) + 4}" font-size="11" fill="#495057">${tickLabel(v, yStep)}</text>`,
    );
  }
  const rightAxisX = left + plotW + 58;
  const rightAxisY = frontierTop + frontierH / 2;
  out.push(`<text x="${rightAxisX}" y="${rightAxisY}" font-size="11" text-anchor="middle" fill="#495057" transform="rotate(90 ${rightAxisX} ${rightAxisY})">verified tokens</text>`);
  const path: string[] = [`M${coord(x(0))},${coord(fy(f[0].verifiedLength))}`];
  for (const p of f.slice(1)) path.push(`H${coord(x(p.timeMs))}`, `V${coord(fy(p.verifiedLength))}`);
  path.push(`H${coord(x(model.endMs))}`);
  out.push(`<path class="frontier" d="${path.join(' ')}" fill="none" stroke="${TIMELINE_COLOURS.frontier}" stroke-width="1.75"/>`);
  for (const p of f.slice(1)) {
    out.push(
      `<circle class="commit" cx="${coord(x(p.timeMs))}" cy="${coord(fy(p.verifiedLength))}" r="2.5" fill="${TIMELINE_COLOURS.frontier}"><title>${escapeXml(`commit at ${ms(p.timeMs)} ms: ${p.verifiedLength} verified tokens`)}</title></circle>`,
    );
  }
  out.push(`</g>`);

  // Preemptions: dashed red lines across every lane and the frontier, labelled above when room.
  let lastLabelEnd = -Infinity;
  for (const p of model.preemptions) {
    const px = coord(x(p.timeMs));
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
    const ex = coord(x(model.wallMs));
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
      svgOpenTag(width, height),
      ...defs,
      `<rect width="100%" height="100%" fill="#fff"/>`,
      ...out.filter((line) => line !== ''),
      `</svg>`,
    ].join('\n') + '\n'
  );
}
