import { heatmapCsv, HeatmapComputer, heatmapGrid, HEATMAP_COLUMNS, linspace01, resolveHeatmapSpec, summarizeHeatmap, DEFAULT_HEATMAP } from './heatmap';
import { runHeatmap } from './pool';
import { simulate } from './simulate';
import { heatmapSvg, HEATMAP_PANELS } from './svg';

describe('heatmap grid', () => {
  it('keeps the study numbers of valid cells: 1089 at ndim=10 and 8463 at ndim=20', () => {
    expect(heatmapGrid({ ndim: 10, servers: 7, t: 1 })).toHaveLength(1089);
    expect(heatmapGrid({ ndim: 20, servers: 7, t: 1 })).toHaveLength(8463);
  });

  it('follows numpy linspace rounding (3 * 0.1, not 0.3) and clips a into [0.01, 0.99]', () => {
    expect(linspace01(10)[3]).toBe(0.30000000000000004);
    const grid = heatmapGrid({ ndim: 10, servers: 7, t: 1 });
    const as = [...new Set(grid.map((p) => p.a))];
    expect(Math.min(...as)).toBe(0.01);
    expect(Math.max(...as)).toBe(0.99);
    expect(Math.min(...grid.map((p) => p.c))).toBe(0.1);
    grid.forEach((p, i) => expect(p.index).toBe(i));
  });

  it('rejects a resolution outside its bounds with the parameter named', () => {
    expect(() => resolveHeatmapSpec({ ndim: 0 })).toThrow('ndim=0 is outside [1, 100]');
    expect(() => resolveHeatmapSpec({ method: 'magic' as never })).toThrow('method=magic is not one of seed, exact');
  });
});

describe('heatmap cells', () => {
  const spec = { ...DEFAULT_HEATMAP, ndim: 6 };

  it('computes each cell as a plain simulation of the same parameters would', () => {
    const computer = new HeatmapComputer(spec);
    for (const point of heatmapGrid(spec).filter((_, i) => i % 17 === 0)) {
      const row = computer.compute(point);
      const single = simulate({ a: point.a, c: point.c, k: point.k, servers: 7 });
      expect(row.cost_si).toBe(single.si.cost);
      expect(row.cost_dsi).toBe(single.dsi.cost);
      expect(row.speedup_dsi_vs_si).toBe(single.speedup.dsi_vs_si);
      expect(row.cost_baseline).toBe(Math.min(single.si.cost, 1000));
    }
  });

  it('gives the same rows on worker threads, in grid order, with progress for every cell', async () => {
    const progress: number[] = [];
    const rows = await runHeatmap(spec, { threads: 2, onRow: (_row, done) => progress.push(done) });
    const computer = new HeatmapComputer(spec);
    const inline = heatmapGrid(spec).map((p) => computer.compute(p));
    expect(rows).toEqual(inline);
    expect(progress).toEqual(inline.map((_, i) => i + 1));
  });

  it('computes only its shard, and the shards together make the whole', async () => {
    const all = await runHeatmap(spec, { threads: 1 });
    const shards = await Promise.all([0, 1, 2].map((index) => runHeatmap(spec, { threads: 1, shard: { index, count: 3 } })));
    expect(shards.flat().sort((x, y) => x.index - y.index)).toEqual(all);
    expect(shards[1].every((row) => row.index % 3 === 1)).toBe(true);
  });

  it('stops its workers when aborted', async () => {
    const controller = new AbortController();
    const run = runHeatmap({ ...DEFAULT_HEATMAP, method: 'exact', tokens: 100_000 }, { threads: 2, signal: controller.signal });
    controller.abort(new Error('stop'));
    await expect(run).rejects.toThrow('stop');
  });

  it('agrees between the seed and exact methods on average', async () => {
    const small = { ...spec, ndim: 4 };
    const seed = await runHeatmap({ ...small, repeats: 200 }, { threads: 1 });
    const exact = await runHeatmap({ ...small, method: 'exact' }, { threads: 1 });
    seed.forEach((row, i) => {
      expect(Math.abs(row.cost_dsi - exact[i].cost_dsi) / exact[i].cost_dsi).toBeLessThan(0.02);
      expect(Math.abs(row.cost_si - exact[i].cost_si) / exact[i].cost_si).toBeLessThan(0.02);
    });
  });
});

describe('heatmap summary, CSV and panels', () => {
  const spec = { ...DEFAULT_HEATMAP, ndim: 5 };
  const computer = new HeatmapComputer(spec);
  const rows = heatmapGrid(spec).map((p) => computer.compute(p));
  const summary = summarizeHeatmap(rows);

  it('joins each row with the minima over k of its (c, a) without duplicating rows', () => {
    expect(summary).toHaveLength(rows.length);
    for (const row of summary) {
      const sameCell = rows.filter((r) => r.c === row.c && r.a === row.a);
      expect(row.min_cost_dsi).toBe(Math.min(...sameCell.map((r) => r.cost_dsi)));
      expect(row.min_cost_si).toBe(Math.min(...sameCell.map((r) => r.cost_si)));
      expect(row.min_cost_baseline).toBe(Math.min(...sameCell.map((r) => Math.min(r.cost_si, r.cost_nonsi))));
      expect(row.min_speedup_dsi_vs_baseline).toBe(row.min_cost_baseline / row.min_cost_dsi);
      expect(row.min_speedup_dsi_vs_baseline).toBeGreaterThanOrEqual(0.999);
    }
  });

  it('writes a CSV with the study column names and one line per valid cell', () => {
    const lines = heatmapCsv(summary).trim().split('\n');
    expect(lines[0].split(',')).toEqual([...HEATMAP_COLUMNS]);
    expect(lines).toHaveLength(rows.length + 1);
    expect(lines[1].split(',')).toHaveLength(HEATMAP_COLUMNS.length);
  });

  it('draws four distinct panels with one square per (c, a) pair', () => {
    const pairs = new Set(summary.map((r) => `${r.c}/${r.a}`)).size;
    const svgs = HEATMAP_PANELS.map((panel) => heatmapSvg(summary, panel));
    expect(new Set(svgs).size).toBe(4);
    for (const svg of svgs) {
      expect(svg.startsWith('<svg')).toBe(true);
      expect(svg.trim().endsWith('</svg>')).toBe(true);
      expect(svg.match(/<title>c=[^<]*x<\/title>/g)).toHaveLength(pairs);
    }
  });
});

describe('simulation off the event loop', () => {
  it('returns what simulate returns', async () => {
    const { simulateOffThread } = await import('./pool');
    const { resolveConfig } = await import('./config');
    expect(await simulateOffThread(resolveConfig({ a: 0.7 }))).toEqual(simulate({ a: 0.7 }));
  });
});
