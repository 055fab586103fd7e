import { Command, Option } from 'commander';
import type { ModelSource } from '@dsi/models';
import type { ReplicaSource } from '@dsi/orchestrator-service';
import type { ServiceContext, ServiceProcessConfig, ServiceStartup } from '@dsi/rpc';
import { UsageError } from '../errors';
import { choiceOption, numberOption } from '../options';
import { defaultModelsDir } from '../models-dir';

/** Services `dsi serve` can start, with their default ports. */
export const SERVICES = { orchestrator: 50050, target: 50051, drafter: 50052, simulator: 50054 } as const;
export type ServiceName = keyof typeof SERVICES;

/** Flags of `dsi serve` (every one also read from a `DSI_*` variable). */
export interface ServeFlags {
  host: string;
  port?: number;
  threads?: number;
  drainGraceMs: number;
  maxMessageBytes: number;
  traceFile?: string;
  backend: 'onnx' | 'synthetic';
  model?: string;
  modelsDir?: string;
  maxCachedRequests: number;
  maxCachedTokens: number;
  idleTimeoutMs: number;
  maxTokensPerCall: number;
  syntheticSeed: number;
  drafter?: string;
  targets?: string;
  targetsDns?: string;
  tokenizer?: string;
  maxNewTokensLimit: number;
  metricsPort?: number;
  executionProvider: 'cpu' | 'cuda';
  metricsHost: string;
  a: number;
  ttftMs: number;
  tpotMs: number;
  verifyMsPerToken: number;
}

/** How one service starts once telemetry runs: what `dsi serve` hands `runService`. */
type ServiceStart = (context: ServiceContext) => Promise<ServiceStartup>;

/** The process settings every service shares (listening, limits, telemetry), from the flags. */
export function processConfig(name: ServiceName, flags: ServeFlags): ServiceProcessConfig {
  return {
    name,
    server: { host: flags.host, port: flags.port ?? SERVICES[name], drainGraceMs: flags.drainGraceMs, maxReceiveMessageBytes: flags.maxMessageBytes },
    telemetry: { env: process.env, traceFile: flags.traceFile, metricsPort: flags.metricsPort, metricsHost: flags.metricsHost },
  };
}

/** The built-in drafter and target folders, generated into the models cache on first use. */
async function builtInModels(flags: ServeFlags): Promise<{ drafter: string; target: string }> {
  const { ensureDefaultModels } = await import('@dsi/modelgen');
  return ensureDefaultModels(flags.modelsDir ?? defaultModelsDir(process.env));
}

/** Rejects synthetic-backend flags out of range, naming the flag. */
function checkSyntheticFlags(flags: ServeFlags): void {
  if (!(flags.a >= 0 && flags.a <= 1)) throw new UsageError(`a=${flags.a} is outside [0, 1]`);
  for (const [key, value] of [['ttft-ms', flags.ttftMs], ['tpot-ms', flags.tpotMs], ['verify-ms-per-token', flags.verifyMsPerToken]] as const) {
    if (!(value >= 0)) throw new UsageError(`${key}=${value} must be >= 0`);
  }
}

/** The model a drafter or target replica should load, from its flags (the built-in pair unless `--model`). */
export async function modelSource(name: 'drafter' | 'target', flags: ServeFlags): Promise<ModelSource> {
  if (flags.backend === 'synthetic') {
    return {
      backend: 'synthetic',
      role: name,
      seed: flags.syntheticSeed,
      acceptance: flags.a,
      ttftMs: flags.ttftMs,
      tpotMs: flags.tpotMs,
      verifyMsPerToken: flags.verifyMsPerToken,
    };
  }
  return {
    backend: 'onnx',
    dir: flags.model || (await builtInModels(flags))[name],
    threads: flags.threads ?? 1,
    executionProvider: flags.executionProvider,
    maxCachedRequests: flags.maxCachedRequests,
    maxCachedTokens: flags.maxCachedTokens,
    idleTimeoutMs: flags.idleTimeoutMs,
  };
}

