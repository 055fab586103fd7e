import dns from 'node:dns';
import { credentials, type ChannelOptions } from '@grpc/grpc-js';
import { DrafterServiceClient, TargetServiceClient, VerifyRequest } from '@dsi/proto';
import type { DraftCall, DraftResult, Drafter, TargetReplica, VerifyCall, VerifyResult } from '@dsi/core';
import { samplingToWire } from '@dsi/wire';
import { callUnary, createChannelOptions, HealthWatch, unavailable } from '@dsi/rpc';

/**
 * Channel options of the orchestrator's clients: the default limits, and a reconnect backoff capped
 * at a second (gRPC's default grows to two minutes), so a replica or drafter that restarts is
 * dialled again soon even before its health watch recreates the channel.
 */
function replicaChannelOptions(): ChannelOptions {
  return { ...createChannelOptions(), 'grpc.initial_reconnect_backoff_ms': 250, 'grpc.max_reconnect_backoff_ms': 1000 };
}

/** Waits its turn for a resource held by one caller at a time; a waiter whose signal aborts leaves the line. */
class Mutex {
  private tail: Promise<void> = Promise.resolve();

  async acquire(signal: AbortSignal): Promise<() => void> {
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const previous = this.tail;
    this.tail = previous.then(() => mine);
    const aborted = new Promise<never>((_, reject) => {
      if (signal.aborted) reject(signal.reason);
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
    try {
      await Promise.race([previous, aborted]);
    } catch (error) {
      // Give up our place without blocking those behind us.
      void previous.then(release);
      throw error;
    }
    return release;
  }
}

/**
 * The drafter port over gRPC. Once {@link watchHealth} runs, drafting is skipped while the drafter is
 * not SERVING (each draft call fails at once with UNAVAILABLE, and the scheduler goes on without
 * drafts, as non-SI), and the channel is recreated the moment it is SERVING again, so drafts resume
 * within one health interval of its return instead of after gRPC's reconnect backoff.
 */
export class GrpcDrafter implements Drafter {
  private client: DrafterServiceClient;
  private health?: HealthWatch;

  constructor(readonly address: string) {
    this.client = new DrafterServiceClient(address, credentials.createInsecure(), replicaChannelOptions());
  }

  /**
   * Whether draft calls go out: true until a health watch has found the drafter not SERVING (a
   * drafter without a watch is always tried).
   */
  get serving(): boolean {
    return this.health === undefined || this.health.status === 'UNCHECKED' || this.health.serving;
  }

  /**
   * Health-checks the drafter now and then every `intervalMs`, logging each change; resolves after
   * the first check, whatever it found (a drafter that is down is waited for, not fatal).
   */
  async watchHealth(intervalMs = 500, log: (line: string) => void = () => undefined): Promise<void> {
    this.health ??= new HealthWatch(this.address, {
      serviceName: 'dsi.v1.DrafterService',
      intervalMs,
      onChange: (serving, status) => {
        if (serving) this.reconnect();
        log(serving ? `drafter ${this.address} is SERVING` : `drafter ${this.address} is not serving (${status}): generations go on without drafts`);
      },
    });
    await this.health.start();
    if (!this.health.serving) log(`drafter ${this.address} is not serving yet (${this.health.status}): generations go on without drafts until it is`);
  }

  async draft(call: DraftCall, signal: AbortSignal): Promise<DraftResult> {
    if (!this.serving) throw unavailable(`drafter ${this.address} is not serving (${this.health?.status}): drafting is skipped until it is back`);
    const response = await callUnary(
      this.client,
      'draft',
      { requestId: call.requestId, prefix: [...call.prefix], maxTokens: call.maxTokens, sampling: samplingToWire(call.sampling), returnProbs: call.returnProbs },
      { signal },
    );
    return { tokens: response.tokens, probs: call.returnProbs ? Float32Array.from(response.probs) : undefined };
  }

  /** Drops the request's KV cache on the drafter; failures are ignored (the cache times out). */
  release(requestId: string): void {
    if (this.serving) this.client.release({ requestId }, () => undefined);
  }

  /** Replaces the channel with a fresh one (no reconnect backoff left over from an outage). */
  reconnect(): void {
    const previous = this.client;
    this.client = new DrafterServiceClient(this.address, credentials.createInsecure(), replicaChannelOptions());
    previous.close();
  }

  close(): void {
    this.health?.close();
    this.client.close();
  }
}

/**
 * One target replica over gRPC. It holds at most one verification at a time, across every request
 * the orchestrator runs: a second caller queues (and leaves the queue if it is cancelled).
 */
export class GrpcTargetReplica implements TargetReplica {
  private client: TargetServiceClient;
  private readonly mutex = new Mutex();

  constructor(readonly id: string) {
    this.client = new TargetServiceClient(id, credentials.createInsecure(), replicaChannelOptions());
  }

  /** Replaces the channel with a fresh one (no reconnect backoff left over from an outage). */
  reconnect(): void {
    const previous = this.client;
    this.client = new TargetServiceClient(this.id, credentials.createInsecure(), replicaChannelOptions());
    previous.close();
  }

  async verify(call: VerifyCall, signal: AbortSignal): Promise<VerifyResult> {
    const release = await this.mutex.acquire(signal);
    try {
      const request: VerifyRequest = {
        requestId: call.requestId,
        prefix: [...call.prefix],
        drafts: [...call.drafts],
        sampling: samplingToWire(call.sampling),
        draftProbs: call.draftProbs ? Array.from(call.draftProbs) : [],
      };
      const response = await callUnary(this.client, 'verify', request, { signal });
      return { accepted: response.accepted, tokens: response.tokens };
    } finally {
      release();
    }
  }

  release(requestId: string): void {
    this.client.release({ requestId }, () => undefined);
  }

  close(): void {
    this.client.close();
  }
}

/** Where the target replicas are: a fixed list, or a DNS name (a headless Kubernetes Service). */
export type ReplicaSource = { addresses: readonly string[] } | { dns: string /* name:port */ };

/**
 * The target replicas the orchestrator may use: resolved from a list or from DNS (re-resolved
 * periodically, so scaling the StatefulSet is picked up) and health-checked; only SERVING replicas
 * are handed to a generation.
 */
export class ReplicaPool {
  private readonly replicas = new Map<string, { replica: GrpcTargetReplica; health: HealthWatch }>();
  private timer?: NodeJS.Timeout;
  private refreshing?: Promise<void>;

  constructor(
    private readonly source: ReplicaSource,
    private readonly intervalMs = 1000,
    private readonly log: (line: string) => void = () => undefined,
  ) {}

  /** Resolves and health-checks once, then keeps doing it in the background. */
  async start(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.intervalMs);
    this.timer.unref();
  }

  /** Replicas that answered SERVING at the last check, in a stable order. */
  healthy(): GrpcTargetReplica[] {
    return [...this.replicas.values()].filter((r) => r.health.serving).map((r) => r.replica).sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  /** Every known replica, healthy or not. */
  all(): GrpcTargetReplica[] {
    return [...this.replicas.values()].map((r) => r.replica);
  }

  /** One round of resolving and health checks (concurrent callers share it). */
  refresh(): Promise<void> {
    this.refreshing ??= this.doRefresh().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  stop(): void {
    clearInterval(this.timer);
    for (const { replica, health } of this.replicas.values()) {
      replica.close();
      health.close();
    }
    this.replicas.clear();
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
    const addresses = new Set(await this.resolve());
    for (const [address, entry] of this.replicas) {
      if (!addresses.has(address)) {
        entry.replica.close();
        entry.health.close();
        this.replicas.delete(address);
        this.log(`target ${address} left`);
      }
    }
    for (const address of addresses) {
      if (!this.replicas.has(address)) {
        const replica = new GrpcTargetReplica(address);
        const health = new HealthWatch(address, {
          serviceName: 'dsi.v1.TargetService',
          onChange: (serving, status) => {
            // Back from an outage: dial afresh rather than wait out the channel's reconnect backoff.
            if (serving) replica.reconnect();
            this.log(`target ${address} is ${serving ? 'SERVING' : `not serving (${status})`}`);
          },
        });
        this.replicas.set(address, { replica, health });
      }
    }
    await Promise.all([...this.replicas.values()].map((entry) => entry.health.check()));
  }
}
