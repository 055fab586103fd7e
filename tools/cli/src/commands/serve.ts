import { Command } from 'commander';
import { UsageError } from '../errors';
import { numberOption } from '../options';

/** Services `dsi serve` can start, with their default ports. */
export const SERVICES = { simulator: 50054 } as const;
export type ServiceName = keyof typeof SERVICES;

interface ServeFlags {
  host: string;
  port?: number;
  threads?: number;
  drainGraceMs: number;
  maxMessageBytes: number;
  traceFile?: string;
}

/**
 * Starts one service: telemetry first (gRPC must load after it so the instrumentation patches it), then
 * the server, health SERVING once ready, and a graceful drain on SIGTERM or SIGINT. Prints
 * `NAME serving on HOST:PORT` on stdout when ready; resolves when the server has stopped.
 */
export async function serve(name: ServiceName, flags: ServeFlags): Promise<void> {
  const { startTelemetry } = await import('@dsi/telemetry');
  const telemetry = startTelemetry({ serviceName: `dsi-${name}`, env: process.env, traceFile: flags.traceFile });
  const { DsiServer } = await import('@dsi/rpc');
  const { simulatorService } = await import('@dsi/simulator-service');
  const server = new DsiServer([simulatorService({ threads: flags.threads, tracer: telemetry.tracer })], {
    host: flags.host,
    port: flags.port ?? SERVICES[name],
    drainGraceMs: flags.drainGraceMs,
    maxReceiveMessageBytes: flags.maxMessageBytes,
    log: (line) => process.stderr.write(`${name}: ${line}\n`),
  });
  // The server drains on the first signal (a second one cancels in-flight calls at once); this
  // process ends once that drain has finished and the spans are flushed.
  const disposeSignals = server.handleSignals();
  const stopped = new Promise<void>((resolve) => {
    const onSignal = () => void server.shutdown().finally(resolve);
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  try {
    await server.start();
  } catch (error) {
    await telemetry.shutdown();
    throw error;
  }
  server.markServing();
  process.stdout.write(`${name} serving on ${server.address}\n`);
  await stopped;
  disposeSignals();
  await telemetry.shutdown();
}

/** `dsi serve NAME`: run one DSI service in the foreground. */
export function serveCommand(): Command {
  return new Command('serve')
    .description('run one DSI service (health, reflection, tracing; drains on SIGTERM)')
    .argument('<service>', `service to run: ${Object.keys(SERVICES).join(', ')}`)
    .option('--host <address>', 'address to listen on (0.0.0.0 in a container)', process.env.DSI_HOST ?? '127.0.0.1')
    .addOption(numberOption('--port <n>', 'port to listen on; 0 picks a free one (default: the service default)', 'DSI_PORT'))
    .addOption(numberOption('--threads <n>', 'worker threads for heavy work (default: all cores)', 'DSI_THREADS'))
    .addOption(numberOption('--drain-grace-ms <ms>', 'on SIGTERM, time in-flight calls get before they are cancelled', 'DSI_DRAIN_GRACE_MS').default(10_000))
    .addOption(numberOption('--max-message-bytes <n>', 'largest request accepted', 'DSI_MAX_MESSAGE_BYTES').default(4 * 1024 * 1024))
    .option('--trace-file <file>', 'also write spans as JSON lines to this file (env DSI_TRACE_FILE)')
    .action(async (service: string, flags: ServeFlags) => {
      if (!(service in SERVICES)) throw new UsageError(`unknown service ${service}; one of: ${Object.keys(SERVICES).join(', ')}`);
      if (flags.port !== undefined && (!Number.isInteger(flags.port) || flags.port < 0 || flags.port > 65535)) {
        throw new UsageError(`port=${flags.port} is outside [0, 65535]`);
      }
      await serve(service as ServiceName, flags);
    });
}
