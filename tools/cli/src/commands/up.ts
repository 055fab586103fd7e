import { Command } from 'commander';
import type { GenerateResponse } from '@dsi/proto';
import { UsageError } from '../errors';
import { choiceOption, fixed, numberOption } from '../options';
import { startService, type StackService } from '../stack';

interface UpFlags {
  once?: boolean;
  json?: boolean;
  targets: number;
  backend: 'onnx' | 'synthetic';
  a: number;
  c: number;
  targetMs: number;
  lookahead: number;
  maxNewTokens: number;
  prompt: string;
  basePort: number;
  traceFile?: string;
  logs?: boolean;
}

// Wire names (proto JSON), so this module does not load gRPC (telemetry must start first in `serve`).
const DEMO_MODES = [
  ['non_si', 'MODE_NON_SI', 'non-SI'],
  ['si', 'MODE_SI', 'SI'],
  ['dsi', 'MODE_DSI', 'DSI'],
] as const;

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

function port(base: number, offset: number): string {
  return String(base === 0 ? 0 : base + offset);
}

/**
 * `dsi up`: the local DSI stack on loopback, each service its own process: a drafter, `--targets`
 * target replicas, the orchestrator and the simulator, health-checked; then one greedy request in
 * each mode through the orchestrator, with tokens per second, speedups and whether the outputs are
 * identical. Keeps serving until Ctrl-C unless `--once`.
 */
export async function up(flags: UpFlags): Promise<void> {
  if (!Number.isInteger(flags.targets) || flags.targets < 1 || flags.targets > 16) throw new UsageError(`targets=${flags.targets} is outside [1, 16]`);
  if (flags.backend === 'synthetic') {
    if (!(flags.a >= 0 && flags.a <= 1)) throw new UsageError(`a=${flags.a} is outside [0, 1]`);
    if (!(flags.c > 0 && flags.c <= 1)) throw new UsageError(`c=${flags.c} is outside (0, 1]`);
    if (!(flags.targetMs > 0)) throw new UsageError(`target-ms=${flags.targetMs} must be positive`);
  }
  const env = { ...process.env, ...(flags.traceFile ? { DSI_TRACE_FILE: flags.traceFile } : {}) };
  const services: StackService[] = [];
  const log = (line: string) => {
    if (!flags.json) process.stderr.write(line + '\n');
  };
  try {
    log('starting the local DSI stack...');
    const model: string[] = [];
    if (flags.backend === 'onnx') {
      // The first start writes the built-in model pair (once); later starts find it.
      const { ensureDefaultModels } = await import('@dsi/modelgen');
      const { defaultModelsDir } = await import('../models-dir');
      const models = await ensureDefaultModels(defaultModelsDir(env));
      log(`models        ${models.root}`);
      model.push('--models-dir', models.root);
    } else {
      const ms = String(flags.targetMs);
      model.push('--backend', 'synthetic', '--a', String(flags.a), '--ttft-ms', ms, '--tpot-ms', ms);
    }
    const drafterModel =
      flags.backend === 'synthetic' ? [...model.slice(0, 4), '--ttft-ms', String(flags.c * flags.targetMs), '--tpot-ms', String(flags.c * flags.targetMs)] : model;
    const started = await Promise.all([
      startService('drafter', ['--port', port(flags.basePort, 2), ...drafterModel], { env, logs: flags.logs }),
      startService('simulator', ['--port', port(flags.basePort, 4)], { env, logs: flags.logs }),
      ...Array.from({ length: flags.targets }, (_, i) =>
        startService('target', ['--port', port(flags.basePort, 10 + i), ...model], { env, logs: flags.logs }),
      ),
    ]);
    services.push(...started);
    const [drafter, simulator, ...targets] = started;
    const orchestrator = await startService(
      'orchestrator',
      ['--port', port(flags.basePort, 0), '--drafter', drafter.address, '--targets', targets.map((t) => t.address).join(','), ...(flags.backend === 'onnx' ? model : [])],
      { env, logs: flags.logs },
    );
    services.push(orchestrator);
    log(`drafter       ${drafter.address}`);
    targets.forEach((t, i) => log(`target-${i}      ${t.address}`));
    log(`simulator     ${simulator.address}`);
    log(`orchestrator  ${orchestrator.address}  (all healthy)`);

    const { generateRemote } = await import('../remote');
    const results: Record<string, GenerateResponse> = {};
    for (const [key, mode] of DEMO_MODES) {
      results[key] = await generateRemote(orchestrator.address, {
        prompt: flags.prompt,
        mode,
        lookahead: flags.lookahead,
        maxNewTokens: flags.maxNewTokens,
        sampling: { rule: 'VERIFICATION_RULE_GREEDY' },
      });
    }
    const identical = DEMO_MODES.every(([key]) => JSON.stringify(results[key].tokens) === JSON.stringify(results.non_si.tokens));
    if (flags.json) {
      const modes = Object.fromEntries(DEMO_MODES.map(([key]) => [key, { tokens: results[key].tokens, text: results[key].text, wall_ms: results[key].metrics?.wallMs ?? 0, metrics: results[key].metrics }]));
      process.stdout.write(
        JSON.stringify({ services: { orchestrator: orchestrator.address, drafter: drafter.address, targets: targets.map((t) => t.address), simulator: simulator.address }, modes, identical }) + '\n',
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
        'Call it yourself:',
        `  npx dsi generate --orchestrator ${orchestrator.address} --mode dsi --prompt "Once upon a time"`,
        `  grpcurl -plaintext -d '{"params":{"prompt":"Hello","mode":"MODE_DSI"}}' ${orchestrator.address} dsi.v1.OrchestratorService/Generate`,
        `  npx buf curl --protocol grpc --http2-prior-knowledge -d '{"params":{"prompt":"Hello","mode":"MODE_DSI"}}' http://${orchestrator.address}/dsi.v1.OrchestratorService/Generate`,
      ];
      process.stdout.write(lines.join('\n') + '\n');
    }
    if (!identical) throw new Error('the modes produced different outputs: this is a bug, please report it');
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
    .description('run the local DSI stack on loopback (drafter, target replicas, orchestrator, simulator), health-checked, with a demonstration in each mode; serves until Ctrl-C')
    .option('--once', 'exit after the demonstration')
    .option('--json', 'print one JSON document on stdout')
    .addOption(numberOption('--targets <n>', 'target replicas').default(4))
    .addOption(choiceOption('--backend <backend>', 'onnx: the built-in model pair; synthetic: the oracle with latencies', ['onnx', 'synthetic']).default('onnx'))
    .addOption(numberOption('--a <rate>', 'synthetic: drafter acceptance rate').default(0.8))
    .addOption(numberOption('--c <ratio>', 'synthetic: drafter latency as a fraction of the target\'s').default(0.1))
    .addOption(numberOption('--target-ms <ms>', 'synthetic: target forward latency').default(20))
    .addOption(numberOption('--lookahead <k>', 'drafts per verification').default(5))
    .addOption(numberOption('--max-new-tokens <n>', 'tokens per demonstration request').default(48))
    .option('--prompt <text>', 'demonstration prompt', 'Once upon a time')
    .addOption(numberOption('--base-port <port>', 'orchestrator port; drafter +2, simulator +4, targets +10.. (0: free ports)').default(50050))
    .option('--trace-file <file>', 'every service writes its spans to this JSON-lines file')
    .option('--logs', 'show the services\' logs')
    .action(async (flags: UpFlags) => up(flags));
}
