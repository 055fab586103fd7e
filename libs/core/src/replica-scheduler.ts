/**
 * The shared replica scheduler (docs/architecture.md, "Many requests at once"): one per orchestrator
 * (or per simulated pool), shared by every generation, it owns the replicas' occupancy (one call per
 * replica at a time) and decides who gets a replica whenever one frees or a generation wants one.
 *
 * A generation takes part as a {@link ReplicaTenant}: it says what it wants now (a {@link ReplicaClaim})
 * and builds its work when it gets a replica (a {@link ReplicaLease}), so a request that waited carries
 * everything that arrived meanwhile (the drafts of a lane). The decisions, made to a fixpoint:
 *
 * 1. Lanes first (the work a request cannot move without), longest waiting first. A lane that is
 *    *ready* (its drafts are in, or none are coming) may overtake older lanes still waiting for
 *    drafts, but only when its generation has had no lane since the oldest waiting lane began to
 *    wait: so no request waits behind more than one lane of every other generation (one round).
 *    Below saturation a replica never idles while any lane waits, ready or not.
 * 2. Speculative work only on replicas no lane needs: nearest to its V first, then longest waiting.
 * 3. Saturated (several tenants, and at least as many tenants as slots: every replica is wanted
 *    by a lane): when the lane rule 1 picks is not ready and waits for its drafts, no lane is
 *    granted: the replica waits for it (or for a ready lane that may overtake it), and speculative
 *    work gets a replica only when no lane waits, ready or not; on the target pool none at all
 *    ({@link ReplicaSchedulerOptions.speculateWhenSaturated}): a verification started in a gap
 *    between lanes is taken back by the next one, and the call and its cancellation cost the host
 *    what they cost (the event mode predicts no throughput from them there). When replicas are the bottleneck a
 *    lane is worth more with its drafts in it (one forward verifies several tokens) than sent at
 *    once; a tenant whose pending drafts are not worth the wait says so ({@link ReplicaClaim.waitsForDrafts}).
 *    Below saturation but *crowded* (fewer than two slots a tenant: no tenant can count on a replica
 *    for speculative work beside its lane), a lane that says it waits for its drafts
 *    ({@link ReplicaClaim.waitsForDrafts} true) waits too, and the replica goes to a ready lane or to
 *    speculative work meanwhile: in a closed loop a finished request leaves the pool unsaturated for
 *    the moment until its client's next request joins, and lanes sent then without their drafts cost
 *    forwards for fewer tokens.
 * 4. With preemption on (target and drafter replicas): when a lane waits and no replica is free, the least
 *    valuable speculative call in flight (farthest from its V; ties: the most recently granted) is
 *    taken back ({@link ReplicaTenant.preempt}) and its replica goes to the lane. Work that became a
 *    lane is never taken back.
 * 5. Among free replicas (a replica takes `slotsPerReplica` calls at once, 1 unless it batches the
 *    calls that arrive during a forward into the next), the least loaded, then the one with the fewest
 *    consecutive failures (counted across tenants, reset by a success); ties: the first in the list. In a shared pool, a tenant whose call just
 *    failed on a replica retries on another one (when the list holds another), even if it waits.
 *    On batching replicas a lane goes back to the replica of the tenant's last lane while that has a
 *    free slot and no failure: the requests a replica serves come back to it together, and the
 *    replica, which waits for the requests of its last forward (oracle.ts, "Batching"), runs them in
 *    one forward (non-SI on 4 replicas batching 8, 8 clients, event mode: 195 -> 356 tokens/s).
 *    When every slot is taken and nothing speculative can be taken back (rule 4), a lane queues at a
 *    batching replica for its next forward ({@link ReplicaSchedulerOptions.laneSlotsPerReplica}).
 *
 * Pure: no I/O, no timers, no clock. Ordering uses the scheduler's own tickets (a counter), so the
 * decisions are deterministic on any clock.
 */
import type { Drafter, ForwardReport, TargetReplica } from './ports';

/** Why a generation wants a replica: its lane (the block covering the end of V) or speculative work. */
export type WorkClass = 'lane' | 'speculative';

/** What a tenant wants now: its most urgent work (a lane before any speculative work). */
export interface ReplicaClaim {
  readonly class: WorkClass;
  /** Lanes only: the work is as good as it will get (its drafts are in, or no drafter call is pending). */
  readonly ready: boolean;
  /**
   * Lanes that are not ready only: on a {@link ReplicaScheduler.saturated} pool, the lane would rather
   * have a replica later with its drafts than now without them (default true). A lane that says no
   * is granted as below saturation. On a {@link ReplicaScheduler.crowded} pool below saturation only a
   * lane that says yes (true) waits.
   */
  readonly waitsForDrafts?: boolean;
  /** Speculative only: positions between the end of the tenant's V and the work; lower goes first. */
  readonly distance: number;
  /** A {@link ReplicaScheduler.ticket} taken when this claim began to wait: lower waited longer. */
  readonly since: number;
}

