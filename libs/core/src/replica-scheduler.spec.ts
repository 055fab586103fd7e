import type { DraftCall, DraftResult, Drafter, TargetReplica, VerifyCall, VerifyResult } from './ports';
import { DrafterScheduler, PoolMeasurements, ReplicaClaim, ReplicaLease, ReplicaScheduler, ReplicaSchedulerStats, ReplicaTenant, TargetScheduler, WorkClass } from './replica-scheduler';
import { draftToken, SamplingParams, targetToken, verifyBlock } from './rules';
import { counterHash, uniform } from './sampling';
import { generate, GenerateConfig, GenerationResult, Lookahead, Mode, SchedulerEvents, WorkCancelledError } from './scheduler';
import { VirtualClock, VirtualClockOptions, VirtualClockStalledError } from './virtual-clock';

// ------------------------------------------------------------------------------------------ the pool alone

/** A replica as the pool sees it: any object. */
interface Slot {
  name: string;
}

interface Want {
  class: WorkClass;
  ready?: boolean;
  distance?: number;
}

/** A tenant that wants a scripted list of work and records what it was granted. */
class ScriptedTenant implements ReplicaTenant<Slot> {
  readonly wants: Want[] = [];
  readonly leases: ReplicaLease<Slot>[] = [];
  /** Leases that must not be preempted (their work became the lane). */
  readonly lanesNow = new Set<ReplicaLease<Slot>>();
  readonly preempted: ReplicaLease<Slot>[] = [];
  private since?: number;

  constructor(
    readonly name: string,
    private readonly scheduler: ReplicaScheduler<Slot>,
    private readonly log: string[],
  ) {}

  want(...wants: Want[]): this {
    this.wants.push(...wants);
    this.scheduler.schedule();
    return this;
  }

  /** Lanes first, then the nearest speculative work. */
  private top(): Want | undefined {
    return this.wants.find((want) => want.class === 'lane') ?? [...this.wants].sort((a, b) => (a.distance ?? 0) - (b.distance ?? 0))[0];
  }

  claim(): ReplicaClaim | undefined {
    const want = this.top();
    if (!want) {
      this.since = undefined;
      return undefined;
    }
    this.since ??= this.scheduler.ticket();
    return { class: want.class, ready: want.ready ?? true, distance: want.distance ?? 0, since: this.since };
  }

  grant(lease: ReplicaLease<Slot>): boolean {
    const want = this.top() as Want;
    this.wants.splice(this.wants.indexOf(want), 1);
    this.since = undefined;
    this.leases.push(lease);
    this.log.push(`${this.name}:${want.class}${want.class === 'speculative' ? want.distance : ''}@${lease.replica.name}`);
    return true;
  }

  preemptible(lease: ReplicaLease<Slot>): number | undefined {
    return this.lanesNow.has(lease) ? undefined : (this.wantOf.get(lease) ?? 0);
  }

  /** Distances of the speculative work under each lease, for preemption. */
  readonly wantOf = new Map<ReplicaLease<Slot>, number>();

  preempt(lease: ReplicaLease<Slot>): void {
    this.preempted.push(lease);
    this.log.push(`preempt ${this.name}@${lease.replica.name}`);
    lease.release('cancelled');
  }

  /** Ends the oldest unreleased lease. */
  finishOne(outcome: 'succeeded' | 'failed' = 'succeeded'): void {
    const lease = this.leases.find((candidate) => !candidate.released);
    lease?.release(outcome);
  }
}

function pool(replicas: number, preemptSpeculative = true, slotsPerReplica = 1): { scheduler: ReplicaScheduler<Slot>; slots: Slot[]; log: string[]; tenant: (name: string) => ScriptedTenant } {
  const slots = Array.from({ length: replicas }, (_, i) => ({ name: `r${i}` }));
  const scheduler = new ReplicaScheduler<Slot>(slots, { preemptSpeculative, slotsPerReplica });
  const log: string[] = [];
  return {
    scheduler,
    slots,
    log,
    tenant: (name) => {
      const tenant = new ScriptedTenant(name, scheduler, log);
      scheduler.join(tenant);
      return tenant;
    },
  };
}

