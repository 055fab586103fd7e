import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { outgoingTraceHeaders } from '@dsi/telemetry';
import { clientCredentials, explainConnectionFailure } from './tls';
import { deadlineExceeded, DsiError, notFound, statusCodeName, unavailable, withoutStack } from './errors';
import { DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES } from './limits';
import { healthCheckMethod } from './protos';

/** Message-size limits of a client channel, from the client's side. */
export interface ChannelLimits {
  /** Largest request sent. Default 4 MiB, what a DSI server accepts by default. */
  maxSendMessageBytes?: number;
  /** Largest response accepted. Default 16 MiB, what a DSI server may send by default. */
  maxReceiveMessageBytes?: number;
}

/**
 * Channel options for a client of a DSI server, with message limits that match the server's
 * defaults so an oversized message fails with RESOURCE_EXHAUSTED on the side that made it.
 */
export function createChannelOptions(limits: ChannelLimits = {}): grpc.ChannelOptions {
  return {
    'grpc.max_send_message_length': limits.maxSendMessageBytes ?? DEFAULT_MAX_REQUEST_BYTES,
    'grpc.max_receive_message_length': limits.maxReceiveMessageBytes ?? DEFAULT_MAX_RESPONSE_BYTES,
  };
}

/** Per-call options of the client helpers. */
export interface CallOptions {
  /** Cancels the call when aborted; the promise rejects with `DsiError.from(signal.reason)`. */
  signal?: AbortSignal;
  /** Deadline relative to now; past it the call fails with DEADLINE_EXCEEDED. */
  deadlineMs?: number;
  /** Request metadata (headers). */
  metadata?: grpc.Metadata;
}

/** The callback overload of a unary method on a generated grpc-js client. */
type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (error: grpc.ServiceError | null, response: Res) => void,
) => grpc.ClientUnaryCall;

/** Request type of a generated unary client method. */
export type UnaryRequest<Method> = Method extends UnaryMethod<infer Req, infer _Res> ? Req : never;

/** Response type of a generated unary client method (`never` for streaming methods). */
export type UnaryResponse<Method> =
  Method extends UnaryMethod<infer _Req, infer Res> ? (unknown extends Res ? never : Res) : never;

/** Names of the unary methods of a generated client, e.g. `'simulate'` on `SimulatorServiceClient`. */
export type UnaryMethodName<Client> = {
  [Name in keyof Client & string]: [UnaryResponse<Client[Name]>] extends [never] ? never : Name;
}[keyof Client & string];

/**
 * Calls a unary method of a generated client as a promise, the way DSI code calls services: the
 * call is cancelled when `signal` aborts, and every failure rejects with a {@link DsiError}
 * (the server's status and details, or CANCELLED / DEADLINE_EXCEEDED from the signal). A
 * connection that failed for a TLS reason is UNAVAILABLE naming it (see `explainConnectionFailure`).
 */
export function callUnary<Client extends grpc.Client, Method extends UnaryMethodName<Client>>(
  client: Client,
  method: Method,
  request: UnaryRequest<Client[Method]>,
  options: CallOptions = {},
): Promise<UnaryResponse<Client[Method]>> {
  const invoke = client[method] as UnaryMethod<UnaryRequest<Client[Method]>, UnaryResponse<Client[Method]>>;
  return startUnary<UnaryResponse<Client[Method]>>((metadata, callOptions, callback) => invoke.call(client, request, metadata, callOptions, callback), options).catch(
    async (reason: unknown): Promise<never> => {
      throw await explainConnectionFailure(channelAddress(client), reason);
    },
  );
}

/** `host:port` a client's channel dials, from its target URI (`dns:127.0.0.1:50051`). */
export function channelAddress(client: grpc.Client): string {
  return client
    .getChannel()
    .getTarget()
    .replace(/^[a-z][a-z0-9+.-]*:(\/\/[^/]*\/)?/i, '');
}

/** Serving status as reported by `grpc.health.v1.Health/Check`. */
export type HealthStatus = 'UNKNOWN' | 'SERVING' | 'NOT_SERVING' | 'SERVICE_UNKNOWN';

/**
 * Health checks of one server over one channel, for callers that ask repeatedly (a replica pool's
 * watch): no new connection per check. Close it when the server is no longer of interest.
 */
export class HealthProbe {
  private readonly client: grpc.Client;

  constructor(readonly address: string) {
    this.client = new grpc.Client(address, clientCredentials(), createChannelOptions());
  }

