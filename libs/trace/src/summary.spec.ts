import { buildTimeline } from './model';
import { formatSummary } from './summary';
import { fixture, MAIN_TRACE as TRACE, REPLICA_A as A, REPLICA_B as B, REPLICA_C as C } from './testing';

describe('the summary', () => {
  const model = buildTimeline(fixture());

  it('summarises busy time, waste, acceptance and preemptions', () => {
    const s = model.summary;
    expect(s.trace_id).toBe(TRACE);
    expect(s.wall_ms).toBe(100);
    expect(s.tokens).toBe(13);
    expect(s.lanes).toEqual([
      { lane: 'drafter', kind: 'drafter', busy_ms: 61, utilisation: 0.61, spans: 6 },
      { lane: `target ${A}`, kind: 'target', busy_ms: 45, utilisation: 0.45, spans: 2 },
      { lane: `target ${B}`, kind: 'target', busy_ms: 51, utilisation: 0.51, spans: 2 },
      { lane: `target ${C}`, kind: 'target', busy_ms: 47, utilisation: 0.47, spans: 2 },
    ]);
    expect(s.verifications).toEqual({ total: 6, committed: 2, rejected: 2, cancelled: 2, failed: 0, other: 0 });
    expect(s.wasted).toEqual({ cancelled_ms: 16 + 26, cancelled: 2 });
    expect(s.drafts).toEqual({ total: 6, used: 4, stale: 1, cancelled: 1, failed: 0, other: 0, tokens: 24 });
    expect(s.acceptance).toEqual({ accepted: 4 + 2 + 4 + 1, verified: 16, rate: 0.6875 });
    expect(s.preemptions).toBe(2);
    expect(s.commits).toBe(4);
    expect(s.verified_length).toEqual({ start: 10, end: 23 });
  });

  it('has no acceptance for a non-SI request', () => {
    const early = buildTimeline(fixture(), { requestId: 'req-early' });
    expect(early.summary.acceptance).toEqual({ accepted: 0, verified: 0, rate: null });
    expect(early.summary.drafts.total).toBe(0);
    expect(early.summary.verified_length).toEqual({ start: 5, end: 7 });
  });

  it('prints a readable terminal summary', () => {
    const text = formatSummary(model.summary);
    expect(text).toContain(`trace ${TRACE}, request req-main (dsi, k=4)`);
    expect(text).toContain('13 tokens in 100 ms (130.0 tokens/s), finish length');
    expect(text).toMatch(/target 127\.0\.0\.1:50062 +51\.0 +51% +2/);
    expect(text).toContain('2 committed, 2 rejected, 2 cancelled (wasted 42.0 ms on cancelled)');
    expect(text).toContain('acceptance: 11/16 drafts = 0.688');
    expect(text).toContain('preemptions: 2');
  });

  it('leaves the draft line out when there were no drafts', () => {
    const text = formatSummary(buildTimeline(fixture(), { requestId: 'req-early' }).summary);
    expect(text).not.toContain('drafts:');
    expect(text).toContain('acceptance: 0/0 drafts\n');
  });
});
