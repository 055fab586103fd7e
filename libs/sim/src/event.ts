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

/** The target's next token after `prefix`: a hash of the seed and the whole prefix (an oracle language model). */
function oracleToken(seed: number, prefix: readonly number[]): number {
  let h = seed;
  for (let i = 0; i < prefix.length; i++) h = counterHash(h, i, STREAM_ORACLE, prefix[i]);
  return h % VOCAB;
}

function contextHash(seed: number, prefix: readonly number[]): number {
  let h = seed;
  for (let i = 0; i < prefix.length; i++) h = counterHash(h, i, STREAM_AGREE, prefix[i]);
  return h;
}

class SimulatedDrafter implements Drafter {
  calls = 0;
  constructor(
    private readonly p: EventParams,
    private readonly clock: Clock,
  ) {}

  async draft(call: DraftCall, signal: AbortSignal): Promise<DraftResult> {
    this.calls += 1;
    const sequence = [...call.prefix];
    const tokens: number[] = [];
    for (let i = 0; i < call.maxTokens; i++) {
      const truth = oracleToken(this.p.seed, sequence);
      const h = contextHash(this.p.seed, sequence);
      // Agrees with the target with probability a, independently per position and context.
      const token = uniform(h, sequence.length, STREAM_AGREE, 0) < this.p.a ? truth : (truth + 1 + (counterHash(h, 0, STREAM_WRONG, 0) % (VOCAB - 1))) % VOCAB;
      tokens.push(token);
      sequence.push(token);
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
    const sequence = [...call.prefix];
    const tokens: number[] = [];
    for (const draft of call.drafts) {
      const truth = oracleToken(this.p.seed, sequence);
      if (draft !== truth) return { accepted: tokens.length, tokens: [...tokens, truth] };
      tokens.push(draft);
      sequence.push(draft);
    }
    return { accepted: tokens.length, tokens: [...tokens, oracleToken(this.p.seed, sequence)] };
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
