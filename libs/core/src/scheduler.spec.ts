import type { DraftCall, DraftResult, Drafter, TargetReplica, VerifyCall, VerifyResult } from './ports';
import { draftToken, SamplingParams, targetToken, verifyBlock } from './rules';
import { counterHash, softmax, uniform } from './sampling';
import {
  DraftTimeoutError,
  generate,
  GenerateConfig,
  GenerationResult,
  InvalidGenerateConfigError,
  Mode,
  SchedulerEvents,
  TargetsUnavailableError,
  validateGenerateConfig,
  WorkCancelledError,
} from './scheduler';
import { VirtualClock } from './virtual-clock';

// ------------------------------------------------------------------------------------------ fakes

const VOCAB = 16;
const PROMPT: readonly number[] = [3, 1, 4];
const P = PROMPT.length;
const GREEDY: SamplingParams = { rule: 'greedy', temperature: 0 };
const SEEDED: SamplingParams = { rule: 'seeded', temperature: 1, seed: 11 };

/**
 * A deterministic language-model pair. The target's logits at a position depend on the position and
 * the last two tokens; its greedy token is a boosted hash. The drafter has the same logits, except at
 * "wrong" positions (configured, or with probability 1 - agreement by a hash of the position), where
 * its row is rotated by one, so its greedy draft is wrong there.
 */
class World {
  constructor(
    readonly agreement = 1,
    readonly wrongAt: ReadonlySet<number> = new Set(),
    /** Extra logit the drafter gives the target's favourite token: an over-confident drafter, q != p everywhere. */
    readonly drafterBoost = 0,
    readonly seed = 7,
  ) {}

  /** Target logits for the token at position `tokens.length`. */
  targetRow(tokens: readonly number[]): Float32Array {
    const end = tokens.length;
    const stream = this.context(tokens);
    const boosted = this.favourite(tokens);
    const row = new Float32Array(VOCAB);
    for (let j = 0; j < VOCAB; j++) row[j] = uniform(this.seed, end, stream, j) + (j === boosted ? 2.5 : 0);
    return row;
  }

  private context(tokens: readonly number[]): number {
    return 1000 + tokens[tokens.length - 1] * VOCAB + (tokens[tokens.length - 2] ?? 0);
  }

  /** The target's greedy token after `tokens`. */
  private favourite(tokens: readonly number[]): number {
    return counterHash(this.seed, tokens.length, this.context(tokens), VOCAB) % VOCAB;
  }

  drafterWrong(position: number): boolean {
    return this.wrongAt.has(position) || uniform(this.seed, position, 77, 0) >= this.agreement;
  }

  drafterRow(tokens: readonly number[]): Float32Array {
    const row = this.targetRow(tokens);
    row[this.favourite(tokens)] += this.drafterBoost;
    if (!this.drafterWrong(tokens.length)) return row;
    const rotated = new Float32Array(VOCAB);
    for (let j = 0; j < VOCAB; j++) rotated[j] = row[(j + 1) % VOCAB];
    return rotated;
  }

  /** What a replica answers: verifyBlock over the target's rows for the block's positions. */
  verify(call: VerifyCall): VerifyResult {
    const n = call.drafts.length;
    const targetLogits = new Float32Array((n + 1) * VOCAB);
    const sequence = [...call.prefix];
    for (let i = 0; i <= n; i++) {
      targetLogits.set(this.targetRow(sequence), i * VOCAB);
      if (i < n) sequence.push(call.drafts[i]);
    }
    return verifyBlock({ targetLogits, vocab: VOCAB, drafts: call.drafts, start: call.prefix.length, params: call.sampling, draftProbs: call.draftProbs });
  }

  /** Target-only decoding: the output every mode must reproduce (greedy, seeded). */
  reference(sampling: SamplingParams, n: number): number[] {
    const sequence = [...PROMPT];
    for (let i = 0; i < n; i++) sequence.push(targetToken(this.targetRow(sequence), VOCAB, sampling, sequence.length));
    return sequence.slice(P);
  }
}

/** One port call as the fake saw it. */
interface CallRecord<C> {
  call: C;
  signal: AbortSignal;
  startedAt: number;
  endedAt?: number;
  /** Ended on its own (a result or its own failure), not by an abort. */
  completed: boolean;
}

async function recordCall<C, R>(clock: VirtualClock, calls: CallRecord<C>[], call: C, signal: AbortSignal, body: (record: CallRecord<C>) => Promise<R>): Promise<R> {
  const record: CallRecord<C> = { call, signal, startedAt: clock.now(), completed: false };
  calls.push(record);
  try {
    const result = await body(record);
    record.completed = true;
    return result;
  } catch (error) {
    if (!signal.aborted) record.completed = true;
    throw error;
  } finally {
    record.endedAt = clock.now();
  }
}

class FakeTarget implements TargetReplica {
  readonly calls: CallRecord<VerifyCall>[] = [];
  /** Rows of draftProbs that differ from the drafter's q for the block's drafts. */
  readonly probMismatches: string[] = [];

  constructor(
    readonly id: string,
    private readonly world: World,
    private readonly clock: VirtualClock,
    private readonly timing: { t: number; perToken: number },
    private readonly fails: (callIndex: number) => boolean = () => false,
  ) {}

  verify(call: VerifyCall, signal: AbortSignal): Promise<VerifyResult> {
    const index = this.calls.length;
    return recordCall(this.clock, this.calls, call, signal, async () => {
      if (this.fails(index)) {
        await this.clock.sleep(2, signal);
        throw new Error(`replica ${this.id} is down`);
      }
      await this.clock.sleep(this.timing.t + this.timing.perToken * call.drafts.length, signal);
      if (call.sampling.rule === 'rejection') this.checkDraftProbs(call);
      return this.world.verify(call);
    });
  }

