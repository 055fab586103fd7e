import { Mt19937 } from './mt19937';
import { requiredServers, resolveConfig, SimulationConfigError } from './config';
import { expectedDsi, expectedSi } from './exact';
import { dsiRun, siRun } from './rules';
import { acceptanceSamples, studyUniforms } from './sampler';
import { simulate } from './simulate';

function expectClose(actual: number[], expected: number[], tolerance = 1e-9) {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((value, i) => expect(Math.abs(value - expected[i])).toBeLessThanOrEqual(tolerance));
}

describe('the study random stream', () => {
  it('matches numpy: seed(42) then random() gives 0.3745401188473625, 0.9507143064099162', () => {
    const rng = new Mt19937(42);
    expect(rng.nextDouble()).toBe(0.3745401188473625);
    expect(rng.nextDouble()).toBe(0.9507143064099162);
  });

  it('matches the MT19937 reference output for init_genrand(5489)', () => {
    const rng = new Mt19937(5489);
    expect([rng.nextUint32(), rng.nextUint32()]).toEqual([3499211612, 581869302]);
  });

  it('gives a == 1 the full lookahead and a == 0 nothing', () => {
    const uniforms = studyUniforms(1, 1, 50);
    expect([...acceptanceSamples(uniforms, 1, 4)].every((x) => x === 4)).toBe(true);
    expect([...acceptanceSamples(uniforms, 0, 4)].every((x) => x === 0)).toBe(true);
  });
});

describe('seed method: the reference study reproduced', () => {
  it('gives the study numbers at the defaults, per repeat', () => {
    const result = simulate();
    expectClose(result.si.costs, [332.8, 316.0, 314.7, 321.0, 326.7]);
    expect(result.si.iterations).toEqual([222, 211, 210, 214, 218]);
    expectClose(result.dsi.costs, [229.7, 208.7, 211.8, 226.4, 219.3]);
    expect(result.dsi.iterations).toEqual([252, 243, 245, 249, 247]);
    expectClose([result.si.cost, result.dsi.cost, result.nonsi.cost], [322.24, 219.18, 1000]);
    expectClose([result.speedup.dsi_vs_si], [322.24 / 219.18]);
  });

  it('shows that DSI can lose to SI in one repeat (a=0.8, c=0.3, k=1, S=5, seed 17) but wins on average', () => {
    const one = simulate({ a: 0.8, c: 0.3, k: 1, tokens: 5, seed: 17, repeats: 1 });
    expectClose([one.si.cost, one.dsi.cost], [3.6, 3.9]);
    const many = simulate({ a: 0.8, c: 0.3, k: 1, tokens: 5, seed: 17, repeats: 20000 });
    expect(many.si.cost.toFixed(2)).toBe('3.82');
    expect(many.dsi.cost.toFixed(2)).toBe('2.91');
  });
});

