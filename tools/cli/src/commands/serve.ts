import { Command, Option } from 'commander';
import type { ServiceRegistration } from '@dsi/rpc';
import type { ModelSpec } from '@dsi/models';
import type { Tracer } from '@opentelemetry/api';
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

/** The model a drafter or target replica should load, from its flags. */
export async function modelSpec(name: 'drafter' | 'target', flags: ServeFlags): Promise<ModelSpec> {
  if (flags.backend === 'synthetic') {
    if (!(flags.a >= 0 && flags.a <= 1)) throw new UsageError(`a=${flags.a} is outside [0, 1]`);
    for (const [key, value] of [['ttft-ms', flags.ttftMs], ['tpot-ms', flags.tpotMs], ['verify-ms-per-token', flags.verifyMsPerToken]] as const) {
      if (!(value >= 0)) throw new UsageError(`${key}=${value} must be >= 0`);
    }
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
  let dir = flags.model;
  if (!dir) {
    const { ensureDefaultModels } = await import('@dsi/modelgen');
    const pair = await ensureDefaultModels(flags.modelsDir ?? defaultModelsDir(process.env));
    dir = pair[name];
  }
  return {
    backend: 'onnx',
    dir,
    threads: flags.threads ?? 1,
    executionProvider: flags.executionProvider,
    maxCachedRequests: flags.maxCachedRequests,
    maxCachedTokens: flags.maxCachedTokens,
    idleTimeoutMs: flags.idleTimeoutMs,
  };
}

/**
 * The orchestrator's registration: the drafter, the target replicas (a list or a DNS name, health
 * watched) and the tokenizer, from its flags.
 */
async function orchestratorRegistration(flags: ServeFlags, log: (line: string) => void, cleanups: (() => void)[], tracer: Tracer): Promise<ServiceRegistration> {
  if (!flags.drafter) throw new UsageError('--drafter ADDRESS is required (env DSI_DRAFTER)');
  if (!flags.targets === !flags.targetsDns) throw new UsageError('give exactly one of --targets ADDR,ADDR,... or --targets-dns NAME:PORT');
  if (flags.targetsDns && !/^.+:\d+$/.test(flags.targetsDns)) throw new UsageError(`targets-dns=${flags.targetsDns} is not NAME:PORT`);
  const { GrpcDrafter, ReplicaPool, orchestratorService } = await import('@dsi/orchestrator-service');
  const { TextTokenizer, readDecoderConfig } = await import('@dsi/models');
  let tokenizerDir = flags.tokenizer;
  if (!tokenizerDir) {
    const { ensureDefaultModels } = await import('@dsi/modelgen');
    tokenizerDir = (await ensureDefaultModels(flags.modelsDir ?? defaultModelsDir(process.env))).target;
  }
  const tokenizer = TextTokenizer.load(tokenizerDir);
  let eosTokenId: number | undefined;
  try {
    eosTokenId = readDecoderConfig(tokenizerDir).eosTokenId;
  } catch {
    eosTokenId = undefined; // a tokenizer-only folder: no end-of-sequence token known
  }
  const drafter = new GrpcDrafter(flags.drafter);
  const source = flags.targets ? { addresses: flags.targets.split(',').map((a) => a.trim()).filter(Boolean) } : { dns: flags.targetsDns! };
  const targets = new ReplicaPool(source, 1000, log);
  await targets.start();
  log(`targets: ${targets.healthy().length} of ${targets.all().length} healthy`);
  cleanups.push(() => targets.stop(), () => drafter.close());
  return orchestratorService({ drafter, targets, tokenizer, eosTokenId, maxNewTokensLimit: flags.maxNewTokensLimit, tracer });
}

/**
 * Starts one service: telemetry first (gRPC must load after it so the instrumentation patches it),
 * then the server (health NOT_SERVING), then the model and its warm-up forward, then SERVING; a
 * graceful drain on SIGTERM or SIGINT. Prints `NAME serving on HOST:PORT` on stdout when ready;
 * resolves when the server has stopped.
 */
export async function serve(name: ServiceName, flags: ServeFlags): Promise<void> {
  const { startTelemetry } = await import('@dsi/telemetry');
  const telemetry = startTelemetry({ serviceName: `dsi-${name}`, env: process.env, traceFile: flags.traceFile });
  const { startMetrics } = await import('@dsi/telemetry');
  const metrics = startMetrics({ serviceName: `dsi-${name}`, env: process.env, prometheusPort: flags.metricsPort, prometheusHost: flags.metricsHost });
  if (metrics.prometheusUrl) process.stderr.write(`${name}: metrics on ${metrics.prometheusUrl}\n`);
  const { DsiServer } = await import('@dsi/rpc');
  const { ModelSlot, loadModel } = await import('@dsi/models');
  const slot = new ModelSlot();
  const cleanups: (() => void)[] = [];
  let registration: ServiceRegistration;
  if (name === 'simulator') {
    const { simulatorService } = await import('@dsi/simulator-service');
    registration = simulatorService({ threads: flags.threads, tracer: telemetry.tracer });
  } else if (name === 'orchestrator') {
    registration = await orchestratorRegistration(flags, (line) => process.stderr.write(`${name}: ${line}\n`), cleanups, telemetry.tracer);
  } else if (name === 'drafter') {
    const { drafterService } = await import('@dsi/drafter-service');
    registration = drafterService(slot, { maxTokens: flags.maxTokensPerCall });
  } else {
    const { targetService } = await import('@dsi/target-service');
    registration = targetService(slot, { maxBlock: flags.maxTokensPerCall });
  }
  const spec = name === 'simulator' || name === 'orchestrator' ? undefined : await modelSpec(name, flags);
  const server = new DsiServer([registration], {
    host: flags.host,
    port: flags.port ?? SERVICES[name],
    drainGraceMs: flags.drainGraceMs,
    maxReceiveMessageBytes: flags.maxMessageBytes,
    log: (line) => process.stderr.write(`${name}: ${line}\n`),
  });
  // The server drains on the first signal (a second one cancels in-flight calls at once); this
  // process ends once that drain has finished, the model is closed and the spans are flushed.
  const disposeSignals = server.handleSignals();
  const stopped = new Promise<void>((resolve) => {
    const onSignal = () => void server.shutdown().finally(resolve);
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  const cleanup = async () => {
    disposeSignals();
    for (const fn of cleanups) fn();
    await slot.peek()?.close();
    await metrics.shutdown();
    await telemetry.shutdown();
  };
  try {
    await server.start();
    if (spec) {
      process.stderr.write(`${name}: loading the ${spec.backend} model${spec.backend === 'onnx' ? ` from ${spec.dir}` : ''}\n`);
      const { tracedModel } = await import('@dsi/models');
      slot.set(tracedModel(await loadModel(spec), telemetry.tracer));
    }
  } catch (error) {
    await server.shutdown();
    await cleanup();
    throw error;
  }
  server.markServing();
  process.stdout.write(`${name} serving on ${server.address}\n`);
  await stopped;
  await cleanup();
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
