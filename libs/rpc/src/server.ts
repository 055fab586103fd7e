import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, type ServingStatus } from 'grpc-health-check';
import { incomingTraceContext, type TraceContext, tracePassesByHand } from '@dsi/telemetry';
import { cancelled, deadlineExceeded, type DsiError, statusCodeName, toServiceError, unavailable, withoutStack } from './errors';
import {
  DEFAULT_DRAIN_GRACE_MS,
  DEFAULT_MAX_CONCURRENT_STREAMS,
  DEFAULT_MAX_REQUEST_BYTES,
  DEFAULT_MAX_RESPONSE_BYTES,
} from './limits';
import { BearerTokens, unauthenticatedMessage } from './auth';
import { HEALTH_SERVICE_NAME, isServiceEntry, REFLECTION_SERVICE_NAMES, reflectedPackageDefinition } from './protos';
import { createServerCredentials, serverCredentials, tlsSettings } from './tls';
import type { TlsSettings } from './tls-files';

/**
 * Lifecycle of a {@link DsiServer}; health reporting follows it. Only SERVING answers SERVING:
 * STARTING covers bind and warm-up (model loading), DRAINING the shutdown grace period.
 */
export type ServerState = 'STARTING' | 'SERVING' | 'DRAINING' | 'STOPPED' | 'FAILED';

/**
 * One gRPC service a {@link DsiServer} hosts. Type `implementation` with the generated
 * `XServiceServer` interface from `@dsi/proto` and build its handlers with {@link unary} and
 * {@link serverStream}.
 */
export interface ServiceRegistration {
  /** Fully qualified service name, e.g. `dsi.v1.SimulatorService`: the health and reflection name. */
  name: string;
  /** The generated service definition, e.g. `SimulatorServiceService`. */
  definition: grpc.ServiceDefinition;
  /** Handlers keyed like `definition`. */
  implementation: grpc.UntypedServiceImplementation;
}

/** Where a {@link DsiServer} listens and the limits it enforces; parsed from flags and `DSI_*` at the edge. */
export interface ServerOptions {
  /** Interface to bind. Default `127.0.0.1`; use `0.0.0.0` in containers. */
  host?: string;
  /** Port to bind; 0 picks a free one (read it from {@link DsiServer.port}). Default 0. */
  port?: number;
  /** Largest accepted request; larger ones fail with RESOURCE_EXHAUSTED. Default 4 MiB. */
  maxReceiveMessageBytes?: number;
  /** Largest response sent; larger ones fail with RESOURCE_EXHAUSTED. Default 16 MiB. */
  maxSendMessageBytes?: number;
  /** Concurrent calls allowed per client connection. Default 100. */
  maxConcurrentStreams?: number;
  /** How long shutdown waits for in-flight calls before cancelling them. Default 10 000 ms. */
  drainGraceMs?: number;
  /** Receives one line per lifecycle event and per internal handler error. Default: silent. */
  log?: (line: string) => void;
  /**
   * TLS of this server alone (a certificate, mutual TLS with `clientAuth: 'require'`). Default: the
   * process's, see `configureTls` (plaintext unless configured).
   */
  tls?: TlsSettings;
  /**
   * Callers must send `authorization: Bearer <token>` with a token of this file (one per line, `#`
   * comments; re-read when it changes), or get UNAUTHENTICATED. Health stays open (probes).
   */
  authTokenFile?: string;
  /** How often `authTokenFile` is checked for a change. Default 1000 ms. */
  authReloadIntervalMs?: number;
  /** Serve server reflection (v1 and v1alpha). Default true; turn it off where the API is public. */
  reflection?: boolean;
  /**
   * Also answer `grpc.health.v1.Health` alone, in plaintext, on this port of `host` (0: a free one):
   * for probes that cannot speak TLS or present a client certificate (the kubelet's gRPC probes).
   * Default: none.
   */
  healthPort?: number;
}

/**
 * What a handler knows about its call besides the request. `signal` aborts when the client
 * cancels, when the deadline passes, and when a shutdown's grace period runs out; its `reason` is
 * a {@link DsiError} (CANCELLED or DEADLINE_EXCEEDED). It stays unaborted when the call ends
 * normally. Pass it to every downstream call.
 */