/** How the lease of a replica ended; `failed` counts against the replica, `succeeded` clears its count. */
export type LeaseOutcome = 'succeeded' | 'failed' | 'cancelled';

/** One replica granted to one tenant for one call; released exactly once when the call ends. */
export interface ReplicaLease<R> {
  readonly replica: R;
  readonly tenant: ReplicaTenant<R>;
  /** The class of the claim it was granted for. */
  readonly class: WorkClass;
  /** The scheduler's ticket at the grant: later grants have higher tickets. */
  readonly ticket: number;
  readonly released: boolean;
  /** Gives the replica back (idempotent). Call it the moment the call ends or is aborted. */
  release(outcome: LeaseOutcome): void;
}

/**
 * A generation as a {@link ReplicaScheduler} sees it. Implemented by {@link generate}'s run; the
 * methods are called synchronously from the scheduler's decisions and must not throw.
 */
export interface ReplicaTenant<R> {
  /** Names the tenant in scheduler events (the request id). */
  readonly name: string;
  /** The most urgent work this tenant would start on a free replica now, or undefined. */
  claim(): ReplicaClaim | undefined;
  /**
   * A replica for the claim just made: build the work now and start the call, keeping the lease until
   * the call ends. Returns false when the tenant no longer wants it (the lease is then taken back).
   */
  grant(lease: ReplicaLease<R>): boolean;
  /**
   * The distance from V of the work under `lease` now, or undefined when it must not be preempted (it
   * became the lane). Only asked by a scheduler with preemption on.
   */
  preemptible?(lease: ReplicaLease<R>): number | undefined;
  /** Abort the call under `lease` for a lane (its work waits again or is dropped) and release the lease. */
  preempt?(lease: ReplicaLease<R>): void;
}

/** A snapshot of a {@link ReplicaScheduler}'s state and counters, for metrics and health. */
export interface ReplicaSchedulerStats {
  /** Tenants (generations) taking part. */
  activeGenerations: number;
  /** Tenants whose most urgent claim is a lane that has no replica yet. */
  waitingLanes: number;
  /** Tenants whose most urgent claim is speculative work that has no replica yet. */
  waitingSpeculative: number;
  /** Replicas with a call in flight (granted, not yet released). */
  busyReplicas: number;
  /** Replicas in the current list. */
  replicas: number;
  /** Grants since the scheduler was made, by class. */
  lanesGranted: number;
  speculativeGranted: number;
  /** Speculative calls taken back for a lane. */
  preemptions: number;
}

/** Observability hooks of a {@link ReplicaScheduler}, called synchronously; they must not throw. */
export interface ReplicaSchedulerEvents<R> {
  /** A replica was granted; `since` and `ticket` are scheduler tickets (the wait in decisions). */
  grant?(e: { tenant: string; replica: R; class: WorkClass; ready: boolean; distance: number; since: number; ticket: number }): void;
  /** A speculative call of `tenant` at `distance` was taken back for the lane of `for`. */
  preempt?(e: { tenant: string; replica: R; distance: number; for: string }): void;
}

/** Options of a {@link ReplicaScheduler}. */
export interface ReplicaSchedulerOptions<R> {
  /** Take speculative calls back for waiting lanes (the target and drafter schedulers do). */
  preemptSpeculative?: boolean;
  /**
   * On a {@link ReplicaScheduler.saturated} pool, grant speculative work when no lane waits (default
   * true: the drafters, whose speculative work is drafting ahead of the lanes). The target scheduler
   * says false: there every replica is a lane's, and a speculative verification started in a moment
   * when no lane waits is taken back by the next one, costing the call and its cancellation.
   */
  speculateWhenSaturated?: boolean;
  events?: ReplicaSchedulerEvents<R>;
  /**
   * Calls one replica may have in flight at once: replicas that batch the calls arriving during a
   * forward into the next one take several. Default 1 (one call per replica at a time).
   */
  slotsPerReplica?: number;
  /**
   * Lanes only, on batching replicas: calls one replica may hold for lanes, counting every call in
   * flight on it. Default twice `slotsPerReplica` when that is above 1 (else 1): a batching replica
   * runs one forward while the next one's calls queue at it, so with a forward's worth of lanes
   * waiting there it starts the next full forward the moment one ends, where lanes held back here
   * until a forward ends come back a round trip (and, for SI, a draft) later and find the replica
   * idle or join it half full. A lane queues only when every slot is taken and no speculative call can
   * be taken back, on the request's last replica first; speculative work never takes more than
   * `slotsPerReplica` (it must not push a lane into a later forward). Event mode, 4 replicas and 2
   * drafters batching 8, 64 clients: SI a=0.8 k=4 1676 -> 3256 tokens/s, a=0.5 k=1 1034 -> 1837,
   * non-SI 1386 -> 1453; 1 to 16 clients unchanged.
   */
  laneSlotsPerReplica?: number;
}