  private checkDraftProbs(call: VerifyCall): void {
    const probs = call.draftProbs;
    if (!probs || probs.length !== call.drafts.length * VOCAB) {
      this.probMismatches.push(`draftProbs of length ${probs?.length} for ${call.drafts.length} drafts`);
      return;
    }
    const sequence = [...call.prefix];
    call.drafts.forEach((draft, i) => {
      const q = draftToken(this.world.drafterRow(sequence), VOCAB, call.sampling, sequence.length).probs as Float32Array;
      if (q.some((value, j) => value !== probs[i * VOCAB + j])) this.probMismatches.push(`row ${i} at ${sequence.length}`);
      sequence.push(draft);
    });
  }
}

type DrafterBehaviour = 'ok' | 'fail' | 'hang';

class FakeDrafter implements Drafter {
  readonly calls: CallRecord<DraftCall>[] = [];

  constructor(
    private readonly world: World,
    private readonly clock: VirtualClock,
    private readonly perToken: number,
    private readonly behaviour: (callIndex: number) => DrafterBehaviour,
  ) {}

  draft(call: DraftCall, signal: AbortSignal): Promise<DraftResult> {
    const behaviour = this.behaviour(this.calls.length);
    return recordCall(this.clock, this.calls, call, signal, async () => {
      if (behaviour === 'hang') {
        await new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
      }
      await this.clock.sleep(this.perToken * call.maxTokens, signal);
      if (behaviour === 'fail') throw new Error('drafter crashed');
      const sequence = [...call.prefix];
      const tokens: number[] = [];
      const probs = call.returnProbs ? new Float32Array(call.maxTokens * VOCAB) : undefined;
      for (let i = 0; i < call.maxTokens; i++) {
        const choice = draftToken(this.world.drafterRow(sequence), VOCAB, call.sampling, sequence.length);
        if (probs) probs.set(choice.probs as Float32Array, i * VOCAB);
        tokens.push(choice.token);
        sequence.push(choice.token);
      }
      return probs ? { tokens, probs } : { tokens };
    });
  }
}

type Logged = {
  [K in keyof Required<SchedulerEvents>]: { type: K; at: number } & Parameters<Required<SchedulerEvents>[K]>[0];
}[keyof SchedulerEvents];

function ofType<K extends Logged['type']>(events: readonly Logged[], type: K): Extract<Logged, { type: K }>[] {
  return events.filter((event): event is Extract<Logged, { type: K }> => event.type === type);
}

interface Scenario {
  mode: Mode;
  k?: number;
  replicas?: number;
  maxNewTokens?: number;
  sampling?: SamplingParams;
  world?: World;
  /** Target forward latency and the extra cost per draft verified. */
  t?: number;
  perToken?: number;
  /** Drafter latency per token. */
  c?: number;
  /** Replica r takes (1 + r * replicaSlowdown) times longer: later blocks can finish first. */
  replicaSlowdown?: number;
  drafter?: (callIndex: number) => DrafterBehaviour;
  replicaFails?: (replica: number, callIndex: number) => boolean;
  eosTokenId?: number;
  stopSequences?: number[][];
  draftTimeoutMs?: number;
  abortAt?: number;
}

interface Outcome {
  result?: GenerationResult;
  error?: unknown;
  clock: VirtualClock;
  targets: FakeTarget[];
  drafter: FakeDrafter;
  events: Logged[];
  streamed: number[][];
  config: GenerateConfig;
}

const ABORT_REASON = new Error('the client went away');

async function simulate(scenario: Scenario): Promise<Outcome> {
  const world = scenario.world ?? new World();
  const clock = new VirtualClock();
  const targets = Array.from({ length: scenario.replicas ?? 3 }, (_, r) => {
    const slowdown = 1 + r * (scenario.replicaSlowdown ?? 0);
    const timing = { t: (scenario.t ?? 10) * slowdown, perToken: (scenario.perToken ?? 0) * slowdown };
    return new FakeTarget(`target-${r}`, world, clock, timing, (index) => scenario.replicaFails?.(r, index) ?? false);
  });
  const drafter = new FakeDrafter(world, clock, scenario.c ?? 1, scenario.drafter ?? (() => 'ok'));
  const events: Logged[] = [];
  const log =
    <K extends Logged['type']>(type: K) =>
    (e: object) =>
      events.push({ type, at: clock.now(), ...e } as Logged);
  const hooks: SchedulerEvents = {
    draftStart: log('draftStart'),
    draftEnd: log('draftEnd'),
    verifyStart: log('verifyStart'),
    verifyEnd: log('verifyEnd'),
    commit: log('commit'),
    preempt: log('preempt'),
  };
  const streamed: number[][] = [];
  const config: GenerateConfig = {
    requestId: 'request-1',
    mode: scenario.mode,
    prompt: PROMPT,
    maxNewTokens: scenario.maxNewTokens ?? 24,
    lookahead: scenario.k ?? 4,
    sampling: scenario.sampling ?? GREEDY,
    eosTokenId: scenario.eosTokenId,
    stopSequences: scenario.stopSequences,
    vocabSize: VOCAB,
  };
  const client = new AbortController();
  const abortTimer = new AbortController();
  if (scenario.abortAt !== undefined) {
    clock.sleep(scenario.abortAt, abortTimer.signal).then(
      () => client.abort(ABORT_REASON),
      () => undefined,
    );
  }
  const outcome: Outcome = { clock, targets, drafter, events, streamed, config };
  try {
    outcome.result = await clock.run(
      generate(config, { drafter, targets, clock }, { signal: client.signal, events: hooks, onTokens: (tokens) => streamed.push(tokens), draftTimeoutMs: scenario.draftTimeoutMs }),
    );
  } catch (error) {
    outcome.error = error;
  }
  abortTimer.abort();
  await new Promise((resolve) => setImmediate(resolve)); // let aborted port calls settle
  return outcome;
}

