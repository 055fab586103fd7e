/**
 * The lifecycle of one DSI service process, shared by every service. Import it as
 * `@dsi/rpc/lifecycle`: unlike `@dsi/rpc`, this entry loads nothing at import time, so a process can
 * start telemetry before `@grpc/grpc-js` is loaded (the instrumentation can only patch it then).
 */
import os from 'node:os';
import type { Environment, Telemetry } from '@dsi/telemetry';
import type { DsiServer, ServerOptions, ServiceRegistration } from './server';
import type { TlsSettings } from './tls-files';

// What a command checks before anything starts, without loading gRPC: TLS files and token files.
export { type TlsSettings, type TlsSetting, TlsConfigError, loadTlsMaterial, tlsEnabled } from './tls-files';
export { AuthConfigError, readTokenFile, parseTokens } from './auth';

/** How one service process runs: its name, where it listens and how it reports; parsed at the edge. */
export interface ServiceProcessConfig {
  /** Short service name, e.g. `drafter`: prefixes the log lines, names the spans (`dsi-NAME`) and the ready line. */
  name: string;
  /** Where the gRPC server listens and the limits it enforces (its `log` is the process's). */
  server: Omit<ServerOptions, 'log' | 'tls'>;
  /**
   * TLS of the whole process: its server, and its channels to other services (see `configureTls`).
   * Configured after telemetry starts, before the service's `start`. Default plaintext.
   */
  tls?: TlsSettings;
  /** Where spans and metrics go. */
  telemetry: {
    /** The environment the OpenTelemetry variables are read from (the edge passes `process.env`). */
    env: Environment;
    /** Also write spans as JSON lines here (`--trace-file`). */
    traceFile?: string;
    /** Serve Prometheus metrics on this port (`--metrics-port`). */
    metricsPort?: number;
    /** Address the metrics endpoint binds. */
    metricsHost?: string;
  };
  /** Signals that drain the server (the first) and cancel what is left (the second). Default SIGTERM and SIGINT. */
  signals?: readonly NodeJS.Signals[];
  /** Where lifecycle lines go. Default: stderr as `NAME: LINE`. */
  log?: (line: string) => void;
  /** Told once the service is SERVING. Default: `NAME serving on HOST:PORT` on stdout, which `dsi up` waits for. */
  onServing?: (address: string) => void;
}

/** What a service's startup gets from the process: its tracer and log, once telemetry runs. */
export interface ServiceContext {
  /** Tracer for the service's own spans (scope = `dsi-NAME`). */
  readonly tracer: Telemetry['tracer'];
  /** The process's log (stderr, prefixed with the service name). */
  readonly log: (line: string) => void;
}

/**
 * What a service hands the lifecycle: its registrations, the slow work to do while health reports
 * NOT_SERVING, and what to release once the server has stopped.
 */
export interface ServiceStartup {
  /** The gRPC services this process hosts. */
  registrations: ServiceRegistration[];
  /** Runs after the server is bound (health NOT_SERVING), e.g. loads and warms a model; SERVING follows. */
  warmUp?: () => Promise<void>;
  /** Releases what the service holds (models, clients, pools) after the server has stopped or failed to start. */
  close?: () => Promise<void> | void;
}

/**
 * This process's `service.instance.id` (replicas of one service told apart in traces): `host:port`
 * when the port is given (as `dsi up` gives every replica its own), else `hostname/pid` (the port is
 * only known once bound, after telemetry has started). In a cluster OTEL_RESOURCE_ATTRIBUTES names
 * the pod instead.
 */
function instanceIdOf(server: { host?: string; port?: number } | undefined): string {
  if (server?.port) return `${server.host ?? '127.0.0.1'}:${server.port}`;
  return `${os.hostname()}/${process.pid}`;
}

/**
 * Runs one service process from start to exit: telemetry and metrics first, then (only then) gRPC and
 * the service's `start`, the server bound with health NOT_SERVING, the warm-up, SERVING and the ready
 * line. The first signal drains the server, a second cancels the calls still in flight; then the
 * service is closed and the spans are flushed. Resolves once all of that is done; rejects (after the
 * same cleanup) when the service cannot start.
 */
export async function runService(
  config: ServiceProcessConfig,
  start: (context: ServiceContext) => ServiceStartup | Promise<ServiceStartup>,
): Promise<void> {
  const log = config.log ?? ((line: string) => void process.stderr.write(`${config.name}: ${line}\n`));
  const onServing = config.onServing ?? ((address: string) => void process.stdout.write(`${config.name} serving on ${address}\n`));
  const serviceName = `dsi-${config.name}`;
  const { env, traceFile, metricsPort, metricsHost } = config.telemetry;
  const { setServerAddress, startMetrics, startTelemetry } = await import('@dsi/telemetry');
  const telemetry = startTelemetry({ serviceName, env, traceFile, instanceId: instanceIdOf(config.server) });
  const metrics = startMetrics({ serviceName, env, prometheusPort: metricsPort, prometheusHost: metricsHost });
  if (metrics.prometheusUrl) log(`metrics on ${metrics.prometheusUrl}`);

  let startup: ServiceStartup | undefined;
  let server: DsiServer | undefined;
  let disposeSignals = (): void => undefined;
  const cleanup = async (): Promise<void> => {
    disposeSignals();
    await startup?.close?.();
    await metrics.shutdown();
    await telemetry.shutdown();
  };
  try {
    // Loaded here, after telemetry: this is where @grpc/grpc-js is first required.
    const { DsiServer } = await import('./server');
    if (config.tls) (await import('./tls')).configureTls(config.tls, { log });
    startup = await start({ tracer: telemetry.tracer, log });
    server = new DsiServer(startup.registrations, { ...config.server, log });
    disposeSignals = server.handleSignals(config.signals);
    await server.start();
    await startup.warmUp?.();
  } catch (error) {
    await server?.shutdown();
    await cleanup();
    throw error;
  }
  setServerAddress(server.address);
  server.markServing();
  // A signal during the warm-up has begun the drain already: then the service never served.
  if (server.state === 'SERVING') onServing(server.address);
  await server.stopped;
  await cleanup();
}
