/**
 * The simulator's wire: methods, configurations, results, heatmap cells and deployment plans, to and
 * from the ts-proto messages. The simulator service converts requests and answers with these; the CLI's remote client
 * converts the other way.
 */
import {
  SimulationMethod as WireMethod,
  type HeatmapCell,
  type HeatmapRequest,
  type LoadFigures as WireLoadFigures,
  type Plan as WirePlan,
  type PlanFigure as WirePlanFigure,
  type PlanRequest,
  type PlanRow as WirePlanRow,
  type SimulateResponse,
  type SimulationConfig as WireConfig,
} from '@dsi/proto';
import {
  PlanInputError,
  type HeatmapRow,
  type HeatmapSpec,
  type LoadFigures,
  type Plan,
  type PlanFigure,
  type PlanOptions,
  type PlanPair,
  type PlanRow,
  type SimulationConfig,
  type SimulationConfigError,
  type SimulationMethod,
  type SimulationResult,
} from '@dsi/sim';

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

/** The planner's inputs a Plan request carries (the signal and progress callback stay with the caller). */
export type PlanInputOptions = Omit<PlanOptions, 'signal' | 'onProgress'>;

/** A pair and planner options as the wire request (unset options stay unset, so the service applies defaults). */
export function planRequestToWire(pair: PlanPair, options: Partial<PlanInputOptions> = {}): PlanRequest {
  return {
    pair: {
      a: pair.a,
      targetMs: pair.targetMs,
      drafterMs: pair.drafterMs,
      targetTtftMs: pair.targetTtftMs,
      drafterTtftMs: pair.drafterTtftMs,
      verifyMsPerToken: pair.verifyMsPerToken,
      roundTripMs: pair.rttMs,
      drafterRoundTripMs: pair.drafterRttMs,
    },
    options: {
      maxReplicas: options.maxReplicas,
      tokens: options.tokens,
      maxLookahead: options.maxLookahead,
      prompts: options.prompts,
      seed: options.seed,
      concurrency: options.concurrency,
      arrivalRate: options.arrivalRate,
      requests: options.requests,
    },
  };
}

/** Copies the entries of `source` whose value is set (the planner tells unset from undefined by `??`). */
function defined<T extends object>(source: T): Partial<T> {
  return Object.fromEntries(Object.entries(source).filter(([, value]) => value !== undefined)) as Partial<T>;
}

/**
 * A wire Plan request as the planner's inputs. Unset optional fields stay absent, so the planner
 * applies its defaults; a missing required pair field (a, target_ms, drafter_ms) throws the
 * {@link PlanInputError} naming it, as the planner does for a value out of range.
 */
export function planRequestFromWire(request: PlanRequest): { pair: PlanPair; options: Partial<PlanInputOptions> } {
  const wire = request.pair;
  const required = (field: string, value: number | undefined): number => {
    if (value === undefined) throw new PlanInputError(field, 'required');
    return value;
  };
  const pair: PlanPair = {
    a: required('a', wire?.a),
    targetMs: required('target_ms', wire?.targetMs),
    drafterMs: required('drafter_ms', wire?.drafterMs),
    ...defined({ targetTtftMs: wire?.targetTtftMs, drafterTtftMs: wire?.drafterTtftMs, verifyMsPerToken: wire?.verifyMsPerToken, rttMs: wire?.roundTripMs, drafterRttMs: wire?.drafterRoundTripMs }),
  };
  const o = request.options;
  const options: Partial<PlanInputOptions> = defined({
    maxReplicas: o?.maxReplicas,
    tokens: o?.tokens,
    maxLookahead: o?.maxLookahead,
    prompts: o?.prompts,
    seed: o?.seed,
    concurrency: o?.concurrency,
    arrivalRate: o?.arrivalRate,
    requests: o?.requests,
  });
  return { pair, options };
}

function planFigureToWire(figure: PlanFigure): WirePlanFigure {
  return { msPerToken: figure.ms_per_token, lookahead: figure.lookahead, throughputTps: figure.throughput_tps, p50Ms: figure.p50_ms };
}

/** A wire figure back; optional figures stay absent when unset (a missing message reads as zeros). */
function planFigureFromWire(figure: WirePlanFigure | undefined): PlanFigure {
  return {
    ms_per_token: figure?.msPerToken ?? 0,
    ...(figure?.lookahead !== undefined ? { lookahead: figure.lookahead } : {}),
    ...(figure?.throughputTps !== undefined ? { throughput_tps: figure.throughputTps } : {}),
    ...(figure?.p50Ms !== undefined ? { p50_ms: figure.p50Ms } : {}),
  };
}

/** SI's and DSI's figures always carry their lookahead. */
function lookaheadFigureFromWire(figure: WirePlanFigure | undefined): PlanFigure & { lookahead: number } {
  const back = planFigureFromWire(figure);
  return { ...back, lookahead: back.lookahead ?? 0 };
}

