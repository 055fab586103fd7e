import { coord, escapeXml, niceStep, svgOpenTag, tickLabel, tickValues } from '@dsi/svg';
import type { Plan, PlanRow } from './plan';

const COLOURS = { nonsi: '#7f7f7f', si: '#1f77b4', dsi: '#d62728', bound: '#2ca02c', dsi_vs_si: '#d62728', dsi_vs_nonsi: '#9467bd' } as const;

interface Series {
  key: keyof typeof COLOURS;
  label: string;
  value: (row: PlanRow, plan: Plan) => number;
  dashed?: boolean;
}

/**
 * The plan as an SVG: latency per token against replicas (one line per mode, the lower bound dashed)
 * and DSI's speedup against replicas (over SI and over non-SI), the recommendation marked.
 */
export function planSvg(plan: Plan, title = ''): string {
  const width = 920;
  const height = 420;
  const panelWidth = 360;
  const top = 84;
  const plotHeight = 250;
  const rows = plan.rows;
  const out: string[] = [svgOpenTag(width, height), `<rect width="${width}" height="${height}" fill="white"/>`];
  const p = plan.pair;
  const load = plan.options.concurrency !== undefined ? `, ${plan.options.concurrency} concurrent clients` : plan.options.arrival_rate !== undefined ? `, ${plan.options.arrival_rate} requests/s` : '';
  const heading = title || `DSI plan: a=${p.a}, target ${p.target_ms} ms, drafter ${p.drafter_ms} ms per token${p.round_trip_ms ? `, round trip ${p.round_trip_ms} ms` : ''}${load}`;
  out.push(`<text x="20" y="26" font-size="14" font-weight="bold">${escapeXml(heading)}</text>`);
  const r = plan.recommendation;
  out.push(
    `<text x="20" y="46" font-size="12">${escapeXml(`recommended: ${r.replicas} replica${r.replicas === 1 ? '' : 's'}, k=${r.lookahead}: ${r.dsi_ms_per_token.toFixed(3)} ms/token, ${r.speedup_vs_si.toFixed(2)}x SI, ${r.speedup_vs_nonsi.toFixed(2)}x non-SI; lower bound ${plan.bound_ms_per_token.toFixed(3)} ms/token (${plan.options.tokens}-token generations)`)}</text>`,
  );
  const panels: Array<{ heading: string; series: Series[]; zero: boolean }> = [
    {
      heading: 'latency per token (ms)',
      zero: true,
      series: [
        { key: 'nonsi', label: 'non-SI', value: (row) => row.nonsi.ms_per_token },
        { key: 'si', label: 'SI (best k)', value: (row) => row.si.ms_per_token },
        { key: 'dsi', label: 'DSI (best k)', value: (row) => row.dsi.ms_per_token },
        { key: 'bound', label: 'lower bound', value: (_row, plan) => plan.bound_ms_per_token, dashed: true },
      ],
    },
    {
      heading: 'DSI speedup (x)',
      zero: true,
      series: [
        { key: 'dsi_vs_si', label: 'DSI vs SI', value: (row) => row.speedup_vs_si },
        { key: 'dsi_vs_nonsi', label: 'DSI vs non-SI', value: (row) => row.speedup_vs_nonsi },
      ],
    },
  ];
  panels.forEach((panel, index) => {
    const left = 80 + index * (panelWidth + 90);
    const values = panel.series.flatMap((s) => rows.map((row) => s.value(row, plan)));
    const max = Math.max(...values, 1e-9);
    const step = niceStep(max, 5);
    const yMax = Math.ceil(max / step) * step;
    const x = (i: number) => left + (rows.length === 1 ? panelWidth / 2 : (i * panelWidth) / (rows.length - 1));
    const y = (v: number) => top + plotHeight - (v / yMax) * plotHeight;
    out.push(`<g class="panel" data-figure="${escapeXml(panel.heading)}">`);
    out.push(`<text x="${left}" y="${top - 12}" font-size="13">${escapeXml(panel.heading)}</text>`);
    for (const tick of tickValues(0, yMax, step)) {
      out.push(`<line x1="${left}" y1="${coord(y(tick))}" x2="${left + panelWidth}" y2="${coord(y(tick))}" stroke="#e0e0e0"/>`);
      out.push(`<text x="${left - 6}" y="${coord(y(tick) + 4)}" font-size="11" text-anchor="end">${tickLabel(tick, step)}</text>`);
    }
    rows.forEach((row, i) => out.push(`<text x="${coord(x(i))}" y="${top + plotHeight + 18}" font-size="11" text-anchor="middle">${row.replicas}</text>`));
    out.push(`<text x="${left + panelWidth / 2}" y="${top + plotHeight + 38}" font-size="12" text-anchor="middle">target replicas</text>`);
    out.push(`<line x1="${left}" y1="${top + plotHeight}" x2="${left + panelWidth}" y2="${top + plotHeight}" stroke="black"/>`);
    out.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotHeight}" stroke="black"/>`);
    const chosen = rows.findIndex((row) => row.replicas === r.replicas);
    if (chosen >= 0) out.push(`<line class="recommended" x1="${coord(x(chosen))}" y1="${top}" x2="${coord(x(chosen))}" y2="${top + plotHeight}" stroke="#999" stroke-dasharray="2 3"/>`);
    for (const s of panel.series) {
      const points = rows.map((row, i) => `${coord(x(i))},${coord(y(s.value(row, plan)))}`);
      const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
      out.push(`<polyline class="line" data-series="${s.key}" points="${points.join(' ')}" fill="none" stroke="${COLOURS[s.key]}" stroke-width="2"${dash}/>`);
      if (!s.dashed) {
        rows.forEach((row, i) => {
          const v = s.value(row, plan);
          const k = s.key === 'si' ? ` k=${row.si.lookahead}` : s.key === 'dsi' ? ` k=${row.dsi.lookahead}` : '';
          out.push(`<circle cx="${coord(x(i))}" cy="${coord(y(v))}" r="3" fill="${COLOURS[s.key]}"><title>${escapeXml(`${s.label}, ${row.replicas} replicas${k}: ${v.toFixed(3)}`)}</title></circle>`);
        });
      }
    }
    let legendX = left;
    for (const s of panel.series) {
      const legendY = top + plotHeight + 60;
      out.push(`<line x1="${legendX}" y1="${legendY - 4}" x2="${legendX + 20}" y2="${legendY - 4}" stroke="${COLOURS[s.key]}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
      out.push(`<text x="${legendX + 25}" y="${legendY}" font-size="11">${escapeXml(s.label)}</text>`);
      legendX += 30 + s.label.length * 6.5;
    }
    out.push('</g>');
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
