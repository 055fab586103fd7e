import { TargetServiceClient } from '@dsi/proto';
import { callUnary, clientCredentials, createChannelOptions } from '@dsi/rpc';

/**
 * What the target model accepts. The orchestrator checks every request against it before any replica
 * sees it, so a caller's mistake is answered at once and names the limit, instead of failing verification
 * after verification on every replica.
 */
export interface TargetLimits {
  /** Token ids are in [0, vocabSize). */
  vocabSize: number;
  /** The prompt plus the generated tokens must fit in this many positions. */
  contextLength: number;
}

/** Asks one target replica for its model's limits (TargetService/GetModelInfo); rejects with its DsiError. */
export async function askTargetLimits(address: string, deadlineMs = 1000): Promise<TargetLimits> {
  const client = new TargetServiceClient(address, clientCredentials(), createChannelOptions());
  try {
    const { model } = await callUnary(client, 'getModelInfo', {}, { deadlineMs });
    if (!model || !(model.vocabSize >= 1) || !(model.contextLength >= 1)) throw new Error(`target ${address} described no model`);
    return { vocabSize: model.vocabSize, contextLength: model.contextLength };
  } finally {
    client.close();
  }
}

/**
 * The target's limits for an orchestrator: fixed by its configuration, or learned from the replicas
 * the first time any of them answers GetModelInfo (the smallest vocabulary and context among those
 * that answer) and kept from then on. While no replica has answered they are unknown, and requests go
 * on unchecked: the replicas check them too, and their answer reaches the client.
 */
export class TargetLimitsSource {
  private learning?: Promise<TargetLimits | undefined>;

  constructor(
    private known?: TargetLimits,
    private readonly ask: (address: string) => Promise<TargetLimits> = askTargetLimits,
  ) {}

  /** The limits, asking `addresses` (the healthy replicas) when they are not known yet; concurrent callers share one round. */
  get(addresses: readonly string[]): Promise<TargetLimits | undefined> {
    if (this.known) return Promise.resolve(this.known);
    if (addresses.length === 0) return Promise.resolve(undefined);
    this.learning ??= this.learn(addresses).finally(() => (this.learning = undefined));
    return this.learning;
  }

  private async learn(addresses: readonly string[]): Promise<TargetLimits | undefined> {
    const answers = await Promise.allSettled(addresses.map((address) => this.ask(address)));
    const limits = answers.flatMap((answer) => (answer.status === 'fulfilled' ? [answer.value] : []));
    if (limits.length === 0) return undefined;
    this.known = {
      vocabSize: Math.min(...limits.map((l) => l.vocabSize)),
      contextLength: Math.min(...limits.map((l) => l.contextLength)),
    };
    return this.known;
  }
}
