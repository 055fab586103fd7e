/**
 * `dsi estimate` against running services: a target and a drafter seen one greedy token per call, as
 * the orchestrator sees them (round trip included). Loaded lazily: importing it loads @grpc/grpc-js.
 *
 * - Target: `dsi.v1.TargetService/Verify` with the prefix so far and no drafts is one greedy token
 *   (one forward over what the request's KV cache lacks); with drafts, one forward over them too.
 * - Drafter: `dsi.v1.DrafterService/Draft` with max_tokens 1 is one forward and one token.
 * Every generation runs under its own request id, released afterwards.
 */
import { randomUUID } from 'node:crypto';
import type { AcceptancePrediction, GreedyStepper, StepResult } from '@dsi/models';
import {
  DrafterServiceClient,
  DrafterServiceReleaseRequest,
  DraftRequest,
  TargetServiceClient,
  TargetServiceReleaseRequest,
  VerificationRule,
  VerifyRequest,
} from '@dsi/proto';
import { callUnary, createChannelOptions } from '@dsi/rpc';
import { callMetadata, channelCredentials, explainRemote } from '../remote';

/** A deadline per call: a forward of a large model on a slow host, far from a hung service. */
const CALL_DEADLINE_MS = 120_000;
const GREEDY = { rule: VerificationRule.VERIFICATION_RULE_GREEDY, temperature: 1 };

/** A service as a {@link GreedyStepper} that reports the model time the service measured. */
export interface RemoteStepper extends GreedyStepper {
  readonly role: 'target' | 'drafter';
  readonly address: string;
  /** Request ids no one else uses on a shared service: `dsi-estimate-PID-RANDOM-`. */
  readonly requestPrefix: string;
  close(): void;
}

function requestPrefix(role: string): string {
  return `dsi-estimate-${role}-${process.pid}-${randomUUID().slice(0, 8)}-`;
}

/** The target service at `address`: Verify(prefix = sequence, drafts) per step. */
export function targetStepper(address: string): RemoteStepper {
  const client = new TargetServiceClient(address, channelCredentials(), createChannelOptions());
  return {
    role: 'target',
    address,
    requestPrefix: requestPrefix('target'),
    async step(requestId, sequence, drafts = []): Promise<StepResult> {
      try {
        const request = VerifyRequest.fromPartial({ requestId, prefix: [...sequence], drafts: [...drafts], sampling: GREEDY });
        const response = await callUnary(client, 'verify', request, { deadlineMs: CALL_DEADLINE_MS, metadata: callMetadata() });
        if (response.tokens.length === 0) throw new Error('Verify returned no token');
        return { token: response.tokens[0], modelMs: response.stats?.modelMs, computedTokens: response.stats?.computedTokens };
      } catch (error) {
        throw await explainRemote('target', address, error);
      }
    },
    async release(requestId) {
      try {
        await callUnary(client, 'release', TargetServiceReleaseRequest.fromPartial({ requestId }), { deadlineMs: CALL_DEADLINE_MS, metadata: callMetadata() });
      } catch (error) {
        throw await explainRemote('target', address, error);
      }
    },
    close: () => client.close(),
  };
}

/**
 * The drafter service at `address`: Draft(prefix = sequence + drafts, max_tokens 1) per step (the
 * drafts are more prefix to a drafter: one forward computes them all, as a Verify block does).
 */
export function drafterStepper(address: string): RemoteStepper {
  const client = new DrafterServiceClient(address, channelCredentials(), createChannelOptions());
  return {
    role: 'drafter',
    address,
    requestPrefix: requestPrefix('drafter'),
    async step(requestId, sequence, drafts = []): Promise<StepResult> {
      try {
        const request = DraftRequest.fromPartial({ requestId, prefix: [...sequence, ...drafts], maxTokens: 1, sampling: GREEDY });
        const response = await callUnary(client, 'draft', request, { deadlineMs: CALL_DEADLINE_MS, metadata: callMetadata() });
        if (response.tokens.length === 0) throw new Error('Draft returned no token (end of context?)');
        return { token: response.tokens[0], modelMs: response.stats?.modelMs, computedTokens: response.stats?.computedTokens };
      } catch (error) {
        throw await explainRemote('drafter', address, error);
      }
    },
    async release(requestId) {
      try {
        await callUnary(client, 'release', DrafterServiceReleaseRequest.fromPartial({ requestId }), { deadlineMs: CALL_DEADLINE_MS, metadata: callMetadata() });
      } catch (error) {
        throw await explainRemote('drafter', address, error);
      }
    },
    close: () => client.close(),
  };
}

/**
 * The study's acceptance measurement through the services: for each prompt the target generates
 * `tokens` greedy tokens (one Verify per token on one request), and at each generated position the
 * drafter predicts one token from the target's prefix (Draft with the prompt and the target's tokens
 * so far, max_tokens 1, on one request so each call computes one new token). Both requests are
 * released. Returns the predictions for `acceptanceReport`.
 */
export async function remoteAcceptance(
  target: RemoteStepper,
  drafter: RemoteStepper,
  prompts: ReadonlyArray<{ text: string; ids: readonly number[] }>,
  tokens: number,
  onProgress?: (done: number, total: number) => void,
): Promise<AcceptancePrediction[]> {
  const predictions: AcceptancePrediction[] = [];
  for (const [index, prompt] of prompts.entries()) {
    const targetRequest = `${target.requestPrefix}acceptance-${index}`;
    const drafterRequest = `${drafter.requestPrefix}acceptance-${index}`;
    const generated: number[] = [];
    const drafted: number[] = [];
    try {
      const sequence = [...prompt.ids];
      for (let k = 0; k < tokens; k++) {
        const { token } = await target.step(targetRequest, sequence);
        drafted.push((await drafter.step(drafterRequest, sequence)).token);
        generated.push(token);
        sequence.push(token);
      }
    } finally {
      await Promise.all([target.release(targetRequest), drafter.release(drafterRequest)]);
    }
    predictions.push({ prompt: prompt.text, generated, drafted });
    onProgress?.(index + 1, prompts.length);
  }
  return predictions;
}
