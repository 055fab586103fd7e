import { requiredServers, SimulationConfigError, type SimulationMethod } from './config';
import { expectedDsi, expectedSi } from './exact';
import { acceptanceSamples, studyUniforms } from './sampler';
import { seedRuns } from './simulate';

/** A heatmap sweep: the study's grid at resolution `ndim`, costs by `method`. */
export interface HeatmapSpec {
  ndim: number;
  servers: number;
  method: SimulationMethod;
  t: number;
  tokens: number;
  repeats: number;
  seed: number;
}

/** The paper's Figure 1 sweep. */
export const DEFAULT_HEATMAP: Readonly<HeatmapSpec> = Object.freeze({
  ndim: 20,
  servers: 7,
  method: 'seed',
  t: 1,
  tokens: 1000,
  repeats: 5,
  seed: 42,
});

/** Upper bound on `ndim` (ndim=100 is already ~1M cells). */
export const MAX_NDIM = 100;

/** One valid (c, a, k) point of the grid; `index` is its position among the valid cells. */
export interface HeatmapPoint {
  index: number;
  c: number;
  a: number;
  k: number;
}

/** One computed cell with the study's per-row columns. */
export interface HeatmapRow extends HeatmapPoint {
  num_target_servers: number;
  cost_nonsi: number;
  cost_si: number;
  cost_dsi: number;
  cost_baseline: number;
  speedup_dsi_vs_si: number;
  speedup_dsi_vs_nonsi: number;
  speedup_si_vs_nonsi: number;
}

/** A row joined with the minima over k of its (c, a) pair, as in the study's CSV. */
export interface HeatmapSummaryRow extends HeatmapRow {
  min_cost_si: number;
  min_cost_dsi: number;
  min_cost_baseline: number;
  min_speedup_dsi_vs_si: number;
  min_speedup_dsi_vs_nonsi: number;
  min_speedup_si_vs_nonsi: number;
  min_speedup_dsi_vs_baseline: number;
}

/** CSV columns, in order, with the study's names. */
export const HEATMAP_COLUMNS = [
  'c',
  'a',
  'k',
  'num_target_servers',
  'cost_nonsi',
  'cost_si',
  'cost_dsi',
  'cost_baseline',
  'speedup_dsi_vs_si',
  'speedup_dsi_vs_nonsi',
  'speedup_si_vs_nonsi',
  'min_cost_si',
  'min_cost_dsi',
  'min_cost_baseline',
  'min_speedup_dsi_vs_si',
  'min_speedup_dsi_vs_nonsi',
  'min_speedup_si_vs_nonsi',
  'min_speedup_dsi_vs_baseline',
] as const satisfies readonly (keyof HeatmapSummaryRow)[];

/** numpy's `linspace(0, 1, n + 1)`: `i * (1 / n)`, the last point exactly 1. */
export function linspace01(n: number): number[] {
  const step = 1 / n;
  const points = Array.from({ length: n + 1 }, (_, i) => i * step);
  points[n] = 1;
  return points;
}

/** Applies defaults and checks a heatmap spec; throws {@link SimulationConfigError}. */
export function resolveHeatmapSpec(partial: Partial<HeatmapSpec> = {}): HeatmapSpec {
  const defined = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined));
  const spec: HeatmapSpec = { ...DEFAULT_HEATMAP, ...defined };
  const integer = (name: keyof HeatmapSpec, min: number, max: number) => {
    const value = spec[name] as number;
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new SimulationConfigError(name, `${name}=${value} is outside [${min}, ${max}]`);
    }
  };
  integer('ndim', 1, MAX_NDIM);
  integer('servers', 1, 1_000_000);
  integer('tokens', 1, 100_000);
  integer('repeats', 1, 1000);
  integer('seed', 0, 0xffffffff);
  if (!Number.isFinite(spec.t) || spec.t <= 0) throw new SimulationConfigError('t', `t=${spec.t} must be positive`);
  if (spec.method !== 'seed' && spec.method !== 'exact') {
    throw new SimulationConfigError('method', `method=${String(spec.method)} is not one of seed, exact`);
  }
  return spec;
}

/**
 * The valid cells of the study's grid: `c = linspace(0, 1, ndim + 1)` raised to at least 0.01,
 * `a = linspace(0, 1, ndim + 1)` clipped into [0.01, 0.99], `k = 1..ndim`, keeping the cells with
 * `c <= t` and `servers >= ceil(t / (k c))`. Ordered c-major, then a, then k.
 */
