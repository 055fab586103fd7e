import { fixedK, resolveConfig, type SimulationConfig } from './config';
import { expectedDsi, expectedSi } from './exact';
import { dsiRun, siRun, type RuleParams } from './rules';
import { acceptanceSamples, studyUniforms } from './sampler';

/** Cost of one algorithm: the mean (seed) or expectation (exact), and per-repeat figures. */
export interface AlgorithmResult {
  cost: number;
  /** Per repeat (seed) or the expectation as a one-element array (exact). */
  costs: number[];
  /** Per repeat (seed) or the expectation as a one-element array (exact). */
  iterations: number[];
}

/**
 * One mode's figures under load (event method with `concurrency` or `arrivalRate`): what a user of a
 * busy service notices. Times are virtual, in the unit of `t`.
 */
export interface LoadFigures {
  /** Requests completed. */
  requests: number;
  /** Output tokens of every request together. */
  tokens: number;
  /** From the first request sent to the last one finished. */
  duration: number;
  /** tokens / duration: output tokens per unit of time over the whole run. */
  throughput: number;
  /** Request latency (sent to last token): median, 99th percentile and mean. */
  latencyP50: number;
  latencyP99: number;
  latencyMean: number;
  /** Time to first token: median and 99th percentile. */
  ttftP50: number;
  ttftP99: number;
  meanTokensPerRequest: number;
  /** Fraction of the target replicas' time (servers x duration) spent in forwards, wasted ones included. */
  targetUtilisation: number;
  /** Verify calls started on the target replicas, cancelled ones included. */
  targetForwards: number;
  /** Speculative verifications the shared scheduler took back to give their replica to a lane. */
  preemptions: number;
}

/** The outcome of one simulation; its JSON form is what `dsi simulate --json` prints. */
export interface SimulationResult {
  config: SimulationConfig;
  /**
   * Under load: the mean request latency (si and dsi also list every request's latency as `costs`
   * and its target forwards as `iterations`, in request order); the speedups are ratios of them.
   */
  nonsi: { cost: number };
  si: AlgorithmResult;
  dsi: AlgorithmResult;
  speedup: { si_vs_nonsi: number; dsi_vs_si: number; dsi_vs_nonsi: number };
  /** Event method under load only: each mode's throughput, latency percentiles and utilisation. */
  load?: { nonsi: LoadFigures; si: LoadFigures; dsi: LoadFigures };
}

function mean(values: number[]): number {
  let sum = 0;
  for (const v of values) sum += v;
  return sum / values.length;
}

/**
 * Per-repeat SI and DSI costs with the study's common random numbers: both algorithms replay the same
 * stream (the study reseeded before each), repeat r using samples `[r * tokens, (r + 1) * tokens)`.
 */
export function seedRuns(samples: Int32Array, params: RuleParams, repeats: number): { si: AlgorithmResult; dsi: AlgorithmResult } {
  const si: AlgorithmResult = { cost: 0, costs: [], iterations: [] };
  const dsi: AlgorithmResult = { cost: 0, costs: [], iterations: [] };
  for (let r = 0; r < repeats; r++) {
    const offset = r * params.tokens;
    const siCost = siRun(samples, offset, params);
    const dsiCost = dsiRun(samples, offset, params);
    si.costs.push(siCost.cost);
    si.iterations.push(siCost.iterations);
    dsi.costs.push(dsiCost.cost);
    dsi.iterations.push(dsiCost.iterations);
  }
  si.cost = mean(si.costs);
  dsi.cost = mean(dsi.costs);
  return { si, dsi };
}

/** Builds a result from the three costs, with the speedups (ratios of costs). */
export function assembleResult(config: SimulationConfig, si: AlgorithmResult, dsi: AlgorithmResult): SimulationResult {
  const nonsi = config.tokens * config.t;
  return {
    config,
    nonsi: { cost: nonsi },
    si,
    dsi,
    speedup: { si_vs_nonsi: nonsi / si.cost, dsi_vs_si: si.cost / dsi.cost, dsi_vs_nonsi: nonsi / dsi.cost },
  };
}

/**
 * Simulates non-SI, SI and DSI for one configuration with the seed or exact method (partial: defaults
 * applied, then validated; throws {@link SimulationConfigError} on a bad parameter). The event method
 * runs the real scheduler and is asynchronous: {@link simulateEvent}.
 */
export function simulate(partial: Partial<SimulationConfig> = {}): SimulationResult {
  const resolved = resolveConfig(partial);
  if (resolved.method === 'event') throw new Error('the event method is asynchronous: use simulateEvent');
  const config = { ...resolved, k: fixedK(resolved.k) };
  if (config.method === 'exact') {
    const si = expectedSi(config);
    const dsi = expectedDsi(config);
    return assembleResult(
      config,
      { cost: si.cost, costs: [si.cost], iterations: [si.iterations] },
      { cost: dsi.cost, costs: [dsi.cost], iterations: [dsi.iterations] },
    );
  }
  const uniforms = config.a >= 1 ? new Float64Array(config.repeats * config.tokens) : studyUniforms(config.seed, config.repeats, config.tokens);
  const samples = acceptanceSamples(uniforms, config.a, config.k);
  const { si, dsi } = seedRuns(samples, config, config.repeats);
  return assembleResult(config, si, dsi);
}
