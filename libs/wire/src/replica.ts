/**
 * The drafter's and target's wire: verification rules, sampling settings, model descriptions and
 * forward statistics, to and from the ts-proto messages. The replica services answer with these and
 * the orchestrator's clients call with them.
 */
import { VerificationRule as WireRule, type ForwardStats, type ModelInfo as WireModelInfo, type Sampling } from '@dsi/proto';
import type { SamplingParams, VerificationRule } from '@dsi/core';
import type { ForwardResult, ModelInfo } from '@dsi/models';

/** The wire's rule enum as the rule name (unspecified means greedy); an unknown number stays visible. */
export function ruleFromWire(rule: WireRule | undefined): VerificationRule {
  switch (rule) {
    case undefined:
    case WireRule.VERIFICATION_RULE_UNSPECIFIED:
    case WireRule.VERIFICATION_RULE_GREEDY:
      return 'greedy';
    case WireRule.VERIFICATION_RULE_SEEDED:
      return 'seeded';
    case WireRule.VERIFICATION_RULE_REJECTION:
      return 'rejection';
    default:
      return `rule ${rule}` as VerificationRule;
  }
}

/** The rule name as the wire enum. */
export function ruleToWire(rule: VerificationRule): WireRule {
  return { greedy: WireRule.VERIFICATION_RULE_GREEDY, seeded: WireRule.VERIFICATION_RULE_SEEDED, rejection: WireRule.VERIFICATION_RULE_REJECTION }[rule];
}

/** Wire sampling settings as sampling parameters (temperature defaults to 1). Validate the result. */
export function samplingFromWire(sampling: Sampling | undefined): SamplingParams {
  return { rule: ruleFromWire(sampling?.rule), temperature: sampling?.temperature ?? 1, seed: sampling?.seed };
}

/** Sampling parameters as the wire message. */
export function samplingToWire(params: SamplingParams): Sampling {
  return { rule: ruleToWire(params.rule), temperature: params.temperature, seed: params.seed };
}

/** A model's description as the wire message, with the replica's per-call limit. */
export function modelInfoToWire(info: ModelInfo, maxTokensPerCall: number): WireModelInfo {
  return {
    name: info.name,
    backend: info.backend,
    vocabSize: info.vocabSize,
    contextLength: info.contextLength,
    eosTokenId: info.eosTokenId,
    maxTokensPerCall,
  };
}

/** Adds up the cost of forwards for the wire. */
export function statsToWire(results: readonly ForwardResult[]): ForwardStats {
  return {
    computedTokens: results.reduce((s, r) => s + r.computedTokens, 0),
    reusedTokens: results.reduce((s, r) => s + r.reusedTokens, 0),
    forwards: results.length,
    modelMs: results.reduce((s, r) => s + (r.modelMs ?? 0), 0),
    batchRequests: results.reduce((most, r) => Math.max(most, r.batchRequests ?? 1), results.length > 0 ? 1 : 0),
    queueMs: results.reduce((s, r) => s + (r.queueMs ?? 0), 0),
    batchTokens: results.reduce((s, r) => s + (r.batchTokens ?? r.computedTokens), 0),
  };
}