describe('ReplicaScheduler decisions', () => {
  it('with several slots per replica (batching replicas): the least loaded replica first, lanes before speculative work, preemption only when every slot is taken', () => {
    const { scheduler, log, tenant } = pool(2, true, 2);
    expect(scheduler.slotsPerReplica).toBe(2);
    const a = tenant('a').want({ class: 'lane' });
    const b = tenant('b').want({ class: 'lane' });
    // Idle replicas first: a and b each get one; then the second slots.
    expect(log).toEqual(['a:lane@r0', 'b:lane@r1']);
    const c = tenant('c').want({ class: 'speculative', distance: 1 });
    const d = tenant('d').want({ class: 'speculative', distance: 3 });
    expect(log).toEqual(['a:lane@r0', 'b:lane@r1', 'c:speculative1@r0', 'd:speculative3@r1']);
    expect(scheduler.stats()).toMatchObject({ busyReplicas: 2, replicas: 2 });
    // Every slot is taken: a new lane takes back the farthest speculative call (d's).
    d.wantOf.set(d.leases[0], 3);
    c.wantOf.set(c.leases[0], 1);
    tenant('e').want({ class: 'lane' });
    expect(log.slice(4)).toEqual(['preempt d@r1', 'e:lane@r1']);
    // 5 tenants on 2 replicas x 2 slots: saturated; 3 would not be.
    expect(scheduler.saturated).toBe(true);
    a.finishOne();
    b.finishOne();
    expect(scheduler.stats()).toMatchObject({ busyReplicas: 2 });
    expect(() => new ReplicaScheduler<Slot>([], { slotsPerReplica: 0 })).toThrow(/slotsPerReplica=0/);
  });

  it('batching replicas: a lane goes back to the replica of its last lane while that has a free slot (its requests there batch together)', () => {
    const { log, tenant } = pool(2, true, 2);
    const a = tenant('a').want({ class: 'lane' });
    const b = tenant('b').want({ class: 'lane' });
    const c = tenant('c').want({ class: 'lane' });
    expect(log).toEqual(['a:lane@r0', 'b:lane@r1', 'c:lane@r0']);
    // b's lane ends first: r1 is empty, r0 holds a and c. a's next lane still goes to r0, where c's is.
    b.finishOne();
    a.finishOne();
    a.want({ class: 'lane' });
    expect(log.slice(3)).toEqual(['a:lane@r0']);
    // Speculative work has no home: the least loaded replica.
    a.want({ class: 'speculative', distance: 1 });
    expect(log.slice(4)).toEqual(['a:speculative1@r1']);
    // A full home: the least loaded replica instead, which becomes the home.
    c.finishOne();
    tenant('d').want({ class: 'lane' });
    c.want({ class: 'lane' });
    expect(log.slice(5)).toEqual(['d:lane@r0', 'c:lane@r1']);
  });

  it('replicas of one slot: a lane takes the least loaded replica, whatever its last was', () => {
    const { log, tenant } = pool(2, true, 1);
    const a = tenant('a').want({ class: 'lane' });
    const b = tenant('b').want({ class: 'lane' });
    expect(log).toEqual(['a:lane@r0', 'b:lane@r1']);
    a.finishOne();
    b.finishOne();
    b.want({ class: 'lane' });
    expect(log.slice(2)).toEqual(['b:lane@r0']);
  });

  it("pool measurements: a verification without its wait at the replica, and what one more token in every call costs a batched forward", () => {
    const m = new PoolMeasurements();
    expect(m.forwardView()).toBeUndefined();
    // Forwards of 8 calls, 20 ms plus 0.2 ms a token beyond the first; each call waited 2 ms and took 1 ms more on the way.
    for (let n = 0; n < 200; n++) {
      const callTokens = 1 + (n % 6);
      const batchTokens = 8 * callTokens + (n % 3);
      const modelMs = 20 + 0.2 * (batchTokens - 1);
      m.recordForward(modelMs + 3, callTokens, { modelMs, queueMs: 2, batchRequests: 8, batchTokens });
    }
    const view = m.forwardView()!;
    expect(view.msPerCallToken).toBeCloseTo(0.2 * 8, 6);
    // The call less its wait: the forward and the round trip.
    expect(view.serviceMs).toBeCloseTo(20 + 0.2 * (8 * view.callTokens + 1 - 1) + 1, 0);
    expect(view.waitingLaneQueueMs).toBeUndefined();
    // Lanes that waited for their drafts are charged what they waited at the replica beyond the lanes that went at once.
    m.recordForward(25, 2, { modelMs: 20, queueMs: 4, batchRequests: 1, batchTokens: 2 }, 'waited');
    expect(m.forwardView()!.waitingLaneQueueMs).toBeUndefined();
    m.recordForward(22, 1, { modelMs: 20, queueMs: 1, batchRequests: 1, batchTokens: 1 }, 'plain');
    expect(m.forwardView()!.waitingLaneQueueMs).toBe(3);
    // A saturated pool whose lanes all queue for a forward: waiting for drafts costs nothing there.
    for (let n = 0; n < 100; n++) m.recordForward(45, 1, { modelMs: 20, queueMs: 20, batchRequests: 8, batchTokens: 8 }, 'plain');
    expect(m.forwardView()!.waitingLaneQueueMs).toBe(0);
  });

  it('batching replicas: once every slot of a forward is taken, a lane takes back speculative work first and else queues at the replica for its next forward; speculative work never queues', () => {
    const { scheduler, log, tenant } = pool(2, true, 2);
    const a = tenant('a').want({ class: 'lane' });
    tenant('b').want({ class: 'lane' });
    const c = tenant('c').want({ class: 'speculative', distance: 2 });
    tenant('d').want({ class: 'lane' });
    expect(log).toEqual(['a:lane@r0', 'b:lane@r1', 'c:speculative2@r0', 'd:lane@r1']);
    // Every slot of a forward is taken: a lane takes back c's speculative call before it queues.
    c.wantOf.set(c.leases[0], 2);
    tenant('e').want({ class: 'lane' });
    expect(log.slice(4)).toEqual(['preempt c@r0', 'e:lane@r0']);
    // Nothing left to take back: lanes queue, two a replica beyond its two slots (the default, twice
    // the slots), the least loaded replica first; a fifth waits here.
    const late = ['f', 'g', 'h', 'i', 'j'].map((name) => tenant(name).want({ class: 'lane' }));
    expect(log.slice(6)).toEqual(['f:lane@r0', 'g:lane@r1', 'h:lane@r0', 'i:lane@r1']);
    expect(late[4].leases).toHaveLength(0);
    // Speculative work never queues: it waits for a slot below the forward's.
    const k = tenant('k').want({ class: 'speculative', distance: 1 });
    a.finishOne();
    expect(log.slice(10)).toEqual(['j:lane@r0']);
    expect(k.leases).toHaveLength(0);
    expect(scheduler.stats()).toMatchObject({ waitingLanes: 0, waitingSpeculative: 1 });
    // One lane queue a replica is what a forward at a time needs; more can be given, not less than the slots.
    expect(new ReplicaScheduler<Slot>([], { slotsPerReplica: 8 }).slotsPerReplica).toBe(8);
    expect(() => new ReplicaScheduler<Slot>([], { slotsPerReplica: 4, laneSlotsPerReplica: 3 })).toThrow(/laneSlotsPerReplica=3 must be an integer >= slotsPerReplica \(4\)/);
  });

  it('replicas of one slot: lanes never queue at a replica (it runs one call at a time: the scheduler picks the first to free)', () => {
    const { log, tenant } = pool(2, true, 1);
    tenant('a').want({ class: 'lane' });
    tenant('b').want({ class: 'lane' });
    const c = tenant('c').want({ class: 'lane' });
    expect(log).toEqual(['a:lane@r0', 'b:lane@r1']);
    expect(c.leases).toHaveLength(0);
  });

  it('gives a free replica to any lane before any speculative work, whatever waited longer', () => {
    const { scheduler, log, tenant } = pool(1);
    const a = tenant('a').want({ class: 'lane' }); // takes r0
    const b = tenant('b').want({ class: 'speculative', distance: 1 });
    const c = tenant('c').want({ class: 'lane' });
    expect(scheduler.stats()).toMatchObject({ activeGenerations: 3, waitingLanes: 1, waitingSpeculative: 1, busyReplicas: 1, replicas: 1 });
    a.finishOne();
    expect(log).toEqual(['a:lane@r0', 'c:lane@r0']);
    c.finishOne();
    expect(log).toEqual(['a:lane@r0', 'c:lane@r0', 'b:speculative1@r0']);
    b.finishOne();
    expect(scheduler.stats()).toMatchObject({ waitingLanes: 0, waitingSpeculative: 0, busyReplicas: 0, lanesGranted: 2, speculativeGranted: 1, preemptions: 0 });
  });

  it('serves speculative work nearest to its V first, then the longest waiting', () => {
    const { log, tenant } = pool(1);
    const a = tenant('a').want({ class: 'lane' });
    tenant('far').want({ class: 'speculative', distance: 8 });
    tenant('near').want({ class: 'speculative', distance: 2 });
    tenant('near-too').want({ class: 'speculative', distance: 2 });
    a.finishOne();
    expect(log.slice(1)).toEqual(['near:speculative2@r0']);
  });

  it('preempts the speculative call farthest from its V (ties: the latest granted) for a waiting lane, never a lane', () => {
    const { scheduler, log, tenant } = pool(3);
    const a = tenant('a');
    a.want({ class: 'speculative', distance: 4 }, { class: 'speculative', distance: 4 }, { class: 'speculative', distance: 1 });
    a.leases.forEach((lease, i) => a.wantOf.set(lease, [1, 4, 4][i])); // granted nearest first
    expect(log).toEqual(['a:speculative1@r0', 'a:speculative4@r1', 'a:speculative4@r2']);
    const b = tenant('b').want({ class: 'lane' });
    expect(log.slice(3)).toEqual(['preempt a@r2', 'b:lane@r2']);
    // The distance-4 block on r1 became a's lane: it is never preempted, only the distance-1 one is.
    a.lanesNow.add(a.leases[1]);
    tenant('c').want({ class: 'lane' });
    expect(log.slice(5)).toEqual(['preempt a@r0', 'c:lane@r0']);
    // Nothing speculative left: the next lane waits for a replica to free.
    const d = tenant('d').want({ class: 'lane' });
    expect(log.length).toBe(7);
    expect(scheduler.stats()).toMatchObject({ waitingLanes: 1, busyReplicas: 3, preemptions: 2 });
    b.finishOne();
    expect(log[7]).toBe('d:lane@r2');
    expect(d.leases.length).toBe(1);
  });

  it('without preemption (drafters) a lane waits for a call to end, then goes before speculative work', () => {
    const { log, tenant } = pool(1, false);
    const a = tenant('a').want({ class: 'speculative', distance: 3 }, { class: 'speculative', distance: 5 });
    tenant('b').want({ class: 'lane' });
    expect(log).toEqual(['a:speculative3@r0']);
    a.finishOne();
    expect(log).toEqual(['a:speculative3@r0', 'b:lane@r0']);
  });

  it('lets a ready lane overtake an older lane still waiting for drafts, at most once per generation', () => {
    // Four replicas, three generations: not saturated, so no replica idles while a lane waits.
    const { scheduler, log, tenant } = pool(4);
    const x = tenant('x').want({ class: 'lane' }, { class: 'lane' }, { class: 'lane' }, { class: 'lane' }); // holds r0..r3
    const slow = tenant('slow').want({ class: 'lane', ready: false });
    const fast = tenant('fast').want({ class: 'lane' });
    expect(scheduler.saturated).toBe(false);
    x.finishOne();
    expect(log.at(-1)).toBe('fast:lane@r0'); // ready, and 'fast' had no lane since 'slow' began to wait
    fast.want({ class: 'lane' });
    fast.finishOne();
    // 'fast' is ready again, but it already overtook once: the older lane goes, drafts or not.
    expect(log.at(-1)).toBe('slow:lane@r0');
    slow.finishOne();
    expect(log.at(-1)).toBe('fast:lane@r0');
  });

  it('saturated (as many generations as replicas): a lane waits for its drafts, and speculative work for every lane', () => {
    const { scheduler, log, tenant } = pool(2);
    const x = tenant('x').want({ class: 'lane' }); // r0
    const y = tenant('y').want({ class: 'lane' }); // r1
    expect(scheduler.saturated).toBe(true);
    const slowLane: Want = { class: 'lane', ready: false };
    const slow = tenant('slow').want(slowLane);
    const fast = tenant('fast').want({ class: 'lane' });
    x.want({ class: 'speculative', distance: 1 });
    x.finishOne();
    expect(log.at(-1)).toBe('fast:lane@r0'); // ready: overtakes 'slow' (once)
    fast.want({ class: 'lane' });
    fast.finishOne();
    // 'fast' may not overtake again, 'slow' is not ready: r0 waits, and x's speculative work too.
    expect(log.at(-1)).toBe('fast:lane@r0');
    expect(scheduler.stats()).toMatchObject({ busyReplicas: 1, waitingLanes: 2, waitingSpeculative: 1 });
    slowLane.ready = true; // its drafts arrived
    scheduler.schedule();
    expect(log.at(-1)).toBe('slow:lane@r0');
    y.finishOne();
    expect(log.at(-1)).toBe('fast:lane@r1');
    slow.finishOne();
    fast.finishOne();
    expect(log.slice(-1)).toEqual(['x:speculative1@r0']); // no lane waits any more
  });

  it('saturated target pool: no speculative verification even on a replica no lane waits for; below saturation at once', () => {
    const slots: Slot[] = [{ name: 'r0' }, { name: 'r1' }];
    // Slots stand in for target replicas: the target scheduler's decisions do not look inside them.
    const scheduler = new TargetScheduler(slots as unknown as TargetReplica[]) as unknown as ReplicaScheduler<Slot>;
    const log: string[] = [];
    const join = (name: string): ScriptedTenant => {
      const tenant = new ScriptedTenant(name, scheduler, log);
      scheduler.join(tenant);
      return tenant;
    };
    const x = join('x').want({ class: 'lane' }); // r0
    join('y').want({ class: 'lane' }, { class: 'speculative', distance: 1 }); // r1
    expect(scheduler.saturated).toBe(true);
    x.finishOne();
    // r0 is free and no lane waits, but every replica is a lane's on a saturated pool: r0 idles (the
    // drafter pool would draft ahead here; a verification would be taken back by the next lane).
    expect(log).toEqual(['x:lane@r0', 'y:lane@r1']);
    expect(scheduler.stats()).toMatchObject({ busyReplicas: 1, waitingLanes: 0, waitingSpeculative: 1 });
    x.want({ class: 'lane' });
    expect(log.at(-1)).toBe('x:lane@r0');
    scheduler.leave(x); // y alone: not saturated, its speculative work goes out at once
    expect(scheduler.saturated).toBe(false);
    expect(log.at(-1)).toBe('y:speculative1@r0');
  });

  it('prefers the free replica with the fewest consecutive failures, counted across tenants and reset by a success', () => {
    const { scheduler, slots, log, tenant } = pool(2, false);
    const a = tenant('a').want({ class: 'lane' });
    a.finishOne('failed'); // r0: one failure; the lane goes again, to r1
    a.want({ class: 'lane' });
    expect(log).toEqual(['a:lane@r0', 'a:lane@r1']);
    const b = tenant('b').want({ class: 'lane' });
    expect(log.at(-1)).toBe('b:lane@r0'); // the only free one, failed or not
    b.finishOne('succeeded');
    expect(scheduler.failuresOf(slots[0])).toBe(0);
    a.finishOne('failed');
    a.want({ class: 'lane' });
    expect(log.at(-1)).toBe('a:lane@r0');
  });

  it('follows a changing replica list: new replicas get waiting work at once, removed ones get none', () => {
    let healthy: Slot[] = [{ name: 'r0' }];
    const scheduler = new ReplicaScheduler<Slot>(() => healthy, { preemptSpeculative: true });
    const log: string[] = [];
    const a = new ScriptedTenant('a', scheduler, log);
    scheduler.join(a);
    a.want({ class: 'lane' }, { class: 'speculative', distance: 1 });
    expect(log).toEqual(['a:lane@r0']);
    healthy = [...healthy, { name: 'r1' }];
    scheduler.schedule();
    expect(log).toEqual(['a:lane@r0', 'a:speculative1@r1']);
    scheduler.setReplicas([{ name: 'r2' }]);
    a.want({ class: 'speculative', distance: 2 });
    expect(log.at(-1)).toBe('a:speculative2@r2');
    expect(scheduler.replicaCount).toBe(1);
    scheduler.leave(a); // its leases go back
    expect(scheduler.stats()).toMatchObject({ activeGenerations: 0, busyReplicas: 0 });
  });

  it('defers decisions while held, then makes them all', () => {
    const { scheduler, log, tenant } = pool(2);
    scheduler.hold();
    tenant('a').want({ class: 'lane' });
    tenant('b').want({ class: 'lane' });
    expect(log).toEqual([]);
    scheduler.resume();
    expect(log).toEqual(['a:lane@r0', 'b:lane@r1']);
  });
});