/** What must hold after every generation, whatever the scenario. */
function expectInvariants(outcome: Outcome): void {
  const { result, clock, targets, drafter, events, streamed, config } = outcome;
  expect(clock.pendingTimers).toBe(0);
  // Nothing is left running: every port call ended on its own or had its signal aborted.
  for (const record of [...drafter.calls, ...targets.flatMap((target) => target.calls)]) {
    expect(record.completed || record.signal.aborted).toBe(true);
    expect(record.endedAt).toBeDefined();
  }
  // At most one task per replica at any time.
  for (const target of targets) {
    for (let i = 1; i < target.calls.length; i++) expect(target.calls[i].startedAt).toBeGreaterThanOrEqual(target.calls[i - 1].endedAt as number);
    for (const record of target.calls) expect(record.call.requestId).toBe(config.requestId);
  }
  // Results commit strictly in block order.
  const committedBlocks = ofType(events, 'verifyEnd')
    .filter((e) => e.outcome === 'committed')
    .map((e) => e.block);
  expect(committedBlocks).toEqual([...committedBlocks].sort((a, b) => a - b));
  if (!result) return;
  const { tokens, metrics } = result;
  expect(streamed.flat()).toEqual(tokens);
  const committed = ofType(events, 'commit').flatMap((e) => e.tokens);
  expect(committed.slice(0, tokens.length)).toEqual(tokens);
  expect(tokens.length).toBeLessThanOrEqual(config.maxNewTokens);
  expect(metrics.acceptanceRate).toBeGreaterThanOrEqual(0);
  expect(metrics.acceptanceRate).toBeLessThanOrEqual(1);
  expect(metrics.accepted).toBeLessThanOrEqual(metrics.drafted);
  const k = config.mode === 'nonsi' ? 0 : config.lookahead;
  expect(metrics.meanAcceptedLength).toBeGreaterThanOrEqual(1);
  expect(metrics.meanAcceptedLength).toBeLessThanOrEqual(k + 1);
  expect(metrics.preemptions).toBe(ofType(events, 'preempt').length);
  // The commit events carry exactly the judged and accepted drafts the metrics count.
  const commits = ofType(events, 'commit');
  const judged = commits.reduce((sum, e) => sum + e.judged, 0);
  expect(commits.reduce((sum, e) => sum + e.accepted, 0)).toBe(metrics.accepted);
  expect(metrics.acceptanceRate).toBe(judged > 0 ? metrics.accepted / judged : 0);
  expect(metrics.draftCalls).toBe(drafter.calls.length);
  expect(metrics.verifyCalls).toBe(targets.reduce((sum, target) => sum + target.calls.length, 0));
  expect(metrics.wallMs).toBe(clock.now());
  expect(metrics.ttftMs).toBeLessThanOrEqual(metrics.wallMs);
}

async function expectGeneration(scenario: Scenario): Promise<Outcome & { result: GenerationResult }> {
  const outcome = await simulate(scenario);
  if (outcome.error) throw outcome.error;
  expectInvariants(outcome);
  return outcome as Outcome & { result: GenerationResult };
}

// ------------------------------------------------------------------------------------------ tests

describe('validateGenerateConfig', () => {
  const valid: GenerateConfig = { requestId: 'r', mode: 'dsi', prompt: [1, 2], maxNewTokens: 8, lookahead: 4, sampling: GREEDY };

  it.each<[string, Partial<GenerateConfig>, number | undefined, string | undefined]>([
    ['a valid request', {}, 2, undefined],
    ['nonsi ignores the lookahead', { mode: 'nonsi', lookahead: 0 }, 1, undefined],
    ['an empty request id', { requestId: '' }, 1, 'requestId must be a non-empty string'],
    ['an unknown mode', { mode: 'turbo' as Mode }, 1, 'mode must be one of nonsi, si, dsi, got "turbo"'],
    ['an empty prompt', { prompt: [] }, 1, 'prompt must hold at least one token'],
    ['a bad prompt token', { prompt: [1, -2] }, 1, 'prompt token -2 is not a token id (an integer >= 0)'],
    ['a prompt token outside the vocabulary', { prompt: [1, 9], vocabSize: 8 }, 1, 'prompt token 9 is not a token id in [0, 8)'],
    ['zero new tokens', { maxNewTokens: 0 }, 1, 'maxNewTokens must be an integer >= 1, got 0'],
    ['fractional new tokens', { maxNewTokens: 2.5 }, 1, 'maxNewTokens must be an integer >= 1, got 2.5'],
    ['lookahead 0', { lookahead: 0 }, 1, "lookahead must be 'auto' or an integer in [1, 64] for mode dsi, got 0"],
    ['lookahead 65', { mode: 'si', lookahead: 65 }, 1, "lookahead must be 'auto' or an integer in [1, 64] for mode si, got 65"],
    ['bad sampling', { sampling: { rule: 'seeded', temperature: 1 } }, 1, 'sampling: the seeded rule needs a seed'],
    ['a bad eos token', { eosTokenId: 1.5 }, 1, 'eosTokenId 1.5 is not a token id (an integer >= 0)'],
    ['an empty stop sequence', { stopSequences: [[1], []] }, 1, 'stopSequences[1] must hold at least one token'],
    ['a bad stop token', { stopSequences: [[1, -1]] }, 1, 'stopSequences[0] token -1 is not a token id (an integer >= 0)'],
    ['a bad vocabulary size', { vocabSize: 0 }, 1, 'vocabSize must be a positive integer, got 0'],
    ['no target replicas', {}, 0, 'at least one target replica is required'],
  ])('%s', (_name, change, targetCount, message) => {
    expect(validateGenerateConfig({ ...valid, ...change }, targetCount)).toBe(message);
  });

  it('makes generate reject with an InvalidGenerateConfigError before any port call', async () => {
    const clock = new VirtualClock();
    const world = new World();
    const drafter = new FakeDrafter(world, clock, 1, () => 'ok');
    const targets = [new FakeTarget('t', world, clock, { t: 10, perToken: 0 })];
    await expect(generate({ ...valid, lookahead: 99 }, { drafter, targets, clock })).rejects.toThrow(InvalidGenerateConfigError);
    await expect(generate(valid, { drafter, targets: [], clock })).rejects.toThrow('at least one target replica is required');
    await expect(generate(valid, { drafter, targets, clock }, { draftTimeoutMs: 0 })).rejects.toThrow('draftTimeoutMs must be a positive number');
    expect(drafter.calls.length + targets[0].calls.length).toBe(0);
  });
});