/** What the target and drafter schedulers take besides the replica list. */
export interface PoolSchedulerOptions<R> {
  events?: ReplicaSchedulerEvents<R>;
  /** See {@link ReplicaSchedulerOptions.slotsPerReplica}. */
  slotsPerReplica?: number;
  /** See {@link ReplicaSchedulerOptions.laneSlotsPerReplica}. */
  laneSlotsPerReplica?: number;
}

class Lease<R extends object> implements ReplicaLease<R> {
  released = false;
  readonly class: WorkClass;

  constructor(
    readonly replica: R,
    readonly tenant: ReplicaTenant<R>,
    workClass: WorkClass,
    readonly ticket: number,
    private readonly onRelease: (lease: Lease<R>, outcome: LeaseOutcome) => void,
  ) {
    this.class = workClass;
  }

  release(outcome: LeaseOutcome): void {
    if (this.released) return;
    this.released = true;
    this.onRelease(this, outcome);
  }
}

interface Candidate<R> {
  tenant: ReplicaTenant<R>;
  claim: ReplicaClaim;
}

/** Below this length {@link stableSort} sorts by insertion: Array.prototype.sort allocates its work arrays on every call. */
const INSERTION_SORT_MAX = 32;

/**
 * Sorts in place, stably (equal elements keep their order), so exactly like Array.prototype.sort
 * (also stable) with the same comparator; short lists by insertion, without allocating.
 */
function stableSort<T>(list: T[], compare: (a: T, b: T) => number): void {
  if (list.length > INSERTION_SORT_MAX) {
    list.sort(compare);
    return;
  }
  for (let i = 1; i < list.length; i++) {
    const item = list[i];
    let j = i - 1;
    while (j >= 0 && compare(list[j], item) > 0) {
      list[j + 1] = list[j];
      j--;
    }
    list[j + 1] = item;
  }
}

/** Lanes the longest waiting first. */
function byLaneOrder<R>(a: Candidate<R>, b: Candidate<R>): number {
  return a.claim.since - b.claim.since;
}

/** Speculative claims nearest to their generation's V first, then the longest waiting. */
function bySpeculativeOrder<R>(a: Candidate<R>, b: Candidate<R>): number {
  return a.claim.distance - b.claim.distance || a.claim.since - b.claim.since;
}

/**
 * The scheduler of one pool of replicas (targets or drafters), shared by every generation that uses
 * the pool. Give it the replica list, or a function that returns the current list (healthy replicas
 * come and go; call {@link schedule} after the function's answer grows), or change it with
 * {@link setReplicas}. Replicas are told apart by identity.
 */
export class ReplicaScheduler<R extends object> {
  private source: () => readonly R[];
  private readonly preemptSpeculative: boolean;
  private readonly speculateWhenSaturated: boolean;
  private readonly events?: ReplicaSchedulerEvents<R>;
  private readonly tenants = new Set<ReplicaTenant<R>>();
  /** Calls in flight: every lease not yet released, and how many each replica holds. */
  private readonly leases = new Set<Lease<R>>();
  private readonly inFlight = new Map<R, number>();
  private readonly slots: number;
  private readonly laneSlots: number;
  private readonly failures = new Map<R, number>();
  /** The replica of each tenant's last failed call, until its next success: it retries elsewhere. */
  private readonly lastFailedOn = new Map<ReplicaTenant<R>, R>();
  /** The ticket of each tenant's last lane grant: bounds how often it may overtake. */
  private readonly lastLaneGrant = new Map<ReplicaTenant<R>, number>();
  /** Batching replicas: the replica of each tenant's last lane, which its next lane goes back to (rule 5). */
  private readonly laneHome = new Map<ReplicaTenant<R>, R>();
  private tickets = 0;
  private holds = 0;
  private scheduling = false;
  /** Tenants that declined a grant during the current schedule(); empty between calls. */
  private readonly declined = new Set<ReplicaTenant<R>>();
  /** A step's claims by class, reused between steps. */
  private readonly lanes: Candidate<R>[] = [];
  private readonly speculative: Candidate<R>[] = [];
  private lanesGranted = 0;
  private speculativeGranted = 0;
  private preemptions = 0;

