import type { ModelSource } from '@dsi/models';
import type { ServiceContext, ServiceStartup } from '@dsi/rpc';
import { replicaStartup } from '@dsi/wire';
import { targetService } from './service';

/** What a target replica serves and its limits; the edge (`dsi serve target`) parses it from flags. */
export interface TargetConfig {
  /** The target model this replica loads once bound. */
  model: ModelSource;
  /** Largest block of drafts one Verify may carry. */
  maxTokensPerCall: number;
  /** Longest request_id accepted; default `DSI_MAX_REQUEST_ID_LENGTH`, else 256 (docs/limits.md). */
  maxRequestIdLength?: number;
}

/**
 * How a target replica process starts, for `runService` from `@dsi/rpc/lifecycle`: the TargetService
 * over an empty slot, then the model loaded and warmed while health reports NOT_SERVING.
 */
export function targetStartup(config: TargetConfig, context: ServiceContext): ServiceStartup {
  return replicaStartup(config.model, context, (slot) => targetService(slot, { maxBlock: config.maxTokensPerCall, maxRequestIdLength: config.maxRequestIdLength }));
}