// ------------------------------------------------------------------------------------------ generations sharing a pool

const VOCAB = 16;
const GREEDY: SamplingParams = { rule: 'greedy', temperature: 0 };

/** A deterministic model pair (as in scheduler.spec.ts): the drafter is wrong where a hash says so. */
class World {
  constructor(
    readonly agreement = 1,
    readonly seed = 7,
  ) {}

  targetRow(tokens: readonly number[]): Float32Array {
    const end = tokens.length;
    const stream = 1000 + tokens[end - 1] * VOCAB + (tokens[end - 2] ?? 0);
    const boosted = counterHash(this.seed, end, stream, VOCAB) % VOCAB;
    const row = new Float32Array(VOCAB);
    for (let j = 0; j < VOCAB; j++) row[j] = uniform(this.seed, end, stream, j) + (j === boosted ? 2.5 : 0);
    return row;
  }

  drafterRow(tokens: readonly number[]): Float32Array {
    const row = this.targetRow(tokens);
    if (uniform(this.seed, tokens.length, 77, tokens[0]) < this.agreement) return row;
    const rotated = new Float32Array(VOCAB);
    for (let j = 0; j < VOCAB; j++) rotated[j] = row[(j + 1) % VOCAB];
    return rotated;
  }

  verify(call: VerifyCall): VerifyResult {
    const n = call.drafts.length;
    const targetLogits = new Float32Array((n + 1) * VOCAB);
    const sequence = [...call.prefix];
    for (let i = 0; i <= n; i++) {
      targetLogits.set(this.targetRow(sequence), i * VOCAB);
      if (i < n) sequence.push(call.drafts[i]);
    }
    return verifyBlock({ targetLogits, vocab: VOCAB, drafts: call.drafts, start: call.prefix.length, params: call.sampling });
  }