describe('the output promise: identical tokens in every mode', () => {
  const N = 30;
  const world = new World(0.7);
  describe.each<[string, SamplingParams]>([
    ['greedy', GREEDY],
    ['seeded', SEEDED],
  ])('%s', (_rule, sampling) => {
    const reference = world.reference(sampling, N);

    it('nonsi is target-only decoding', async () => {
      const { result } = await expectGeneration({ mode: 'nonsi', sampling, world, maxNewTokens: N });
      expect(result.tokens).toEqual(reference);
      expect(result.finishReason).toBe('length');
    });

    it.each([1, 2, 3, 5, 8])('si and dsi with k = %i on 1, 2, 4 and 7 replicas', async (k) => {
      for (const replicas of [1, 2, 4, 7]) {
        for (const mode of ['si', 'dsi'] as const) {
          // Two timing shapes: a fast drafter with cheap verification, a slower one with costly drafts.
          // Three timing shapes: a fast drafter with cheap verification, a slower one with costly
          // drafts, and replicas of different speeds (results arrive out of block order).
          for (const [c, perToken, replicaSlowdown] of [
            [1, 0, 0],
            [3, 1.5, 0],
            [1, 0.5, 0.7],
          ]) {
            const { result } = await expectGeneration({ mode, sampling, world, k, replicas, c, perToken, replicaSlowdown, maxNewTokens: N });
            expect({ mode, k, replicas, c, tokens: result.tokens }).toEqual({ mode, k, replicas, c, tokens: reference });
          }
        }
      }
    });
  });
});

describe('rejections', () => {
  const N = 16;
  const k = 4;

  it.each<Mode>(['si', 'dsi'])('%s: a wrong draft at any position of a block commits the accepted drafts plus the target token', async (mode) => {
    const offsetsSeen = new Set<number>();
    // One replica makes DSI dispatch lanes full of drafts; with three, a block's first draft is
    // usually already checked by the previous block's bonus token.
    for (const replicas of [1, 3]) {
      for (let position = P; position < P + 3 * k; position++) {
        const world = new World(1, new Set([position]));
        const outcome = await expectGeneration({ mode, world, k, replicas, maxNewTokens: N });
        expect(outcome.result.tokens).toEqual(world.reference(GREEDY, N));
        // The commit holding the position ends right after it: accepted drafts, then the target's token.
        const commits = ofType(outcome.events, 'commit');
        const commit = commits.find((e) => e.verifiedLength - e.tokens.length <= position && position < e.verifiedLength);
        expect(commit?.verifiedLength).toBe(position + 1);
        // The verification behind it rejected the draft at that position (or confirmed all its drafts,
        // and its bonus token differed from the next draft, or there was no draft there).
        const verdict = outcome.events[outcome.events.indexOf(commit as Logged) - 1] as Extract<Logged, { type: 'verifyEnd' }>;
        expect(verdict).toMatchObject({ type: 'verifyEnd', outcome: 'committed' });
        const block = ofType(outcome.events, 'verifyStart').find((e) => e.block === verdict.block) as Extract<Logged, { type: 'verifyStart' }>;
        if (verdict.accepted < block.size) {
          expect(block.start + verdict.accepted).toBe(position);
          offsetsSeen.add(verdict.accepted);
          // The mistake costs the drafter's token, never the output: judged, and not accepted.
          expect(outcome.result.metrics.acceptanceRate).toBeLessThan(1);
        } else {
          expect(block.start + block.size).toBe(position);
        }
      }
    }
    expect([...offsetsSeen].sort()).toEqual([0, 1, 2, 3]);
  });

  it('si: a fully accepted block commits k + 1 tokens per target forward', async () => {
    const { result, events } = await expectGeneration({ mode: 'si', k: 4, maxNewTokens: 20 });
    expect(result.tokens).toEqual(new World().reference(GREEDY, 20));
    expect(ofType(events, 'commit').map((e) => e.tokens.length)).toEqual([5, 5, 5, 5]);
    expect(result.metrics).toMatchObject({ verifyCalls: 4, targetForwards: 4, drafted: 16, accepted: 16, acceptanceRate: 1, meanAcceptedLength: 5, preemptions: 0 });
  });

  it('dsi: a rejection in one block cancels every later block in flight, and none of them commits', async () => {
    const wrong = P + 7;
    const world = new World(1, new Set([wrong]));
    const outcome = await expectGeneration({ mode: 'dsi', world, k: 3, replicas: 4, c: 1, t: 10, maxNewTokens: 20 });
    expect(outcome.result.tokens).toEqual(world.reference(GREEDY, 20));
    const [preempt, ...more] = ofType(outcome.events, 'preempt');
    expect(more).toEqual([]);
    expect(preempt.position).toBe(wrong);
    // Blocks dispatched before the preemption that start after the wrong position.
    const beforePreempt = outcome.events.slice(0, outcome.events.indexOf(preempt));
    const later = ofType(beforePreempt, 'verifyStart').filter((e) => e.start > wrong);
    expect(later.length).toBeGreaterThan(0);
    for (const block of later) {
      const ends = ofType(outcome.events, 'verifyEnd').filter((e) => e.block === block.block);
      expect(ends.map((e) => e.outcome)).toEqual([expect.stringMatching(/^(cancelled|rejected)$/)]);
    }
    const cancelled = outcome.targets.flatMap((target) => target.calls).filter((record) => record.signal.aborted);
    expect(cancelled.length).toBeGreaterThan(0);
    for (const record of cancelled) {
      expect(record.signal.reason).toBeInstanceOf(WorkCancelledError);
      expect(record.call.prefix.length).toBeGreaterThan(wrong); // built on the wrong draft
    }
    // The drafter call in flight was cancelled too, and drafting restarted from V.
    const draftsCancelled = ofType(outcome.events, 'draftEnd').filter((e) => e.outcome === 'cancelled');
    expect(draftsCancelled.length).toBe(1);
    const restart = outcome.drafter.calls.find((record) => record.startedAt >= preempt.at);
    expect(restart?.call.prefix.length).toBe(wrong + 1);
    expect(outcome.result.metrics.preemptions).toBe(1);
    expect(outcome.result.metrics.cancelledVerifications).toBeGreaterThan(0);
  });

  it('dsi: a perfect drafter never preempts and commits each bonus token as the next draft agrees', async () => {
    const { result } = await expectGeneration({ mode: 'dsi', k: 3, replicas: 4, maxNewTokens: 20 });
    expect(result.tokens).toEqual(new World().reference(GREEDY, 20));
    expect(result.metrics.preemptions).toBe(0);
    expect(result.metrics.acceptanceRate).toBe(1);
    expect(result.metrics.cancelledVerifications).toBe(0);
  });
});

