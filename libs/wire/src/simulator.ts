/**
 * The simulator's wire: methods, configurations, results and heatmap cells, to and from the ts-proto
 * messages. The simulator service converts requests and answers with these; the CLI's remote client
 * converts the other way.
 */
import {
  SimulationMethod as WireMethod,
  type HeatmapCell,
  type HeatmapRequest,
  type LoadFigures as WireLoadFigures,
  type SimulateResponse,
  type SimulationConfig as WireConfig,
} from '@dsi/proto';
import type { HeatmapRow, HeatmapSpec, LoadFigures, SimulationConfig, SimulationConfigError, SimulationMethod, SimulationResult } from '@dsi/sim';

/** The wire's method enum as the simulator's method name (unspecified means the default, seed). */
export function methodFromWire(method: WireMethod | undefined): SimulationMethod | undefined {
  switch (method) {
    case undefined:
    case WireMethod.SIMULATION_METHOD_UNSPECIFIED:
      return undefined;
    case WireMethod.SIMULATION_METHOD_SEED:
      return 'seed';
    case WireMethod.SIMULATION_METHOD_EXACT:
      return 'exact';
    case WireMethod.SIMULATION_METHOD_EVENT:
      return 'event';
    default:
      // An unknown enum number from a newer client: let validation name it.
      return String(method) as SimulationMethod;
  }
}

/** The simulator's method name as the wire enum. */
export function methodToWire(method: SimulationMethod): WireMethod {
  return { seed: WireMethod.SIMULATION_METHOD_SEED, exact: WireMethod.SIMULATION_METHOD_EXACT, event: WireMethod.SIMULATION_METHOD_EVENT }[method];
}

/** A wire configuration as the partial configuration the simulator validates (unset fields stay unset). */
export function configFromWire(config: WireConfig | undefined): Partial<SimulationConfig> {
  return {
    a: config?.a,
    c: config?.c,
    k: config?.k === 0 ? 'auto' : config?.k,
    t: config?.t,
    tokens: config?.tokens,
    servers: config?.servers,
    repeats: config?.repeats,
    seed: config?.seed,
    method: methodFromWire(config?.method),
    ttft: config?.ttft,
    verifyPerToken: config?.verifyPerToken,
    rtt: config?.rtt,
    concurrency: config?.concurrency,
    arrivalRate: config?.arrivalRate,
    requests: config?.requests,
    drafters: config?.drafters,
  };
}

/** Simulation parameters whose wire field is spelled differently (snake_case). */
const WIRE_FIELDS: Readonly<Record<string, string>> = Object.freeze({ verifyPerToken: 'verify_per_token', arrivalRate: 'arrival_rate' });

/** The wire field of a simulation parameter (`arrivalRate` -> `arrival_rate`), for errors a gRPC caller reads. */
export function wireFieldName(parameter: string): string {
  return WIRE_FIELDS[parameter] ?? parameter;
}

/**
 * A parameter error's message as a gRPC caller should read it: every parameter named by its wire field
 * (`arrivalRate=0 must be positive` -> `arrival_rate=0 must be positive`).
 */
export function configErrorMessageToWire(error: Pick<SimulationConfigError, 'message'>): string {
  return error.message.replace(/\b(verifyPerToken|arrivalRate)\b/g, (name) => wireFieldName(name));
}

/** One mode's load figures as the wire message (the same figures, wire spelling). */
function loadFiguresToWire(figures: LoadFigures): WireLoadFigures {
  return { ...figures };
}

/** Wire load figures back (a missing message reads as zeros). */
function loadFiguresFromWire(figures: WireLoadFigures | undefined): LoadFigures {
  return {
    requests: figures?.requests ?? 0,
    tokens: figures?.tokens ?? 0,
    duration: figures?.duration ?? 0,
    throughput: figures?.throughput ?? 0,
    latencyP50: figures?.latencyP50 ?? 0,
    latencyP99: figures?.latencyP99 ?? 0,
    latencyMean: figures?.latencyMean ?? 0,
    ttftP50: figures?.ttftP50 ?? 0,
    ttftP99: figures?.ttftP99 ?? 0,
    meanTokensPerRequest: figures?.meanTokensPerRequest ?? 0,
    targetUtilisation: figures?.targetUtilisation ?? 0,
    targetForwards: figures?.targetForwards ?? 0,
    preemptions: figures?.preemptions ?? 0,
  };
}

