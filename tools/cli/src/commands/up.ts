import net from 'node:net';
import path from 'node:path';
import { Command } from 'commander';
import type { GenerateResponse } from '@dsi/proto';
import { ExitCode } from '../errors';
import { checkUpFlags, type UpFlagValues } from './up-flags';
import { callerTls, serveTlsArgs, stackCertificates, type StackServiceName, tlsCallLines } from '../certs';
import { MAX_LOOKAHEAD } from '@dsi/core';
import { defaultModelsDir } from '../models-dir';
import { choiceOption, fixed, integerOption, lookaheadOption, numberOption, setClientSecurity } from '../options';
import { StackSupervisor, type SupervisedService } from '../supervisor';
import type { LocalCertificates } from '@dsi/rpc';

interface UpFlags extends UpFlagValues {
  once?: boolean;
  json?: boolean;
  drafters: number;
  traceFile?: string;
  logs?: boolean;
  logDir?: string;
  restart?: boolean;
}

// Wire names (proto JSON), so this module does not load gRPC (telemetry must start first in `serve`).
const DEMO_MODES = [
  ['non_si', 'MODE_NON_SI', 'non-SI'],
  ['si', 'MODE_SI', 'SI'],
  ['dsi', 'MODE_DSI', 'DSI'],
] as const;

/** Thrown inside `up` when SIGINT or SIGTERM arrives before the stack is serving. */
class InterruptedError extends Error {
  override readonly name = 'InterruptedError';
}

/**
 * SIGINT and SIGTERM for the whole of `dsi up`, so a signal at any point stops every child: the
 * first one settles `received` (and `race` rejects), a second one calls `onAgain` (stop at once).
 */
