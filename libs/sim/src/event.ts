import { generate, VirtualClock, type Mode, type VirtualClockSettle } from '@dsi/core';
import { isLoadConfig, resolveConfig, type SimulationConfig } from './config';
import { simulateLoad } from './load';
import { simulatedReplicas, withoutStackTraces, type EventParams } from './simulated';
import { assembleResult, type AlgorithmResult, type SimulationResult } from './simulate';

/** Cost (virtual time) and work of one event-mode run. */
export interface EventRun {
  cost: number;
  targetForwards: number;
  draftCalls: number;
  preemptions: number;
  tokens: number[];
}

/** How an event-mode run drives its virtual clock. */
export interface EventRunOptions {
  /**
   * How the clock lets the work settle between timers (see {@link VirtualClockSettle}). Default
   * `microtasks`: the scheduler and the simulated ports are promise chains on the clock alone, so it
   * gives exactly the `macrotask` results (tested) several times faster.
   */
  settle?: VirtualClockSettle;
}

/**
 * Runs the libs/core scheduler (the very code the orchestrator runs) with simulated ports on a virtual
 * clock, over the oracle and latency model the synthetic backend serves: finite target servers
 * (verifications queue when all are busy), a first-forward latency, a per-extra-token verification
 * cost and a network round trip. Returns the virtual wall time and the tokens.
 */
export async function eventRun(mode: Mode, p: EventParams, options: EventRunOptions = {}): Promise<EventRun> {
  const clock = new VirtualClock({ settle: options.settle ?? 'microtasks' });
  const { targetModel, drafters, targets } = simulatedReplicas(p, clock, { targets: mode === 'dsi' ? p.servers : 1, drafters: 1 });
  const drafter = drafters[0];
  const prompt = p.prompt ?? [1 + (p.seed % 200)];
  const started = clock.now();
  const result = await withoutStackTraces(() =>
    clock.run(
      generate(
        {
          requestId: `event-${p.seed}`,
          mode,
          prompt,
          maxNewTokens: p.tokens,
          lookahead: p.k,
          sampling: { rule: 'greedy', temperature: 1 },
          eosTokenId: targetModel.eosTokenId,
        },
        { drafter, targets, clock },
      ),
    ),
  );
  return {
    cost: clock.now() - started,
    targetForwards: targets.reduce((s, t) => s + t.forwards, 0),
    draftCalls: drafter.calls,
    preemptions: result.metrics.preemptions,
    tokens: result.tokens,
  };
}

/**
 * `--method event`: each repeat r runs non-SI, SI and DSI through the scheduler on a virtual clock
 * with seed `seed + r`; costs are virtual wall times (target-forward units), iterations are target
 * forwards. Intended differences from the study's rules: a fully accepted block yields the target's
 * extra token (the study conservatively drops it), drafting continues while replicas verify (the
 * study's DSI assumes as much), finite servers queue, and ttft, verifyPerToken and rtt add latency.
 * With `concurrency` or `arrivalRate` set it simulates many requests at once: {@link simulateLoad}.
 */
export async function simulateEvent(partial: Partial<SimulationConfig>): Promise<SimulationResult> {
  const config = resolveConfig({ ...partial, method: 'event' });
  if (isLoadConfig(config)) return simulateLoad(config);
  const algorithms = { nonsi: [] as EventRun[], si: [] as EventRun[], dsi: [] as EventRun[] };
  for (let r = 0; r < config.repeats; r++) {
    const params: EventParams = { ...config, seed: (config.seed + r) >>> 0 };
    for (const mode of ['nonsi', 'si', 'dsi'] as const) algorithms[mode].push(await eventRun(mode, params));
  }
  const summary = (runs: EventRun[]): AlgorithmResult => {
    const costs = runs.map((run) => run.cost);
    return { cost: costs.reduce((s, x) => s + x, 0) / costs.length, costs, iterations: runs.map((run) => run.targetForwards) };
  };
  const result = assembleResult(config, summary(algorithms.si), summary(algorithms.dsi));
  const nonsi = summary(algorithms.nonsi).cost;
  return { ...result, nonsi: { cost: nonsi }, speedup: { si_vs_nonsi: nonsi / result.si.cost, dsi_vs_si: result.si.cost / result.dsi.cost, dsi_vs_nonsi: nonsi / result.dsi.cost } };
}