  constructor(replicas: readonly R[] | (() => readonly R[]), options: ReplicaSchedulerOptions<R> = {}) {
    this.source = typeof replicas === 'function' ? replicas : () => replicas;
    this.preemptSpeculative = options.preemptSpeculative ?? false;
    this.speculateWhenSaturated = options.speculateWhenSaturated ?? true;
    this.events = options.events;
    this.slots = options.slotsPerReplica ?? 1;
    if (!Number.isInteger(this.slots) || this.slots < 1) throw new RangeError(`slotsPerReplica=${options.slotsPerReplica} must be an integer >= 1`);
    this.laneSlots = options.laneSlotsPerReplica ?? (this.slots > 1 ? 2 * this.slots : 1);
    if (!Number.isInteger(this.laneSlots) || this.laneSlots < this.slots) {
      throw new RangeError(`laneSlotsPerReplica=${options.laneSlotsPerReplica} must be an integer >= slotsPerReplica (${this.slots})`);
    }
  }

  /** The current replica list. */
  get replicas(): readonly R[] {
    return this.source();
  }

  /** How many replicas the list holds now (generations size their speculation and failure budget by it). */
  get replicaCount(): number {
    return this.source().length;
  }

  /** Tenants (generations) taking part now. */
  get tenantCount(): number {
    return this.tenants.size;
  }

  /** Calls one replica may have in flight at once ({@link ReplicaSchedulerOptions.slotsPerReplica}). */
  get slotsPerReplica(): number {
    return this.slots;
  }

  /**
   * Whether every slot is wanted by a lane: several tenants, at least as many as replicas times their
   * slots (each tenant has a lane in flight or waiting while it runs). A tenant alone is never
   * saturated, so one generation on an idle pool runs exactly as with replicas of its own.
   */
  get saturated(): boolean {
    return this.tenants.size >= 2 && this.tenants.size >= this.replicaCount * this.slots;
  }

  /**
   * Whether the tenants have fewer than two slots each (several tenants): no tenant can count on a
   * replica for speculative work beside its lane, so a lane that would rather wait for its drafts may.
   */
  get crowded(): boolean {
    return this.tenants.size >= 2 && 2 * this.tenants.size > this.replicaCount * this.slots;
  }

  /** Slots per tenant: the replicas' slots over the tenants (at least one), what each can count on. */
  get slotShare(): number {
    return (this.replicaCount * this.slots) / Math.max(1, this.tenants.size);
  }

  /** Replaces the replica list (e.g. on a health change) and gives new replicas work at once. */
  setReplicas(replicas: readonly R[] | (() => readonly R[])): void {
    this.source = typeof replicas === 'function' ? replicas : () => replicas;
    this.schedule();
  }

  /** A fresh ticket: tenants stamp a claim with it when the claim begins to wait. */
  ticket(): number {
    return ++this.tickets;
  }

  /** Consecutive failures of `replica`, across tenants (0 after a success). */
  failuresOf(replica: R): number {
    return this.failures.get(replica) ?? 0;
  }

  /** A generation starts taking part; its claims are considered from the next decision on. */
  join(tenant: ReplicaTenant<R>): void {
    this.tenants.add(tenant);
    this.schedule();
  }

  /** A generation is done: its leases (normally released already) are taken back and others proceed. */
  leave(tenant: ReplicaTenant<R>): void {
    this.tenants.delete(tenant);
    this.lastLaneGrant.delete(tenant);
    this.laneHome.delete(tenant);
    this.lastFailedOn.delete(tenant);
    for (const lease of [...this.leases]) {
      if (lease.tenant === tenant) lease.release('cancelled');
    }
    this.schedule();
  }

  /**
   * Defers decisions until the matching {@link resume}: a tenant holds the scheduler while its state
   * is half updated (a commit that cancels blocks), so no grant sees that state. Holds nest.
   */
  hold(): void {
    this.holds++;
  }

  /** Ends a {@link hold}; the last one makes every decision that became possible meanwhile. */
  resume(): void {
    if (this.holds > 0) this.holds--;
    this.schedule();
  }

  /** Makes every decision the current state allows (a no-op while held or already deciding). */
  schedule(): void {
    if (this.holds > 0 || this.scheduling) return;
    this.scheduling = true;
    const declined = this.declined;
    try {
      while (this.step(declined));
    } finally {
      this.scheduling = false;
      declined.clear();
      this.lanes.length = 0;
      this.speculative.length = 0;
    }
  }

  /** State and counters now. */
  stats(): ReplicaSchedulerStats {
    let waitingLanes = 0;
    let waitingSpeculative = 0;
    for (const tenant of this.tenants) {
      const claim = tenant.claim();
      if (claim?.class === 'lane') waitingLanes++;
      else if (claim) waitingSpeculative++;
    }
    return {
      activeGenerations: this.tenants.size,
      waitingLanes,
      waitingSpeculative,
      busyReplicas: this.inFlight.size,
      replicas: this.replicaCount,
      lanesGranted: this.lanesGranted,
      speculativeGranted: this.speculativeGranted,
      preemptions: this.preemptions,
    };
  }

