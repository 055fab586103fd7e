import { Command } from 'commander';
import type { ModelSource } from '@dsi/models';
import type { ReplicaSource } from '@dsi/orchestrator-service';
import type { ServiceContext, ServiceProcessConfig, ServiceStartup, TlsSettings } from '@dsi/rpc';
import { UsageError } from '../errors';
import {
  addressListOption,
  addressOption,
  checkServerTokenFile,
  choiceOption,
  integerOption,
  MAX_INT32,
  MAX_THREADS,
  portOption,
  realOption,
  SEED_RANGE,
  textOption,
  type TlsFlagValues,
  tlsServerOptions,
  tlsSettingsFromFlags,
  type ValueSources,
} from '../options';
import { defaultModelsDir } from '../models-dir';

/** Services `dsi serve` can start, with their default ports. */
export const SERVICES = { orchestrator: 50050, target: 50051, drafter: 50052, simulator: 50054 } as const;
/** The name of a service `dsi serve` runs. */
export type ServiceName = keyof typeof SERVICES;

/** The orchestrator's largest `max_new_tokens` unless `--max-new-tokens-limit` says otherwise. */
export const DEFAULT_MAX_NEW_TOKENS_LIMIT = 4096;

/** The largest Draft n or Verify block a replica can be told to accept (a block is at most lookahead + 1 tokens). */
export const MAX_TOKENS_PER_CALL = 4096;

/** The slowest synthetic forward latency accepted (a minute). */
const MAX_LATENCY_MS = 60_000;

/** Flags of `dsi serve` (every one also read from a `DSI_*` variable). */
export interface ServeFlags extends TlsFlagValues {
  authTokenFile?: string;
  maxPromptChars?: number;
  maxPromptTokens?: number;
  maxStopSequences?: number;
  maxStopSequenceChars?: number;
  maxRequestIdLength?: number;
  reflection: 'on' | 'off';
  healthPort?: number;
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
  syntheticSpinMs: number;
  drafter?: string;
  drafters?: string[];
  draftersDns?: string;
  targets?: string[];
  targetsDns?: string;
  maxActiveRequests?: number;
  maxQueuedRequests?: number;
  tokenizer?: string;
  maxNewTokensLimit: number;
  metricsPort?: number;
  executionProvider: 'cpu' | 'cuda';
  metricsHost: string;
  a: number;
  ttftMs: number;
  tpotMs: number;
  verifyMsPerToken: number;
  aAfter?: number;
  aSwitchToken?: number;
  maxBatchRequests: number;
  maxBatchTokens: number;
  batchMsPerToken?: number;
}

/** How one service starts once telemetry runs: what `dsi serve` hands `runService`. */
type ServiceStart = (context: ServiceContext) => Promise<ServiceStartup>;

/**
 * The process settings every service shares (listening, limits, TLS, caller authentication,
 * telemetry), from the flags; `tls` is what {@link tlsSettingsFromFlags} made of them.
 */
export function processConfig(name: ServiceName, flags: ServeFlags, tls?: TlsSettings): ServiceProcessConfig {
  return {
    name,
    server: {
      host: flags.host,
      port: flags.port ?? SERVICES[name],
      drainGraceMs: flags.drainGraceMs,
      maxReceiveMessageBytes: flags.maxMessageBytes,
      authTokenFile: flags.authTokenFile,
      reflection: flags.reflection !== 'off',
      healthPort: flags.healthPort,
    },
    tls,
    telemetry: { env: process.env, traceFile: flags.traceFile, metricsPort: flags.metricsPort, metricsHost: flags.metricsHost },
  };
}

/** The built-in drafter and target folders, generated into the models cache on first use. */
async function builtInModels(flags: ServeFlags): Promise<{ drafter: string; target: string }> {
  const { ensureDefaultModels } = await import('@dsi/modelgen');
  return ensureDefaultModels(flags.modelsDir ?? defaultModelsDir(process.env));
}