  /** The server's health for `serviceName` (`''`: the whole server); rejects like {@link checkHealth}. */
  check(serviceName = '', options: CallOptions = {}): Promise<HealthStatus> {
    return checkWith(this.client, this.address, serviceName, { deadlineMs: 5_000, ...options });
  }

  close(): void {
    this.client.close();
  }
}

/** Options of {@link HealthWatch}. */
export interface HealthWatchOptions {
  /** The service whose health counts (`''`: the whole server). Default `''`. */
  serviceName?: string;
  /** Pause between checks once {@link HealthWatch.start}ed. Default 1000 ms. */
  intervalMs?: number;
  /** How long one check may take before it counts as a failure. Default 1000 ms. */
  checkTimeoutMs?: number;
  /**
   * Told when the server turns SERVING or stops being so (not on the first check when that finds it
   * not serving), with the health answer or the failed check's status code, e.g. `UNAVAILABLE`. A
   * client should recreate its channel when told SERVING after an outage: its own reconnect backoff
   * may otherwise keep it away for up to two minutes.
   */
  onChange?: (serving: boolean, status: string) => void;
}

/**
 * Watches one server's health for a long-lived client (the orchestrator's drafter and target
 * replicas): one {@link HealthProbe} checked every `intervalMs`, a change reported through
 * `onChange`. A check that fails (the server is gone) replaces the probe's channel, so the next
 * check connects afresh instead of waiting out gRPC's reconnect backoff: a server that comes back
 * is seen within one interval.
 */
export class HealthWatch {
  private probe: HealthProbe;
  private lastStatus = 'UNCHECKED';
  private timer?: NodeJS.Timeout;
  private checking?: Promise<boolean>;
  private closed = false;

  constructor(
    readonly address: string,
    private readonly options: HealthWatchOptions = {},
  ) {
    this.probe = new HealthProbe(address);
  }

  /** Whether the last check answered SERVING (false before the first check). */
  get serving(): boolean {
    return this.lastStatus === 'SERVING';
  }

  /** The last check's answer (`SERVING`, `NOT_SERVING`...) or failure code (`UNAVAILABLE`...); `UNCHECKED` before any. */
  get status(): string {
    return this.lastStatus;
  }

  /** Checks once now (concurrent callers share the check); resolves with whether it is SERVING. */
  check(): Promise<boolean> {
    this.checking ??= this.checkOnce().finally(() => (this.checking = undefined));
    return this.checking;
  }

  /** Checks once, then every `intervalMs` in the background (the timer does not keep the process alive). */
  async start(): Promise<void> {
    await this.check();
    if (this.closed || this.timer) return;
    this.timer = setInterval(() => void this.check(), this.options.intervalMs ?? 1000);
    this.timer.unref();
  }

  /** Stops checking and closes the probe's channel. */
  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.probe.close();
  }

  private async checkOnce(): Promise<boolean> {
    const { serviceName = '', checkTimeoutMs = 1000, onChange } = this.options;
    let status: string;
    try {
      status = await this.probe.check(serviceName, { deadlineMs: checkTimeoutMs });
    } catch (reason) {
      status = statusCodeName(DsiError.from(reason).code).toUpperCase();
      if (!this.closed) {
        this.probe.close();
        this.probe = new HealthProbe(this.address);
      }
    }
    if (this.closed) return false;
    const was = this.lastStatus;
    this.lastStatus = status;
    const serving = status === 'SERVING';
    if (serving !== (was === 'SERVING') && (was !== 'UNCHECKED' || serving)) onChange?.(serving, status);
    return serving;
  }
}

/**
 * Asks a server once for the health of one service (`''`: the whole server). Rejects with a
 * NOT_FOUND {@link DsiError} for a service the server does not know, and with the call's error
 * (e.g. UNAVAILABLE) when the server cannot be reached.
 */
export async function checkHealth(address: string, serviceName = '', options: CallOptions = {}): Promise<HealthStatus> {
  const probe = new HealthProbe(address);
  try {
    return await probe.check(serviceName, options);
  } finally {
    probe.close();
  }
}

/** Options of {@link waitForServing}. */
export interface WaitForServingOptions {
  /** Give up after this long. Default 10 000 ms. */
  timeoutMs?: number;
  /** Stop waiting when aborted; the promise rejects with `DsiError.from(signal.reason)`. */
  signal?: AbortSignal;
  /** Pause between health checks. Default 100 ms. */
  pollIntervalMs?: number;
}

