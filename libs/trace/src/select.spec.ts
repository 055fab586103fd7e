import { DsiAttributes } from '@dsi/telemetry';
import { TraceInputError } from './errors';
import { buildTimeline } from './model';
import { listRequests, selectRequest } from './select';
import { fixture, MAIN_TRACE as TRACE, OTHER_TRACE as OTHER, record } from './testing';

describe('selecting a request', () => {
  it('lists the dsi.generate spans by end time', () => {
    expect(listRequests(fixture()).map((r) => r.requestId)).toEqual(['req-early', 'req-main']);
  });

  it('defaults to the request that ended last, not the last one in the file', () => {
    expect(selectRequest(fixture()).attributes[DsiAttributes.REQUEST_ID]).toBe('req-main');
    expect(buildTimeline(fixture()).traceId).toBe(TRACE);
  });

  it('selects by trace id, a unique prefix of one (any case), or a request id', () => {
    expect(buildTimeline(fixture(), { traceId: OTHER }).requestId).toBe('req-early');
    expect(buildTimeline(fixture(), { traceId: 'FFFF00' }).requestId).toBe('req-early');
    expect(buildTimeline(fixture(), { requestId: 'req-early' }).traceId).toBe(OTHER);
    expect(buildTimeline(fixture(), { traceId: TRACE, requestId: 'req-main' }).requestId).toBe('req-main');
  });

  it('names the available trace ids for an unknown one', () => {
    const attempt = () => selectRequest(fixture(), { traceId: '0123456789' }, 'run.jsonl');
    expect(attempt).toThrow(TraceInputError);
    expect(attempt).toThrow(`no dsi.generate span with trace id 0123456789 in run.jsonl; available: ${TRACE} (request req-main, dsi), ${OTHER} (request req-early, nonsi)`);
  });

  it('refuses an ambiguous prefix and an unknown request id', () => {
    const spans = fixture();
    expect(() => selectRequest([...spans, { ...spans[spans.length - 2], traceId: 'ffff9999', spanId: 'x' }], { traceId: 'ffff' })).toThrow('is ambiguous');
    expect(() => selectRequest(spans, { requestId: 'nope' })).toThrow('no dsi.generate span with request id nope');
  });

  it('explains a file without a dsi.generate span', () => {
    const spans = [record(OTHER, 'dsi.simulate', null, 0, 1)];
    expect(() => selectRequest(spans, {}, 'sim.jsonl')).toThrow(TraceInputError);
    expect(() => selectRequest(spans, {}, 'sim.jsonl')).toThrow('sim.jsonl has no dsi.generate span (1 spans read)');
  });
});

describe('malformed input', () => {
  it('refuses an empty trace id', () => {
    expect(() => selectRequest(fixture(), { traceId: '  ' })).toThrow(new TraceInputError('the trace id to select is empty'));
  });

  it('names the span whose time is not decimal Unix nanoseconds', () => {
    const spans = fixture().map((s) => (s.attributes[DsiAttributes.REQUEST_ID] === 'req-early' ? { ...s, endTimeUnixNano: '17.5e18' } : s));
    expect(() => listRequests(spans)).toThrow(TraceInputError);
    expect(() => listRequests(spans)).toThrow('has a malformed time "17.5e18" (expected decimal Unix nanoseconds)');
  });
});