  /** Called by a lease when it is released: the replica is free again. */
  private readonly onLeaseReleased = (lease: Lease<R>, outcome: LeaseOutcome): void => {
    this.forgetLease(lease);
    if (outcome === 'succeeded') {
      this.failures.set(lease.replica, 0);
      this.lastFailedOn.delete(lease.tenant);
    } else if (outcome === 'failed') {
      this.failures.set(lease.replica, this.failuresOf(lease.replica) + 1);
      if (this.tenants.has(lease.tenant)) this.lastFailedOn.set(lease.tenant, lease.replica);
    }
    this.schedule();
  };

  /** One decision: a grant or a preemption. False when there is nothing more to do. */
  private step(declined: Set<ReplicaTenant<R>>): boolean {
    // The candidate lists are reused between steps (a step never runs inside another: see schedule()).
    const lanes = this.lanes;
    const speculative = this.speculative;
    lanes.length = 0;
    speculative.length = 0;
    for (const tenant of this.tenants) {
      if (declined.size > 0 && declined.has(tenant)) continue;
      const claim = tenant.claim();
      if (claim) (claim.class === 'lane' ? lanes : speculative).push({ tenant, claim });
    }
    stableSort(speculative, bySpeculativeOrder);
    const ordered = this.orderLanes(lanes);
    if (this.saturated) {
      // Rule 3: lanes in order up to the first that waits for its drafts; speculative work only with no
      // lane waiting, and on a pool whose replicas lanes keep busy (targets) none at all.
      if (lanes.length === 0) return this.speculateWhenSaturated && this.decide(speculative, speculative.length, declined);
      let waiting = 0;
      while (waiting < ordered.length && !(!ordered[waiting].claim.ready && ordered[waiting].claim.waitsForDrafts !== false)) waiting++;
      return this.decide(ordered, waiting, declined);
    }
    if (this.crowded) {
      // Rule 3b: fewer than two slots a tenant: a lane that would rather wait for its drafts waits
      // (the replica goes to a ready lane or to speculative work meanwhile).
      const going = ordered.filter((lane) => lane.claim.ready || lane.claim.waitsForDrafts !== true);
      return this.decide(going, going.length, declined) || this.decide(speculative, speculative.length, declined);
    }
    return this.decide(ordered, ordered.length, declined) || this.decide(speculative, speculative.length, declined);
  }

  /** Grants a replica to the first of `candidates[0 .. end)` that can have one (or preempts for a lane); false when none can. */
  private decide(candidates: readonly Candidate<R>[], end: number, declined: Set<ReplicaTenant<R>>): boolean {
    for (let i = 0; i < end; i++) {
      const candidate = candidates[i];
      const lane = candidate.claim.class === 'lane';
      const replica = this.freeReplica(candidate.tenant, lane, this.slots);
      if (replica) {
        this.grant(candidate, replica, declined);
        return true;
      }
      if (lane && this.preemptSpeculative && this.preemptFor(candidate)) return true;
      // Every slot of a forward is taken and no speculative call gives one back: a lane queues at a
      // batching replica for its next forward (ReplicaSchedulerOptions.laneSlotsPerReplica).
      const queue = lane && this.laneSlots > this.slots ? this.freeReplica(candidate.tenant, lane, this.laneSlots) : undefined;
      if (queue) {
        this.grant(candidate, queue, declined);
        return true;
      }
    }
    return false;
  }

  /**
   * Lanes in the order they are served: the longest waiting first, except that a ready lane may go
   * first when the oldest is not ready and its tenant has had no lane since the oldest began to wait.
   */
  private orderLanes(lanes: Candidate<R>[]): Candidate<R>[] {
    if (lanes.length < 2) return lanes;
    stableSort(lanes, byLaneOrder);
    const oldest = lanes[0];
    if (oldest.claim.ready) return lanes;
    let overtaking = -1;
    for (let i = 0; i < lanes.length; i++) {
      const lane = lanes[i];
      if (lane.claim.ready && (this.lastLaneGrant.get(lane.tenant) ?? 0) < oldest.claim.since) {
        overtaking = i;
        break;
      }
    }
    if (overtaking < 0) return lanes;
    return [lanes[overtaking], ...lanes.slice(0, overtaking), ...lanes.slice(overtaking + 1)];
  }