export interface CallContext {
  readonly signal: AbortSignal;
  /** Request metadata (headers), e.g. trace context. */
  readonly metadata: grpc.Metadata;
  /** The client's address, for logs. */
  readonly peer: string;
  /** When the client gives up, if it set a deadline. */
  readonly deadline?: Date;
  /**
   * The trace context the call came with: the caller's, passed on by whatever the handler calls
   * under it (`context.with(traceContext, ...)` around the outgoing call), also after an `await`.
   */
  readonly traceContext: TraceContext;
}

/** The {@link CallContext} of a server-streaming handler, with the way to stream responses. */
export interface ServerStreamContext<Res> extends CallContext {
  /**
   * Queues one response. Resolves at once while the stream has room and otherwise when the client
   * has read enough ('drain'), so a slow reader slows the producer instead of growing a buffer.
   * Rejects with the abort reason once the call is cancelled.
   */
  send(message: Res): Promise<void>;
}

/**
 * Adapts a plain async function into a grpc-js unary handler: its result is the response, a thrown
 * {@link DsiError} becomes that status (anything else INTERNAL, see {@link toServiceError}), and
 * client cancellation or the deadline aborts `context.signal`.
 */
export function unary<Req, Res>(
  handler: (request: Req, context: CallContext) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const scope = openCallScope(call);
    run(() => handler(call.request, scope.context)).then(
      (response) => {
        scope.close();
        callback(null, response);
      },
      (reason: unknown) => {
        scope.close();
        callback(toServiceError(reason));
      },
    );
  };
}

/**
 * Adapts a plain async function into a grpc-js server-streaming handler: it streams with
 * `context.send` (which respects backpressure) and the stream ends OK when it resolves; a throw
 * ends the stream with that status as in {@link unary}.
 */
