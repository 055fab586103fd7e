import { generate, VirtualClock, type Drafter, type Mode, type TargetReplica } from '@dsi/core';
import { createSyntheticModel, draftWithModel, verifyWithModel } from '@dsi/models';

/** A synthetic stack as `dsi serve ... --backend synthetic` runs it, to predict on a virtual clock. */
export interface SyntheticStack {
  /** The oracle seed (`--synthetic-seed`, default 1). */
  seed: number;
  a: number;
  drafterMs: number;
  targetMs: number;
  servers: number;
  /** Per-call cost of the network and the services (each Draft and each Verify pays it once). */
  overheadMs: number;
}

/**
 * Event-mode prediction of one request on a synthetic stack: the libs/core scheduler (the
 * orchestrator's code) over in-process replicas that run the services' own draft and verify logic on
 * synthetic models, all on a virtual clock. Same seed and prompt as the real run, so the same tokens
 * are drafted, accepted and rejected: the prediction differs from the measurement only by timing.
 */
export async function predictSynthetic(stack: SyntheticStack, mode: Mode, prompt: readonly number[], maxNewTokens: number, lookahead: number) {
  const clock = new VirtualClock();
  const drafterModel = createSyntheticModel({ role: 'drafter', seed: stack.seed, acceptance: stack.a, ttftMs: stack.drafterMs, tpotMs: stack.drafterMs, clock });
  const drafter: Drafter = {
    async draft(call, signal) {
      await clock.sleep(stack.overheadMs, signal);
      return draftWithModel(drafterModel, call, signal);
    },
  };
  const targets: TargetReplica[] = Array.from({ length: stack.servers }, (_, i) => {
    const model = createSyntheticModel({ role: 'target', seed: stack.seed, ttftMs: stack.targetMs, tpotMs: stack.targetMs, clock });
    return {
      id: `target-${i}`,
      async verify(call, signal) {
        await clock.sleep(stack.overheadMs, signal);
        return verifyWithModel(model, call, signal);
      },
    };
  });
  const started = clock.now();
  const result = await clock.run(
    generate(
      { requestId: 'predict', mode, prompt, maxNewTokens, lookahead, sampling: { rule: 'greedy', temperature: 1 }, eosTokenId: 257 },
      { drafter, targets: mode === 'dsi' ? targets : targets.slice(0, 1), clock },
    ),
  );
  return { wallMs: clock.now() - started, tokens: result.tokens };
}
