import type { ModelSource } from '@dsi/models';
import type { ServiceContext, ServiceStartup } from '@dsi/rpc';
import { replicaStartup } from '@dsi/wire';
import { drafterService } from './service';

/** What a drafter replica serves and its limits; the edge (`dsi serve drafter`) parses it from flags. */
export interface DrafterConfig {
  /** The drafter model this replica loads once bound. */
  model: ModelSource;
  /** Most tokens one Draft may ask for. */
  maxTokensPerCall: number;
  /** Longest request_id accepted; default `DSI_MAX_REQUEST_ID_LENGTH`, else 256 (docs/limits.md). */
  maxRequestIdLength?: number;
}

/**
 * How a drafter replica process starts, for `runService` from `@dsi/rpc/lifecycle`: the DrafterService
 * over an empty slot, then the model loaded and warmed while health reports NOT_SERVING.
 */
export function drafterStartup(config: DrafterConfig, context: ServiceContext): ServiceStartup {
  return replicaStartup(config.model, context, (slot) => drafterService(slot, { maxTokens: config.maxTokensPerCall, maxRequestIdLength: config.maxRequestIdLength }));
}