export function serverStream<Req, Res>(
  handler: (request: Req, context: ServerStreamContext<Res>) => Promise<void>,
): grpc.handleServerStreamingCall<Req, Res> {
  return (call) => {
    const scope = openCallScope(call);
    const { signal } = scope.context;
    const send = (message: Res): Promise<void> => {
      if (signal.aborted) return Promise.reject(signal.reason);
      if (call.write(message)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const onDrain = (): void => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = (): void => {
          call.off('drain', onDrain);
          reject(signal.reason);
        };
        call.once('drain', onDrain);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    };
    run(() => handler(call.request, { ...scope.context, send })).then(
      () => {
        scope.close();
        if (!signal.aborted) call.end();
      },
      (reason: unknown) => {
        scope.close();
        // A cancelled call has no one to tell; grpc-js has already closed it.
        if (!call.cancelled && !call.destroyed) call.emit('error', toServiceError(reason));
      },
    );
  };
}

/**
 * A gRPC server with what every DSI service needs: health (NOT_SERVING until
 * {@link DsiServer.markServing}, and again while draining), server reflection v1 and v1alpha,
 * message-size and stream limits, in-flight call tracking and a graceful shutdown that cancels
 * what is left after the grace period.
 */
export class DsiServer {
  private readonly grpcServer: grpc.Server;
  private readonly health: HealthImplementation;
  private readonly serviceNames: readonly string[];
  private readonly host: string;
  private readonly requestedPort: number;
  private readonly drainGraceMs: number;
  private readonly log: (line: string) => void;
  private readonly tls: TlsSettings | undefined;
  private readonly tokens: BearerTokens | undefined;
  private readonly healthPort: number | undefined;
  private healthServer: grpc.Server | undefined;
  private boundHealthPort: number | undefined;
  private readonly inFlight = new Set<InFlightCall>();
  private currentState: ServerState = 'STARTING';
  private boundPort: number | undefined;
  private starting: Promise<number> | undefined;
  private stopping: Promise<void> | undefined;
  private endGracePeriod: (() => void) | undefined;
  private notifyIdle: (() => void) | undefined;
  private markStopped!: () => void;

  /**
   * Resolves once a shutdown has finished, whoever began it ({@link shutdown} or a signal installed
   * by {@link handleSignals}): what a process waits on before it cleans up and exits.
   */
  readonly stopped: Promise<void> = new Promise<void>((resolve) => (this.markStopped = resolve));

  /**
   * Registers the services, health and reflection; nothing listens until {@link start}. Throws if a
   * service name is duplicated, does not match its definition's paths, or is missing from the
   * `@dsi/proto` descriptor set (reflection could not describe it).
   */
  constructor(services: readonly ServiceRegistration[], options: ServerOptions = {}) {
    this.host = options.host ?? '127.0.0.1';
    this.requestedPort = options.port ?? 0;
    this.drainGraceMs = options.drainGraceMs ?? DEFAULT_DRAIN_GRACE_MS;
    this.log = options.log ?? (() => undefined);
    const maxReceive = options.maxReceiveMessageBytes ?? DEFAULT_MAX_REQUEST_BYTES;
    const maxSend = options.maxSendMessageBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    const maxStreams = options.maxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS;
    requireInteger('port', this.requestedPort, 0, 65_535);
    requireInteger('maxReceiveMessageBytes', maxReceive, 1);
    requireInteger('maxSendMessageBytes', maxSend, 1);
    requireInteger('maxConcurrentStreams', maxStreams, 1);
    requireInteger('drainGraceMs', this.drainGraceMs, 0);
    this.healthPort = options.healthPort;
    if (this.healthPort !== undefined) requireInteger('healthPort', this.healthPort, 0, 65_535);

    const descriptors = reflectedPackageDefinition();
    const names = new Set<string>();
    for (const { name, definition } of services) {
      if (names.has(name)) throw new Error(`service ${name} is registered twice`);
      names.add(name);
      for (const method of Object.values(definition)) {
        if (!method.path.startsWith(`/${name}/`)) {
          throw new Error(`service ${name} has method ${method.path}, which belongs to another service`);
        }
      }
      if (!isServiceEntry(descriptors[name])) {
        throw new Error(`service ${name} is not in the @dsi/proto descriptor set, so reflection cannot describe it (npm run generate)`);
      }
    }
    this.serviceNames = [...names];
    this.tls = options.tls;
    // Read now, so a missing or empty token file fails the construction, before anything listens.
    this.tokens = options.authTokenFile === undefined ? undefined : new BearerTokens(options.authTokenFile, { reloadIntervalMs: options.authReloadIntervalMs, log: this.log });

    this.grpcServer = new grpc.Server({
      'grpc.max_receive_message_length': maxReceive,
      'grpc.max_send_message_length': maxSend,
      'grpc.max_concurrent_streams': maxStreams,
      interceptors: this.tokens ? [bearerTokenInterceptor(this.tokens)] : [],
    });
    for (const service of services) {
      this.grpcServer.addService(service.definition, this.tracked(service));
    }
    this.health = new HealthImplementation(
      Object.fromEntries(['', ...this.serviceNames].map((name): [string, ServingStatus] => [name, 'NOT_SERVING'])),
    );
    this.health.addToServer(this.grpcServer);
    if (options.reflection ?? true) {
      new ReflectionService(descriptors, {
        services: [...this.serviceNames, HEALTH_SERVICE_NAME, ...REFLECTION_SERVICE_NAMES],
      }).addToServer(this.grpcServer);
    }
  }

  /** Where the lifecycle is; health answers follow it. */
  get state(): ServerState {
    return this.currentState;
  }

  /** The bound port (the real one when options.port was 0). Throws before {@link start} resolves. */
  get port(): number {
    if (this.boundPort === undefined) throw new Error('the server has no port before start() resolves');
    return this.boundPort;
  }

  /** `host:port` to dial, e.g. `127.0.0.1:50051`. Throws before {@link start} resolves. */
  get address(): string {
    return `${formatHost(this.host)}:${this.port}`;
  }

  /** The plaintext health-only port (see {@link ServerOptions.healthPort}), once bound; undefined without one. */
  get healthAddress(): string | undefined {
    return this.boundHealthPort === undefined ? undefined : `${formatHost(this.host)}:${this.boundHealthPort}`;
  }

  /** Calls being handled right now (health and reflection calls excluded). */
  get inFlightCalls(): number {
    return this.inFlight.size;
  }

  /**
   * Binds and starts accepting calls, still NOT_SERVING; resolves with the bound port. Rejects with
   * an UNAVAILABLE {@link DsiError} naming host:port when binding fails (state FAILED). Calling it
   * again returns the same promise.
   */
  start(): Promise<number> {
    this.starting ??= this.bind();
    return this.starting;
  }

  /**
   * Declares the server ready (model loaded and warmed): state SERVING, health SERVING for `''` and
   * every service. Ignored once shutdown has begun, so a late warm-up cannot undo a drain.
   */
  markServing(): void {
    if (this.currentState !== 'STARTING') {
      if (this.currentState !== 'SERVING') this.log(`markServing ignored in state ${this.currentState}`);
      return;
    }
    if (this.boundPort === undefined) throw new Error('markServing() called before start() resolved');
    this.setHealth('SERVING');
    this.setState('SERVING');
  }

  /**
   * Stops gracefully: health NOT_SERVING, state DRAINING, a new call is answered UNAVAILABLE ("the
   * server is draining") while in-flight calls get the grace period to finish; then the listener
   * closes, what is left is cancelled (their signals abort) and the state is STOPPED.
   * Resolves once every in-flight call has finished or been cancelled. Idempotent: later calls
   * return the first call's promise.
   */
  shutdown(): Promise<void> {
    this.tokens?.stop();
    this.stopping ??= this.drainAndStop().finally(() => this.markStopped());
    return this.stopping;
  }

  /**
   * Makes the given signals shut the server down (the first one drains; a second one cancels
   * in-flight calls at once) and returns a function that removes the handlers. While installed,
   * the signals no longer end the process by themselves: it exits when the event loop empties.
   */
  handleSignals(signals: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT']): () => void {
    let received = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      received += 1;
      if (received === 1) {
        this.log(`${signal} received: draining for up to ${this.drainGraceMs} ms`);
        this.shutdown().catch((error: unknown) => this.log(`shutdown failed: ${describe(error)}`));
      } else {
        this.log(`${signal} received again: cancelling in-flight calls now`);
        this.endGracePeriod?.();
      }
    };
    for (const signal of signals) process.on(signal, onSignal);
    return () => {
      for (const signal of signals) process.off(signal, onSignal);
    };
  }

  private async bind(): Promise<number> {
    if (this.stopping !== undefined) throw new Error('start() called after shutdown()');
    const target = `${formatHost(this.host)}:${this.requestedPort}`;
    let credentials: grpc.ServerCredentials;
    try {
      credentials = this.tls ? createServerCredentials(this.tls, this.log) : serverCredentials();
    } catch (error) {
      this.setState('FAILED');
      throw error;
    }
    const port = await new Promise<number>((resolve, reject) => {
      this.grpcServer.bindAsync(target, credentials, (error, bound) => {
        if (error !== null) {
          this.setState('FAILED');
          reject(unavailable(`cannot bind the gRPC server to ${target}: ${error.message}`, { cause: error }));
          return;
        }
        this.boundPort = bound;
        resolve(bound);
      });
    });
    if (this.healthPort !== undefined) {
      try {
        await this.bindHealth(this.healthPort);
      } catch (error) {
        this.setState('FAILED');
        this.grpcServer.forceShutdown();
        throw unavailable(`cannot bind the health port ${formatHost(this.host)}:${this.healthPort}: ${(error as Error).message}`, { cause: error });
      }
    }
    this.tokens?.watch();
    const security = credentials._isSecure() ? `TLS${(this.tls ?? tlsSettings())?.clientAuth === 'require' ? ', client certificates required' : ''}` : 'plaintext';
    const extras = [security, ...(this.tokens ? [`bearer tokens from ${this.tokens.file}`] : []), ...(this.healthAddress ? [`plaintext health on ${this.healthAddress}`] : [])];
    this.log(`listening on ${this.address} (${extras.join(', ')}; NOT_SERVING until ready)`);
    return port;
  }

  /** Binds the plaintext health-only server (the same health answers as the main one). */
  private bindHealth(port: number): Promise<void> {
    const server = new grpc.Server();
    this.health.addToServer(server);
    this.healthServer = server;
    return new Promise<void>((resolve, reject) => {
      server.bindAsync(`${formatHost(this.host)}:${port}`, grpc.ServerCredentials.createInsecure(), (error, bound) => {
        if (error !== null) {
          reject(error);
          return;
        }
        this.boundHealthPort = bound;
        resolve();
      });
    });
  }

  private async drainAndStop(): Promise<void> {
    // Settle a bind in progress first; when already bound, DRAINING is set before shutdown() returns.
    if (this.boundPort === undefined) await this.starting?.catch(() => undefined);
    if (this.currentState === 'FAILED' || this.boundPort === undefined) {
      this.healthServer?.forceShutdown();
      this.grpcServer.forceShutdown();
      if (this.currentState !== 'FAILED') this.setState('STOPPED');
      return;
    }
    this.setHealth('NOT_SERVING');
    this.setState('DRAINING');
    // The listener stays open while calls drain, so a new call is answered UNAVAILABLE "draining"
    // (see tracked) instead of finding a closed port; once the calls are done the server closes.
    const drained = await new Promise<boolean>((resolve) => {
      let graceOver = false;
      const endGrace = (): void => {
        graceOver = true;
        clearTimeout(timer);
        resolve(false);
      };
      const timer = setTimeout(endGrace, this.drainGraceMs);
      this.endGracePeriod = endGrace;
      void this.idle().then(() => {
        if (graceOver) return;
        this.grpcServer.tryShutdown(() => {
          clearTimeout(timer);
          resolve(true);
        });
      });
    });
    this.endGracePeriod = undefined;
    this.notifyIdle = undefined;
    if (!drained) {
      const left = [...this.inFlight];
      this.log(`cancelling ${left.length} in-flight call(s) after the drain grace period: ${left.map((c) => c.path).join(', ')}`);
      this.grpcServer.forceShutdown();
      // forceShutdown closes every stream; grpc-js then emits 'cancelled' on each call, which
      // aborts the handlers' signals. Wait for that so callers see the signals fired.
      await Promise.all(left.map((c) => c.finished));
    }
    this.healthServer?.forceShutdown();
    this.setState('STOPPED');
  }

  /** Resolves once no tracked call is in flight (at once when none is). */
  private idle(): Promise<void> {
    if (this.inFlight.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => (this.notifyIdle = resolve));
  }

  /** The answer to a call that arrives once shutdown has begun: retry elsewhere or later. */
  private refusal(path: string): DsiError {
    return unavailable(`the server is draining (shutting down) and takes no new calls; ${path} was not started, retry on another replica or later`);
  }

  /**
   * Wraps each handler so the server knows which calls are in flight, refuses new calls with
   * UNAVAILABLE while draining, and logs internal errors.
   */
  private tracked({ definition, implementation }: ServiceRegistration): grpc.UntypedServiceImplementation {
    const wrapped: grpc.UntypedServiceImplementation = {};
    for (const [key, method] of Object.entries(definition)) {
      const handler = implementation[key] ?? (method.originalName === undefined ? undefined : implementation[method.originalName]);
      if (handler === undefined) continue; // grpc-js answers UNIMPLEMENTED
      if (method.responseStream) {
        const streaming = (handler as StreamingHandler).bind(implementation);
        wrapped[key] = ((call: grpc.ServerWritableStream<unknown, unknown>) => {
          if (this.stopping !== undefined) {
            call.emit('error', toServiceError(this.refusal(method.path)));
            return;
          }
          const finish = this.track(method.path, call);
          call.once('close', finish);
          call.on('error', (error: unknown) => this.logIfInternal(method.path, error));
          streaming(call);
        }) satisfies StreamingHandler;
      } else {
        const withCallback = (handler as CallbackHandler).bind(implementation);
        wrapped[key] = ((call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          if (this.stopping !== undefined) {
            callback(toServiceError(this.refusal(method.path)));
            return;
          }
          const finish = this.track(method.path, call);
          withCallback(call, (error, value, trailer, flags) => {
            finish();
            if (error) this.logIfInternal(method.path, error);
            callback(error, value, trailer, flags);
          });
        }) satisfies CallbackHandler;
      }
    }
    return wrapped;
  }

  private track(path: string, call: SurfaceCall): () => void {
    let finish!: () => void;
    const record: InFlightCall = {
      path,
      finished: new Promise<void>((resolve) => {
        finish = () => {
          this.inFlight.delete(record);
          if (this.inFlight.size === 0) this.notifyIdle?.();
          resolve();
        };
      }),
    };
    this.inFlight.add(record);
    call.once('cancelled', finish);
    return finish;
  }

  private logIfInternal(path: string, error: unknown): void {
    const { code, cause } = error as { code?: unknown; cause?: unknown };
    if (code !== grpc.status.INTERNAL && code !== grpc.status.UNKNOWN) return;
    this.log(`${path} failed with ${statusCodeName(code)}: ${describe(cause ?? error)}`);
  }

  private setState(next: ServerState): void {
    if (next === this.currentState) return;
    this.currentState = next;
    this.log(`state ${next}`);
  }

  private setHealth(status: ServingStatus): void {
    for (const name of ['', ...this.serviceNames]) this.health.setStatus(name, status);
  }
}