  /**
   * The free replica for `tenant` with the fewest consecutive failures (ties: the first in the list),
   * except the {@link avoidedBy} one.
   */
  private freeReplica(tenant: ReplicaTenant<R>, lane: boolean, capacity: number): R | undefined {
    const replicas = this.source();
    const avoided = this.avoidedBy(tenant, replicas);
    if (lane && this.slots > 1) {
      const home = this.laneHome.get(tenant);
      if (home !== undefined && home !== avoided && (this.inFlight.get(home) ?? 0) < capacity && this.failuresOf(home) === 0 && replicas.includes(home)) return home;
    }
    let best: R | undefined;
    let bestFailures = Infinity;
    let bestLoad = Infinity;
    for (const replica of replicas) {
      const load = this.inFlight.get(replica) ?? 0;
      if (load >= capacity || replica === avoided) continue;
      const failures = this.failuresOf(replica);
      if (load < bestLoad || (load === bestLoad && failures < bestFailures)) {
        best = replica;
        bestLoad = load;
        bestFailures = failures;
      }
    }
    return best;
  }

  private forgetLease(lease: Lease<R>): void {
    if (!this.leases.delete(lease)) return;
    const load = (this.inFlight.get(lease.replica) ?? 1) - 1;
    if (load > 0) this.inFlight.set(lease.replica, load);
    else this.inFlight.delete(lease.replica);
  }

  /**
   * The replica the tenant's last call failed on, when the pool is shared (other tenants take part)
   * and the list holds another replica: the tenant waits for a different one. Under load a replica
   * that fails fast is free again long before the healthy ones, and would take every retry of the
   * tenant until its failure budget is gone. A tenant alone in the pool retries at once anywhere
   * (the other replicas are busy with its own work, and waiting would only slow it down) unless that
   * replica failed twice in a row while another has not failed: then it waits for that one.
   */
  private avoidedBy(tenant: ReplicaTenant<R>, replicas: readonly R[]): R | undefined {
    if (replicas.length < 2) return undefined;
    const failed = this.lastFailedOn.get(tenant);
    if (failed === undefined) return undefined;
    if (this.tenants.size >= 2) return failed;
    // Alone: a replica that failed twice in a row (a dead one refuses at once) waits while another has
    // not failed, or it would take every retry until the health checks drop it and end the generation.
    return this.failuresOf(failed) >= 2 && replicas.some((r) => r !== failed && this.failuresOf(r) === 0) ? failed : undefined;
  }

  private grant(choice: Candidate<R>, replica: R, declined: Set<ReplicaTenant<R>>): void {
    const { tenant, claim } = choice;
    const lease = new Lease(replica, tenant, claim.class, this.ticket(), this.onLeaseReleased);
    this.leases.add(lease);
    this.inFlight.set(replica, (this.inFlight.get(replica) ?? 0) + 1);
    const previousLaneGrant = this.lastLaneGrant.get(tenant);
    if (claim.class === 'lane') this.lastLaneGrant.set(tenant, lease.ticket);
    if (claim.class === 'lane' && this.slots > 1) this.laneHome.set(tenant, replica);
    this.events?.grant?.({ tenant: tenant.name, replica, class: claim.class, ready: claim.ready, distance: claim.distance, since: claim.since, ticket: lease.ticket });
    if (tenant.grant(lease)) {
      if (claim.class === 'lane') this.lanesGranted++;
      else this.speculativeGranted++;
      return;
    }
    // Declined (or the tenant ended while starting): take the replica back, uncounted.
    declined.add(tenant);
    if (claim.class === 'lane' && this.tenants.has(tenant)) {
      if (previousLaneGrant === undefined) this.lastLaneGrant.delete(tenant);
      else this.lastLaneGrant.set(tenant, previousLaneGrant);
    }
    if (!lease.released) {
      lease.released = true;
      this.forgetLease(lease);
    }
  }

  /** Takes back the least valuable speculative call for `lane`; false when every call is a lane. */
  private preemptFor(lane: Candidate<R>): boolean {
    let victim: Lease<R> | undefined;
    let victimDistance = -Infinity;
    const avoided = this.avoidedBy(lane.tenant, this.source());
    for (const lease of this.leases) {
      if (lease.class !== 'speculative' || lease.replica === avoided) continue;
      const distance = lease.tenant.preemptible?.(lease);
      if (distance === undefined) continue;
      if (distance > victimDistance || (distance === victimDistance && victim && lease.ticket > victim.ticket)) {
        victim = lease;
        victimDistance = distance;
      }
    }
    if (!victim) return false;
    this.preemptions++;
    this.events?.preempt?.({ tenant: victim.tenant.name, replica: victim.replica, distance: victimDistance, for: lane.tenant.name });
    victim.tenant.preempt?.(victim);
    if (!victim.released) victim.release('cancelled');
    return true;
  }
}