export function heatmapGrid(spec: Pick<HeatmapSpec, 'ndim' | 'servers' | 't'>): HeatmapPoint[] {
  const cs = linspace01(spec.ndim).map((c) => Math.max(c, 0.01));
  const as = linspace01(spec.ndim).map((a) => Math.min(Math.max(a, 0.01), 0.99));
  const points: HeatmapPoint[] = [];
  for (const c of cs) {
    if (c > spec.t) continue;
    for (const a of as) {
      for (let k = 1; k <= spec.ndim; k++) {
        if (spec.servers >= requiredServers(spec.t, k, c)) points.push({ index: points.length, c, a, k });
      }
    }
  }
  return points;
}

/**
 * Computes heatmap cells. Keeps the per-acceptance-rate samples of the seed method between calls (every
 * cell replays the same seeded stream, so the uniforms are drawn once).
 */
export class HeatmapComputer {
  private uniforms?: Float64Array;
  private readonly samplesByKey = new Map<string, Int32Array>();

  constructor(readonly spec: HeatmapSpec) {}

  /** One cell's costs and speedups. */
  compute(point: HeatmapPoint): HeatmapRow {
    const { spec } = this;
    const params = { c: point.c, k: point.k, t: spec.t, tokens: spec.tokens };
    let si: number;
    let dsi: number;
    if (spec.method === 'exact') {
      si = expectedSi({ ...params, a: point.a }).cost;
      dsi = expectedDsi({ ...params, a: point.a }).cost;
    } else {
      const runs = seedRuns(this.samples(point.a, point.k), params, spec.repeats);
      si = runs.si.cost;
      dsi = runs.dsi.cost;
    }
    const nonsi = spec.tokens * spec.t;
    return {
      ...point,
      num_target_servers: spec.servers,
      cost_nonsi: nonsi,
      cost_si: si,
      cost_dsi: dsi,
      cost_baseline: Math.min(si, nonsi),
      speedup_dsi_vs_si: si / dsi,
      speedup_dsi_vs_nonsi: nonsi / dsi,
      speedup_si_vs_nonsi: nonsi / si,
    };
  }

  private samples(a: number, k: number): Int32Array {
    const key = `${a}/${k}`;
    let samples = this.samplesByKey.get(key);
    if (!samples) {
      this.uniforms ??= studyUniforms(this.spec.seed, this.spec.repeats, this.spec.tokens);
      samples = acceptanceSamples(this.uniforms, a, k);
      this.samplesByKey.set(key, samples);
    }
    return samples;
  }
}

/**
 * Joins every row with the minima over k of its (c, a) pair (one output row per input row, sorted by
 * grid index): min costs of DSI, SI and the baseline `min(SI, non-SI)`, and the speedups between them.
 */
export function summarizeHeatmap(rows: readonly HeatmapRow[]): HeatmapSummaryRow[] {
  const minima = new Map<string, { si: number; dsi: number; baseline: number }>();
  for (const row of rows) {
    const key = `${row.c}/${row.a}`;
    const m = minima.get(key) ?? { si: Infinity, dsi: Infinity, baseline: Infinity };
    m.si = Math.min(m.si, row.cost_si);
    m.dsi = Math.min(m.dsi, row.cost_dsi);
    m.baseline = Math.min(m.baseline, row.cost_baseline);
    minima.set(key, m);
  }
  return [...rows]
    .sort((x, y) => x.index - y.index)
    .map((row) => {
      const m = minima.get(`${row.c}/${row.a}`)!;
      return {
        ...row,
        min_cost_si: m.si,
        min_cost_dsi: m.dsi,
        min_cost_baseline: m.baseline,
        min_speedup_dsi_vs_si: m.si / m.dsi,
        min_speedup_dsi_vs_nonsi: row.cost_nonsi / m.dsi,
        min_speedup_si_vs_nonsi: row.cost_nonsi / m.si,
        min_speedup_dsi_vs_baseline: m.baseline / m.dsi,
      };
    });
}

/** The summary as CSV text: a header of {@link HEATMAP_COLUMNS}, one line per row. */
export function heatmapCsv(rows: readonly HeatmapSummaryRow[]): string {
  const lines = [HEATMAP_COLUMNS.join(',')];
  for (const row of rows) lines.push(HEATMAP_COLUMNS.map((column) => String(row[column])).join(','));
  return lines.join('\n') + '\n';
}