/** The orchestrator's drafter address and target replicas (a list or a DNS name), from its flags. */
function orchestratorEndpoints(flags: ServeFlags): { drafter: string; targets: ReplicaSource } {
  if (!flags.drafter) throw new UsageError('--drafter ADDRESS is required (env DSI_DRAFTER)');
  if (!flags.targets === !flags.targetsDns) throw new UsageError('give exactly one of --targets ADDR,ADDR,... or --targets-dns NAME:PORT');
  if (flags.targetsDns && !/^.+:\d+$/.test(flags.targetsDns)) throw new UsageError(`targets-dns=${flags.targetsDns} is not NAME:PORT`);
  const targets = flags.targets ? { addresses: flags.targets.split(',').map((a) => a.trim()).filter(Boolean) } : { dns: flags.targetsDns! };
  return { drafter: flags.drafter, targets };
}

/**
 * Checks the service's flags (a mistake fails here, before anything starts) and returns how the
 * service starts: its package is imported only then, after telemetry, since it loads gRPC.
 */
export function serviceStart(name: ServiceName, flags: ServeFlags): ServiceStart {
  switch (name) {
    case 'simulator':
      return async (context) => (await import('@dsi/simulator-service')).simulatorStartup({ threads: flags.threads }, context);
    case 'orchestrator': {
      const { drafter, targets } = orchestratorEndpoints(flags);
      return async (context) => {
        const tokenizerDir = flags.tokenizer || (await builtInModels(flags)).target;
        const { orchestratorStartup } = await import('@dsi/orchestrator-service');
        return orchestratorStartup({ drafter, targets, tokenizerDir, maxNewTokensLimit: flags.maxNewTokensLimit }, context);
      };
    }
    case 'drafter':
    case 'target':
      if (flags.backend === 'synthetic') checkSyntheticFlags(flags);
      return async (context) => {
        const config = { model: await modelSource(name, flags), maxTokensPerCall: flags.maxTokensPerCall };
        if (name === 'drafter') return (await import('@dsi/drafter-service')).drafterStartup(config, context);
        return (await import('@dsi/target-service')).targetStartup(config, context);
      };
  }
}

/**
 * Runs one service in the foreground (see `runService` in `@dsi/rpc/lifecycle`): telemetry first,
 * the server NOT_SERVING while the service loads, then SERVING and `NAME serving on HOST:PORT` on
 * stdout; a graceful drain on SIGTERM or SIGINT. Resolves when the server has stopped.
 */
export async function serve(name: ServiceName, flags: ServeFlags): Promise<void> {
  const start = serviceStart(name, flags);
  const { runService } = await import('@dsi/rpc/lifecycle');
  await runService(processConfig(name, flags), start);
}

