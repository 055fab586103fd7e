import dns from 'node:dns';
import type { ChannelOptions } from '@grpc/grpc-js';
import { DrafterServiceClient, TargetServiceClient, VerifyRequest } from '@dsi/proto';
import type { DraftCall, DraftResult, Drafter, TargetReplica, VerifyCall, VerifyResult } from '@dsi/core';
import { samplingToWire } from '@dsi/wire';
import { status } from '@grpc/grpc-js';
import { callUnary, clientCredentials, createChannelOptions, DsiError, HealthWatch, unavailable } from '@dsi/rpc';

/**
 * Channel options of the orchestrator's clients: the default limits, and a reconnect backoff capped
 * at a second (gRPC's default grows to two minutes), so a replica or drafter that restarts is
 * dialled again soon even before its health watch recreates the channel.
 */
function replicaChannelOptions(): ChannelOptions {
  return { ...createChannelOptions(), 'grpc.initial_reconnect_backoff_ms': 250, 'grpc.max_reconnect_backoff_ms': 1000 };
}

/**
 * A client of one replica that a {@link ReplicaPool} holds: made for an address when the address
 * appears, told to reconnect when its health watch sees it SERVING again, closed when it leaves.
 */
export interface ReplicaClient {
  /** The replica's address, which also names it in events, traces and errors. */
  readonly id: string;
  /** Replaces the channel with a fresh one (no reconnect backoff left over from an outage). */
  reconnect(): void;
  /** Drops a request's KV cache on the replica; failures are ignored (the cache times out). */
  release(requestId: string): void;
  /**
   * Fails every call on the wire at once with `reason`: its health watch gave up on the replica (a
   * black hole answers nothing, so without this a call would wait for its deadline).
   */
  failInFlight(reason: Error): void;
  close(): void;
}

/**
 * The calls a replica client has on the wire, so they can all be failed when the replica stops
 * answering; a call refused as UNAVAILABLE (a dead replica refuses connections at once) has the
 * replica's health checked at once (`suspect`), so it leaves the healthy list within milliseconds
 * instead of taking every retry until the next periodic check.
 */
class InFlightCalls {
  private readonly calls = new Set<AbortController>();

  constructor(private readonly suspect?: () => void) {}

  /**
   * Runs `call` with a signal that aborts with `signal` and on {@link failAll}; then rejects with that
   * reason. The signal is linked by a listener, not `AbortSignal.any`, whose weak references cost the
   * orchestrator more than the rest of this class on every replica call.
   */
  async run<T>(signal: AbortSignal, call: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const own = new AbortController();
    const follow = (): void => own.abort(signal.reason);
    if (signal.aborted) follow();
    else signal.addEventListener('abort', follow, { once: true });
    this.calls.add(own);
    try {
      return await call(own.signal);
    } catch (error) {
      if (own.signal.aborted && !signal.aborted) throw own.signal.reason;
      if (!signal.aborted && DsiError.from(error).code === status.UNAVAILABLE) this.suspect?.();
      throw error;
    } finally {
      signal.removeEventListener('abort', follow);
      this.calls.delete(own);
    }
  }

  failAll(reason: Error): void {
    for (const call of this.calls) call.abort(reason);
  }
}

/**
 * The drafter port over one drafter replica. Given the {@link HealthWatch} its pool keeps, drafting is
 * skipped while the drafter is not SERVING (each draft call fails at once with UNAVAILABLE, and the
 * scheduler goes on without drafts, as non-SI); the pool recreates the channel the moment it is
 * SERVING again, so drafts resume within one health interval of its return instead of after gRPC's
 * reconnect backoff. One call at a time: the orchestrator's DrafterScheduler guarantees it.
 */
export class GrpcDrafter implements Drafter, ReplicaClient {
  private client: DrafterServiceClient;
  private readonly inFlight: InFlightCalls;

  constructor(
    readonly id: string,
    private readonly health?: HealthWatch,
  ) {
    this.client = new DrafterServiceClient(id, clientCredentials(), replicaChannelOptions());
    this.inFlight = new InFlightCalls(health ? () => void health.check() : undefined);
  }

  /**
   * Whether draft calls go out: true until the health watch has found the drafter not SERVING (a
   * drafter without a watch is always tried).
   */
  get serving(): boolean {
    return this.health === undefined || this.health.status === 'UNCHECKED' || this.health.serving;
  }

  async draft(call: DraftCall, signal: AbortSignal): Promise<DraftResult> {
    if (!this.serving) throw unavailable(`drafter ${this.id} is not serving (${this.health?.status}): drafting is skipped until it is back`);
    const request = { requestId: call.requestId, prefix: [...call.prefix], maxTokens: call.maxTokens, sampling: samplingToWire(call.sampling), returnProbs: call.returnProbs };
    const response = await this.inFlight.run(signal, (both) => callUnary(this.client, 'draft', request, { signal: both }));
    return { tokens: response.tokens, probs: call.returnProbs ? Float32Array.from(response.probs) : undefined, queueMs: response.stats?.queueMs };
  }

