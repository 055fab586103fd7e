import type { HeatmapSummaryRow } from './heatmap';
import { heatmapSvg, HEATMAP_PANELS, speedupColour } from './svg';

/** A 3 x 2 grid of (c, a) cells, one missing, with speedups from 0.8 to 2.4. */
function rows(): HeatmapSummaryRow[] {
  const cells: [number, number, number][] = [
    [0.1, 0.5, 2.4],
    [0.5, 0.5, 1.6],
    [0.9, 0.5, 0.8],
    [0.1, 0.9, 2.0],
    [0.5, 0.9, 1.2],
  ];
  return cells.map(([c, a, speedup]) => ({ c, a, min_speedup_dsi_vs_si: speedup }) as unknown as HeatmapSummaryRow);
}

const panel = HEATMAP_PANELS.find((p) => p.column === 'min_speedup_dsi_vs_si')!;

describe('heatmapSvg', () => {
  it('escapes the subtitle and the title, whatever they hold', () => {
    const svg = heatmapSvg(rows(), { ...panel, title: 'DSI <vs> SI' }, 'run "a<b" & more; ');
    expect(svg).toContain('>run &quot;a&lt;b&quot; &amp; more; best lookahead k per cell');
    expect(svg).toContain('>DSI &lt;vs&gt; SI (x)</text>');
    expect(svg).not.toContain('a<b');
    expect(svg).not.toContain('<vs>');
  });

  it('draws one square per cell with its value, and a grey square for a missing one', () => {
    const svg = heatmapSvg(rows(), panel);
    expect(svg.match(/<title>c=[^<]*x<\/title>/g)).toHaveLength(5);
    expect(svg).toContain('<title>c=0.9 a=0.9: no valid k</title>');
    expect(svg).toContain('>2.40</text>');
    expect(svg).toContain(`fill="${speedupColour(0.8, 2.4)}"`);
  });

  it('labels both ends of each axis', () => {
    const svg = heatmapSvg(rows(), panel);
    for (const label of ['0.1', '0.5', '0.9']) expect(svg).toContain(`text-anchor="middle">${label}</text>`);
    for (const label of ['0.5', '0.9']) expect(svg).toContain(`text-anchor="end">${label}</text>`);
  });
});