/** Forgetting per reported verification in {@link PoolMeasurements.forwardView}: the last ~100 calls count (0.99^69 = 0.5). */
const FORWARD_DECAY = 0.99;
/** Forgetting per lane in the pool's mean wait of lanes at their replica: the last ~35 lanes count (0.98^34 = 0.5). */
const LANE_QUEUE_DECAY = 0.98;

/** A mean in which each value added weighs `decay` times the one after it. */
class DecayedMean {
  private weight = 0;
  private sum = 0;

  constructor(private readonly decay: number) {}

  add(value: number): void {
    this.weight = this.weight * this.decay + 1;
    this.sum = this.sum * this.decay + value;
  }

  /** Undefined before any value. */
  mean(): number | undefined {
    return this.weight > 0 ? this.sum / this.weight : undefined;
  }
}

/**
 * What the generations on one target pool have measured, pooled so that a new generation judges its
 * first lanes by the pool's experience (the same model pair, replicas and drafters): whether a lane
 * is worth waiting for drafts when the pool is saturated ({@link ReplicaScheduler.saturated}). Written
 * by the generations as their calls end; only sums, so it is order-free.
 */
export class PoolMeasurements {
  /** Successful verifications and their summed latency (call start to result). */
  verifications = 0;
  verifyMs = 0;
  /** Drafts judged by commits, and those accepted. */
  judgedDrafts = 0;
  acceptedDrafts = 0;
  /** Tokens asked of successful drafter calls, and the calls' summed latency. */
  draftTokens = 0;
  draftMs = 0;
  /** Successful drafter calls, and the sums a least-squares fit of latency = overhead + per-token x tokens needs. */
  draftCallsTimed = 0;
  draftTokensSquared = 0;
  draftTokenMs = 0;

  /**
   * A drafter call's fixed cost and its cost per token, fitted to the timed calls (ms = overhead +
   * perToken x tokens asked). Calls that all asked the same number of tokens cannot tell the two apart:
   * then the overhead is 0 and the per-token cost is the mean. Undefined before any call was timed.
   */
  draftCost(): { overheadMs: number; perTokenMs: number } | undefined {
    const n = this.draftCallsTimed;
    if (n === 0 || this.draftTokens === 0) return undefined;
    const meanTokens = this.draftTokens / n;
    const meanMs = this.draftMs / n;
    const variance = this.draftTokensSquared / n - meanTokens * meanTokens;
    if (variance > 0.25) {
      const perTokenMs = (this.draftTokenMs / n - meanTokens * meanMs) / variance;
      const overheadMs = meanMs - perTokenMs * meanTokens;
      if (perTokenMs > 0 && overheadMs >= 0) return { overheadMs, perTokenMs };
    }
    return { overheadMs: 0, perTokenMs: this.draftMs / this.draftTokens };
  }
  /** Drafter calls a lane needed, and how long they waited for a drafter in total (for a lease here, and at the drafter for its forwards when it reports that). */
  laneDraftCalls = 0;
  laneDraftQueueMs = 0;

  // Decayed sums over the verifications whose replica reported its forward ({@link forwardView}).
  private reported = 0;
  private reportedCallMs = 0;
  private reportedQueueMs = 0;
  private reportedCallTokens = 0;
  private reportedBatchRequests = 0;
  private batchTokens = 0;
  private batchTokensSquared = 0;
  private batchModelMs = 0;
  private batchTokenMs = 0;
  /** The wait at the replica of the lanes that waited for their drafts, and of those that went at once. */
  private readonly waitingLaneQueue = new DecayedMean(LANE_QUEUE_DECAY);
  private readonly plainLaneQueue = new DecayedMean(LANE_QUEUE_DECAY);

  /**
   * A successful verification of `callTokens` tokens that took `callMs` (call start to result), with
   * its replica's account of the forward, and, for a lane, whether it waited for its drafts
   * ('waited') or went at once ('plain'). Older ones weigh less: {@link FORWARD_DECAY} per call
   * ({@link LANE_QUEUE_DECAY} per lane of the same kind).
   */
  recordForward(callMs: number, callTokens: number, report: ForwardReport, lane?: 'waited' | 'plain'): void {
    const d = FORWARD_DECAY;
    const queueMs = Math.min(report.queueMs, callMs);
    if (lane === 'waited') this.waitingLaneQueue.add(queueMs);
    else if (lane === 'plain') this.plainLaneQueue.add(queueMs);
    this.reported = this.reported * d + 1;
    this.reportedCallMs = this.reportedCallMs * d + callMs;
    this.reportedQueueMs = this.reportedQueueMs * d + queueMs;
    this.reportedCallTokens = this.reportedCallTokens * d + callTokens;
    this.reportedBatchRequests = this.reportedBatchRequests * d + report.batchRequests;
    this.batchTokens = this.batchTokens * d + report.batchTokens;
    this.batchTokensSquared = this.batchTokensSquared * d + report.batchTokens * report.batchTokens;
    this.batchModelMs = this.batchModelMs * d + report.modelMs;
    this.batchTokenMs = this.batchTokenMs * d + report.batchTokens * report.modelMs;
  }

