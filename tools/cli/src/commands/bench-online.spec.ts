import { generate, VirtualClock, type Drafter, type Mode, type TargetReplica } from '@dsi/core';
import { createSyntheticModel, draftWithModel, verifyWithModel } from '@dsi/models';
import { predictSynthetic, type SyntheticStack } from '@dsi/sim';

/**
 * The in-process reference: the orchestrator's scheduler over the synthetic backend's models driven by
 * the replicas' own draft and verify logic (what the drafter and target services run), each call
 * after a per-call overhead, all on a virtual clock (the benchmark's former in-CLI prediction). Only
 * the gRPC hops are missing.
 */
async function inProcessRun(stack: SyntheticStack, mode: Mode, prompt: readonly number[], maxNewTokens: number, lookahead: number) {
  const clock = new VirtualClock();
  const drafterModel = createSyntheticModel({ role: 'drafter', seed: stack.seed, acceptance: stack.a, ttftMs: stack.drafterMs, tpotMs: stack.drafterMs, clock });
  const drafter: Drafter = {
    async draft(call, signal) {
      await clock.sleep(stack.overheadMs, signal);
      return draftWithModel(drafterModel, call, signal);
    },
  };
  const targets: TargetReplica[] = Array.from({ length: mode === 'dsi' ? stack.servers : 1 }, (_, i) => {
    const model = createSyntheticModel({ role: 'target', seed: stack.seed, ttftMs: stack.targetMs, tpotMs: stack.targetMs, clock });
    return {
      id: `target-${i}`,
      async verify(call, signal) {
        await clock.sleep(stack.overheadMs, signal);
        return verifyWithModel(model, call, signal);
      },
    };
  });
  const result = await clock.run(
    generate(
      { requestId: 'reference', mode, prompt, maxNewTokens, lookahead, sampling: { rule: 'greedy', temperature: 1 }, eosTokenId: drafterModel.info.eosTokenId },
      { drafter, targets, clock },
    ),
  );
  return { wallMs: clock.now(), tokens: result.tokens };
}

/**
 * What the online benchmark relies on: its event-mode prediction (libs/sim) produces the very tokens
 * the synthetic services produce (it throws otherwise), and differs from them only by the timing of
 * the real processes. Here both sides run on a virtual clock, so they must agree exactly.
 */
describe('the online benchmark\'s prediction', () => {
  const prompts = ['bench one', 'bench two'].map((text) => [...Buffer.from(text, 'utf8')]);
  const stacks: SyntheticStack[] = [
    { seed: 1, a: 0.7, drafterMs: 5, targetMs: 50, servers: 4, overheadMs: 3.157 },
    { seed: 1, a: 0.9, drafterMs: 2.5, targetMs: 50.099, servers: 7, overheadMs: 0 },
    { seed: 3, a: 0.5, drafterMs: 15, targetMs: 50, servers: 2, overheadMs: 1 },
    // Round figures: drafts and verifications often end at the same instant.
    { seed: 2, a: 0.8, drafterMs: 10, targetMs: 50, servers: 3, overheadMs: 0 },
  ];

  it.each(stacks)('equals the in-process run of the synthetic replicas in tokens and virtual wall time (%j)', async (stack) => {
    for (const prompt of prompts) {
      for (const mode of ['nonsi', 'si', 'dsi'] as const) {
        for (const lookahead of [1, 3, 5]) {
          const predicted = await predictSynthetic(stack, mode, prompt, 48, lookahead);
          const reference = await inProcessRun(stack, mode, prompt, 48, lookahead);
          expect({ mode, lookahead, ...predicted }).toEqual({ mode, lookahead, ...reference });
        }
      }
    }
  });
});