/** The model a drafter or target replica should load, from its flags (the built-in pair unless `--model`). */
export async function modelSource(name: 'drafter' | 'target', flags: ServeFlags): Promise<ModelSource> {
  if ((flags.aAfter === undefined) !== (flags.aSwitchToken === undefined)) {
    throw new UsageError(`${flags.aAfter === undefined ? '--a-switch-token' : '--a-after'} needs ${flags.aAfter === undefined ? '--a-after' : '--a-switch-token'} too: a drifting drafter switches its agreement probability at a position`);
  }
  if (flags.backend === 'synthetic') {
    const { DEFAULT_BATCH_COST_PER_TOKEN } = await import('@dsi/core');
    return {
      backend: 'synthetic',
      role: name,
      seed: flags.syntheticSeed,
      acceptance: flags.a,
      acceptanceAfter: flags.aAfter,
      acceptanceSwitchAt: flags.aSwitchToken,
      ttftMs: flags.ttftMs,
      tpotMs: flags.tpotMs,
      verifyMsPerToken: flags.verifyMsPerToken,
      spinMs: flags.syntheticSpinMs,
      batching: {
        maxBatchRequests: flags.maxBatchRequests,
        maxBatchTokens: flags.maxBatchTokens,
        batchMsPerToken: flags.batchMsPerToken ?? DEFAULT_BATCH_COST_PER_TOKEN * flags.tpotMs,
      },
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
    maxBatchRequests: flags.maxBatchRequests,
    maxBatchTokens: flags.maxBatchTokens,
  };
}

/** The orchestrator's drafter and target replicas (each a list or a DNS name), from its flags. */
function orchestratorEndpoints(flags: ServeFlags): { drafters: ReplicaSource; targets: ReplicaSource } {
  const drafterFlags = [flags.drafter, flags.drafters, flags.draftersDns].filter((value) => value !== undefined).length;
  if (drafterFlags !== 1) {
    throw new UsageError('the orchestrator needs exactly one of --drafter HOST:PORT, --drafters HOST:PORT,... or --drafters-dns NAME:PORT (or DSI_DRAFTER, DSI_DRAFTERS, DSI_DRAFTERS_DNS)');
  }
  if (!flags.targets === !flags.targetsDns) throw new UsageError('the orchestrator needs exactly one of --targets HOST:PORT,... or --targets-dns NAME:PORT');
  const drafters = flags.draftersDns ? { dns: flags.draftersDns } : { addresses: flags.drafters ?? [flags.drafter!] };
  const targets = flags.targets ? { addresses: flags.targets } : { dns: flags.targetsDns! };
  return { drafters, targets };
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
      const { drafters, targets } = orchestratorEndpoints(flags);
      const { maxActiveRequests, maxQueuedRequests, maxNewTokensLimit, maxBatchRequests, maxPromptChars, maxPromptTokens, maxStopSequences, maxStopSequenceChars } = flags;
      const requestLimits = Object.fromEntries(Object.entries({ maxPromptChars, maxPromptTokens, maxStopSequences, maxStopSequenceChars }).filter(([, v]) => v !== undefined));
      return async (context) => {
        const tokenizerDir = flags.tokenizer || (await builtInModels(flags)).target;
        const { orchestratorStartup } = await import('@dsi/orchestrator-service');
        return orchestratorStartup({ drafters, targets, tokenizerDir, maxNewTokensLimit, maxActiveRequests, maxQueuedRequests, slotsPerReplica: maxBatchRequests, requestLimits }, context);
      };
    }
    case 'drafter':
    case 'target':
      return async (context) => {
        const config = { model: await modelSource(name, flags), maxTokensPerCall: flags.maxTokensPerCall, maxRequestIdLength: flags.maxRequestIdLength };
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
export async function serve(name: ServiceName, flags: ServeFlags, sources?: ValueSources): Promise<void> {
  // TLS and token files are checked before anything starts: a mistake exits 2 naming the flag.
  const tls = tlsSettingsFromFlags(flags, sources);
  checkServerTokenFile(flags.authTokenFile, sources);
  if (flags.healthPort !== undefined && flags.healthPort !== 0 && flags.healthPort === (flags.port ?? SERVICES[name])) {
    throw new UsageError(`--health-port ${flags.healthPort} is the service's own port; pick another (or 0 for a free one)`);
  }
  const start = serviceStart(name, flags);
  const { runService } = await import('@dsi/rpc/lifecycle');
  await runService(processConfig(name, flags, tls), start);
}

/** `dsi serve NAME`: run one DSI service in the foreground. */
export function serveCommand(): Command {
  const command = new Command('serve')
    .description('run one DSI service (health, reflection, tracing; drains on SIGTERM)')
    .argument('<service>', `service to run: ${Object.keys(SERVICES).join(', ')}`)
    .addOption(textOption('--host <address>', 'address to listen on (0.0.0.0 in a container)', 'DSI_HOST').default('127.0.0.1'))
    .addOption(portOption('--port <n>', 'port to listen on; 0 picks a free one (default: orchestrator 50050, target 50051, drafter 50052, simulator 50054)', true, 'DSI_PORT'))
    .addOption(integerOption('--threads <n>', 'threads: onnxruntime intra-op threads (drafter, target) or worker threads (simulator)', { min: 1, max: MAX_THREADS }, 'DSI_THREADS'))
    .addOption(integerOption('--drain-grace-ms <ms>', 'on SIGTERM, time in-flight calls get before they are cancelled', { min: 0, max: 3_600_000 }, 'DSI_DRAIN_GRACE_MS').default(10_000))
    .addOption(integerOption('--max-message-bytes <n>', 'largest request accepted', { min: 1024, max: MAX_INT32 }, 'DSI_MAX_MESSAGE_BYTES').default(4 * 1024 * 1024))
    .addOption(textOption('--trace-file <file>', 'also write spans as JSON lines to this file', 'DSI_TRACE_FILE'))
    .addOption(choiceOption('--backend <backend>', 'model backend (drafter, target)', ['onnx', 'synthetic'], 'DSI_BACKEND').default('onnx'))
    .addOption(choiceOption('--execution-provider <provider>', 'onnx: where forwards run (cuda needs onnxruntime-node\'s CUDA libraries and a GPU)', ['cpu', 'cuda'], 'DSI_EXECUTION_PROVIDER').default('cpu'))
    .addOption(textOption('--model <dir>', 'ONNX model folder (Optimum layout); default: the built-in pair', 'DSI_MODEL'))
    .addOption(textOption('--models-dir <dir>', 'where the built-in pair is cached', 'DSI_MODELS_DIR'))
    .addOption(integerOption('--max-cached-requests <n>', 'requests whose KV cache is kept (LRU)', { min: 1, max: 1_000_000 }, 'DSI_MAX_CACHED_REQUESTS').default(64))
    .addOption(integerOption('--max-cached-tokens <n>', 'tokens kept across all KV caches', { min: 1, max: MAX_INT32 }, 'DSI_MAX_CACHED_TOKENS').default(65_536))
    .addOption(integerOption('--idle-timeout-ms <ms>', 'drop a request\'s KV cache after this long unused', { min: 1, max: MAX_INT32 }, 'DSI_IDLE_TIMEOUT_MS').default(300_000))
    .addOption(integerOption('--max-tokens-per-call <n>', 'largest Draft n or Verify block', { min: 1, max: MAX_TOKENS_PER_CALL }, 'DSI_MAX_TOKENS_PER_CALL').default(64))
    .addOption(portOption('--metrics-port <port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (0: a free port)', true, 'DSI_METRICS_PORT'))
    .addOption(textOption('--metrics-host <address>', 'address the metrics endpoint binds', 'DSI_METRICS_HOST').default('127.0.0.1'))
    .addOption(addressOption('--drafter <address>', 'orchestrator: the drafter service, host:port', 'DSI_DRAFTER'))
    .addOption(addressListOption('--drafters <addresses>', 'orchestrator: drafter replicas, comma-separated host:port (instead of --drafter)', 'DSI_DRAFTERS'))
    .addOption(addressOption('--drafters-dns <name:port>', 'orchestrator: a DNS name whose addresses are the drafter replicas (instead of --drafter)', 'DSI_DRAFTERS_DNS'))
    .addOption(addressListOption('--targets <addresses>', 'orchestrator: target replicas, comma-separated host:port', 'DSI_TARGETS'))
    .addOption(addressOption('--targets-dns <name:port>', 'orchestrator: a DNS name whose addresses are the replicas (a headless Service)', 'DSI_TARGETS_DNS'))
    .addOption(textOption('--tokenizer <dir>', 'orchestrator: folder with the target\'s tokenizer.json (default: the built-in pair)', 'DSI_TOKENIZER'))
    .addOption(integerOption('--max-new-tokens-limit <n>', 'orchestrator: largest max_new_tokens accepted', { min: 1, max: MAX_INT32 }, 'DSI_MAX_NEW_TOKENS_LIMIT').default(DEFAULT_MAX_NEW_TOKENS_LIMIT))
    .addOption(
      integerOption('--max-active-requests <n>', 'orchestrator: generations running at once, more wait (default: 2 per healthy target replica)', { min: 1, max: 1_000_000 }, 'DSI_MAX_ACTIVE_REQUESTS'),
    )
    .addOption(
      integerOption('--max-queued-requests <n>', 'orchestrator: requests waiting for a turn, more get RESOURCE_EXHAUSTED (default: 256)', { min: 0, max: 1_000_000 }, 'DSI_MAX_QUEUED_REQUESTS'),
    )
    .addOption(integerOption('--max-prompt-chars <n>', 'orchestrator: most characters of prompt text tokenized (default: 16 per token of the target\'s context)', { min: 1, max: MAX_INT32 }, 'DSI_MAX_PROMPT_CHARS'))
    .addOption(integerOption('--max-prompt-tokens <n>', 'orchestrator: most prompt tokens (default: 131072)', { min: 1, max: MAX_INT32 }, 'DSI_MAX_PROMPT_TOKENS'))
    .addOption(integerOption('--max-stop-sequences <n>', 'orchestrator: most stop sequences per request (default: 32)', { min: 1, max: MAX_INT32 }, 'DSI_MAX_STOP_SEQUENCES'))
    .addOption(integerOption('--max-stop-sequence-chars <n>', 'orchestrator: most characters of one stop sequence (default: 512)', { min: 1, max: MAX_INT32 }, 'DSI_MAX_STOP_SEQUENCE_CHARS'))
    .addOption(integerOption('--max-request-id-length <n>', 'drafter, target: longest request_id accepted (default: 256)', { min: 1, max: MAX_INT32 }, 'DSI_MAX_REQUEST_ID_LENGTH'))
    .addOption(integerOption('--synthetic-seed <n>', 'synthetic backend: the oracle seed (drafter and target must agree)', SEED_RANGE, 'DSI_SYNTHETIC_SEED').default(1))
    .addOption(realOption('--a <rate>', 'synthetic drafter: probability it agrees with the target per position, in [0, 1]', { min: 0, max: 1 }, 'DSI_A').default(0.8))
    .addOption(realOption('--a-after <rate>', 'synthetic drafter: a drifting workload: the agreement probability from --a-switch-token on', { min: 0, max: 1 }, 'DSI_A_AFTER'))
    .addOption(
      integerOption('--a-switch-token <n>', 'synthetic drafter: the sequence position (prompt included) from which --a-after holds', { min: 0, max: MAX_INT32 }, 'DSI_A_SWITCH_TOKEN'),
    )
    .addOption(realOption('--ttft-ms <ms>', 'synthetic: latency of a request\'s first forward', { min: 0, max: MAX_LATENCY_MS }, 'DSI_TTFT_MS').default(0))
    .addOption(realOption('--tpot-ms <ms>', 'synthetic: latency of a later forward', { min: 0, max: MAX_LATENCY_MS }, 'DSI_TPOT_MS').default(0))
    .addOption(realOption('--verify-ms-per-token <ms>', 'synthetic: extra latency per extra token in one forward', { min: 0, max: MAX_LATENCY_MS }, 'DSI_VERIFY_MS_PER_TOKEN').default(0))
    .addOption(
      integerOption(
        '--max-batch-requests <n>',
        'drafter, target: calls one forward may batch (those that arrive while a forward runs join the next); orchestrator: calls it sends one replica at once (set it to the replicas\' value)',
        { min: 1, max: 1024 },
        'DSI_MAX_BATCH_REQUESTS',
      ).default(1),
    )
    .addOption(integerOption('--max-batch-tokens <n>', 'drafter, target: tokens one batched forward may compute (a larger call runs alone)', { min: 1, max: MAX_INT32 }, 'DSI_MAX_BATCH_TOKENS').default(512))
    .addOption(
      realOption('--batch-ms-per-token <ms>', 'synthetic: latency of each token a batched forward computes beyond its slowest call (default: 0.0099 x --tpot-ms, H200 llama3.1-70b)', { min: 0, max: MAX_LATENCY_MS }, 'DSI_BATCH_MS_PER_TOKEN'),
    )
    .addOption(realOption('--synthetic-spin-ms <ms>', 'synthetic: the last ms of each latency spent polling for sub-ms precision (0: one timer, no CPU, up to ~1 ms late)', { min: 0, max: 10 }, 'DSI_SYNTHETIC_SPIN_MS').default(2));
  for (const option of tlsServerOptions()) command.addOption(option);
  return command
    .addOption(textOption('--auth-token-file <file>', 'callers must send `authorization: Bearer <token>` with a token of this file (one per line, # comments; re-read when it changes); health stays open', 'DSI_AUTH_TOKEN_FILE'))
    .addOption(choiceOption('--reflection <on|off>', 'server reflection (grpcurl, buf curl without .proto files); off where the API is public', ['on', 'off'], 'DSI_REFLECTION').default('on'))
    .addOption(portOption('--health-port <port>', 'also answer gRPC health alone, in plaintext, on this port (kubelet gRPC probes cannot speak TLS; 0: a free one)', true, 'DSI_HEALTH_PORT'))
    .action(async (service: string, flags: ServeFlags, command: Command) => {
      if (!(service in SERVICES)) throw new UsageError(`unknown service ${service}; one of: ${Object.keys(SERVICES).join(', ')}`);
      await serve(service as ServiceName, flags, command);
    });
}