function planRowToWire(row: PlanRow): WirePlanRow {
  return {
    replicas: row.replicas,
    nonsi: planFigureToWire(row.nonsi),
    si: planFigureToWire(row.si),
    dsi: planFigureToWire(row.dsi),
    dsiAuto: row.dsi_auto && planFigureToWire(row.dsi_auto),
    speedupVsSi: row.speedup_vs_si,
    speedupVsNonsi: row.speedup_vs_nonsi,
    vsBound: row.vs_bound,
  };
}

function planRowFromWire(row: WirePlanRow): PlanRow {
  return {
    replicas: row.replicas,
    nonsi: planFigureFromWire(row.nonsi),
    si: lookaheadFigureFromWire(row.si),
    dsi: lookaheadFigureFromWire(row.dsi),
    ...(row.dsiAuto ? { dsi_auto: planFigureFromWire(row.dsiAuto) } : {}),
    speedup_vs_si: row.speedupVsSi,
    speedup_vs_nonsi: row.speedupVsNonsi,
    vs_bound: row.vsBound,
  };
}

/** A plan as the wire message (the final message of a Plan stream). */
export function planToWire(plan: Plan): WirePlan {
  const { pair, options, recommendation } = plan;
  return {
    pair: {
      a: pair.a,
      targetMs: pair.target_ms,
      drafterMs: pair.drafter_ms,
      targetTtftMs: pair.target_ttft_ms,
      drafterTtftMs: pair.drafter_ttft_ms,
      verifyMsPerToken: pair.verify_ms_per_token,
      roundTripMs: pair.round_trip_ms,
      drafterRoundTripMs: pair.drafter_round_trip_ms,
    },
    options: {
      maxReplicas: options.max_replicas,
      tokens: options.tokens,
      maxLookahead: options.max_lookahead,
      prompts: options.prompts,
      seed: options.seed,
      concurrency: options.concurrency,
      arrivalRate: options.arrival_rate,
      requests: options.requests,
    },
    boundMsPerToken: plan.bound_ms_per_token,
    rows: plan.rows.map(planRowToWire),
    recommendation: {
      replicas: recommendation.replicas,
      lookahead: recommendation.lookahead,
      dsiMsPerToken: recommendation.dsi_ms_per_token,
      speedupVsSi: recommendation.speedup_vs_si,
      speedupVsNonsi: recommendation.speedup_vs_nonsi,
      bestDsiMsPerToken: recommendation.best_dsi_ms_per_token,
    },
  };
}

/**
 * A wire plan back as the planner's Plan, the shape `planDeployment` returns (and `dsi plan --json`
 * prints): `planFromWire(planToWire(plan))` deep-equals `plan`. Pair fields a service left unset read
 * as the planner's defaults; the load options stay absent unless set.
 */
export function planFromWire(plan: WirePlan): Plan {
  const pair = plan.pair;
  const options = plan.options;
  const recommendation = plan.recommendation;
  const targetMs = pair?.targetMs ?? 0;
  const drafterMs = pair?.drafterMs ?? 0;
  return {
    pair: {
      a: pair?.a ?? 0,
      target_ms: targetMs,
      drafter_ms: drafterMs,
      target_ttft_ms: pair?.targetTtftMs ?? targetMs,
      drafter_ttft_ms: pair?.drafterTtftMs ?? drafterMs,
      verify_ms_per_token: pair?.verifyMsPerToken ?? 0,
      round_trip_ms: pair?.roundTripMs ?? 0,
      drafter_round_trip_ms: pair?.drafterRoundTripMs ?? pair?.roundTripMs ?? 0,
    },
    options: {
      max_replicas: options?.maxReplicas ?? 0,
      tokens: options?.tokens ?? 0,
      max_lookahead: options?.maxLookahead ?? 0,
      prompts: options?.prompts ?? 0,
      seed: options?.seed ?? 0,
      ...(options?.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
      ...(options?.arrivalRate !== undefined ? { arrival_rate: options.arrivalRate } : {}),
      ...(options?.requests !== undefined ? { requests: options.requests } : {}),
    },
    bound_ms_per_token: plan.boundMsPerToken,
    rows: plan.rows.map(planRowFromWire),
    recommendation: {
      replicas: recommendation?.replicas ?? 0,
      lookahead: recommendation?.lookahead ?? 0,
      dsi_ms_per_token: recommendation?.dsiMsPerToken ?? 0,
      speedup_vs_si: recommendation?.speedupVsSi ?? 0,
      speedup_vs_nonsi: recommendation?.speedupVsNonsi ?? 0,
      best_dsi_ms_per_token: recommendation?.bestDsiMsPerToken ?? 0,
    },
  };
}