/** Methods callers reach without a token: health, which probes (kubelet, load balancers) call bare. */
function openWithoutToken(path: string): boolean {
  return path.startsWith(`/${HEALTH_SERVICE_NAME}/`);
}

/**
 * A server interceptor that answers UNAUTHENTICATED, before any handler runs, a call whose
 * `authorization` metadata is not `Bearer <token>` with a token of `tokens` (health excepted).
 */
function bearerTokenInterceptor(tokens: BearerTokens): grpc.ServerInterceptor {
  return (method, call) => {
    if (openWithoutToken(method.path)) return new grpc.ServerInterceptingCall(call);
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, pass) => {
            const verdict = tokens.check(metadata.get('authorization'));
            if (verdict === 'ok') pass(metadata);
            else call.sendStatus({ code: grpc.status.UNAUTHENTICATED, details: unauthenticatedMessage(verdict), metadata: new grpc.Metadata() });
          },
        }),
    });
  };
}

interface InFlightCall {
  readonly path: string;
  /** Resolves when the handler has answered or the call was cancelled. */
  readonly finished: Promise<void>;
}

/** The parts of a grpc-js server call that every call kind shares. */
type SurfaceCall = Pick<grpc.ServerUnaryCall<unknown, unknown>, 'cancelled' | 'metadata' | 'getPeer' | 'getDeadline' | 'once' | 'off'>;
type CallbackHandler = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => void;
type StreamingHandler = (call: grpc.ServerWritableStream<unknown, unknown>) => void;

