import { readDecoderConfig, TextTokenizer } from '@dsi/models';
import type { ServiceContext, ServiceStartup } from '@dsi/rpc';
import { GrpcDrafter, ReplicaPool, type ReplicaSource } from './replicas';
import { TargetLimitsSource, type TargetLimits } from './limits';
import { orchestratorService } from './service';

/** Where the orchestrator's drafter, targets and tokenizer are, and its limits; the edge parses it from flags. */
export interface OrchestratorConfig {
  /** The drafter service, `host:port`. */
  drafter: string;
  /** The target replicas: a list of addresses or a DNS name whose addresses they are. */
  targets: ReplicaSource;
  /** Folder with the target's `tokenizer.json` (and, when it is a model folder, its end-of-sequence token). */
  tokenizerDir: string;
  /** Largest max_new_tokens a request may ask for. */
  maxNewTokensLimit: number;
  /** The target's vocabulary and context length; default: asked of the replicas (GetModelInfo). */
  targetLimits?: TargetLimits;
}

/**
 * How an orchestrator process starts, for `runService` from `@dsi/rpc/lifecycle`: the tokenizer loaded,
 * the drafter client opened and health-checked once (then watched: generations go on without drafts
 * while it is down), the target replicas resolved and health-checked once (then watched);
 * closing stops the watch and the clients.
 */
export async function orchestratorStartup(config: OrchestratorConfig, context: ServiceContext): Promise<ServiceStartup> {
  const tokenizer = TextTokenizer.load(config.tokenizerDir);
  let eosTokenId: number | undefined;
  try {
    eosTokenId = readDecoderConfig(config.tokenizerDir).eosTokenId;
  } catch {
    eosTokenId = undefined; // a tokenizer-only folder: no end-of-sequence token known
  }
  const drafter = new GrpcDrafter(config.drafter);
  const targets = new ReplicaPool(config.targets, 1000, context.log);
  const close = () => {
    targets.stop();
    drafter.close();
  };
  try {
    await targets.start();
    // Drafting is skipped while the drafter is down and resumes within half a second of its return.
    await drafter.watchHealth(500, context.log);
  } catch (error) {
    close();
    throw error;
  }
  context.log(`targets: ${targets.healthy().length} of ${targets.all().length} healthy`);
  const targetLimits = new TargetLimitsSource(config.targetLimits);
  const limits = await targetLimits.get(targets.healthy().map((t) => t.id));
  context.log(limits ? `target limits: vocabulary ${limits.vocabSize}, context length ${limits.contextLength}` : 'target limits: not known until a replica answers');
  return {
    registrations: [orchestratorService({ drafter, targets, tokenizer, eosTokenId, maxNewTokensLimit: config.maxNewTokensLimit, targetLimits, tracer: context.tracer })],
    close,
  };
}