/** `dsi serve NAME`: run one DSI service in the foreground. */
export function serveCommand(): Command {
  return new Command('serve')
    .description('run one DSI service (health, reflection, tracing; drains on SIGTERM)')
    .argument('<service>', `service to run: ${Object.keys(SERVICES).join(', ')}`)
    .addOption(new Option('--host <address>', 'address to listen on (0.0.0.0 in a container)').env('DSI_HOST').default('127.0.0.1'))
    .addOption(numberOption('--port <n>', 'port to listen on; 0 picks a free one (default: target 50051, drafter 50052, simulator 50054)', 'DSI_PORT'))
    .addOption(numberOption('--threads <n>', 'threads: onnxruntime intra-op threads (drafter, target) or worker threads (simulator)', 'DSI_THREADS'))
    .addOption(numberOption('--drain-grace-ms <ms>', 'on SIGTERM, time in-flight calls get before they are cancelled', 'DSI_DRAIN_GRACE_MS').default(10_000))
    .addOption(numberOption('--max-message-bytes <n>', 'largest request accepted', 'DSI_MAX_MESSAGE_BYTES').default(4 * 1024 * 1024))
    .addOption(new Option('--trace-file <file>', 'also write spans as JSON lines to this file').env('DSI_TRACE_FILE'))
    .addOption(choiceOption('--backend <backend>', 'model backend (drafter, target)', ['onnx', 'synthetic'], 'DSI_BACKEND').default('onnx'))
    .addOption(choiceOption('--execution-provider <provider>', 'onnx: where forwards run (cuda needs onnxruntime-node\'s CUDA libraries and a GPU)', ['cpu', 'cuda'], 'DSI_EXECUTION_PROVIDER').default('cpu'))
    .addOption(new Option('--model <dir>', 'ONNX model folder (Optimum layout); default: the built-in pair').env('DSI_MODEL'))
    .addOption(new Option('--models-dir <dir>', 'where the built-in pair is cached').env('DSI_MODELS_DIR'))
    .addOption(numberOption('--max-cached-requests <n>', 'requests whose KV cache is kept (LRU)', 'DSI_MAX_CACHED_REQUESTS').default(64))
    .addOption(numberOption('--max-cached-tokens <n>', 'tokens kept across all KV caches', 'DSI_MAX_CACHED_TOKENS').default(65_536))
    .addOption(numberOption('--idle-timeout-ms <ms>', 'drop a request\'s KV cache after this long unused', 'DSI_IDLE_TIMEOUT_MS').default(300_000))
    .addOption(numberOption('--max-tokens-per-call <n>', 'largest Draft n or Verify block', 'DSI_MAX_TOKENS_PER_CALL').default(64))
    .addOption(numberOption('--metrics-port <port>', 'serve Prometheus metrics at http://HOST:PORT/metrics', 'DSI_METRICS_PORT'))
    .addOption(new Option('--metrics-host <address>', 'address the metrics endpoint binds').env('DSI_METRICS_HOST').default('127.0.0.1'))
    .addOption(new Option('--drafter <address>', 'orchestrator: the drafter service').env('DSI_DRAFTER'))
    .addOption(new Option('--targets <addresses>', 'orchestrator: target replicas, comma-separated host:port').env('DSI_TARGETS'))
    .addOption(new Option('--targets-dns <name:port>', 'orchestrator: a DNS name whose addresses are the replicas (a headless Service)').env('DSI_TARGETS_DNS'))
    .addOption(new Option('--tokenizer <dir>', 'orchestrator: folder with the target\'s tokenizer.json (default: the built-in pair)').env('DSI_TOKENIZER'))
    .addOption(numberOption('--max-new-tokens-limit <n>', 'orchestrator: largest max_new_tokens accepted', 'DSI_MAX_NEW_TOKENS_LIMIT').default(4096))
    .addOption(numberOption('--synthetic-seed <n>', 'synthetic backend: the oracle seed (drafter and target must agree)', 'DSI_SYNTHETIC_SEED').default(1))
    .addOption(numberOption('--a <rate>', 'synthetic drafter: probability it agrees with the target per position', 'DSI_A').default(0.8))
    .addOption(numberOption('--ttft-ms <ms>', 'synthetic: latency of a request\'s first forward', 'DSI_TTFT_MS').default(0))
    .addOption(numberOption('--tpot-ms <ms>', 'synthetic: latency of a later forward', 'DSI_TPOT_MS').default(0))
    .addOption(numberOption('--verify-ms-per-token <ms>', 'synthetic: extra latency per extra token in one forward', 'DSI_VERIFY_MS_PER_TOKEN').default(0))
    .action(async (service: string, flags: ServeFlags) => {
      if (!(service in SERVICES)) throw new UsageError(`unknown service ${service}; one of: ${Object.keys(SERVICES).join(', ')}`);
      if (flags.port !== undefined && (!Number.isInteger(flags.port) || flags.port < 0 || flags.port > 65535)) {
        throw new UsageError(`port=${flags.port} is outside [0, 65535]`);
      }
      if (flags.threads !== undefined && (!Number.isInteger(flags.threads) || flags.threads < 1)) {
        throw new UsageError(`threads=${flags.threads} is below 1`);
      }
      await serve(service as ServiceName, flags);
    });
}
