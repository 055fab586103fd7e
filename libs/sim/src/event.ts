import {
  counterHash,
  generate,
  uniform,
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

/** The event-mode world: latencies in target-forward units and a drafter that agrees with probability `a`. */
export interface EventParams {
  a: number;
  /** Drafter forward latency per token. */
  c: number;
  k: number;
  /** Target forward latency (one token). */
  t: number;
  tokens: number;
  servers: number;
  /** Latency of a request's first target forward (prefill); default `t`. */
  ttft?: number;
  /** Extra target latency per additional token in one forward (verifying k drafts costs t + k * this). */
  verifyPerToken?: number;
  /** Network round trip added to every call. */
  rtt?: number;
  seed: number;
}

/** Cost (virtual time) and work of one event-mode run. */
export interface EventRun {
  cost: number;
  targetForwards: number;
  draftCalls: number;
  preemptions: number;
  tokens: number[];
}

const VOCAB = 256;
const STREAM_ORACLE = 11;
const STREAM_AGREE = 12;
const STREAM_WRONG = 13;

/**
 * The oracle language model, as a rolling hash over a token sequence: `truth()` is the target's next
 * token after the sequence so far (a hash of the seed and the whole prefix), `agrees()` whether the
 * drafter guesses it there (probability `a`, independently per position and context).
 */
class OracleCursor {
  private h: number;
  private length = 0;

  constructor(
    private readonly seed: number,
    prefix: readonly number[],
  ) {
    this.h = seed;
    for (const token of prefix) this.push(token);
  }

  push(token: number): void {
    this.h = counterHash(this.h, this.length, STREAM_ORACLE, token);
    this.length += 1;
  }

  truth(): number {
    return this.h % VOCAB;
  }

  draft(a: number): number {
    const truth = this.truth();
    if (uniform(this.h, this.length, STREAM_AGREE, 0) < a) return truth;
    return (truth + 1 + (counterHash(this.h, this.length, STREAM_WRONG, 0) % (VOCAB - 1))) % VOCAB;
  }
}

class SimulatedDrafter implements Drafter {
  calls = 0;
  constructor(
    private readonly p: EventParams,
    private readonly clock: Clock,
  ) {}

  async draft(call: DraftCall, signal: AbortSignal): Promise<DraftResult> {
    this.calls += 1;
    const cursor = new OracleCursor(this.p.seed, call.prefix);
    const tokens: number[] = [];
    for (let i = 0; i < call.maxTokens; i++) {
      const token = cursor.draft(this.p.a);
      tokens.push(token);
      cursor.push(token);
    }
    await this.clock.sleep((this.p.rtt ?? 0) + call.maxTokens * this.p.c, signal);
    return { tokens };
  }
}

class SimulatedTarget implements TargetReplica {
  forwards = 0;
  private readonly seen = new Set<string>();
  constructor(
    readonly id: string,
    private readonly p: EventParams,
    private readonly clock: Clock,
  ) {}

  async verify(call: VerifyCall, signal: AbortSignal): Promise<VerifyResult> {
    this.forwards += 1;
    const first = !this.seen.has(call.requestId);
    this.seen.add(call.requestId);
    const forward = first ? (this.p.ttft ?? this.p.t) : this.p.t;
    await this.clock.sleep((this.p.rtt ?? 0) + forward + call.drafts.length * (this.p.verifyPerToken ?? 0), signal);
    const cursor = new OracleCursor(this.p.seed, call.prefix);
    const tokens: number[] = [];
    for (const draft of call.drafts) {
      const truth = cursor.truth();
      if (draft !== truth) return { accepted: tokens.length, tokens: [...tokens, truth] };
      tokens.push(draft);
      cursor.push(draft);
    }
    return { accepted: tokens.length, tokens: [...tokens, cursor.truth()] };
  }
}

/**
 * Runs the libs/core scheduler (the very code the orchestrator runs) with simulated ports on a virtual
 * clock: finite target servers (verifications queue when all are busy), a first-forward latency,
 * a per-extra-token verification cost and a network round trip. Returns the virtual wall time.
 */
export async function eventRun(mode: Mode, p: EventParams): Promise<EventRun> {
  const clock = new VirtualClock();
  const drafter = new SimulatedDrafter(p, clock);
  const targets = Array.from({ length: mode === 'dsi' ? p.servers : 1 }, (_, i) => new SimulatedTarget(`server-${i}`, p, clock));
  const prompt = [1 + (p.seed % 200)];
  const started = clock.now();
  const result = await clock.run(
    generate(
      { requestId: `event-${p.seed}`, mode, prompt, maxNewTokens: p.tokens, lookahead: p.k, sampling: { rule: 'greedy', temperature: 1 } },
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
