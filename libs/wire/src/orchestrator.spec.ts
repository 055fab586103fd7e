import { FinishReason as WireFinishReason, GenerationMetrics as WireMetrics, Mode as WireMode } from '@dsi/proto';
import { MODES, type GenerationMetrics } from '@dsi/core';
import { finishReasonToWire, generationMetricsToWire, modeFromWire, modeToWire } from './orchestrator';

describe('orchestrator wire', () => {
  it.each(MODES)('carries the %s mode there and back', (mode) => {
    expect(modeFromWire(modeToWire(mode))).toBe(mode);
  });

  it('runs DSI when the caller names no mode, and gives nothing for a mode it does not know', () => {
    expect(modeFromWire(WireMode.MODE_UNSPECIFIED)).toBe('dsi');
    expect(modeFromWire(undefined)).toBe('dsi');
    expect(modeFromWire(WireMode.UNRECOGNIZED)).toBeUndefined();
    expect(modeFromWire(9 as WireMode)).toBeUndefined();
  });

  it('names why a generation stopped', () => {
    expect(finishReasonToWire('length')).toBe(WireFinishReason.FINISH_REASON_LENGTH);
    expect(finishReasonToWire('eos')).toBe(WireFinishReason.FINISH_REASON_EOS);
    expect(finishReasonToWire('stop')).toBe(WireFinishReason.FINISH_REASON_STOP);
  });

  it('sends every figure the wire has, and leaves out verify calls, which it has not', () => {
    const metrics: GenerationMetrics = {
      drafted: 40,
      accepted: 30,
      acceptanceRate: 0.75,
      meanAcceptedLength: 3.5,
      targetForwards: 12,
      preemptions: 2,
      draftCalls: 9,
      verifyCalls: 13,
      cancelledVerifications: 1,
      meanLookahead: 4.25,
      blocksPerCommit: 1.5,
      ttftMs: 4.5,
      tpotMs: 1.25,
      wallMs: 50,
    };
    const wire = generationMetricsToWire(metrics);
    const { verifyCalls: _left, ...rest } = metrics;
    expect(wire).toEqual(rest);
    expect(WireMetrics.decode(WireMetrics.encode(wire).finish())).toEqual(wire);
  });
});
