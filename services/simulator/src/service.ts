import { trace, type Attributes, type Tracer } from '@opentelemetry/api';
import {
  SimulatorServiceService,
  type HeatmapRequest,
  type HeatmapResponse,
  type PlanRequest,
  type PlanResponse,
  type SimulateRequest,
  type SimulateResponse,
} from '@dsi/proto';
import { invalidArgument, serverStream, unary, type ServiceRegistration } from '@dsi/rpc';
import {
  DEFAULT_PLAN_OPTIONS,
  fixedK,
  planDeployment,
  PlanInputError,
  resolveConfig,
  resolveHeatmapSpec,
  runHeatmap,
  simulate,
  simulateOffThread,
  SimulationConfigError,
  type HeatmapSpec,
  type PlanPair,
  type SimulationConfig,
} from '@dsi/sim';
import { DsiAttributes, DsiSpans, withSpan } from '@dsi/telemetry';
import {
  configErrorMessageToWire,
  configFromWire,
  heatmapSpecFromWire,
  planRequestFromWire,
  planToWire,
  resultToWire,
  rowToWire,
  type PlanInputOptions,
} from '@dsi/wire';
import { rejectingUndecodableRequests } from '@dsi/rpc';

/** How the simulator service spends the machine. */
export interface SimulatorServiceOptions {
  /** Worker threads per heatmap sweep; default: the machine's available parallelism. */
  threads?: number;
  /** Tracer for the `dsi.simulate` / `dsi.heatmap` / `dsi.plan` spans; default: the global tracer provider's. */
  tracer?: Tracer;
}

/**
 * A simulator parameter error as the gRPC INVALID_ARGUMENT the caller sees: the CLI's text, with every
 * parameter named by its wire field (`arrival_rate`, not `arrivalRate`).
 */
function validated<T>(resolve: () => T): T {
  try {
    return resolve();
  } catch (error) {
    if (error instanceof SimulationConfigError) throw invalidArgument(configErrorMessageToWire(error), { cause: error });
    throw error;
  }
}

/** A planner input error as the gRPC INVALID_ARGUMENT the caller sees (`a: must be in [0, 1], got 1.5`); anything else as is. */
function planError(error: unknown): unknown {
  return error instanceof PlanInputError ? invalidArgument(error.message, { cause: error }) : error;
}

/**
 * The `dsi.plan` span and its attributes: the planner's inputs, named like the wire fields. (Local
 * names: libs/telemetry's DsiSpans and DsiAttributes do not list the planner yet.)
 */
const PLAN_SPAN = 'dsi.plan';
const PLAN_ATTRIBUTE = 'dsi.plan.';

function planAttributes(pair: PlanPair, options: Partial<PlanInputOptions>): Attributes {
  const o = { ...DEFAULT_PLAN_OPTIONS, ...options };
  const inputs: Record<string, number | undefined> = {
    a: pair.a,
    target_ms: pair.targetMs,
    drafter_ms: pair.drafterMs,
    target_ttft_ms: pair.targetTtftMs,
    drafter_ttft_ms: pair.drafterTtftMs,
    verify_ms_per_token: pair.verifyMsPerToken,
    round_trip_ms: pair.rttMs,
    max_replicas: o.maxReplicas,
    tokens: o.tokens,
    max_lookahead: o.maxLookahead,
    prompts: o.prompts,
    seed: o.seed,
    concurrency: o.concurrency,
    arrival_rate: o.arrivalRate,
    requests: o.requests,
  };
  return Object.fromEntries(Object.entries(inputs).flatMap(([name, value]) => (value === undefined ? [] : [[PLAN_ATTRIBUTE + name, value]])));
}

/**
 * A simulation small enough to run on the event loop (a few ms at most): starting a worker thread
 * would cost ~50 ms more than the work itself.
 */
function isQuick(config: SimulationConfig): boolean {
  if (config.method === 'event') return false;
  const work = config.method === 'exact' ? config.tokens * Math.min(fixedK(config.k), config.tokens) : config.tokens * config.repeats;
  return work <= 50_000;
}

function configAttributes(config: SimulationConfig | HeatmapSpec) {
  const shared = {
    [DsiAttributes.SIM_T]: config.t,
    [DsiAttributes.SIM_TOKENS]: config.tokens,
    [DsiAttributes.SIM_SERVERS]: config.servers,
    [DsiAttributes.SIM_REPEATS]: config.repeats,
    [DsiAttributes.SIM_SEED]: config.seed,
    [DsiAttributes.SIM_METHOD]: config.method,
  };
  if ('ndim' in config) return { ...shared, [DsiAttributes.HEATMAP_NDIM]: config.ndim };
  return { ...shared, [DsiAttributes.SIM_A]: config.a, [DsiAttributes.SIM_C]: config.c, [DsiAttributes.SIM_K]: config.k };
}