  reference(prompt: readonly number[], n: number): number[] {
    const sequence = [...prompt];
    for (let i = 0; i < n; i++) sequence.push(targetToken(this.targetRow(sequence), VOCAB, GREEDY, sequence.length));
    return sequence.slice(prompt.length);
  }
}

interface CallRecord<C> {
  call: C;
  signal: AbortSignal;
  startedAt: number;
  endedAt?: number;
  completed: boolean;
}

async function recordCall<C, R>(clock: VirtualClock, calls: CallRecord<C>[], call: C, signal: AbortSignal, body: () => Promise<R>): Promise<R> {
  const record: CallRecord<C> = { call, signal, startedAt: clock.now(), completed: false };
  calls.push(record);
  try {
    const result = await body();
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

  constructor(
    readonly id: string,
    private readonly world: World,
    private readonly clock: VirtualClock,
    private readonly t: number,
    private readonly perToken: number,
    private readonly fails: (callIndex: number) => boolean,
  ) {}

  verify(call: VerifyCall, signal: AbortSignal): Promise<VerifyResult> {
    const index = this.calls.length;
    return recordCall(this.clock, this.calls, call, signal, async () => {
      if (this.fails(index)) {
        await this.clock.sleep(2, signal);
        throw new Error(`replica ${this.id} is down`);
      }
      await this.clock.sleep(this.t + this.perToken * call.drafts.length, signal);
      return this.world.verify(call);
    });
  }
}

class FakeDrafter implements Drafter {
  readonly calls: CallRecord<DraftCall>[] = [];

  constructor(
    readonly id: string,
    private readonly world: World,
    private readonly clock: VirtualClock,
    private readonly perToken: number,
  ) {}

  draft(call: DraftCall, signal: AbortSignal): Promise<DraftResult> {
    return recordCall(this.clock, this.calls, call, signal, async () => {
      await this.clock.sleep(this.perToken * call.maxTokens, signal);
      const sequence = [...call.prefix];
      const tokens: number[] = [];
      for (let i = 0; i < call.maxTokens; i++) {
        const token = draftToken(this.world.drafterRow(sequence), VOCAB, call.sampling, sequence.length).token;
        tokens.push(token);
        sequence.push(token);
      }
      return { tokens };
    });
  }
}

interface PoolShape {
  replicas: number;
  drafters?: number;
  world?: World;
  t?: number;
  perToken?: number;
  c?: number;
  replicaFails?: (replica: number, callIndex: number) => boolean;
  /** Takes a snapshot of the target scheduler's stats at this virtual time. */
  probeAt?: number;
}

interface Request {
  mode: Mode;
  k?: number;
  maxNewTokens: number;
  prompt: number[];
  arriveAt?: number;
  abortAt?: number;
}

type Logged = {
  [K in keyof Required<SchedulerEvents>]: { type: K; at: number } & Parameters<Required<SchedulerEvents>[K]>[0];
}[keyof SchedulerEvents];

interface Served {
  request: Request;
  result?: GenerationResult;
  error?: unknown;
  events: Logged[];
  startedAt: number;
}

interface GrantRecord {
  tenant: string;
  class: WorkClass;
  since: number;
  ticket: number;
}

interface PoolRun {
  clock: VirtualClock;
  targets: FakeTarget[];
  drafters: FakeDrafter[];
  targetScheduler: TargetScheduler;
  served: Served[];
  grants: GrantRecord[];
  probe?: ReplicaSchedulerStats;
}

const ABORT_REASON = new Error('the client went away');

function configOf(request: Request, index: number): GenerateConfig {
  return { requestId: `request-${index}`, mode: request.mode, prompt: request.prompt, maxNewTokens: request.maxNewTokens, lookahead: request.k ?? 4, sampling: GREEDY, vocabSize: VOCAB };
}

/** Runs `requests` at once over one shared pool (or, with `dedicated`, each over replicas of its own). */
async function serve(shape: PoolShape, requests: readonly Request[], dedicated = false, clockOptions?: VirtualClockOptions): Promise<PoolRun> {
  const world = shape.world ?? new World();
  const clock = new VirtualClock(clockOptions);
  const targets = Array.from({ length: shape.replicas }, (_, r) => new FakeTarget(`target-${r}`, world, clock, shape.t ?? 10, shape.perToken ?? 0, (i) => shape.replicaFails?.(r, i) ?? false));
  const drafters = Array.from({ length: shape.drafters ?? 1 }, (_, d) => new FakeDrafter(`drafter-${d}`, world, clock, shape.c ?? 1));
  const grants: GrantRecord[] = [];
  const targetScheduler = new TargetScheduler(targets, { events: { grant: (e) => grants.push({ tenant: e.tenant, class: e.class, since: e.since, ticket: e.ticket }) } });
  const drafterScheduler = new DrafterScheduler(drafters);
  const timers = new AbortController();
  const served: Served[] = requests.map((request) => ({ request, events: [], startedAt: 0 }));
  const work = served.map(async (entry, index) => {
    const { request, events } = entry;
    if (request.arriveAt) await clock.sleep(request.arriveAt, timers.signal);
    entry.startedAt = clock.now();
    const client = new AbortController();
    if (request.abortAt !== undefined) {
      clock.sleep(request.abortAt - clock.now(), timers.signal).then(
        () => client.abort(ABORT_REASON),
        () => undefined,
      );
    }
    const log =
      <K extends Logged['type']>(type: K) =>
      (e: object) =>
        events.push({ type, at: clock.now(), ...e } as Logged);
    const hooks: SchedulerEvents = { draftStart: log('draftStart'), draftEnd: log('draftEnd'), verifyStart: log('verifyStart'), verifyEnd: log('verifyEnd'), commit: log('commit'), preempt: log('preempt') };
    const ports = dedicated ? { drafter: drafters[0], targets, clock } : { targetScheduler, drafterScheduler, clock };
    try {
      entry.result = await generate(configOf(request, index), ports, { signal: client.signal, events: hooks });
    } catch (error) {
      entry.error = error;
    }
  });
  let probe: ReplicaSchedulerStats | undefined;
  if (shape.probeAt !== undefined) {
    clock.sleep(shape.probeAt, timers.signal).then(
      () => (probe = targetScheduler.stats()),
      () => undefined,
    );
  }
  await clock.run(Promise.all(work));
  timers.abort();
  await new Promise((resolve) => setImmediate(resolve)); // let aborted port calls settle
  return { clock, targets, drafters, targetScheduler, served, grants, probe };
}

function ofType<K extends Logged['type']>(events: readonly Logged[], type: K): Extract<Logged, { type: K }>[] {
  return events.filter((event): event is Extract<Logged, { type: K }> => event.type === type);
}

/** What must hold after every shared run: nothing in flight, one call per replica at a time, a free pool. */
function expectClean(run: PoolRun): void {
  expect(run.clock.pendingTimers).toBe(0);
  for (const replica of [...run.targets, ...run.drafters]) {
    const calls = [...(replica.calls as CallRecord<unknown>[])].sort((a, b) => a.startedAt - b.startedAt);
    for (const record of calls) expect(record.completed || record.signal.aborted).toBe(true);
    for (let i = 1; i < calls.length; i++) expect(calls[i].startedAt).toBeGreaterThanOrEqual(calls[i - 1].endedAt as number);
  }
  expect(run.targetScheduler.stats()).toMatchObject({ activeGenerations: 0, waitingLanes: 0, waitingSpeculative: 0, busyReplicas: 0 });
}

const prompt = (i: number): number[] => [1 + (i % 13), 2 + ((i * 5) % 11), 3];

describe('generations sharing one replica scheduler', () => {
  it.each<[Mode, number, number]>([
    ['nonsi', 0, 3],
    ['si', 4, 3],
    ['dsi', 3, 4],
    ['dsi', 5, 2],
  ])('%s (k = %i, %i replicas): one request on an idle shared pool does exactly what it does with replicas of its own', async (mode, k, replicas) => {
    const shape: PoolShape = { replicas, world: new World(0.7), perToken: 0.5, c: 1 };
    const request: Request = { mode, k: k || 1, maxNewTokens: 30, prompt: prompt(0) };
    const shared = await serve(shape, [request]);
    const own = await serve(shape, [request], true);
    expect(shared.served[0].events).toEqual(own.served[0].events);
    expect(shared.served[0].result).toEqual(own.served[0].result);
    const calls = (run: PoolRun) => run.targets.map((target) => target.calls.map((record) => [record.call.drafts, record.startedAt, record.endedAt]));
    expect(calls(shared)).toEqual(calls(own));
    expectClean(shared);
  });

  it('non-SI on 4 replicas keeps all 4 busy: 4 or more requests get exactly 4 x one replica throughput', async () => {
    const N = 16;
    const t = 10;
    for (const concurrency of [4, 8, 12]) {
      const requests = Array.from({ length: concurrency }, (_, i): Request => ({ mode: 'nonsi', maxNewTokens: N, prompt: prompt(i) }));
      const run = await serve({ replicas: 4, t, probeAt: 5 }, requests);
      expect(run.probe).toMatchObject({ activeGenerations: concurrency, busyReplicas: 4, waitingLanes: concurrency - 4, waitingSpeculative: 0 });
      const world = new World();
      run.served.forEach((entry, i) => expect(entry.result?.tokens).toEqual(world.reference(prompt(i), N)));
      const wall = run.clock.now();
      expect({ concurrency, wall }).toEqual({ concurrency, wall: (concurrency * N * t) / 4 });
      // Every replica verified a quarter of the tokens, back to back.
      for (const target of run.targets) expect(target.calls.length).toBe((concurrency * N) / 4);
      expectClean(run);
    }
  });

  it('a lane goes before speculative work: a non-SI request beside a DSI one on a busy pool runs as fast as alone', async () => {
    const N = 12;
    const world = new World(1);
    const requests: Request[] = [
      { mode: 'dsi', k: 4, maxNewTokens: 200, prompt: prompt(1) },
      { mode: 'nonsi', maxNewTokens: N, prompt: prompt(2), arriveAt: 15 },
    ];
    // A fast drafter: the DSI request alone would keep all four replicas busy.
    const run = await serve({ replicas: 4, world, c: 0.25 }, requests);
    const [dsi, nonsi] = run.served;
    expect(dsi.result?.tokens).toEqual(world.reference(prompt(1), 200));
    expect(nonsi.result?.tokens).toEqual(world.reference(prompt(2), N));
    expect(nonsi.result?.metrics.wallMs).toBe(N * 10);
    // It got its replicas by preempting the DSI request's speculative blocks, never its lane.
    const preempted = ofType(dsi.events, 'verifyEnd').filter((e) => e.preempted);
    expect(preempted.length).toBeGreaterThan(0);
    for (const e of preempted) expect(e).toMatchObject({ outcome: 'cancelled', class: 'speculative' });
    expect(ofType(nonsi.events, 'verifyStart').every((e) => e.class === 'lane')).toBe(true);
    // A preempted block is verified again later (or dropped by a rejection or the end).
    const reverified = preempted.filter((p) => ofType(dsi.events, 'verifyStart').some((s) => s.block === p.block && s.at >= p.at));
    expect(reverified.length).toBeGreaterThan(0);
    expect(run.targetScheduler.stats().preemptions).toBe(preempted.length);
    expectClean(run);
  });

  it('preempted speculative verifications leave the output identical, with a mediocre drafter and many requests', async () => {
    const world = new World(0.6);
    const requests = Array.from({ length: 6 }, (_, i): Request => ({ mode: i % 2 ? 'dsi' : 'nonsi', k: 3, maxNewTokens: 24, prompt: prompt(i), arriveAt: i * 7 }));
    const run = await serve({ replicas: 3, drafters: 2, world, c: 1 }, requests);
    run.served.forEach((entry, i) => expect(entry.result?.tokens).toEqual(world.reference(prompt(i), 24)));
    expect(run.targetScheduler.stats().preemptions).toBeGreaterThan(0);
    expectClean(run);
  });

  it('is fair: no request waits behind more than one lane of each other request (one round)', async () => {
    const world = new World(0.7);
    const modes: Mode[] = ['nonsi', 'si', 'dsi'];
    const requests = Array.from({ length: 9 }, (_, i): Request => ({ mode: modes[i % 3], k: 2 + (i % 4), maxNewTokens: 20, prompt: prompt(i), arriveAt: i }));
    const run = await serve({ replicas: 2, drafters: 2, world, c: 2, perToken: 0.5 }, requests);
    run.served.forEach((entry, i) => expect(entry.result?.tokens).toEqual(world.reference(prompt(i), 20)));
    const lanes = run.grants.filter((grant) => grant.class === 'lane');
    let worst = 0;
    for (const lane of lanes) {
      const overtaking = lanes.filter((other) => other.tenant !== lane.tenant && other.ticket > lane.since && other.ticket < lane.ticket);
      const perTenant = new Map<string, number>();
      for (const other of overtaking) perTenant.set(other.tenant, (perTenant.get(other.tenant) ?? 0) + 1);
      expect(Math.max(0, ...perTenant.values())).toBeLessThanOrEqual(1);
      worst = Math.max(worst, overtaking.length);
    }
    expect(worst).toBeLessThanOrEqual(requests.length - 1);
    expect(worst).toBeGreaterThan(1); // the pool was contended
    expectClean(run);
  });

  it('cancelling a request while its lane is queued leaves nothing in flight and the others proceed', async () => {
    const world = new World(0.8);
    const requests: Request[] = [
      { mode: 'nonsi', maxNewTokens: 5, prompt: prompt(0) },
      { mode: 'nonsi', maxNewTokens: 5, prompt: prompt(1) },
      { mode: 'dsi', k: 3, maxNewTokens: 20, prompt: prompt(2), abortAt: 5 },
      { mode: 'nonsi', maxNewTokens: 5, prompt: prompt(3), abortAt: 25 },
    ];
    const run = await serve({ replicas: 1, world }, requests);
    const [first, second, cancelledAtOnce, cancelledLater] = run.served;
    expect(first.result?.tokens).toEqual(world.reference(prompt(0), 5));
    expect(second.result?.tokens).toEqual(world.reference(prompt(1), 5));
    expect(cancelledAtOnce.error).toBe(ABORT_REASON);
    expect(cancelledLater.error).toBe(ABORT_REASON);
    // The first cancelled request never got the replica; the second got one round (at 20 ms).
    expect(ofType(cancelledAtOnce.events, 'verifyStart')).toEqual([]);
    expect(ofType(cancelledLater.events, 'verifyStart').map((e) => e.at)).toEqual([20]);
    // Its drafter call in flight was aborted.
    const aborted = run.drafters[0].calls.filter((record) => !record.completed);
    expect(aborted.length).toBe(1);
    expect(aborted[0].signal.reason).toBeInstanceOf(WorkCancelledError);
    // The replica was never idle: 10 verifications of the two others, plus the one cut short at 25 ms.
    expect(run.clock.now()).toBe(105);
    expectClean(run);
  });

  it.each<[string, (replica: number, callIndex: number) => boolean]>([
    ['a replica that is down for its first calls', (r, i) => r === 1 && i < 6],
    ['a replica that is always down', (r) => r === 2],
  ])('%s under load does not change anyone output', async (_name, replicaFails) => {
    const world = new World(0.7);
    const modes: Mode[] = ['nonsi', 'si', 'dsi'];
    const requests = Array.from({ length: 8 }, (_, i): Request => ({ mode: modes[i % 3], k: 1 + (i % 5), maxNewTokens: 16, prompt: prompt(i), arriveAt: i * 2 }));
    const run = await serve({ replicas: 4, drafters: 2, world, replicaFails }, requests);
    run.served.forEach((entry, i) => expect({ i, tokens: entry.result?.tokens }).toEqual({ i, tokens: world.reference(prompt(i), 16) }));
    const failed = run.served.flatMap((entry) => ofType(entry.events, 'verifyEnd').filter((e) => e.outcome === 'failed'));
    expect(failed.length).toBeGreaterThan(0);
    expectClean(run);
  });

  it('many concurrent requests of mixed modes and lookaheads give exactly the tokens each gives alone', async () => {
    const world = new World(0.7);
    const modes: Mode[] = ['nonsi', 'si', 'dsi'];
    const requests = Array.from({ length: 24 }, (_, i): Request => ({ mode: modes[i % 3], k: 1 + (i % 8), maxNewTokens: 12 + (i % 7), prompt: prompt(i), arriveAt: (i * 3) % 17 }));
    const shape: PoolShape = { replicas: 3, drafters: 2, world, c: 1, perToken: 0.5 };
    const run = await serve(shape, requests);
    for (let i = 0; i < requests.length; i++) {
      const alone = await serve(shape, [{ ...requests[i], arriveAt: 0 }]);
      expect({ i, tokens: run.served[i].result?.tokens }).toEqual({ i, tokens: alone.served[0].result?.tokens });
      expect(alone.served[0].result?.tokens).toEqual(world.reference(prompt(i), requests[i].maxNewTokens));
    }
    // Both drafters served calls.
    for (const drafter of run.drafters) expect(drafter.calls.length).toBeGreaterThan(0);
    expectClean(run);
  });
});

// ------------------------------------------------------------------------------------------ closed-loop load

/**
 * A model pair where the drafter is right at each position with probability `a` (a hash of the
 * request and the position), independently of the context: acceptance is exactly `a` per draft.
 */
class PositionWorld {
  constructor(readonly a: number) {}

  truth(requestId: string, position: number): number {
    return counterHash(hashOf(requestId), position, 5, 0) % 1000;
  }

  draft(requestId: string, position: number): number {
    const truth = this.truth(requestId, position);
    return uniform(hashOf(requestId), position, 77, 0) < this.a ? truth : (truth + 1) % 1000;
  }
}

function hashOf(text: string): number {
  let hash = 0;
  for (let i = 0; i < text.length; i++) hash = (Math.imul(hash, 31) + text.charCodeAt(i)) >>> 0;
  return hash;
}

interface LoadShape {
  a: number;
  /** Drafter latency per drafted token. */
  c: number;
  /** Target forward latency. */
  t: number;
  k: Lookahead;
  targets: number;
  drafters: number;
  tokens: number;
  /** A drafter call's fixed cost (round trip and service), beside `c` per drafted token; default 0. */
  drafterCallMs?: number;
}

interface LoadFigures {
  tokensPerSecond: number;
  p50Ms: number;
  /** Target forwards, and rejections that cancelled work in flight (drafting ahead, later blocks), per request. */
  forwardsPerRequest: number;
  preemptionsPerRequest: number;
  draftCallsPerRequest: number;
}

/**
 * `concurrency` clients, each sending `perClient` greedy requests back to back over one shared pool
 * (a closed loop), on the virtual clock: throughput over the whole run, and the median latency.
 */
async function closedLoop(shape: LoadShape, mode: Mode, concurrency: number, perClient = 8): Promise<LoadFigures> {
  const world = new PositionWorld(shape.a);
  const clock = new VirtualClock();
  const targets: TargetReplica[] = Array.from({ length: shape.targets }, (_, r) => ({
    id: `target-${r}`,
    async verify(call: VerifyCall, signal: AbortSignal): Promise<VerifyResult> {
      await clock.sleep(shape.t, signal);
      const start = call.prefix.length;
      let accepted = 0;
      while (accepted < call.drafts.length && call.drafts[accepted] === world.truth(call.requestId, start + accepted)) accepted++;
      return { accepted, tokens: [...call.drafts.slice(0, accepted), world.truth(call.requestId, start + accepted)] };
    },
  }));
  const drafters: Drafter[] = Array.from({ length: shape.drafters }, (_, d) => ({
    id: `drafter-${d}`,
    async draft(call: DraftCall, signal: AbortSignal): Promise<DraftResult> {
      await clock.sleep((shape.drafterCallMs ?? 0) + shape.c * call.maxTokens, signal);
      return { tokens: Array.from({ length: call.maxTokens }, (_, i) => world.draft(call.requestId, call.prefix.length + i)) };
    },
  }));
  const ports = { targetScheduler: new TargetScheduler(targets), drafterScheduler: new DrafterScheduler(drafters), clock };
  const latencies: number[] = [];
  let tokens = 0;
  let forwards = 0;
  let preemptions = 0;
  let draftCalls = 0;
  const client = async (c: number): Promise<void> => {
    for (let r = 0; r < perClient; r++) {
      const config: GenerateConfig = { requestId: `client-${c}-${r}`, mode, prompt: [1, 2, 3], maxNewTokens: shape.tokens, lookahead: shape.k, sampling: GREEDY };
      const result = await generate(config, ports);
      latencies.push(result.metrics.wallMs);
      tokens += result.tokens.length;
      forwards += result.metrics.targetForwards;
      preemptions += result.metrics.preemptions;
      draftCalls += result.metrics.draftCalls;
    }
  };
  await clock.run(Promise.all(Array.from({ length: concurrency }, (_, c) => client(c))));
  latencies.sort((x, y) => x - y);
  return {
    tokensPerSecond: (tokens * 1000) / clock.now(),
    p50Ms: latencies[(latencies.length - 1) >> 1],
    forwardsPerRequest: forwards / latencies.length,
    preemptionsPerRequest: preemptions / latencies.length,
    draftCallsPerRequest: draftCalls / latencies.length,
  };
}

describe('many requests at once: DSI is never worse than the better of non-SI and SI', () => {
  it.each<[string, LoadShape]>([
    ['a = 0.8, drafter 2 ms per token', { a: 0.8, c: 2, t: 20, k: 5, targets: 4, drafters: 2, tokens: 64 }],
    ['a = 0.5, drafter 6 ms per token', { a: 0.5, c: 6, t: 20, k: 5, targets: 4, drafters: 2, tokens: 64 }],
  ])('%s, 4 targets at 20 ms, 2 drafters, k = 5: throughput >= 0.98 x the best, p50 <= 1.02 x the best, at concurrency 1 to 16', async (_name, shape) => {
    for (const concurrency of [1, 2, 4, 8, 16]) {
      const nonsi = await closedLoop(shape, 'nonsi', concurrency);
      const si = await closedLoop(shape, 'si', concurrency);
      const dsi = await closedLoop(shape, 'dsi', concurrency);
      const throughput = dsi.tokensPerSecond / Math.max(nonsi.tokensPerSecond, si.tokensPerSecond);
      const latency = dsi.p50Ms / Math.min(nonsi.p50Ms, si.p50Ms);
      expect({ concurrency, throughputAtLeast98: throughput >= 0.98, latencyAtMost102: latency <= 1.02 }).toEqual({ concurrency, throughputAtLeast98: true, latencyAtMost102: true });
    }
    // Non-SI is replica-bound from 4 requests on: exactly 4 replicas at one token per 20 ms.
    expect((await closedLoop(shape, 'nonsi', 8)).tokensPerSecond).toBe(200);
  });
});

describe('a saturated pool', () => {
  it('with lanes queued deeper than a block takes to draft, DSI drafts no further ahead than SI: about its forwards, hardly any drafting cancelled, its throughput', async () => {
    const shape: LoadShape = { a: 0.8, c: 2, t: 20, k: 3, targets: 4, drafters: 2, tokens: 64 };
    const si = await closedLoop(shape, 'si', 16, 2);
    const dsi = await closedLoop(shape, 'dsi', 16, 2);
    // Only the first requests, before the pool has timed a verification and a drafter call, draft ahead (0.375 a request).
    expect(dsi.preemptionsPerRequest).toBeLessThan(0.5);
    expect(dsi.forwardsPerRequest).toBeLessThanOrEqual(si.forwardsPerRequest * 1.05); // 22.5 against 21.7: the ramp-up, one request at first
    expect(dsi.tokensPerSecond / si.tokensPerSecond).toBeGreaterThanOrEqual(0.99);
    // A lane on a pool as busy as its slots gets a replica at once: there the next block is drafted
    // during the verification (a rejection cancels that drafting).
    expect((await closedLoop(shape, 'dsi', 4, 2)).preemptionsPerRequest).toBeGreaterThan(1);
  });
});

describe('a saturated pool whose lanes keep the drafters busy', () => {
  it('DSI drafts no further ahead than SI: the drafters serve lanes, and DSI keeps pace with SI', async () => {
    // 6 clients on 4 targets and 2 drafters, a Verify call 25 ms (21 ms forward, 4 ms round trip), a
    // drafter call 4 ms + 2.6 ms per token (the load bench's a=0.8 pair as measured): SI's lanes alone
    // keep the drafters ~90% busy. Drafting ahead took the drafters from other requests' lanes: before
    // this rule DSI was at 0.96x SI here, p50 1.07x, 3.3 drafter calls a request cancelled (now 1.03x,
    // 1.00x, 0.33: the first requests, before the pool has timed a verification and a drafter call).
    const shape: LoadShape = { a: 0.8, c: 2.6, drafterCallMs: 4, t: 25, k: 3, targets: 4, drafters: 2, tokens: 64 };
    const si = await closedLoop(shape, 'si', 6, 4);
    const dsi = await closedLoop(shape, 'dsi', 6, 4);
    expect(dsi.tokensPerSecond / si.tokensPerSecond).toBeGreaterThanOrEqual(0.99);
    expect(dsi.p50Ms / si.p50Ms).toBeLessThanOrEqual(1.01);
    expect(dsi.preemptionsPerRequest).toBeLessThan(1);
  });
});

describe('a saturated pool whose lanes nearly fill the drafters', () => {
  it('DSI does not draft ahead into the last fifth of the drafters: fewer cancelled drafter calls, at least the throughput', async () => {
    // 4 clients on 4 targets and 2 drafters, the load bench's a=0.8 pair as measured on 2 cores (a Verify
    // call 23.4 ms, a drafter call 2.8 ms + 2.48 ms per token): SI's lanes with the drafting ahead that a
    // rejection cancels would keep the drafters ~95% busy. Drafting ahead there made 3.25 preemptions a
    // request (cancelled drafter calls: work for the drafters' hosts) for DSI/SI 0.997, p50 1.013; now
    // 0.25, 1.013 and 1.000.
    const shape: LoadShape = { a: 0.8, c: 2.48, drafterCallMs: 2.8, t: 23.4, k: 3, targets: 4, drafters: 2, tokens: 64 };
    const si = await closedLoop(shape, 'si', 4, 4);
    const dsi = await closedLoop(shape, 'dsi', 4, 4);
    expect(dsi.preemptionsPerRequest).toBeLessThan(1.5);
    expect(dsi.tokensPerSecond / si.tokensPerSecond).toBeGreaterThanOrEqual(1);
    expect(dsi.p50Ms / si.p50Ms).toBeLessThanOrEqual(1.01);
  });
});

describe('lookahead auto under load', () => {
  it.each<[string, Omit<LoadShape, 'k'>]>([
    ['a = 0.8, drafter 2 ms per token', { a: 0.8, c: 2, t: 20, targets: 4, drafters: 2, tokens: 64 }],
    ['a = 0.5, drafter 6 ms per token', { a: 0.5, c: 6, t: 20, targets: 4, drafters: 2, tokens: 64 }],
  ])('%s: DSI auto keeps up with non-SI and the best fixed k of SI at concurrency 1 to 16, and with the best fixed k of DSI alone', async (_name, shape) => {
    const figures: Array<{ concurrency: number; throughput: number; latency: number }> = [];
    for (const concurrency of [1, 2, 4, 8, 16]) {
      const nonsi = await closedLoop({ ...shape, k: 1 }, 'nonsi', concurrency);
      const fixed: Array<{ si: LoadFigures; dsi: LoadFigures }> = [];
      for (const k of [1, 2, 3, 4, 5, 6, 8]) fixed.push({ si: await closedLoop({ ...shape, k }, 'si', concurrency), dsi: await closedLoop({ ...shape, k }, 'dsi', concurrency) });
      const auto = await closedLoop({ ...shape, k: 'auto' }, 'dsi', concurrency);
      const bestSi = Math.max(nonsi.tokensPerSecond, ...fixed.map((f) => f.si.tokensPerSecond));
      const lowestP50 = Math.min(nonsi.p50Ms, ...fixed.map((f) => f.si.p50Ms));
      figures.push({ concurrency, throughput: auto.tokensPerSecond / bestSi, latency: auto.p50Ms / lowestP50 });
      if (concurrency === 1) {
        // Alone, within 5% of the best fixed k in hindsight.
        expect(auto.tokensPerSecond / Math.max(...fixed.map((f) => f.dsi.tokensPerSecond))).toBeGreaterThanOrEqual(0.95);
      }
    }
    for (const { concurrency, throughput, latency } of figures) {
      // p50 is a median of 8 x concurrency requests: at 4 clients auto's choices of k cost a few percent
      // of it (a = 0.8: 1.065, 1.057 while a saturated pool still took speculative verifications).
      expect({ concurrency, throughputAtLeast98: throughput >= 0.98, latencyAtMost107: latency <= 1.07 }).toEqual({ concurrency, throughputAtLeast98: true, latencyAtMost107: true });
    }
  }, 120_000);
});

// ------------------------------------------------------------------------------------------ settling by microtasks

describe('lookahead auto decoding plainly', () => {
  it('makes a drafter call for one commit in 8 while the drafters are shared, and on every commit with a drafter to itself', async () => {
    // A drafter agreeing 2% of the time at 8 ms a token: plain decoding wins, and auto stops waiting for drafts.
    const shape = { a: 0.02, c: 8, t: 20, targets: 4, drafters: 2, tokens: 64, k: 'auto' as const };
    // 3 clients on 4 targets and 2 drafters.
    const shared = await closedLoop(shape, 'dsi', 3, 4);
    const nonsi = await closedLoop({ ...shape, k: 1 }, 'nonsi', 3, 4);
    // 64 commits a request: ~8 drafter calls (a few more while the pool's first figures come in); each
    // call used to cost the hosts CPU for nothing (load bench, a = 0.5, 16-32 clients: 0.92x non-SI).
    expect(shared.draftCallsPerRequest).toBeLessThan(16);
    expect(shared.tokensPerSecond / nonsi.tokensPerSecond).toBeGreaterThan(0.98);
    const alone = await closedLoop({ ...shape, drafters: 3 }, 'dsi', 3, 4);
    expect(alone.draftCallsPerRequest).toBeGreaterThan(40);
  });
});

describe("the virtual clock's microtask settling", () => {
  /** Everything a run can observe: results, errors, events with their times, every port call with its times. */
  const trace = (run: PoolRun) => ({
    end: run.clock.now(),
    served: run.served.map((entry) => ({ result: entry.result, error: entry.error && String(entry.error), events: entry.events, startedAt: entry.startedAt })),
    targets: run.targets.map((target) => target.calls.map((record) => [record.call.requestId, record.call.prefix.length, record.call.drafts, record.startedAt, record.endedAt, record.completed])),
    drafters: run.drafters.map((drafter) => drafter.calls.map((record) => [record.call.requestId, record.call.prefix.length, record.call.maxTokens, record.startedAt, record.endedAt, record.completed])),
  });
  const modes: Mode[] = ['nonsi', 'si', 'dsi'];

  it('gives exactly the macrotask results, one generation: every mode, k 1 to 8, 1 to 7 replicas, several acceptance rates', async () => {
    let runs = 0;
    for (const mode of modes) {
      for (let k = 1; k <= 8; k++) {
        for (const replicas of [1, 2, 3, 5, 7]) {
          const seed = k * 7 + replicas;
          const shape: PoolShape = { replicas, world: new World([0.3, 0.7, 0.9][(k + replicas) % 3], seed), c: 1 + (k % 3), perToken: 0.25, t: 10 };
          const request: Request = { mode, k, maxNewTokens: 24, prompt: prompt(seed) };
          const macro = await serve(shape, [request], true);
          const micro = await serve(shape, [request], true, { settle: 'microtasks' });
          expect(trace(micro)).toEqual(trace(macro));
          runs++;
        }
      }
    }
    expect(runs).toBe(3 * 8 * 5);
  });

  it('gives exactly the macrotask results on shared pools: mixed modes, arrivals, cancellations, failing replicas', async () => {
    for (let seed = 1; seed <= 4; seed++) {
      const requests = Array.from({ length: 10 }, (_, i): Request => ({
        mode: modes[(i + seed) % 3],
        k: 1 + ((i * seed) % 8),
        maxNewTokens: 10 + ((i * 5 + seed) % 12),
        prompt: prompt(i + seed * 10),
        arriveAt: (i * 3 * seed) % 23,
        abortAt: i === seed ? 40 : undefined,
      }));
      const shape: PoolShape = { replicas: 1 + (seed * 2) % 7, drafters: 1 + (seed % 2), world: new World(0.5 + seed / 10, seed), c: seed % 3, perToken: 0.5, replicaFails: (r, i) => r === 1 && i % 5 === seed };
      const macro = await serve(shape, requests);
      const micro = await serve(shape, requests, false, { settle: 'microtasks' });
      expect(trace(micro)).toEqual(trace(macro));
      expect(micro.served.filter((entry) => entry.result).length).toBeGreaterThan(5);
    }
  });

  it('still reports work that waits for something no timer brings', async () => {
    const clock = new VirtualClock({ settle: 'microtasks' });
    const never = new Promise<void>(() => undefined);
    await expect(clock.run(clock.sleep(4).then(() => never))).rejects.toThrow(VirtualClockStalledError);
    expect(clock.now()).toBe(4);
  });
});
