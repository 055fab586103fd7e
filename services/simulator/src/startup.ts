import type { ServiceContext, ServiceStartup } from '@dsi/rpc';
import { simulatorService } from './service';

/** How much of the machine a simulator process uses; the edge (`dsi serve simulator`) parses it from flags. */
export interface SimulatorConfig {
  /** Worker threads per heatmap sweep; default: the machine's available parallelism. */
  threads?: number;
}

/** How a simulator process starts, for `runService` from `@dsi/rpc/lifecycle`: nothing to load, SERVING once bound. */
export function simulatorStartup(config: SimulatorConfig, context: ServiceContext): ServiceStartup {
  return { registrations: [simulatorService({ threads: config.threads, tracer: context.tracer })] };
}
