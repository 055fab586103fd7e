import { Plan as WirePlan, PlanRequest, SimulateResponse, SimulationMethod as WireMethod } from '@dsi/proto';
import { DEFAULT_HEATMAP, planDeployment, PlanInputError, resolveConfig, simulate, simulateLoad, type HeatmapRow, type PlanPair, type SimulationConfig, type SimulationMethod } from '@dsi/sim';
import {
  configErrorMessageToWire,
  configFromWire,
  configToWire,
  heatmapSpecFromWire,
  methodFromWire,
  methodToWire,
  planFromWire,
  planRequestFromWire,
  planRequestToWire,
  planToWire,
  resultFromWire,
  resultToWire,
  rowFromWire,
  rowToWire,
  wireFieldName,
} from './simulator';

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

describe('simulator wire under load', () => {
  it('carries the load parameters there and back', () => {
    const closed: Partial<SimulationConfig> = { method: 'event', concurrency: 8, requests: 64, drafters: 2 };
    const open: Partial<SimulationConfig> = { method: 'event', arrivalRate: 0.25, requests: 10 };
    for (const partial of [closed, open]) {
      const back = configFromWire(configToWire(partial));
      expect(Object.fromEntries(Object.entries(back).filter(([, value]) => value !== undefined))).toEqual(partial);
    }
    expect(configToWire({ concurrency: 3 })).toMatchObject({ concurrency: 3, arrivalRate: undefined, requests: undefined, drafters: undefined });
  });

  it('carries a load result (per-mode figures, resolved requests and drafters) there and back, through the encoding', async () => {
    const result = await simulateLoad({ a: 0.7, c: 0.2, k: 3, tokens: 8, servers: 2, drafters: 2, concurrency: 2, requests: 4 });
    const wire = SimulateResponse.decode(SimulateResponse.encode(resultToWire(result)).finish());
    expect(wire.load?.dsi?.throughput).toBe(result.load?.dsi.throughput);
    expect(wire.config).toMatchObject({ concurrency: 2, requests: 4, drafters: 2 });
    expect(resultFromWire(wire)).toEqual(result);
  });

  it('leaves load figures out of a single-request result', () => {
    const result = simulate(resolveConfig({ tokens: 100, repeats: 2 }));
    expect(resultToWire(result).load).toBeUndefined();
    expect(resultFromWire(resultToWire(result)).load).toBeUndefined();
  });

  it('names parameters by their wire fields in error messages', () => {
    expect(wireFieldName('arrivalRate')).toBe('arrival_rate');
    expect(wireFieldName('concurrency')).toBe('concurrency');
    expect(configErrorMessageToWire({ message: 'concurrency (closed loop) and arrivalRate (open loop) are exclusive: set one' })).toBe(
      'concurrency (closed loop) and arrival_rate (open loop) are exclusive: set one',
    );
    expect(configErrorMessageToWire({ message: 'verifyPerToken=-1 is below 0' })).toBe('verify_per_token=-1 is below 0');
  });
});

describe('plan wire', () => {
  const through = (plan: Parameters<typeof planToWire>[0]) => planFromWire(WirePlan.decode(WirePlan.encode(planToWire(plan)).finish()));

  it('carries a single-request plan there and back, through the encoding, exactly', async () => {
    const plan = await planDeployment({ a: 0.8, targetMs: 20, drafterMs: 2, rttMs: 0.5 }, { maxReplicas: 2, tokens: 40, maxLookahead: 4, prompts: 1 });
    expect(plan.rows[0].dsi_auto).toBeUndefined();
    expect(through(plan)).toStrictEqual(plan);
  });

  it('carries a plan under load (dsi_auto, throughput, p50, the load options) there and back, exactly', async () => {
    const plan = await planDeployment({ a: 0.7, targetMs: 10, drafterMs: 1 }, { maxReplicas: 2, tokens: 10, maxLookahead: 2, concurrency: 2, requests: 3 });
    expect(plan.rows[0].dsi_auto?.throughput_tps).toBeGreaterThan(0);
    expect(plan.options).toMatchObject({ concurrency: 2, requests: 3 });
    expect(through(plan)).toStrictEqual(plan);
  });

  it('carries the request there and back, unset fields staying unset', () => {
    const pair: PlanPair = { a: 0.6, targetMs: 30, drafterMs: 3, verifyMsPerToken: 0.1 };
    const options = { maxReplicas: 3, seed: 0, arrivalRate: 2 };
    const back = planRequestFromWire(PlanRequest.decode(PlanRequest.encode(planRequestToWire(pair, options)).finish()));
    expect(back).toStrictEqual({ pair, options });
    expect(planRequestFromWire(planRequestToWire({ a: 0, targetMs: 1, drafterMs: 0 }))).toStrictEqual({ pair: { a: 0, targetMs: 1, drafterMs: 0 }, options: {} });
  });

  it('names a missing required pair field', () => {
    expect(() => planRequestFromWire({ pair: undefined, options: undefined })).toThrow(new PlanInputError('a', 'required'));
    expect(() => planRequestFromWire({ pair: { a: 0.5, targetMs: 10 }, options: undefined })).toThrow('drafter_ms: required');
  });
});
