import { escapeXml, labelledIndices, labelStride, svgOpenTag } from '@dsi/svg';
import type { HeatmapSummaryRow } from './heatmap';

/** One of the paper's four Figure 1 panels: which speedup column to draw, under which title and file name. */
export interface HeatmapPanel {
  /** File-name stem, e.g. `dsi_vs_si`. */
  name: string;
  /** Heading of the panel (escaped when drawn). */
  title: string;
  column: keyof HeatmapSummaryRow;
}

/** The four panels: per (c, a), the speedup at the best lookahead of each algorithm. */
export const HEATMAP_PANELS: readonly HeatmapPanel[] = [
  { name: 'si_vs_nonsi', title: 'SI speedup over non-SI', column: 'min_speedup_si_vs_nonsi' },
  { name: 'dsi_vs_si', title: 'DSI speedup over SI', column: 'min_speedup_dsi_vs_si' },
  { name: 'dsi_vs_nonsi', title: 'DSI speedup over non-SI', column: 'min_speedup_dsi_vs_nonsi' },
  { name: 'dsi_vs_baseline', title: 'DSI speedup over min(SI, non-SI)', column: 'min_speedup_dsi_vs_baseline' },
];

// matplotlib's viridis at 11 evenly spaced stops.
const VIRIDIS = [
  [68, 1, 84], [72, 35, 116], [64, 67, 135], [52, 94, 141], [41, 120, 142], [32, 144, 140],
  [34, 167, 132], [68, 190, 112], [121, 209, 81], [189, 222, 38], [253, 231, 37],
];

function viridis(x: number): string {
  const f = Math.min(Math.max(x, 0), 1) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(f), VIRIDIS.length - 2);
  const w = f - i;
  const rgb = VIRIDIS[i].map((v, j) => Math.round(v + (VIRIDIS[i + 1][j] - v) * w));
  return `rgb(${rgb.join(',')})`;
}

/** Slowdowns (below 1) in pink, darker the slower; the rest on viridis between 1 and `max`. */
export function speedupColour(value: number, max: number): string {
  if (value < 1) {
    const depth = Math.min(1 - value, 0.5) / 0.5; // 0 at 1x, 1 at 0.5x and below
    return `rgb(${Math.round(250 - 40 * depth)},${Math.round(200 - 110 * depth)},${Math.round(215 - 70 * depth)})`;
  }
  return viridis(max > 1 ? (value - 1) / (max - 1) : 0);
}

function textColour(value: number, max: number): string {
  return value < 1 || (max > 1 && (value - 1) / (max - 1) > 0.6) ? '#222' : '#fff';
}

function label(value: number): string {
  return Number(value.toPrecision(6)).toString();
}

/**
 * Renders one panel as a standalone SVG: c on x, a on y (upwards), one square per (c, a), coloured by
 * the panel's speedup, with its value written in the square, axes and a colour bar. `subtitle` is
 * written before the fixed legend line; it and the title are escaped, so any text is safe.
 */
export function heatmapSvg(rows: readonly HeatmapSummaryRow[], panel: HeatmapPanel, subtitle = ''): string {
  const values = new Map<string, number>();
  for (const row of rows) values.set(`${row.c}/${row.a}`, row[panel.column] as number);
  const cs = [...new Set(rows.map((r) => r.c))].sort((x, y) => x - y);
  const as = [...new Set(rows.map((r) => r.a))].sort((x, y) => x - y);
  // Scale to the 98th percentile so one extreme corner does not flatten the rest; above it saturates.
  const sorted = [...values.values()].sort((x, y) => x - y);
  const top98 = sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(0.98 * sorted.length))] : 1;
  const max = Math.max(1.1, Math.ceil(top98 * 10) / 10);
  const saturated = sorted.length > 0 && sorted[sorted.length - 1] > max;
  const cell = Math.max(22, Math.min(48, Math.floor(640 / Math.max(cs.length, as.length, 1))));
  const left = 70;
  const top = 64;
  const width = left + cs.length * cell + 120;
  const height = top + as.length * cell + 70;
  const out: string[] = [];
  out.push(
    svgOpenTag(width, height),
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${left}" y="24" font-size="17" font-weight="bold">${escapeXml(panel.title)} (x)</text>`,
    `<text x="${left}" y="44" font-size="12" fill="#555">${escapeXml(subtitle)}best lookahead k per cell; pink: slower (below 1x)</text>`,
  );
  const fontSize = Math.max(7, Math.min(11, cell / 3.4));
  as.forEach((a, yi) => {
    const y = top + (as.length - 1 - yi) * cell;
    cs.forEach((c, xi) => {
      const x = left + xi * cell;
      const value = values.get(`${c}/${a}`);
      if (value === undefined) {
        out.push(`<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="#eee"><title>c=${c} a=${a}: no valid k</title></rect>`);
        return;
      }
      out.push(
        `<rect x="${x}" y="${y}" width="${cell}" height="${cell}" fill="${speedupColour(value, max)}" stroke="#fff" stroke-width="0.5"><title>c=${c} a=${a}: ${label(value)}x</title></rect>`,
        `<text x="${x + cell / 2}" y="${y + cell / 2 + fontSize / 3}" font-size="${fontSize}" text-anchor="middle" fill="${textColour(value, max)}">${value.toFixed(2)}</text>`,
      );
    });
  });
  // One stride for both axes (set by c), so the two axes are thinned alike.
  const every = labelStride(cs.length, 11);
  for (const xi of labelledIndices(cs.length, every)) {
    out.push(`<text x="${left + xi * cell + cell / 2}" y="${top + as.length * cell + 16}" font-size="11" text-anchor="middle">${label(cs[xi])}</text>`);
  }
  for (const yi of labelledIndices(as.length, every)) {
    out.push(`<text x="${left - 6}" y="${top + (as.length - 1 - yi) * cell + cell / 2 + 4}" font-size="11" text-anchor="end">${label(as[yi])}</text>`);
  }
  out.push(
    `<text x="${left + (cs.length * cell) / 2}" y="${top + as.length * cell + 40}" font-size="13" text-anchor="middle">drafter latency c (fraction of the target's)</text>`,
    `<text x="18" y="${top + (as.length * cell) / 2}" font-size="13" text-anchor="middle" transform="rotate(-90 18 ${top + (as.length * cell) / 2})">acceptance rate a</text>`,
  );
  // Colour bar: pink below 1, viridis from 1 to max.
  const barX = left + cs.length * cell + 30;
  const barH = as.length * cell;
  const steps = 40;
  for (let i = 0; i < steps; i++) {
    const v = 1 + ((max - 1) * (i + 0.5)) / steps;
    out.push(`<rect x="${barX}" y="${top + barH - ((i + 1) * barH) / steps}" width="18" height="${barH / steps + 0.5}" fill="${speedupColour(v, max)}"/>`);
  }
  out.push(
    `<text x="${barX + 24}" y="${top + 10}" font-size="11">${saturated ? '&#8805;' : ''}${label(Number(max.toFixed(2)))}x</text>`,
    `<text x="${barX + 24}" y="${top + barH}" font-size="11">1x</text>`,
    `<rect x="${barX}" y="${top + barH + 12}" width="18" height="12" fill="${speedupColour(0.75, max)}"/>`,
    `<text x="${barX + 24}" y="${top + barH + 22}" font-size="11">&lt;1x</text>`,
    `</svg>`,
  );
  return out.join('\n') + '\n';
}