/** A simulation result as the wire response. */
export function resultToWire(result: SimulationResult): SimulateResponse {
  const { config } = result;
  return {
    config: {
      a: config.a,
      c: config.c,
      k: config.k === 'auto' ? 0 : config.k,
      t: config.t,
      tokens: config.tokens,
      servers: config.servers,
      repeats: config.repeats,
      seed: config.seed,
      method: methodToWire(config.method),
      concurrency: config.concurrency,
      arrivalRate: config.arrivalRate,
      requests: config.requests,
      drafters: config.drafters,
    },
    nonsi: { cost: result.nonsi.cost, costs: [result.nonsi.cost], iterations: [config.tokens] },
    si: result.si,
    dsi: result.dsi,
    speedup: {
      siVsNonsi: result.speedup.si_vs_nonsi,
      dsiVsSi: result.speedup.dsi_vs_si,
      dsiVsNonsi: result.speedup.dsi_vs_nonsi,
    },
    load: result.load && { nonsi: loadFiguresToWire(result.load.nonsi), si: loadFiguresToWire(result.load.si), dsi: loadFiguresToWire(result.load.dsi) },
  };
}

/** A wire heatmap request as the partial spec the simulator validates. */
export function heatmapSpecFromWire(request: HeatmapRequest): Partial<HeatmapSpec> {
  return {
    ndim: request.ndim,
    servers: request.servers,
    method: methodFromWire(request.method),
    t: request.t,
    tokens: request.tokens,
    repeats: request.repeats,
    seed: request.seed,
  };
}

/** A heatmap row as the wire cell. */
export function rowToWire(row: HeatmapRow): HeatmapCell {
  return {
    index: row.index,
    c: row.c,
    a: row.a,
    k: row.k,
    servers: row.num_target_servers,
    costNonsi: row.cost_nonsi,
    costSi: row.cost_si,
    costDsi: row.cost_dsi,
    costBaseline: row.cost_baseline,
    speedup: { siVsNonsi: row.speedup_si_vs_nonsi, dsiVsSi: row.speedup_dsi_vs_si, dsiVsNonsi: row.speedup_dsi_vs_nonsi },
  };
}

/** A wire heatmap cell back as a row (for clients that assemble the CSV and panels). */
export function rowFromWire(cell: HeatmapCell): HeatmapRow {
  return {
    index: cell.index,
    c: cell.c,
    a: cell.a,
    k: cell.k,
    num_target_servers: cell.servers,
    cost_nonsi: cell.costNonsi,
    cost_si: cell.costSi,
    cost_dsi: cell.costDsi,
    cost_baseline: cell.costBaseline,
    speedup_dsi_vs_si: cell.speedup?.dsiVsSi ?? cell.costSi / cell.costDsi,
    speedup_dsi_vs_nonsi: cell.speedup?.dsiVsNonsi ?? cell.costNonsi / cell.costDsi,
    speedup_si_vs_nonsi: cell.speedup?.siVsNonsi ?? cell.costNonsi / cell.costSi,
  };
}

/** A partial configuration as the wire message (unset fields stay unset, so the service applies defaults). */
export function configToWire(partial: Partial<SimulationConfig>): WireConfig {
  return {
    a: partial.a,
    c: partial.c,
    k: partial.k === 'auto' ? 0 : partial.k,
    t: partial.t,
    tokens: partial.tokens,
    servers: partial.servers,
    repeats: partial.repeats,
    seed: partial.seed,
    method: partial.method === undefined ? WireMethod.SIMULATION_METHOD_UNSPECIFIED : methodToWire(partial.method),
    ttft: partial.ttft,
    verifyPerToken: partial.verifyPerToken,
    rtt: partial.rtt,
    concurrency: partial.concurrency,
    arrivalRate: partial.arrivalRate,
    requests: partial.requests,
    drafters: partial.drafters,
  };
}

/** A wire response back as the simulator's result. */
export function resultFromWire(response: SimulateResponse): SimulationResult {
  const config = response.config!;
  const algorithm = (cost: SimulateResponse['si']) => ({ cost: cost?.cost ?? 0, costs: cost?.costs ?? [], iterations: cost?.iterations ?? [] });
  const result: SimulationResult = {
    config: { ...config, method: methodFromWire(config.method) ?? 'seed' },
    nonsi: { cost: response.nonsi?.cost ?? 0 },
    si: algorithm(response.si),
    dsi: algorithm(response.dsi),
    speedup: {
      si_vs_nonsi: response.speedup?.siVsNonsi ?? 0,
      dsi_vs_si: response.speedup?.dsiVsSi ?? 0,
      dsi_vs_nonsi: response.speedup?.dsiVsNonsi ?? 0,
    },
  };
  if (response.load) result.load = { nonsi: loadFiguresFromWire(response.load.nonsi), si: loadFiguresFromWire(response.load.si), dsi: loadFiguresFromWire(response.load.dsi) };
  return result;
}