describe('exact method', () => {
  it('gives SI 320.513 and DSI 217.819 at the defaults', () => {
    const result = simulate({ method: 'exact' });
    expect(result.si.cost).toBeCloseTo(320.513, 3);
    expect(result.dsi.cost).toBeCloseTo(217.819, 3);
    expect(result.si.costs).toEqual([result.si.cost]);
    expect(result.dsi.iterations).toHaveLength(1);
  });

  // Monte Carlo mean and its standard error over `repeats` independent repeats of one configuration.
  function monteCarlo(params: { a: number; c: number; k: number; tokens: number }, repeats: number, seed: number) {
    const samples = acceptanceSamples(studyUniforms(seed, repeats, params.tokens), params.a, params.k);
    const stats = { siCost: [] as number[], siIterations: [] as number[], dsiCost: [] as number[], dsiIterations: [] as number[] };
    for (let r = 0; r < repeats; r++) {
      const si = siRun(samples, r * params.tokens, { ...params, t: 1 });
      const dsi = dsiRun(samples, r * params.tokens, { ...params, t: 1 });
      stats.siCost.push(si.cost);
      stats.siIterations.push(si.iterations);
      stats.dsiCost.push(dsi.cost);
      stats.dsiIterations.push(dsi.iterations);
    }
    const summary = (xs: number[]) => {
      const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
      const variance = xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (xs.length - 1);
      return { mean, se: Math.sqrt(variance / xs.length) };
    };
    return {
      siCost: summary(stats.siCost),
      siIterations: summary(stats.siIterations),
      dsiCost: summary(stats.dsiCost),
      dsiIterations: summary(stats.dsiIterations),
    };
  }

  const grid: { a: number; c: number; k: number; tokens: number }[] = [];
  for (const a of [0, 0.3, 0.75, 0.95, 1]) {
    for (const c of [0.05, 0.4, 1]) {
      for (const k of [1, 3, 7]) {
        for (const tokens of [1, 2, 5, 40]) grid.push({ a, c, k, tokens });
      }
    }
  }

  it.each(grid)('agrees with Monte Carlo within 3 standard errors at a=$a c=$c k=$k S=$tokens', (params) => {
    const exactSi = expectedSi({ ...params, t: 1 });
    const exactDsi = expectedDsi({ ...params, t: 1 });
    const mc = monteCarlo(params, 4000, 7);
    const checks: [number, { mean: number; se: number }][] = [
      [exactSi.cost, mc.siCost],
      [exactSi.iterations, mc.siIterations],
      [exactDsi.cost, mc.dsiCost],
      [exactDsi.iterations, mc.dsiIterations],
    ];
    for (const [exact, { mean, se }] of checks) {
      // A deterministic case (a in {0, 1}) has no spread: the mean must equal the expectation.
      expect(Math.abs(mean - exact)).toBeLessThanOrEqual(3 * se + 1e-9 * Math.max(1, exact));
    }
  });

  it('DSI is never slower than SI or non-SI in expectation, over a dense grid', () => {
    for (const a of [0, 0.1, 0.5, 0.8, 0.9, 0.99, 1]) {
      for (const c of [0.01, 0.1, 0.3, 0.6, 0.9, 1]) {
        for (const k of [1, 2, 5, 10, 30]) {
          for (const tokens of [1, 2, 3, 10, 100]) {
            const si = expectedSi({ a, c, k, t: 1, tokens }).cost;
            const dsi = expectedDsi({ a, c, k, t: 1, tokens }).cost;
            expect(dsi).toBeLessThanOrEqual(si + 1e-9);
            expect(dsi).toBeLessThanOrEqual(tokens + 1e-9);
          }
        }
      }
    }
  });

  it('costs exactly non-SI when the drafter is as slow as the target', () => {
    expect(simulate({ method: 'exact', c: 1, servers: 1 }).dsi.cost).toBe(1000);
  });
});

describe('configuration', () => {
  it.each([
    [{ servers: 3, k: 1, c: 0.3 }, 'servers', 'servers=3 is below ceil(t/(k*c)) = 4'],
    [{ a: 1.5 }, 'a', 'a=1.5 is outside [0, 1]'],
    [{ a: -0.1 }, 'a', 'a=-0.1 is outside [0, 1]'],
    [{ c: 2 }, 'c', 'c=2 exceeds t=1 (the drafter must not be slower than the target)'],
    [{ c: 0 }, 'c', 'c=0 must be positive'],
    [{ k: 0 }, 'k', 'k=0 is below 1'],
    [{ k: 2.5 }, 'k', 'k=2.5 is not an integer'],
    [{ tokens: 0 }, 'tokens', 'tokens=0 is below 1'],
    [{ repeats: 0 }, 'repeats', 'repeats=0 is below 1'],
    [{ t: -1 }, 't', 't=-1 must be positive'],
    [{ seed: -1 }, 'seed', 'seed=-1 is below 0'],
    [{ a: Number.NaN }, 'a', 'a=NaN is not a finite number'],
  ])('rejects %j naming %s', (partial, parameter, message) => {
    let caught: unknown;
    try {
      resolveConfig(partial);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(SimulationConfigError);
    expect((caught as SimulationConfigError).parameter).toBe(parameter);
    expect((caught as Error).message).toBe(message);
  });

  it('applies the study defaults and keeps given values', () => {
    expect(resolveConfig({ a: 0.5, k: undefined })).toEqual({
      a: 0.5, c: 0.1, k: 5, t: 1, tokens: 1000, servers: 7, repeats: 5, seed: 42, method: 'seed',
    });
    expect(requiredServers(1, 5, 0.1)).toBe(2);
  });
});
