import { draftToken, verifyBlock, type DraftCall, type DraftResult, type VerifyCall, type VerifyResult } from '@dsi/core';
import type { ForwardResult, LanguageModel } from './backend';

/** A draft and the forwards it took. */
export interface DraftOutcome extends DraftResult {
  forwards: ForwardResult[];
}

/** A verification and the forward it took. */
export interface VerifyOutcome extends VerifyResult {
  forward: ForwardResult;
}

/**
 * What a drafter replica does for one Draft: the model run autoregressively (one cached forward per
 * token), choosing each token with the rule's drafter choice; stops early at end-of-sequence or a full
 * context. Shared by the drafter service and by simulations that run the same logic in process.
 */
export async function draftWithModel(model: LanguageModel, call: DraftCall, signal?: AbortSignal): Promise<DraftOutcome> {
  const { vocabSize: vocab, contextLength, eosTokenId } = model.info;
  const sequence = [...call.prefix];
  const tokens: number[] = [];
  const rows: Float32Array[] = [];
  const forwards: ForwardResult[] = [];
  while (tokens.length < call.maxTokens && sequence.length < contextLength) {
    signal?.throwIfAborted();
    const forward = await model.logits(call.requestId, sequence, sequence.length - 1, signal);
    forwards.push(forward);
    const drafted = draftToken(forward.logits, vocab, call.sampling, sequence.length);
    tokens.push(drafted.token);
    if (call.returnProbs && drafted.probs) rows.push(drafted.probs);
    sequence.push(drafted.token);
    if (drafted.token === eosTokenId) break;
  }
  const probs = call.returnProbs ? new Float32Array(rows.length * vocab) : undefined;
  rows.forEach((row, i) => probs!.set(row, i * vocab));
  return { tokens, probs, forwards };
}

/**
 * What a target replica does for one Verify: one forward over the tokens the request's cache lacks
 * (logits for the block's positions plus one), then the verification rule. Shared by the target
 * service and by simulations that run the same logic in process.
 */
export async function verifyWithModel(model: LanguageModel, call: VerifyCall, signal?: AbortSignal): Promise<VerifyOutcome> {
  const tokens = [...call.prefix, ...call.drafts];
  const forward = await model.logits(call.requestId, tokens, call.prefix.length - 1, signal);
  const verdict = verifyBlock({
    targetLogits: forward.logits,
    vocab: model.info.vocabSize,
    drafts: call.drafts,
    start: call.prefix.length,
    params: call.sampling,
    draftProbs: call.draftProbs,
  });
  return { ...verdict, forward };
}