/**
 * Resolves once the server at `address` reports `serviceName` (`''`: the whole server) SERVING, so
 * a launcher or test can start calling it. Rejects with UNAVAILABLE if the server was never
 * reachable within the timeout, DEADLINE_EXCEEDED if it answered but never SERVING, and NOT_FOUND
 * at once if it does not know the service; each message names the address.
 */
export async function waitForServing(
  address: string,
  serviceName = '',
  options: WaitForServingOptions = {},
): Promise<void> {
  const { timeoutMs = 10_000, signal, pollIntervalMs = 100 } = options;
  const what = serviceName === '' ? 'the server' : `service '${serviceName}'`;
  const giveUpAt = Date.now() + timeoutMs;
  const client = new grpc.Client(address, clientCredentials(), {
    ...createChannelOptions(),
    // Reconnect quickly: the server is expected to come up during the wait.
    'grpc.initial_reconnect_backoff_ms': Math.min(pollIntervalMs, 1_000),
    'grpc.max_reconnect_backoff_ms': 1_000,
  });
  let lastAnswer: string | undefined;
  let lastFailure = 'no answer';
  try {
    for (;;) {
      if (signal?.aborted) throw DsiError.from(signal.reason);
      const remaining = giveUpAt - Date.now();
      if (remaining <= 0) break;
      try {
        const status = await checkWith(client, address, serviceName, { signal, deadlineMs: Math.min(remaining, 2_000) });
        if (status === 'SERVING') return;
        lastAnswer = status;
      } catch (reason) {
        const error = DsiError.from(reason);
        if (signal?.aborted || error.code === grpc.status.NOT_FOUND) throw error;
        lastFailure = error.message;
      }
      const pause = Math.min(pollIntervalMs, giveUpAt - Date.now());
      if (pause > 0) await sleep(pause, undefined, { signal }).catch(() => undefined);
    }
  } finally {
    client.close();
  }
  if (lastAnswer !== undefined) {
    throw deadlineExceeded(`${address} did not report ${what} SERVING within ${timeoutMs} ms (last answer: ${lastAnswer})`);
  }
  throw unavailable(`${address} was not reachable within ${timeoutMs} ms (${lastFailure})`);
}

async function checkWith(
  client: grpc.Client,
  address: string,
  serviceName: string,
  options: CallOptions,
): Promise<HealthStatus> {
  try {
    const reply = await startUnary<{ status: string }>(
      (metadata, callOptions, callback) =>
        client.makeUnaryRequest(
          healthCheckMethod.path,
          healthCheckMethod.serialize,
          healthCheckMethod.deserialize,
          { service: serviceName },
          metadata,
          callOptions,
          callback,
        ),
      options,
    );
    return isHealthStatus(reply.status) ? reply.status : 'UNKNOWN';
  } catch (reason) {
    const error = await explainConnectionFailure(address, reason);
    if (error.code === grpc.status.NOT_FOUND) {
      throw notFound(`${address} has no health status for service '${serviceName}'`, { cause: error });
    }
    throw error;
  }
}

/** Runs one unary call with cancellation by signal and DsiError rejections. */
function startUnary<Res>(
  start: (
    metadata: grpc.Metadata,
    options: Partial<grpc.CallOptions>,
    callback: (error: grpc.ServiceError | null, response?: Res) => void,
  ) => grpc.ClientUnaryCall,
  { signal, deadlineMs, metadata = new grpc.Metadata() }: CallOptions,
): Promise<Res> {
  if (signal?.aborted) return Promise.reject(DsiError.from(signal.reason));
  const traceHeaders = outgoingTraceHeaders();
  if (traceHeaders) {
    metadata = metadata.clone();
    for (const [name, value] of Object.entries(traceHeaders)) metadata.set(name, value);
  }
  return new Promise<Res>((resolve, reject) => {
    const callOptions: Partial<grpc.CallOptions> = deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs };
    // grpc-js captures the caller's stack with `new Error()` on every unary call, to append it to a
    // failed call's error; DsiError keeps the status and details only, and the capture (deep async
    // stacks in the orchestrator) was the largest single item of its CPU profile under load.
    const call = withoutStack(() =>
      start(metadata, callOptions, (error, response) => {
        signal?.removeEventListener('abort', onAbort);
        if (signal?.aborted) reject(DsiError.from(signal.reason));
        else if (error !== null) reject(DsiError.from(error));
        else resolve(response as Res);
      }),
    );
    function onAbort(): void {
      call.cancel();
    }
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function isHealthStatus(status: string): status is HealthStatus {
  return status === 'UNKNOWN' || status === 'SERVING' || status === 'NOT_SERVING' || status === 'SERVICE_UNKNOWN';
}
