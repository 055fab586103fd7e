import { SimulationMethod as WireMethod } from '@dsi/proto';
import { DEFAULT_HEATMAP, resolveConfig, simulate, type HeatmapRow, type SimulationConfig, type SimulationMethod } from '@dsi/sim';
import { configFromWire, configToWire, heatmapSpecFromWire, methodFromWire, methodToWire, resultFromWire, resultToWire, rowFromWire, rowToWire } from './simulator';

describe('simulator wire', () => {
  it.each<SimulationMethod>(['seed', 'exact', 'event'])('carries the %s method there and back', (method) => {
    expect(methodFromWire(methodToWire(method))).toBe(method);
  });

  it('leaves an unset method unset (the service applies its default) and lets validation name an unknown one', () => {
    expect(methodFromWire(undefined)).toBeUndefined();
    expect(methodFromWire(WireMethod.SIMULATION_METHOD_UNSPECIFIED)).toBeUndefined();
    expect(methodFromWire(7 as WireMethod)).toBe('7');
  });

  it('carries a partial configuration there and back, unset fields staying unset', () => {
    const partial: Partial<SimulationConfig> = { a: 0.5, k: 3, method: 'event', rtt: 0.2 };
    const back = configFromWire(configToWire(partial));
    expect(Object.fromEntries(Object.entries(back).filter(([, value]) => value !== undefined))).toEqual(partial);
    expect(configToWire({}).method).toBe(WireMethod.SIMULATION_METHOD_UNSPECIFIED);
  });

  it('carries a simulation result there and back', () => {
    const result = simulate(resolveConfig({ a: 0.8, c: 0.2, k: 4, tokens: 200, repeats: 3, seed: 5, servers: 4 }));
    const back = resultFromWire(resultToWire(result));
    expect(back).toEqual(result);
  });

  it('carries a heatmap row there and back, and derives the speedups from the costs when a cell lacks them', () => {
    const row: HeatmapRow = {
      index: 3,
      c: 0.1,
      a: 0.9,
      k: 5,
      num_target_servers: 7,
      cost_nonsi: 1000,
      cost_si: 400,
      cost_dsi: 250,
      cost_baseline: 400,
      speedup_dsi_vs_si: 1.6,
      speedup_dsi_vs_nonsi: 4,
      speedup_si_vs_nonsi: 2.5,
    };
    expect(rowFromWire(rowToWire(row))).toEqual(row);
    expect(rowFromWire({ ...rowToWire(row), speedup: undefined })).toEqual(row);
  });

  it('reads a heatmap request as the spec the simulator validates', () => {
    const spec = heatmapSpecFromWire({ ...DEFAULT_HEATMAP, ndim: 3, method: WireMethod.SIMULATION_METHOD_EXACT, shardIndex: 0, shardCount: 1 });
    expect(spec).toEqual({ ...DEFAULT_HEATMAP, ndim: 3, method: 'exact' });
  });
});