describe('commit order', () => {
  it('dsi: a later block that finishes first waits for the earlier ones, and is discarded if they reject', async () => {
    const world = new World(0.75);
    const outcome = await expectGeneration({ mode: 'dsi', world, k: 2, replicas: 4, c: 1, replicaSlowdown: 0.8, maxNewTokens: 40 });
    expect(outcome.result.tokens).toEqual(world.reference(GREEDY, 40));
    // Map each block to the replica call that verified it, to see when its result arrived.
    const arrival = new Map<number, number>();
    for (const start of ofType(outcome.events, 'verifyStart')) {
      const target = outcome.targets.find((candidate) => candidate.id === start.replica) as FakeTarget;
      const record = target.calls.find((candidate) => candidate.startedAt === start.at && candidate.completed);
      if (record) arrival.set(start.block, record.endedAt as number);
    }
    const ends = ofType(outcome.events, 'verifyEnd');
    const committed = ends.filter((e) => e.outcome === 'committed');
    const waited = committed.filter((e) => e.at > (arrival.get(e.block) as number));
    expect(waited.length).toBeGreaterThan(0);
    const discarded = ends.filter((e) => e.outcome === 'rejected');
    expect(discarded.length).toBeGreaterThan(0);
    for (const e of discarded) expect(e.at).toBeGreaterThan(arrival.get(e.block) as number);
  });
});

describe('stopping', () => {
  const world = new World();
  const reference = world.reference(GREEDY, 40);
  const firstOccurrences = reference.map((token, i) => (reference.indexOf(token) === i ? i : -1)).filter((i) => i >= 2);

  it.each<Mode>(['nonsi', 'si', 'dsi'])('%s: an end-of-sequence token inside an accepted block ends the output right after it', async (mode) => {
    expect(firstOccurrences.length).toBeGreaterThan(3);
    for (const at of firstOccurrences) {
      const outcome = await expectGeneration({ mode, world, k: 5, replicas: 3, maxNewTokens: 40, eosTokenId: reference[at] });
      expect(outcome.result.tokens).toEqual(reference.slice(0, at + 1));
      expect(outcome.result.finishReason).toBe('eos');
      // Nothing after the end-of-sequence token is ever committed.
      expect(ofType(outcome.events, 'commit').flatMap((e) => e.tokens)).toEqual(reference.slice(0, at + 1));
    }
  });

  it.each<Mode>(['nonsi', 'si', 'dsi'])('%s: max new tokens truncates exactly, even mid-block', async (mode) => {
    for (const n of [1, 2, 3, 7, 13]) {
      const outcome = await expectGeneration({ mode, world, k: 5, replicas: 2, maxNewTokens: n });
      expect(outcome.result.tokens).toEqual(reference.slice(0, n));
      expect(outcome.result.finishReason).toBe('length');
      expect(ofType(outcome.events, 'commit').flatMap((e) => e.tokens)).toEqual(reference.slice(0, n));
    }
  });

  it.each<Mode>(['nonsi', 'si', 'dsi'])('%s: a stop sequence ends the output before it and is never streamed', async (mode) => {
    for (const at of [0, 3, 9]) {
      const stop = reference.slice(at, at + 3);
      const expected = reference.slice(0, at);
      const firstMatch = reference.findIndex((_, i) => stop.every((token, j) => reference[i + j] === token));
      expect(firstMatch).toBe(at);
      // A second stop sequence that only ever matches partially: held back, then released.
      const partial = [reference[1], (reference[2] + 1) % VOCAB];
      const outcome = await expectGeneration({ mode, world, k: 4, maxNewTokens: 40, stopSequences: [partial, stop] });
      expect(outcome.result.tokens).toEqual(expected);
      expect(outcome.result.finishReason).toBe('stop');
    }
  });

  it('a stop sequence completed by the last allowed token wins over the length limit', async () => {
    const outcome = await expectGeneration({ mode: 'dsi', world, maxNewTokens: 6, stopSequences: [reference.slice(4, 6)] });
    expect(outcome.result).toMatchObject({ tokens: reference.slice(0, 4), finishReason: 'stop' });
  });

  it('streams tokens as they are verified, before the generation ends', async () => {
    const outcome = await expectGeneration({ mode: 'nonsi', world, maxNewTokens: 5 });
    expect(outcome.streamed).toEqual(reference.slice(0, 5).map((token) => [token]));
  });
});