function interruptions(onAgain: () => void): { received: Promise<NodeJS.Signals>; race<T>(work: Promise<T>): Promise<T>; dispose(): void } {
  let count = 0;
  let resolveSignal!: (signal: NodeJS.Signals) => void;
  const received = new Promise<NodeJS.Signals>((resolve) => (resolveSignal = resolve));
  const onSignal = (signal: NodeJS.Signals): void => {
    count += 1;
    if (count === 1) resolveSignal(signal);
    else onAgain();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const interrupted = received.then((signal) => Promise.reject(new InterruptedError(`${signal} received`)));
  interrupted.catch(() => undefined);
  return {
    received,
    race: (work) => Promise.race([work, interrupted]),
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** How long services get to drain at the end of a clean run (theirs is 10 s), before SIGKILL. */
const STOP_GRACE_MS = 12_000;
/** After a failed start or an interruption: short, so `dsi up` exits within seconds. */
const STOP_AFTER_FAILURE_MS = 2_000;

/**
 * Fails at once, naming the service and the port, when one of the stack's fixed ports is taken:
 * cheaper and clearer than starting seven processes to find out. (A port taken later still fails
 * that service's start, and the supervisor then stops the rest.)
 */
async function requireFreePorts(ports: ReadonlyArray<readonly [label: string, port: number]>): Promise<void> {
  for (const [label, wanted] of ports) {
    const problem = await new Promise<string | undefined>((resolve) => {
      const probe = net.createServer();
      probe.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'EADDRINUSE' ? 'is already in use' : `cannot be bound (${error.message})`));
      probe.listen({ host: '127.0.0.1', port: wanted, exclusive: true }, () => probe.close(() => resolve(undefined)));
    });
    if (problem) throw new Error(`port ${wanted} for ${label} ${problem} (is another \`dsi up\` running?); choose other ports with --base-port, or 0 for free ones`);
  }
}

/**
 * Port offsets from `--base-port` of drafter i (`--drafters`): the first at +2 as always, the others in
 * the gaps below the targets' +10, so they never collide with the targets or the base-port range.
 */
const DRAFTER_PORT_OFFSETS = [2, 1, 3, 5, 6, 7, 8, 9] as const;

/** The most drafter replicas `dsi up` starts. */
const MAX_UP_DRAFTERS = DRAFTER_PORT_OFFSETS.length;

function port(base: number, offset: number): string {
  return String(base === 0 ? 0 : base + offset);
}

/**
 * `dsi up`: the local DSI stack on loopback, each service its own process: `--drafters` drafter
 * replicas, `--targets` target replicas, the orchestrator (sharing both among its requests) and the simulator, health-checked; then one greedy request in
 * each mode through the orchestrator, with tokens per second, speedups and whether the outputs are
 * identical. Keeps serving until Ctrl-C unless `--once`. It supervises what it starts: each child is
 * tracked from its spawn, so a failed start or a signal stops them all (exit non-zero, nothing left
 * behind); a child that dies later is reported at once with its last log lines (and restarted on its
 * address with `--restart`); every service logs to `--log-dir`/NAME.log.
 */
export async function up(flags: UpFlags): Promise<void> {
  checkUpFlags(flags); // also run by main.ts before the action, where it knows which flags were given
  const env = { ...process.env, ...(flags.traceFile ? { DSI_TRACE_FILE: flags.traceFile } : {}) };
  const log = (line: string) => {
    if (!flags.json) process.stderr.write(line + '\n');
  };
  if (flags.basePort !== 0) {
    await requireFreePorts([
      ['the orchestrator', flags.basePort],
      ...Array.from({ length: flags.drafters }, (_, i): [string, number] => [drafterLabel(flags, i), flags.basePort + DRAFTER_PORT_OFFSETS[i]]),
      ['the simulator', flags.basePort + 4],
      ...Array.from({ length: flags.targets }, (_, i): [string, number] => [`target-${i}`, flags.basePort + 10 + i]),
    ]);
  }
  const logDir = path.resolve(flags.logDir ?? path.join(defaultModelsDir(env), 'logs'));
  const supervisor = new StackSupervisor({
    env,
    logDir,
    restart: flags.restart,
    echo: flags.logs ? (line) => process.stderr.write(line + '\n') : undefined,
    report: (line) => process.stderr.write(line + '\n'),
  });
  const signals = interruptions(() => {
    process.stderr.write('stopping now\n');
    void supervisor.stopAll(0);
  });
  // A clean run gives the services their drain; a failure or an interruption stops them quickly.
  let stopGraceMs = STOP_AFTER_FAILURE_MS;
  try {
    log('starting the local DSI stack...');
    let certificates: LocalCertificates | undefined;
    const tls = (name: StackServiceName): string[] => (certificates ? serveTlsArgs(certificates, name) : []);
    if (flags.tls !== undefined) {
      certificates = await signals.race(stackCertificates(flags.tls));
      const made = certificates.written.length === 0 ? 'reused' : `wrote ${certificates.written.map((file) => path.basename(file)).join(', ')}`;
      log(`tls           ${certificates.dir} (${made}); mutual TLS between the orchestrator and its replicas`);
      // This process calls the orchestrator for the demonstration: as a client of the stack.
      setClientSecurity({ tls: callerTls(certificates) });
    }
    const model: string[] = [];
    if (flags.backend === 'onnx') {
      // The first start writes the built-in model pair (once); later starts find it.
      const { ensureDefaultModels } = await import('@dsi/modelgen');
      const models = await signals.race(ensureDefaultModels(defaultModelsDir(env)));
      log(`models        ${models.root}`);
      model.push('--models-dir', models.root);
    } else {
      const ms = String(flags.targetMs);
      model.push('--backend', 'synthetic', '--a', String(flags.a), '--max-batch-requests', String(flags.maxBatchRequests), '--ttft-ms', ms, '--tpot-ms', ms);
    }
    const drafterModel =
      flags.backend === 'synthetic' ? [...model.slice(0, 6), '--ttft-ms', String(flags.c * flags.targetMs), '--tpot-ms', String(flags.c * flags.targetMs)] : model;
    // Each child is tracked from the moment it is spawned: if one fails, all are stopped.
    const [simulator, ...replicas] = await signals.race(
      Promise.all([
        supervisor.start('simulator', ['--port', port(flags.basePort, 4), ...tls('simulator')]),
        ...Array.from({ length: flags.drafters }, (_, i) =>
          supervisor.start('drafter', ['--port', port(flags.basePort, DRAFTER_PORT_OFFSETS[i]), ...drafterModel, ...tls('drafter')], drafterLabel(flags, i)),
        ),
        ...Array.from({ length: flags.targets }, (_, i) => supervisor.start('target', ['--port', port(flags.basePort, 10 + i), ...model, ...tls('target')], `target-${i}`)),
      ]),
    );
    const drafters = replicas.slice(0, flags.drafters);
    const targets = replicas.slice(flags.drafters);
    const drafter = drafters[0];
    const orchestrator = await signals.race(
      supervisor.start('orchestrator', [
        '--port',
        port(flags.basePort, 0),
        ...(flags.drafters === 1 ? ['--drafter', drafter.address] : ['--drafters', drafters.map((d) => d.address).join(',')]),
        '--targets',
        targets.map((t) => t.address).join(','),
        ...(flags.backend === 'onnx' ? model : ['--max-batch-requests', String(flags.maxBatchRequests)]),
        ...tls('orchestrator'),
      ]),
    );
    const row = (label: string, service: SupervisedService, note = '') => log(`${label.padEnd(13)} ${service.address}  pid ${service.pid}  log ${service.logFile}${note}`);
    drafters.forEach((d, i) => row(drafterLabel(flags, i), d));
    targets.forEach((t, i) => row(`target-${i}`, t));
    row('simulator', simulator);
    row('orchestrator', orchestrator, '  (all healthy)');

    const { generateRemote } = await import('../remote');
    const results: Record<string, GenerateResponse> = {};
    for (const [key, mode] of DEMO_MODES) {
      results[key] = await signals.race(
        generateRemote(orchestrator.address, {
          prompt: flags.prompt,
          mode,
          lookahead: flags.lookahead === 'auto' ? 0 : flags.lookahead,
          maxNewTokens: flags.maxNewTokens,
          sampling: { rule: 'VERIFICATION_RULE_GREEDY' },
        }),
      );
    }
    const identical = DEMO_MODES.every(([key]) => JSON.stringify(results[key].tokens) === JSON.stringify(results.non_si.tokens));
    if (flags.json) {
      const modes = Object.fromEntries(DEMO_MODES.map(([key]) => [key, { tokens: results[key].tokens, text: results[key].text, wall_ms: results[key].metrics?.wallMs ?? 0, metrics: results[key].metrics }]));
      const logs = Object.fromEntries(supervisor.services.map((service) => [service.name, service.logFile]));
      const caller = certificates ? callerTls(certificates) : undefined;
      const tlsJson = certificates ? { tls: { dir: certificates.dir, ca: caller!.caFile, client_cert: caller!.certFile, client_key: caller!.keyFile } } : {};
      process.stdout.write(
        JSON.stringify({
          services: { orchestrator: orchestrator.address, drafter: drafter.address, drafters: drafters.map((d) => d.address), targets: targets.map((t) => t.address), simulator: simulator.address },
          logs,
          modes,
          identical,
          ...tlsJson,
        }) + '\n',
      );
    } else {
      const base = results.non_si.metrics?.wallMs ?? 0;
      const lines = [
        '',
        `prompt: ${JSON.stringify(flags.prompt)}, ${flags.maxNewTokens} new tokens, greedy, lookahead ${flags.lookahead}, ${flags.targets} target replicas (${flags.backend})`,
        `output: ${JSON.stringify(results.dsi.text)}`,
        '',
        `  ${'mode'.padEnd(7)} ${'wall ms'.padStart(9)} ${'tokens/s'.padStart(9)} ${'vs non-SI'.padStart(10)} ${'acceptance'.padStart(11)} ${'forwards'.padStart(9)}`,
        ...DEMO_MODES.map(([key, , label]) => {
          const m = results[key].metrics!;
          return `  ${label.padEnd(7)} ${fixed(m.wallMs, 1).padStart(9)} ${fixed((results[key].tokens.length * 1000) / m.wallMs, 1).padStart(9)} ${`${fixed(base / m.wallMs, 2)}x`.padStart(10)} ${(key === 'non_si' ? '-' : fixed(m.acceptanceRate, 2)).padStart(11)} ${String(m.targetForwards).padStart(9)}`;
        }),
        '',
        `outputs identical across modes: ${identical ? 'yes' : 'NO'}`,
        ...(flags.backend === 'onnx'
          ? [
              'note: the built-in models run a forward in under 1 ms on this CPU, less than one gRPC round trip, so',
              '      speculation cannot pay off here; `npm start -- --backend synthetic --target-ms 20` shows the regime',
              '      of a large target on a GPU (forwards of tens of ms), through the same services.',
            ]
          : []),
        '',
        ...(certificates ? [`Every channel ran TLS (certificates in ${certificates.dir}); drafters and targets required the orchestrator's client certificate.`] : []),
        ...(flags.once
          ? ['The stack stops now (--once); run `dsi up` without --once to keep it serving and call it yourself.']
          : certificates
            ? [`Call it yourself, over TLS (the CA ${certificates.caFile}, the client certificate ${certificates.files.client.certFile}):`, ...tlsCallLines(certificates, orchestrator.address)]
            : [
                'Call it yourself:',
                `  npx dsi generate --orchestrator ${orchestrator.address} --mode dsi --prompt "Once upon a time"`,
                `  grpcurl -plaintext -d '{"params":{"prompt":"Hello","mode":"MODE_DSI"}}' ${orchestrator.address} dsi.v1.OrchestratorService/Generate`,
                `  npx buf curl --protocol grpc --http2-prior-knowledge -d '{"params":{"prompt":"Hello","mode":"MODE_DSI"}}' http://${orchestrator.address}/dsi.v1.OrchestratorService/Generate`,
              ]),
      ];
      process.stdout.write(lines.join('\n') + '\n');
    }
    if (!identical) throw new Error('the modes produced different outputs: this is a bug, please report it');
    stopGraceMs = STOP_GRACE_MS;
    if (!flags.once) {
      log(`\nserving (logs in ${logDir}${flags.restart ? '; a service that dies is restarted' : ''}); press Ctrl-C to stop`);
      await signals.received;
    }
  } catch (error) {
    if (!(error instanceof InterruptedError)) throw error;
    process.exitCode = ExitCode.INTERRUPTED;
  } finally {
    log('stopping...');
    await supervisor.stopAll(stopGraceMs);
    signals.dispose();
  }
}

/** The name of drafter i in logs and log files: `drafter` when there is one, else `drafter-i`. */
function drafterLabel(flags: Pick<UpFlags, 'drafters'>, i: number): string {
  return flags.drafters === 1 ? 'drafter' : `drafter-${i}`;
}

/** `dsi up`: run the local stack and a demonstration. */
export function upCommand(): Command {
  return new Command('up')
    .description('run the local DSI stack on loopback (drafter and target replicas, orchestrator, simulator), health-checked, with a demonstration in each mode; serves until Ctrl-C')
    .option('--once', 'exit after the demonstration')
    .option('--json', 'print one JSON document on stdout')
    .addOption(numberOption('--targets <n>', 'target replicas').default(4))
    .addOption(integerOption('--drafters <n>', `drafter replicas (at most ${MAX_UP_DRAFTERS}), shared by the orchestrator's requests`, { min: 1, max: MAX_UP_DRAFTERS }).default(1))
    .addOption(choiceOption('--backend <backend>', 'onnx: the built-in model pair; synthetic: the oracle with latencies', ['onnx', 'synthetic']).default('onnx'))
    .addOption(numberOption('--a <rate>', 'synthetic: drafter acceptance rate').default(0.8))
    .addOption(numberOption('--c <ratio>', 'synthetic: drafter latency as a fraction of the target\'s').default(0.1))
    .addOption(numberOption('--target-ms <ms>', 'synthetic: target forward latency').default(20))
    .addOption(numberOption('--max-batch-requests <n>', 'synthetic: calls one replica forward may batch (those arriving during a forward join the next); the orchestrator sends each replica that many at once').default(1))
    .addOption(lookaheadOption('--lookahead <k>', 'drafts per verification: auto (chosen as it goes) or a fixed k', MAX_LOOKAHEAD).default('auto'))
    .addOption(numberOption('--max-new-tokens <n>', 'tokens per demonstration request').default(48))
    .option('--prompt <text>', 'demonstration prompt', 'Once upon a time')
    .addOption(numberOption('--base-port <port>', 'orchestrator port; drafter +2, simulator +4, targets +10.. (0: free ports)').default(50050))
    .option('--trace-file <file>', 'every service writes its spans to this JSON-lines file')
    .option('--logs', 'also echo the services\' logs to the terminal')
    .option('--log-dir <dir>', 'where each service writes NAME.log (default: a logs folder in the models directory)')
    .option('--restart', 'start a service that dies again, on the same address')
    .option('--tls <dir>', 'run every channel over TLS (mutual between the orchestrator and its replicas) with a local CA and per-service certificates kept in DIR (made once, reused)')
    .action(async (flags: UpFlags) => up(flags));
}
