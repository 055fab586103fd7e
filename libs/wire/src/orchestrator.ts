/**
 * The orchestrator's wire: modes, finish reasons and generation metrics, to and from the ts-proto
 * messages. The orchestrator service reads requests and writes responses with these; `dsi generate`
 * builds its request with them.
 */
import { FinishReason as WireFinishReason, Mode as WireMode, type GenerationMetrics as WireMetrics } from '@dsi/proto';
import type { FinishReason, GenerationMetrics, Mode } from '@dsi/core';

/**
 * The wire's mode as the scheduler's mode, for a request the orchestrator is about to run: unspecified
 * means DSI; an unknown number gives undefined, which the service rejects naming the number.
 */
export function modeFromWire(mode: WireMode | undefined): Mode | undefined {
  switch (mode) {
    case undefined:
    case WireMode.MODE_UNSPECIFIED:
    case WireMode.MODE_DSI:
      return 'dsi';
    case WireMode.MODE_NON_SI:
      return 'nonsi';
    case WireMode.MODE_SI:
      return 'si';
    default:
      return undefined;
  }
}

/** The scheduler's mode as the wire enum: for a response, and for a client asking for one mode. */
export function modeToWire(mode: Mode): WireMode {
  return { nonsi: WireMode.MODE_NON_SI, si: WireMode.MODE_SI, dsi: WireMode.MODE_DSI }[mode];
}

/** Why a generation stopped, as the wire enum of its response. */
export function finishReasonToWire(reason: FinishReason): WireFinishReason {
  return {
    length: WireFinishReason.FINISH_REASON_LENGTH,
    eos: WireFinishReason.FINISH_REASON_EOS,
    stop: WireFinishReason.FINISH_REASON_STOP,
  }[reason];
}

/** A generation's figures as the wire message of its response (the wire leaves out verifyCalls). */
export function generationMetricsToWire(metrics: GenerationMetrics): WireMetrics {
  return {
    drafted: metrics.drafted,
    accepted: metrics.accepted,
    acceptanceRate: metrics.acceptanceRate,
    meanAcceptedLength: metrics.meanAcceptedLength,
    targetForwards: metrics.targetForwards,
    preemptions: metrics.preemptions,
    draftCalls: metrics.draftCalls,
    cancelledVerifications: metrics.cancelledVerifications,
    ttftMs: metrics.ttftMs,
    tpotMs: metrics.tpotMs,
    wallMs: metrics.wallMs,
    meanLookahead: metrics.meanLookahead,
    blocksPerCommit: metrics.blocksPerCommit,
  };
}