describe('a failing or hanging drafter', () => {
  const N = 20;
  const world = new World(0.8);
  const reference = world.reference(GREEDY, N);

  it.each<Mode>(['si', 'dsi'])('%s: a drafter that always fails degrades to non-SI with the same output', async (mode) => {
    const outcome = await expectGeneration({ mode, world, maxNewTokens: N, drafter: () => 'fail' });
    expect(outcome.result.tokens).toEqual(reference);
    expect(outcome.result.metrics.drafted).toBe(0);
    const ends = ofType(outcome.events, 'draftEnd');
    expect(ends.length).toBeGreaterThan(0);
    expect(ends.every((e) => e.outcome === 'failed')).toBe(true);
    // Drafting is retried after each commit, not in a tight loop.
    expect(outcome.result.metrics.draftCalls).toBeLessThanOrEqual(N);
    if (mode === 'dsi') expect(outcome.result.metrics.wallMs).toBe(N * 10);
  });

  it('dsi: a drafter that fails every other call still yields the target output', async () => {
    const outcome = await expectGeneration({ mode: 'dsi', world, maxNewTokens: N, drafter: (i) => (i % 2 ? 'fail' : 'ok') });
    expect(outcome.result.tokens).toEqual(reference);
    expect(outcome.result.metrics.drafted).toBeGreaterThan(0);
  });

  it('dsi: a hanging drafter does not hold up the lane, and is cancelled at the end', async () => {
    const outcome = await expectGeneration({ mode: 'dsi', world, maxNewTokens: N, drafter: () => 'hang' });
    expect(outcome.result.tokens).toEqual(reference);
    expect(outcome.result.metrics.wallMs).toBe(N * 10);
    expect(outcome.drafter.calls.length).toBeGreaterThan(0);
    expect(outcome.drafter.calls.every((record) => record.signal.aborted)).toBe(true);
  });

  it.each<Mode>(['si', 'dsi'])('%s: draftTimeoutMs aborts a hanging drafter call and drafting resumes after the next commit', async (mode) => {
    const outcome = await expectGeneration({ mode, world, maxNewTokens: N, drafter: (i) => (i % 3 === 1 ? 'hang' : 'ok'), draftTimeoutMs: 7 });
    expect(outcome.result.tokens).toEqual(reference);
    const timedOut = outcome.drafter.calls.filter((record) => record.signal.reason instanceof DraftTimeoutError);
    expect(timedOut.length).toBeGreaterThan(0);
    for (const record of timedOut) expect((record.endedAt as number) - record.startedAt).toBe(7);
  });
});

describe('malformed port results', () => {
  const world = new World(0.8);
  const reference = world.reference(GREEDY, 12);

  it('a verification result that does not fit its block counts as a replica failure', async () => {
    const clock = new VirtualClock();
    const drafter = new FakeDrafter(world, clock, 1, () => 'ok');
    const honest = new FakeTarget('honest', world, clock, { t: 10, perToken: 0 });
    let lies = 2;
    const liar: TargetReplica = {
      id: 'liar',
      verify: async (call, signal) => {
        await clock.sleep(10, signal);
        return lies-- > 0 ? { accepted: call.drafts.length + 1, tokens: [] } : world.verify(call);
      },
    };
    const failures: unknown[] = [];
    const config: GenerateConfig = { requestId: 'r', mode: 'dsi', prompt: PROMPT, maxNewTokens: 12, lookahead: 3, sampling: GREEDY };
    const events: SchedulerEvents = { verifyEnd: (e) => e.outcome === 'failed' && failures.push(`${e.replica}: ${(e.error as Error).message}`) };
    const result = await clock.run(generate(config, { drafter, targets: [liar, honest], clock }, { events }));
    expect(result.tokens).toEqual(reference);
    expect(failures).toEqual([expect.stringMatching(/^liar: replica liar returned a malformed result: accepted must be in \[0, \d\], got \d$/), expect.stringContaining('liar: replica liar returned')]);
  });

  it('a drafter that throws synchronously or returns too many tokens is a failed drafter call', async () => {
    const clock = new VirtualClock();
    const targets = [new FakeTarget('t0', world, clock, { t: 10, perToken: 0 }), new FakeTarget('t1', world, clock, { t: 10, perToken: 0 })];
    let calls = 0;
    const drafter: Drafter = {
      draft: (call) => {
        calls++;
        if (calls === 1) throw new Error('not connected');
        return Promise.resolve({ tokens: new Array<number>(call.maxTokens + 1).fill(0) });
      },
    };
    const outcomes: string[] = [];
    const config: GenerateConfig = { requestId: 'r', mode: 'dsi', prompt: PROMPT, maxNewTokens: 12, lookahead: 3, sampling: GREEDY };
    const result = await clock.run(generate(config, { drafter, targets, clock }, { events: { draftEnd: (e) => outcomes.push(`${e.outcome}: ${(e.error as Error).message}`) } }));
    expect(result.tokens).toEqual(reference);
    expect(result.metrics.drafted).toBe(0);
    expect(outcomes[0]).toBe('failed: not connected');
    expect(outcomes.length).toBeGreaterThan(2);
    for (const outcome of outcomes.slice(1)) expect(outcome).toMatch(/^failed: the drafter returned a malformed result: expected at most [1-3] tokens$/);
  });
});

describe('failing replicas', () => {
  const N = 20;
  const world = new World(0.8);
  const reference = world.reference(GREEDY, N);

  it('dsi: a failed verification is re-dispatched and the output is unchanged', async () => {
    const outcome = await expectGeneration({ mode: 'dsi', world, replicas: 3, maxNewTokens: N, replicaFails: (r, i) => r === 1 && i < 3 });
    expect(outcome.result.tokens).toEqual(reference);
    const failed = ofType(outcome.events, 'verifyEnd').filter((e) => e.outcome === 'failed');
    // Its first call fails, then its second; after two in a row it waits while the others have not
    // failed (so the third failing call may not come within these 20 tokens).
    expect(failed.length).toBeGreaterThanOrEqual(2);
    expect(failed.length).toBeLessThanOrEqual(3);
    for (const failure of failed) {
      const retries = ofType(outcome.events, 'verifyStart').filter((e) => e.block === failure.block && e.at >= failure.at);
      expect(retries.length).toBeGreaterThan(0);
    }
    const { metrics } = outcome.result;
    expect(metrics.targetForwards).toBe(metrics.verifyCalls - failed.length);
  });

  it('dsi: a dead replica (every call refused at once) does not use up the failure budget while others serve', async () => {
    // Forwards 100x longer than a refusal (a dead replica answers ECONNREFUSED in well under a millisecond).
    const outcome = await expectGeneration({ mode: 'dsi', world, replicas: 4, t: 200, c: 20, maxNewTokens: N, replicaFails: (r) => r === 1 });
    expect(outcome.result.tokens).toEqual(reference);
    const failed = ofType(outcome.events, 'verifyEnd').filter((e) => e.outcome === 'failed');
    expect(failed.length).toBeGreaterThan(0);
    // After two failures in a row the dead replica waits for a success elsewhere: never more than two
    // verifications fail back to back (a dead replica free at once would otherwise take every retry).
    let run = 0;
    let longest = 0;
    for (const e of ofType(outcome.events, 'verifyEnd')) {
      run = e.outcome === 'failed' ? run + 1 : 0;
      longest = Math.max(longest, run);
    }
    expect(longest).toBeLessThanOrEqual(2);
  });

  it('dsi: a replica that is always down is worked around', async () => {
    const outcome = await expectGeneration({ mode: 'dsi', world, replicas: 3, maxNewTokens: N, replicaFails: (r) => r === 0 });
    expect(outcome.result.tokens).toEqual(reference);
  });

  it('si: a failing first replica hands its block to another', async () => {
    const outcome = await expectGeneration({ mode: 'si', world, replicas: 2, maxNewTokens: N, replicaFails: (r) => r === 0 });
    expect(outcome.result.tokens).toEqual(reference);
    expect(outcome.targets[1].calls.length).toBeGreaterThan(0);
  });

  it.each<Mode>(['nonsi', 'si', 'dsi'])('%s: when every replica keeps failing, generate rejects naming the last failure', async (mode) => {
    const outcome = await simulate({ mode, world, replicas: 3, maxNewTokens: N, replicaFails: () => true });
    expect(outcome.error).toBeInstanceOf(TargetsUnavailableError);
    expect((outcome.error as Error).message).toMatch(/^target replicas failed 9 times in a row; last: replica target-\d: replica target-\d is down$/);
    expect((outcome.error as Error).cause).toBeInstanceOf(Error);
    expect(ofType(outcome.events, 'verifyEnd').filter((e) => e.outcome === 'failed').length).toBe(9);
    expectInvariants(outcome);
  });
});