/**
 * The `dsi.v1.SimulatorService` registration: Simulate (computed on a worker thread; the event method
 * with concurrency or arrival_rate simulates many requests at once and answers with per-mode load
 * figures), Heatmap (cells computed on worker threads and streamed as they finish, with flow control;
 * a cancelled stream stops its workers) and Plan (the deployment planner, streaming its progress, then
 * the plan).
 *
 * Plan runs in-process, on the event loop: libs/sim's worker entry knows only heatmap and simulate
 * jobs, and the planner is a sequence of event-mode runs that each yield a macrotask turn at least
 * every 1024 virtual events (the virtual clock's settling), so health checks and other calls keep
 * being answered while it runs. The call's signal goes to the planner, which checks it before every
 * event-mode run: a cancelled call (or a passed deadline) stops it after the run in progress.
 */
export function simulatorService(options: SimulatorServiceOptions = {}): ServiceRegistration {
  const tracer = () => options.tracer ?? trace.getTracer('dsi-simulator');
  return rejectingUndecodableRequests({
    name: 'dsi.v1.SimulatorService',
    definition: SimulatorServiceService,
    implementation: {
      simulate: unary<SimulateRequest, SimulateResponse>(async (request, { signal }) => {
        const config = validated(() => resolveConfig(configFromWire(request.config)));
        return withSpan(tracer(), DsiSpans.SIMULATE, configAttributes(config), async () =>
          resultToWire(isQuick(config) ? simulate(config) : await simulateOffThread(config, signal)),
        );
      }),
      heatmap: serverStream<HeatmapRequest, HeatmapResponse>(async (request, { signal, send }) => {
        const spec = validated(() => resolveHeatmapSpec(heatmapSpecFromWire(request)));
        const shard = { index: request.shardIndex ?? 0, count: request.shardCount ?? 1 };
        if (!Number.isInteger(shard.count) || shard.count < 1) {
          throw invalidArgument(`shard_count=${shard.count} is below 1`);
        }
        if (!Number.isInteger(shard.index) || shard.index < 0 || shard.index >= shard.count) {
          throw invalidArgument(`shard_index=${shard.index} is outside [0, ${shard.count - 1}]`);
        }
        await withSpan(tracer(), DsiSpans.HEATMAP, configAttributes(spec), async (span) => {
          // Cells arrive faster than a slow client may read: chain the sends so flow control holds.
          let sending = Promise.resolve();
          const rows = await runHeatmap(spec, {
            threads: options.threads,
            shard,
            signal,
            onRow: (row, done, total) => {
              sending = sending.then(() => send({ cell: rowToWire(row), done, total }));
              sending.catch(() => undefined); // observed below or superseded by the abort
            },
          });
          await sending;
          span.setAttribute(DsiAttributes.HEATMAP_CELLS, rows.length);
        });
      }),
      plan: serverStream<PlanRequest, PlanResponse>(async (request, { signal, send }) => {
        let input: ReturnType<typeof planRequestFromWire>;
        try {
          input = planRequestFromWire(request);
        } catch (error) {
          throw planError(error);
        }
        const { pair, options: inputs } = input;
        // The planner runs on the event loop; a drafter of no latency never sleeps on the virtual clock,
        // so a plan would hold the loop (health, every other call) for as long as it runs, uncancellable.
        if (pair.drafterMs === 0) throw invalidArgument('drafter_ms: must be > 0 ms on the simulator service, got 0 (give the smallest latency you mean, e.g. 0.001)');
        await withSpan(tracer(), PLAN_SPAN, planAttributes(pair, inputs), async (span) => {
          // Progress arrives faster than a slow client may read: chain the sends so flow control holds.
          let sending = Promise.resolve();
          const plan = await planDeployment(pair, {
            ...inputs,
            signal,
            onProgress: (done, total) => {
              sending = sending.then(() => send({ progress: { done, total } }));
              sending.catch(() => undefined); // observed below or superseded by the abort
            },
          }).catch((error: unknown) => {
            // The planner checks its inputs before any work: out of range, the call is INVALID_ARGUMENT.
            throw planError(error);
          });
          await sending;
          span.setAttributes({ [`${PLAN_ATTRIBUTE}recommended_replicas`]: plan.recommendation.replicas, [`${PLAN_ATTRIBUTE}recommended_lookahead`]: plan.recommendation.lookahead });
          await send({ plan: planToWire(plan) });
        });
      }),
    },
  });
}