  /**
   * A verification as lookahead 'auto' weighs it, from the replicas' reports (undefined before any):
   * `serviceMs`, the mean call without its wait at the replica (the round trip and the forward: what
   * a call that the replica's batch was waiting for takes), at `callTokens` tokens a call;
   * `forwardMs`, the mean forward's model time (what the replica spends on a batch); and
   * `msPerCallToken`, what one more token in every call adds to each forward: the forward's cost per
   * token (a least-squares fit of model time on the forward's tokens; 0 while they hardly vary) times
   * the calls a forward runs; `waitingLaneQueueMs`, how much longer the lanes that waited for their
   * drafts waited at the replica than the lanes that went at once (undefined before a lane of both
   * kinds; at least 0). On a batching replica below saturation a lane that went when its last verdict
   * returned joins the next forward (the replica waits for it) while one that waited for a drafter
   * call may arrive mid-forward and wait for its end; on a saturated one whose lanes queue for its
   * next forward (ReplicaSchedulerOptions.laneSlotsPerReplica) every lane waits about a forward there,
   * which is the pool's load and no cost of waiting for drafts (64 clients on 4 replicas batching 8,
   * event mode, a = 0.5: auto stayed plain against the raw wait, 0.79x SI at k = 1).
   */
  forwardView(): { serviceMs: number; forwardMs: number; callTokens: number; msPerCallToken: number; waitingLaneQueueMs?: number } | undefined {
    const n = this.reported;
    if (n === 0) return undefined;
    const meanTokens = this.batchTokens / n;
    const variance = this.batchTokensSquared / n - meanTokens * meanTokens;
    const perToken = variance > 0.25 ? Math.max(0, (this.batchTokenMs / n - meanTokens * (this.batchModelMs / n)) / variance) : 0;
    const waiting = this.waitingLaneQueue.mean();
    const plain = this.plainLaneQueue.mean();
    return {
      serviceMs: (this.reportedCallMs - this.reportedQueueMs) / n,
      forwardMs: this.batchModelMs / n,
      callTokens: this.reportedCallTokens / n,
      msPerCallToken: perToken * (this.reportedBatchRequests / n),
      waitingLaneQueueMs: waiting !== undefined && plain !== undefined ? Math.max(0, waiting - plain) : undefined,
    };
  }

  /** The mean successful verification (call start to result); 0 before any. */
  meanVerifyMs(): number {
    return this.verifications > 0 ? this.verifyMs / this.verifications : 0;
  }

  /** The mean wait of a lane's drafter call for a drafter; 0 before any. */
  meanLaneDraftQueueMs(): number {
    return this.laneDraftCalls > 0 ? this.laneDraftQueueMs / this.laneDraftCalls : 0;
  }

  /** The pool's acceptance of a draft, Laplace-smoothed: (accepted + 1) / (judged + 2); 0.5 before any verdict. */
  acceptance(): number {
    return (this.acceptedDrafts + 1) / (this.judgedDrafts + 2);
  }

  /** A drafter call's time for `tokens` drafts from {@link draftCost} (fixed cost + tokens x per-token cost); undefined before any call was timed. */
  draftCallMs(tokens: number): number | undefined {
    const cost = this.draftCost();
    return cost && cost.overheadMs + cost.perTokenMs * tokens;
  }
}

/** The shared scheduler of the target replicas: speculative verifications give way to lanes. */
export class TargetScheduler extends ReplicaScheduler<TargetReplica> {
  /** The pool's measurements, shared by its generations. */
  readonly measurements = new PoolMeasurements();

  constructor(targets: readonly TargetReplica[] | (() => readonly TargetReplica[]), options: PoolSchedulerOptions<TargetReplica> = {}) {
    super(targets, { preemptSpeculative: true, speculateWhenSaturated: false, ...options });
  }
}

/**
 * The shared scheduler of the drafter replicas: one call per drafter at a time; a call a waiting lane
 * needs goes before speculative drafting (drafting ahead of a run's lane block), and takes the
 * drafter of such a call when none is free: a lane never waits behind another run's drafting ahead.
 */
export class DrafterScheduler extends ReplicaScheduler<Drafter> {
  constructor(drafters: readonly Drafter[] | (() => readonly Drafter[]), options: PoolSchedulerOptions<Drafter> = {}) {
    super(drafters, { preemptSpeculative: true, ...options });
  }
}