describe('client cancellation', () => {
  it.each<Mode>(['nonsi', 'si', 'dsi'])('%s: aborting stops everything and rejects with the reason', async (mode) => {
    const outcome = await simulate({ mode, world: new World(0.7), replicas: 4, maxNewTokens: 40, abortAt: 35 });
    expect(outcome.error).toBe(ABORT_REASON);
    expect(outcome.clock.now()).toBe(35);
    expect(outcome.streamed.flat().length).toBeGreaterThan(0);
    const inFlight = [...outcome.drafter.calls, ...outcome.targets.flatMap((target) => target.calls)].filter((record) => !record.completed);
    expect(inFlight.length).toBeGreaterThan(0);
    for (const record of inFlight) expect(record.signal.reason).toBeInstanceOf(WorkCancelledError);
    expectInvariants(outcome); // no timers left, every call ended or aborted
  });

  it('an already aborted signal rejects before any port call', async () => {
    const clock = new VirtualClock();
    const world = new World();
    const drafter = new FakeDrafter(world, clock, 1, () => 'ok');
    const targets = [new FakeTarget('t', world, clock, { t: 10, perToken: 0 })];
    const config: GenerateConfig = { requestId: 'r', mode: 'dsi', prompt: PROMPT, maxNewTokens: 4, lookahead: 2, sampling: GREEDY };
    await expect(generate(config, { drafter, targets, clock }, { signal: AbortSignal.abort(ABORT_REASON) })).rejects.toBe(ABORT_REASON);
    expect(drafter.calls.length + targets[0].calls.length).toBe(0);
  });

  it('a hook that throws fails the generation cleanly', async () => {
    const clock = new VirtualClock();
    const world = new World();
    const drafter = new FakeDrafter(world, clock, 1, () => 'ok');
    const targets = [new FakeTarget('t', world, clock, { t: 10, perToken: 0 })];
    const config: GenerateConfig = { requestId: 'r', mode: 'dsi', prompt: PROMPT, maxNewTokens: 8, lookahead: 2, sampling: GREEDY };
    const failure = new Error('exporter broke');
    const events: SchedulerEvents = {
      commit: () => {
        throw failure;
      },
    };
    await expect(clock.run(generate(config, { drafter, targets, clock }, { events }))).rejects.toBe(failure);
    expect(clock.pendingTimers).toBe(0);
  });
});

describe('timing on the virtual clock', () => {
  const N = 20;
  const t = 10;

  it('nonsi takes exactly N target forwards', async () => {
    const { result, drafter, targets } = await expectGeneration({ mode: 'nonsi', maxNewTokens: N, t, replicas: 3 });
    expect(result.metrics).toMatchObject({ wallMs: N * t, ttftMs: t, tpotMs: t, targetForwards: N, verifyCalls: N, draftCalls: 0, drafted: 0, acceptanceRate: 0, meanAcceptedLength: 1 });
    expect(drafter.calls).toEqual([]);
    expect(targets.flatMap((target) => target.calls).every((record) => record.call.drafts.length === 0)).toBe(true);
  });

  it('si alternates: one blocking drafter call of k, then one verification', async () => {
    const { result, events } = await expectGeneration({ mode: 'si', k: 4, c: 1, maxNewTokens: N, t, replicas: 3 });
    expect(result.metrics.wallMs).toBe(4 * (4 * 1 + t));
    // No drafting while a verification runs, and one verification at a time.
    let verifying = 0;
    let drafting = 0;
    for (const event of events) {
      if (event.type === 'verifyStart') verifying++;
      if (event.type === 'verifyEnd') verifying--;
      if (event.type === 'draftStart') drafting++;
      if (event.type === 'draftEnd') drafting--;
      expect(verifying + drafting).toBeLessThanOrEqual(1);
    }
  });

  it('dsi with a perfect drafter and enough replicas is far faster than si', async () => {
    const si = await expectGeneration({ mode: 'si', k: 4, c: 1, maxNewTokens: 40, t, replicas: 8 });
    const dsi = await expectGeneration({ mode: 'dsi', k: 4, c: 1, maxNewTokens: 40, t, replicas: 8 });
    expect(dsi.result.tokens).toEqual(si.result.tokens);
    expect(dsi.result.metrics.wallMs).toBeLessThan(0.6 * si.result.metrics.wallMs);
    expect(dsi.result.metrics.preemptions).toBe(0);
  });

  it('dsi is never slower than nonsi, on a grid of acceptance rates, lookaheads, replicas and drafter speeds', async () => {
    const nonsiWall = N * t;
    let fasterRuns = 0;
    for (const agreement of [0, 0.3, 0.6, 0.9, 1]) {
      const world = new World(agreement);
      for (const k of [1, 3, 5]) {
        for (const replicas of [1, 2, 4]) {
          for (const c of [1, 4, 15]) {
            const { result } = await expectGeneration({ mode: 'dsi', world, k, replicas, c, t, maxNewTokens: N });
            expect(result.tokens).toEqual(world.reference(GREEDY, N));
            const slower = result.metrics.wallMs > nonsiWall + 1e-9;
            expect({ agreement, k, replicas, c, slower }).toEqual({ agreement, k, replicas, c, slower: false });
            if (result.metrics.wallMs < nonsiWall) fasterRuns++;
            if (agreement === 1) expect(result.metrics.preemptions).toBe(0);
          }
        }
      }
    }
    expect(fasterRuns).toBeGreaterThan(40);
  });
});

