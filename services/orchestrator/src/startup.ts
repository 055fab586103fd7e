import { readDecoderConfig, TextTokenizer } from '@dsi/models';
import type { ServiceContext, ServiceStartup } from '@dsi/rpc';
import { ReplicaPool, type ReplicaSource } from './replicas';
import { TargetLimitsSource, type TargetLimits } from './limits';
import { orchestratorService } from './service';
import type { RequestLimits } from './request-limits';

/** Where the orchestrator's drafter, targets and tokenizer are, and its limits; the edge parses it from flags. */
export interface OrchestratorConfig {
  /** The drafter service, `host:port` (`--drafter`); give this or {@link drafters}. */
  drafter?: string;
  /** The drafter replicas: a list of addresses (`--drafters`) or a DNS name (`--drafters-dns`). */
  drafters?: ReplicaSource;
  /** The target replicas: a list of addresses or a DNS name whose addresses they are. */
  targets: ReplicaSource;
  /** Most generations running at once (`--max-active-requests`); default 2 per healthy target replica. */
  maxActiveRequests?: number;
  /** Most requests waiting for a turn (`--max-queued-requests`); default 256. */
  maxQueuedRequests?: number;
  /** Calls sent to one replica at once (`--max-batch-requests`: replicas that batch take several); default 1. */
  slotsPerReplica?: number;
  /** Folder with the target's `tokenizer.json` (and, when it is a model folder, its end-of-sequence token). */
  tokenizerDir: string;
  /** Largest max_new_tokens a request may ask for. */
  maxNewTokensLimit: number;
  /** The target's vocabulary and context length; default: asked of the replicas (GetModelInfo). */
  targetLimits?: TargetLimits;
  /** Limits on a request's prompt and stop sequences (`--max-prompt-chars`...); unset: DSI_* variables, then defaults (docs/limits.md). */
  requestLimits?: Partial<RequestLimits>;
}

/** The drafter replicas of a configuration: exactly one of `drafter` and `drafters`. */
export function drafterSource(config: Pick<OrchestratorConfig, 'drafter' | 'drafters'>): ReplicaSource {
  if ((config.drafter === undefined) === (config.drafters === undefined)) {
    throw new RangeError('the orchestrator needs exactly one of drafter (--drafter) and drafters (--drafters or --drafters-dns)');
  }
  return config.drafters ?? { addresses: [config.drafter as string] };
}

/**
 * How an orchestrator process starts, for `runService` from `@dsi/rpc/lifecycle`: the tokenizer loaded,
 * the target and drafter replicas resolved and health-checked once (then watched: generations go on
 * without drafts while no drafter is SERVING, and a drafter back is used within half a second);
 * closing stops the watches and the clients.
 */
export async function orchestratorStartup(config: OrchestratorConfig, context: ServiceContext): Promise<ServiceStartup> {
  const drafterAddresses = drafterSource(config);
  const tokenizer = TextTokenizer.load(config.tokenizerDir);
  let eosTokenId: number | undefined;
  try {
    eosTokenId = readDecoderConfig(config.tokenizerDir).eosTokenId;
  } catch {
    eosTokenId = undefined; // a tokenizer-only folder: no end-of-sequence token known
  }
  const targets = ReplicaPool.targets(config.targets, { intervalMs: 1000, log: context.log });
  const drafters = ReplicaPool.drafters(drafterAddresses, { intervalMs: 500, log: context.log });
  const close = () => {
    targets.stop();
    drafters.stop();
  };
  try {
    await Promise.all([targets.start(), drafters.start()]);
  } catch (error) {
    close();
    throw error;
  }
  context.log(`targets: ${targets.healthy().length} of ${targets.all().length} healthy`);
  const drafting = drafters.healthy().length > 0 ? '' : ': generations go on without drafts until one is SERVING';
  context.log(`drafters: ${drafters.healthy().length} of ${drafters.all().length} healthy${drafting}`);
  const targetLimits = new TargetLimitsSource(config.targetLimits);
  const limits = await targetLimits.get(targets.healthy().map((t) => t.id));
  context.log(limits ? `target limits: vocabulary ${limits.vocabSize}, context length ${limits.contextLength}` : 'target limits: not known until a replica answers');
  return {
    registrations: [
      orchestratorService({
        drafters,
        targets,
        tokenizer,
        eosTokenId,
        maxNewTokensLimit: config.maxNewTokensLimit,
        maxActiveRequests: config.maxActiveRequests,
        maxQueuedRequests: config.maxQueuedRequests,
        slotsPerReplica: config.slotsPerReplica,
        ...config.requestLimits,
        targetLimits,
        tracer: context.tracer,
      }),
    ],
    close,
  };
}