  release(requestId: string): void {
    if (this.serving) this.client.release({ requestId }, () => undefined);
  }

  reconnect(): void {
    const previous = this.client;
    this.client = new DrafterServiceClient(this.id, clientCredentials(), replicaChannelOptions());
    previous.close();
  }

  failInFlight(reason: Error): void {
    this.inFlight.failAll(reason);
  }

  close(): void {
    this.client.close();
  }
}

/**
 * One target replica over gRPC. It sends every call at once: the orchestrator's TargetScheduler gives
 * a replica at most one verification at a time across every request. A call whose signal aborts is
 * cancelled on the wire (the replica stops the forward).
 */
export class GrpcTargetReplica implements TargetReplica, ReplicaClient {
  private client: TargetServiceClient;
  private readonly inFlight: InFlightCalls;

  constructor(
    readonly id: string,
    health?: HealthWatch,
  ) {
    this.client = new TargetServiceClient(id, clientCredentials(), replicaChannelOptions());
    this.inFlight = new InFlightCalls(health ? () => void health.check() : undefined);
  }

  reconnect(): void {
    const previous = this.client;
    this.client = new TargetServiceClient(this.id, clientCredentials(), replicaChannelOptions());
    previous.close();
  }

  async verify(call: VerifyCall, signal: AbortSignal): Promise<VerifyResult> {
    const request: VerifyRequest = {
      requestId: call.requestId,
      prefix: [...call.prefix],
      drafts: [...call.drafts],
      sampling: samplingToWire(call.sampling),
      draftProbs: call.draftProbs ? Array.from(call.draftProbs) : [],
    };
    const response = await this.inFlight.run(signal, (both) => callUnary(this.client, 'verify', request, { signal: both }));
    const stats = response.stats;
    // One forward's account (what lookahead 'auto' learns from); a replica that ran several or says nothing gives none.
    if (stats?.forwards === 1 && stats.batchTokens > 0) {
      return { accepted: response.accepted, tokens: response.tokens, report: { modelMs: stats.modelMs, queueMs: stats.queueMs, batchRequests: stats.batchRequests, batchTokens: stats.batchTokens } };
    }
    return { accepted: response.accepted, tokens: response.tokens };
  }

  release(requestId: string): void {
    this.client.release({ requestId }, () => undefined);
  }

  failInFlight(reason: Error): void {
    this.inFlight.failAll(reason);
  }

  close(): void {
    this.client.close();
  }
}

/** What a {@link ReplicaPool} holds: how its log lines name a replica, the health service, the client. */
export interface ReplicaKind<C extends ReplicaClient> {
  /** `target` or `drafter`, in log lines. */
  readonly role: string;
  /** The gRPC service whose health counts. */
  readonly serviceName: string;
  create(address: string, health: HealthWatch): C;
}

/** Target replicas: health of `dsi.v1.TargetService`. */
export const TARGET_REPLICAS: ReplicaKind<GrpcTargetReplica> = {
  role: 'target',
  serviceName: 'dsi.v1.TargetService',
  create: (address, health) => new GrpcTargetReplica(address, health),
};

/** Drafter replicas: health of `dsi.v1.DrafterService`; a drafter skips calls while it is not SERVING. */
export const DRAFTER_REPLICAS: ReplicaKind<GrpcDrafter> = {
  role: 'drafter',
  serviceName: 'dsi.v1.DrafterService',
  create: (address, health) => new GrpcDrafter(address, health),
};

/** Where the replicas are: a fixed list, or a DNS name (a headless Kubernetes Service). */
export type ReplicaSource = { addresses: readonly string[] } | { dns: string /* name:port */ };

/** Options of a {@link ReplicaPool}. */
export interface ReplicaPoolOptions {
  /** Pause between rounds of resolving and health checks. Default 1000 ms. */
  intervalMs?: number;
  log?: (line: string) => void;
  /** Told after the healthy replicas changed (see {@link ReplicaPool.onChange}). */
  onChange?: () => void;
}

/**
 * The replicas of one kind (targets or drafters) the orchestrator may use: resolved from a list or
 * from DNS (re-resolved periodically, so scaling the StatefulSet is picked up) and health-checked
 * with one {@link HealthWatch} each; {@link healthy} lists the SERVING ones.
 */
export class ReplicaPool<C extends ReplicaClient> {
  private readonly replicas = new Map<string, { client: C; health: HealthWatch }>();
  private timer?: NodeJS.Timeout;
  private refreshing?: Promise<void>;
  /** Set by stop(): a refresh under way when it came dials nothing more. */
  private stopped = false;
  private healthyList: readonly C[] = [];
  private allList: readonly C[] = [];
  private readonly intervalMs: number;
  private readonly log: (line: string) => void;
  private readonly listeners = new Set<() => void>();