describe('metrics', () => {
  it('commit events carry the drafts each commit judged and accepted, bonus-confirmed drafts included', async () => {
    for (const [mode, agreement] of [['dsi', 0.7], ['dsi', 0.95], ['si', 0.7], ['nonsi', 0.7]] as const) {
      const { result, events } = await expectGeneration({ mode, world: new World(agreement), k: 4, replicas: 4, maxNewTokens: 60 });
      const commits = ofType(events, 'commit');
      const judged = commits.reduce((sum, e) => sum + e.judged, 0);
      const accepted = commits.reduce((sum, e) => sum + e.accepted, 0);
      expect({ mode, agreement, accepted }).toEqual({ mode, agreement, accepted: result.metrics.accepted });
      expect(judged > 0 ? accepted / judged : 0).toBe(result.metrics.acceptanceRate);
      // A commit accepts at most the drafts it judged, and judges at most its tokens (each token settles one position).
      for (const e of commits) {
        expect(e.accepted).toBeLessThanOrEqual(e.judged);
        expect(e.judged).toBeLessThanOrEqual(e.tokens.length);
      }
      if (mode === 'nonsi') expect(judged).toBe(0);
      else expect(judged).toBeGreaterThan(0);
    }
  });

  it('count preemptions, cancellations and acceptance for a mediocre drafter', async () => {
    const world = new World(0.6);
    const dsi = await expectGeneration({ mode: 'dsi', world, k: 4, replicas: 4, maxNewTokens: 40 });
    const si = await expectGeneration({ mode: 'si', world, k: 4, replicas: 4, maxNewTokens: 40 });
    expect(dsi.result.metrics.preemptions).toBeGreaterThan(0);
    expect(dsi.result.metrics.cancelledVerifications).toBeGreaterThan(0);
    expect(dsi.result.metrics.drafted).toBeGreaterThan(dsi.result.metrics.accepted);
    expect(si.result.metrics.preemptions).toBe(0); // SI never has work in flight to cancel
    expect(si.result.metrics.cancelledVerifications).toBe(0);
    for (const { result } of [dsi, si]) {
      expect(result.metrics.acceptanceRate).toBeGreaterThan(0.3);
      expect(result.metrics.acceptanceRate).toBeLessThan(0.9);
    }
    // SI judges every draft it verifies up to the first mismatch, so its figures are checkable by hand.
    const siCommits = ofType(si.events, 'commit').map((e) => e.tokens.length);
    expect(si.result.metrics.meanAcceptedLength).toBeCloseTo(siCommits.reduce((a, b) => a + b, 0) / siCommits.length, 12);
  });
});

describe('the rejection rule', () => {
  const sampling = (seed: number): SamplingParams => ({ rule: 'rejection', temperature: 1, seed });

  it.each<Mode>(['si', 'dsi'])('%s: passes the drafter q rows of exactly each block drafts to the replica', async (mode) => {
    const outcome = await expectGeneration({ mode, world: new World(0.6), sampling: sampling(5), k: 3, replicas: 3, maxNewTokens: 30 });
    expect(outcome.drafter.calls.every((record) => record.call.returnProbs)).toBe(true);
    const verified = outcome.targets.flatMap((target) => target.calls.filter((record) => record.completed));
    expect(verified.some((record) => record.call.drafts.length > 1)).toBe(true);
    expect(outcome.targets.flatMap((target) => target.probMismatches)).toEqual([]);
  });

  it('dsi samples from the target distribution (chi-square on the first three tokens)', async () => {
    const world = new World(1, new Set(), 2);
    const T = 1;
    // Exact marginals of output tokens 0..2 under the target.
    const exact = [new Float64Array(VOCAB), new Float64Array(VOCAB), new Float64Array(VOCAB)];
    const walk = (sequence: number[], depth: number, weight: number): void => {
      if (depth === 3) return;
      const p = softmax(world.targetRow(sequence), 0, VOCAB, T);
      for (let x = 0; x < VOCAB; x++) {
        exact[depth][x] += weight * p[x];
        walk([...sequence, x], depth + 1, weight * p[x]);
      }
    };
    walk([...PROMPT], 0, 1);
    const runs = 1200;
    const counts = [new Array<number>(VOCAB).fill(0), new Array<number>(VOCAB).fill(0), new Array<number>(VOCAB).fill(0)];
    for (let seed = 0; seed < runs; seed++) {
      const { result } = await expectGeneration({ mode: 'dsi', world, sampling: sampling(seed), k: 2, replicas: 3, c: 1, t: 10, maxNewTokens: 3 });
      result.tokens.forEach((token, i) => counts[i][token]++);
    }
    // 0.999 quantile of chi-square with 15 degrees of freedom.
    const CHI2_15_999 = 37.7;
    for (let i = 0; i < 3; i++) {
      const chi2 = counts[i].reduce((sum, count, x) => sum + (count - runs * exact[i][x]) ** 2 / (runs * exact[i][x]), 0);
      expect({ token: i, chi2: chi2 < CHI2_15_999 }).toEqual({ token: i, chi2: true });
    }
  });
});
