import { DsiAttributes, DsiSpans } from '@dsi/telemetry';
import { buildTimeline, unionMs } from './model';
import { fixture, MAIN_TRACE as TRACE, REPLICA_A as A, REPLICA_B as B, REPLICA_C as C } from './testing';

describe('the timeline model', () => {
  const model = buildTimeline(fixture());

  it('is the request that ended last, with its attributes', () => {
    expect(model).toMatchObject({ traceId: TRACE, requestId: 'req-main', mode: 'dsi', lookahead: 4, tokens: 13, finishReason: 'length', wallMs: 100, endMs: 100 });
    expect(model.service).toBe('dsi-orchestrator');
  });

  it('has one drafter lane and one lane per replica, in address order', () => {
    expect(model.lanes.map((l) => l.label)).toEqual(['drafter', `target ${A}`, `target ${B}`, `target ${C}`]);
    expect(model.lanes.map((l) => l.bars.length)).toEqual([6, 2, 2, 2]);
  });

  it('orders the bars of a lane by start and reads their blocks and outcomes', () => {
    const b = model.lanes[2].bars;
    expect(b.map((bar) => [bar.startMs, bar.endMs, bar.outcome, bar.blockIndex, bar.blockStart, bar.blockSize, bar.accepted, bar.epoch])).toEqual([
      [20, 45, 'rejected', 1, 14, 4, 2, 0],
      [70, 96, 'cancelled', 5, 25, 4, 0, 1],
    ]);
    expect(model.lanes[0].bars.map((bar) => bar.outcome)).toEqual(['used', 'used', 'used', 'cancelled', 'used', 'stale']);
  });

  it('takes the compute of each call from the dsi.forward spans of the other processes', () => {
    const first = model.lanes[1].bars[0];
    expect(first.compute).toEqual([{ startMs: 11, endMs: 29 }]);
    expect(first.tokensComputed).toBe(5);
    expect(first.tokensReused).toBe(10);
  });

  it('puts the frontier at the prompt length and steps it at each commit', () => {
    expect(model.frontier).toEqual([
      { timeMs: 0, verifiedLength: 10 },
      { timeMs: 30, verifiedLength: 14 },
      { timeMs: 45, verifiedLength: 17 },
      { timeMs: 80, verifiedLength: 21 },
      { timeMs: 95, verifiedLength: 23 },
    ]);
    expect(model.preemptions).toEqual([
      { timeMs: 45, epoch: 1, position: 16 },
      { timeMs: 95, epoch: 2, position: 22 },
    ]);
  });

  it('counts busy time as the union of overlapping calls', () => {
    expect(unionMs([{ startMs: 0, endMs: 10 }, { startMs: 5, endMs: 12 }, { startMs: 20, endMs: 25 }, { startMs: 21, endMs: 22 }])).toBe(17);
    expect(unionMs([{ startMs: 5, endMs: 5 }, { startMs: 8, endMs: 6 }])).toBe(0);
    expect(model.lanes[0].busyMs).toBe(61);
    expect(model.lanes[0].utilisation).toBe(0.61);
  });

  it('handles a non-SI request: no drafter lane', () => {
    const early = buildTimeline(fixture(), { requestId: 'req-early' });
    expect(early.lanes.map((l) => l.label)).toEqual([`target ${A}`]);
    expect(early.frontier.map((p) => p.verifiedLength)).toEqual([5, 6, 7]);
  });

  it('leaves out the spans of a request nested in the same trace', () => {
    const spans = fixture();
    const main = spans.find((s) => s.name === DsiSpans.GENERATE && s.attributes[DsiAttributes.REQUEST_ID] === 'req-main')!;
    const verifyB = spans.find((s) => s.name === DsiSpans.VERIFY && s.attributes[DsiAttributes.REPLICA] === B)!;
    const nested = { ...main, spanId: 'nested-generate', parentSpanId: main.spanId, attributes: { [DsiAttributes.REQUEST_ID]: 'req-nested' } };
    const moved = spans.map((s) => (s === verifyB ? { ...s, parentSpanId: nested.spanId } : s));
    const timeline = buildTimeline([...moved, nested], { requestId: 'req-main' });
    expect(timeline.lanes.find((l) => l.replica === B)?.bars).toHaveLength(1);
  });
});