interface CallScope {
  readonly context: CallContext;
  /** Detaches from the call once the handler has settled. */
  close(): void;
}

/** How early a cancellation may arrive before the server-side deadline and still count as it. */
const DEADLINE_SLACK_MS = 250;

/** Builds a handler's context and ties its signal to the call's cancellation and deadline. */
function openCallScope(call: SurfaceCall): CallScope {
  const controller = new AbortController();
  const rawDeadline = call.getDeadline();
  const deadlineMs = rawDeadline instanceof Date ? rawDeadline.getTime() : rawDeadline;
  const deadline = Number.isFinite(deadlineMs) ? new Date(deadlineMs) : undefined;
  // The reasons carry no stack: it would only show this event handler, and a replica whose calls the
  // orchestrator cancels as speculation is superseded makes one for every cancelled call.
  const onDeadline = (): void => controller.abort(withoutStack(() => deadlineExceeded('the call deadline passed')));
  const onCancelled = (): void => {
    // The server's deadline is the client's plus the transit time, so a client giving up at its
    // deadline is seen here slightly early: within the slack it counts as the deadline.
    if (deadline !== undefined && Date.now() >= deadline.getTime() - DEADLINE_SLACK_MS) onDeadline();
    else controller.abort(withoutStack(() => cancelled('the call was cancelled by the client or by server shutdown')));
  };
  call.once('cancelled', onCancelled);
  const timer = deadline === undefined ? undefined : setTimeout(onDeadline, Math.max(0, deadline.getTime() - Date.now()));
  timer?.unref();
  if (call.cancelled) onCancelled();
  // Passed by hand, the caller's trace context is read from its headers when a handler first asks
  // (only the orchestrator's do); otherwise it is the context active now, the instrumentation's server span.
  let traceContext = tracePassesByHand() ? undefined : incomingTraceContext(noHeaders);
  return {
    context: {
      signal: controller.signal,
      metadata: call.metadata,
      peer: call.getPeer(),
      deadline,
      get traceContext(): TraceContext {
        return (traceContext ??= incomingTraceContext((name) => firstText(call.metadata, name)));
      },
    },
    close: () => {
      clearTimeout(timer);
      call.off('cancelled', onCancelled);
    },
  };
}

/** No headers: the trace context of a call whose headers are not read. */
const noHeaders = (): undefined => undefined;

/** The first value of a text header, if any. */
function firstText(metadata: grpc.Metadata, name: string): string | undefined {
  const [value] = metadata.get(name);
  return typeof value === 'string' ? value : undefined;
}

/** Calls a handler so that a synchronous throw becomes a rejection like an async one. */
function run<T>(handler: () => Promise<T>): Promise<T> {
  return new Promise<T>((resolve) => resolve(handler()));
}

function requireInteger(name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${value}`);
  }
}

function formatHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/** An error's stack (or name and message), then each cause in its chain on a "caused by:" line. */
function describe(error: unknown, depth = 0): string {
  if (!(error instanceof Error)) return String(error);
  const own = error.stack ?? `${error.name}: ${error.message}`;
  const cause = (error as { cause?: unknown }).cause;
  return cause === undefined || depth >= 8 ? own : `${own}\ncaused by: ${describe(cause, depth + 1)}`;
}