  /** Target replicas from `source`. */
  static targets(source: ReplicaSource, options: ReplicaPoolOptions = {}): ReplicaPool<GrpcTargetReplica> {
    return new ReplicaPool(TARGET_REPLICAS, source, options);
  }

  /** Drafter replicas from `source`. */
  static drafters(source: ReplicaSource, options: ReplicaPoolOptions = {}): ReplicaPool<GrpcDrafter> {
    return new ReplicaPool(DRAFTER_REPLICAS, source, options);
  }

  constructor(
    private readonly kind: ReplicaKind<C>,
    private readonly source: ReplicaSource,
    options: ReplicaPoolOptions = {},
  ) {
    this.intervalMs = options.intervalMs ?? 1000;
    this.log = options.log ?? (() => undefined);
    if (options.onChange) this.listeners.add(options.onChange);
  }

  /**
   * Calls `listener` after the healthy replicas changed (one turned SERVING or stopped, or joined or
   * left), so a scheduler over {@link healthy} gives a replica that came back work at once. Returns
   * the function that stops it.
   */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves and health-checks once, then keeps doing it in the background. */
  async start(): Promise<void> {
    await this.refresh();
    if (this.stopped) return;
    this.timer = setInterval(() => void this.refresh(), this.intervalMs);
    this.timer.unref();
  }

  /** Replicas that answered SERVING at the last check, in a stable order (the same array until a change). */
  healthy(): readonly C[] {
    return this.healthyList;
  }

  /** Every known replica, healthy or not (the same array until a change). */
  all(): readonly C[] {
    return this.allList;
  }

  /** One round of resolving and health checks (concurrent callers share it). */
  refresh(): Promise<void> {
    this.refreshing ??= this.doRefresh().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    for (const { client, health } of this.replicas.values()) {
      client.close();
      health.close();
    }
    this.replicas.clear();
    this.update();
  }

  /** Recomputes the lists; tells `onChange` when the healthy ones changed. */
  private update(): void {
    const byAddress = (a: C, b: C) => (a.id < b.id ? -1 : 1);
    this.allList = [...this.replicas.values()].map((r) => r.client).sort(byAddress);
    const healthy = [...this.replicas.values()].filter((r) => r.health.serving).map((r) => r.client).sort(byAddress);
    const changed = healthy.length !== this.healthyList.length || healthy.some((client, i) => client !== this.healthyList[i]);
    if (!changed) return;
    this.healthyList = healthy;
    for (const listener of [...this.listeners]) listener();
  }

  private async resolve(): Promise<string[]> {
    if ('addresses' in this.source) return [...this.source.addresses];
    const at = this.source.dns.lastIndexOf(':');
    const host = this.source.dns.slice(0, at);
    const port = this.source.dns.slice(at + 1);
    try {
      const records = await dns.promises.lookup(host, { all: true });
      return records.map((r) => (r.family === 6 ? `[${r.address}]:${port}` : `${r.address}:${port}`));
    } catch (error) {
      this.log(`cannot resolve ${this.source.dns}: ${error instanceof Error ? error.message : String(error)}`);
      return [...this.replicas.keys()];
    }
  }

  private async doRefresh(): Promise<void> {
    if (this.stopped) return;
    const addresses = new Set(await this.resolve());
    // Stopped while resolving: dial nothing (a watch made now would outlive the service, and log).
    if (this.stopped) return;
    const role = this.kind.role;
    for (const [address, entry] of this.replicas) {
      if (!addresses.has(address)) {
        entry.client.close();
        entry.health.close();
        this.replicas.delete(address);
        this.log(`${role} ${address} left`);
      }
    }
    for (const address of addresses) {
      if (!this.replicas.has(address)) {
        const health = new HealthWatch(address, {
          serviceName: this.kind.serviceName,
          onChange: (serving, status) => {
            // Back from an outage: dial afresh rather than wait out the channel's reconnect backoff.
            // Gone (killed, or answering nothing): fail its calls now so their blocks go elsewhere.
            const client = this.replicas.get(address)?.client;
            if (serving) client?.reconnect();
            else client?.failInFlight(unavailable(`${role} ${address} stopped answering its health checks (${status})`));
            this.log(`${role} ${address} is ${serving ? 'SERVING' : `not serving (${status})`}`);
            this.update();
          },
        });
        this.replicas.set(address, { client: this.kind.create(address, health), health });
      }
    }
    this.update();
    await Promise.all([...this.replicas.values()].map((entry) => entry.health.check()));
    if (!this.stopped) this.update();
  }
}
