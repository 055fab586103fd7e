import {
  generate,
  OracleModel,
  OracleReplica,
  VirtualClock,
  type Clock,
  type DraftCall,
  type DraftResult,
  type Drafter,
  type Mode,
  type TargetReplica,
  type VerifyCall,
  type VerifyResult,
} from '@dsi/core';
import { resolveConfig, type SimulationConfig } from './config';
import { assembleResult, type AlgorithmResult, type SimulationResult } from './simulate';

/**
 * The event-mode world: the libs/core oracle pair (the synthetic backend's model, seeded with `seed`)
 * with latencies in target-forward units and a drafter that agrees with probability `a`.
 */
export interface EventParams {
  a: number;
  /** Drafter forward latency per token. */
  c: number;
  k: number;
  /** Target forward latency (one token). */
  t: number;
  tokens: number;
  servers: number;
  /** Latency of a replica's first target forward for the request (prefill); default `t`. */
  ttft?: number;
  /** Extra target latency per additional token computed in one forward (verifying k drafts costs t + k * this). */
  verifyPerToken?: number;
  /** Network round trip (and service overhead) added to every call. */
  rtt?: number;
  /** The oracle's seed (drafter and target share it). */
  seed: number;
  /** The prompt's tokens; default one token, 1 + seed % 200. */
  prompt?: readonly number[];
}

/** Cost (virtual time) and work of one event-mode run. */
export interface EventRun {
  cost: number;
  targetForwards: number;
  draftCalls: number;
  preemptions: number;
  tokens: number[];
}

/** Sleeps a call's round trip (nothing when it is 0, so no timer is registered). */
function roundTrip(clock: Clock, rtt: number, signal: AbortSignal): Promise<void> | undefined {
  return rtt > 0 ? clock.sleep(rtt, signal) : undefined;
}

/**
 * A simulated drafter replica: what the drafter service does for one Draft (one cached forward per
 * token, the greedy choice of each), on an {@link OracleReplica} of the drafter oracle, after a round
 * trip of `rtt`. Stops early at the oracle's end-of-sequence id (which it never peaks on).
 */
export class SimulatedDrafter implements Drafter {
  /** Draft calls started (including cancelled ones). */
  calls = 0;

  constructor(
    private readonly replica: OracleReplica,
    private readonly clock: Clock,
    private readonly rtt = 0,
  ) {}

  async draft(call: DraftCall, signal: AbortSignal): Promise<DraftResult> {
    this.calls += 1;
    await roundTrip(this.clock, this.rtt, signal);
    const model = this.replica.model;
    const sequence = [...call.prefix];
    const tokens: number[] = [];
    while (tokens.length < call.maxTokens) {
      signal.throwIfAborted();
      const length = sequence.length;
      const { result: token } = await this.replica.forward(call.requestId, sequence, length - 1, (hashes) => model.next(hashes.at(length)), signal);
      tokens.push(token);
      sequence.push(token);
      if (token === model.eosTokenId) break;
    }
    return { tokens };
  }
}

/**
 * A simulated target replica: what the target service does for one Verify under the greedy rule (one
 * forward over the tokens its cache lacks, then accept drafts while they equal the truth), on an
 * {@link OracleReplica} of the target oracle, after a round trip of `rtt`.
 */
export class SimulatedTarget implements TargetReplica {
  /** Verify calls started (including cancelled ones). */
  forwards = 0;

  constructor(
    readonly id: string,
    private readonly replica: OracleReplica,
    private readonly clock: Clock,
    private readonly rtt = 0,
  ) {}

  async verify(call: VerifyCall, signal: AbortSignal): Promise<VerifyResult> {
    this.forwards += 1;
    await roundTrip(this.clock, this.rtt, signal);
    const model = this.replica.model;
    const start = call.prefix.length;
    const drafts = call.drafts;
    const { result } = await this.replica.forward(
      call.requestId,
      [...call.prefix, ...drafts],
      start - 1,
      (hashes): VerifyResult => {
        for (let i = 0; i < drafts.length; i++) {
          const truth = model.next(hashes.at(start + i));
          if (drafts[i] !== truth) return { accepted: i, tokens: [...drafts.slice(0, i), truth] };
        }
        return { accepted: drafts.length, tokens: [...drafts, model.next(hashes.at(start + drafts.length))] };
      },
      signal,
    );
    return result;
  }
}

/**
 * Runs the libs/core scheduler (the very code the orchestrator runs) with simulated ports on a virtual
 * clock, over the oracle and latency model the synthetic backend serves: finite target servers
 * (verifications queue when all are busy), a first-forward latency, a per-extra-token verification
 * cost and a network round trip. Returns the virtual wall time and the tokens.
 */
export async function eventRun(mode: Mode, p: EventParams): Promise<EventRun> {
  const clock = new VirtualClock();
  const rtt = p.rtt ?? 0;
  const drafterModel = new OracleModel({ role: 'drafter', seed: p.seed, acceptance: p.a });
  const targetModel = new OracleModel({ role: 'target', seed: p.seed });
  const drafter = new SimulatedDrafter(new OracleReplica(drafterModel, { ttftMs: p.c, tpotMs: p.c }, clock), clock, rtt);
  const targetLatency = { ttftMs: p.ttft ?? p.t, tpotMs: p.t, verifyMsPerToken: p.verifyPerToken ?? 0 };
  const targets = Array.from(
    { length: mode === 'dsi' ? p.servers : 1 },
    (_, i) => new SimulatedTarget(`server-${i}`, new OracleReplica(targetModel, targetLatency, clock), clock, rtt),
  );
  const prompt = p.prompt ?? [1 + (p.seed % 200)];
  const started = clock.now();
  const result = await clock.run(
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
 */
export async function simulateEvent(partial: Partial<SimulationConfig>): Promise<SimulationResult> {
  const config = resolveConfig({ ...partial, method: 'event' });
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
