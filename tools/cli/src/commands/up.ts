import { Command } from 'commander';
import { numberOption } from '../options';
import { startService, type StackService } from '../stack';
import { formatSimulation, simulationJson } from './simulate';

interface UpFlags {
  once?: boolean;
  json?: boolean;
  simulatorPort: number;
  traceFile?: string;
  logs?: boolean;
}

function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve(signal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

/**
 * `dsi up`: the local stack on loopback. Today that is the simulator service: started as a child
 * process, health-checked, then a demonstration (the study's default configuration, Monte Carlo and
 * exact) through its gRPC API. Keeps serving until Ctrl-C unless `--once`.
 */
export async function up(flags: UpFlags): Promise<void> {
  const env = { ...process.env, ...(flags.traceFile ? { DSI_TRACE_FILE: flags.traceFile } : {}) };
  const services: StackService[] = [];
  const log = (line: string) => {
    if (!flags.json) process.stderr.write(line + '\n');
  };
  try {
    log('starting the local DSI stack...');
    // The first start writes the built-in model pair (a few seconds, once); later starts find it.
    const { ensureDefaultModels } = await import('@dsi/modelgen');
    const { defaultModelsDir } = await import('../models-dir');
    const models = await ensureDefaultModels(defaultModelsDir(env));
    log(`models     ${models.root}`);
    services.push(await startService('simulator', ['--port', String(flags.simulatorPort)], { env, logs: flags.logs }));
    const [simulator] = services;
    const { waitForServing } = await import('@dsi/rpc');
    await waitForServing(simulator.address, 'dsi.v1.SimulatorService', { timeoutMs: 30_000 });
    log(`simulator  ${simulator.address}  (healthy)`);
    const { simulateRemote } = await import('../remote');
    const seed = await simulateRemote(simulator.address, {});
    const exact = await simulateRemote(simulator.address, { method: 'exact' });
    if (flags.json) {
      process.stdout.write(
        JSON.stringify({ services: { simulator: simulator.address }, simulation: { seed: simulationJson(seed), exact: simulationJson(exact) } }) + '\n',
      );
    } else {
      process.stdout.write(
        `\n${formatSimulation(seed)}\n\n${formatSimulation(exact)}\n\n` +
          `Call it yourself:\n` +
          `  grpcurl -plaintext ${simulator.address} list\n` +
          `  npx buf curl --protocol grpc --http2-prior-knowledge --list-services http://${simulator.address}\n` +
          `  npx buf curl --protocol grpc --http2-prior-knowledge -d '{"config":{"a":0.8,"method":"SIMULATION_METHOD_EXACT"}}' http://${simulator.address}/dsi.v1.SimulatorService/Simulate\n`,
      );
    }
    if (!flags.once) {
      log('\nserving; press Ctrl-C to stop');
      await waitForSignal();
    }
  } finally {
    log('stopping...');
    await Promise.all(services.map((s) => s.stop()));
  }
}

/** `dsi up`: run the local stack and a demonstration. */
export function upCommand(): Command {
  return new Command('up')
    .description('run the local DSI stack on loopback, health-checked, with a demonstration; serves until Ctrl-C')
    .option('--once', 'exit after the demonstration')
    .option('--json', 'print one JSON document on stdout')
    .addOption(numberOption('--simulator-port <n>', 'simulator port (0 picks a free one)').default(50054))
    .option('--trace-file <file>', 'every service writes its spans to this JSON-lines file')
    .option('--logs', 'show the services\' logs')
    .action(async (flags: UpFlags) => up(flags));
}
