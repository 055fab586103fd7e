/*
 * Span records for tests (of this package and of the `dsi trace` command): two generation requests
 * built programmatically, times in ms from a fixed epoch. Not part of the package's API: import it as
 * `@dsi/trace/testing` from specs only (jest maps it to this source file).
 */
import { DsiAttributes, DsiEvents, DsiSpans, type SpanRecord } from '@dsi/telemetry';

const T0 = 1_750_000_000_000_000_000n;
/** Unix nanoseconds of `ms` milliseconds after the fixtures' epoch (a fixed instant), as span files write them. */
export const ns = (ms: number) => (T0 + BigInt(Math.round(ms * 1e6))).toString();
let ids = 0;
const nextId = () => (++ids).toString(16).padStart(16, '0');

type Attrs = SpanRecord['attributes'];

/** One span record as the JSON-lines exporter writes it; ids are unique within a test run. */
export function record(
  traceId: string,
  name: string,
  parent: string | null,
  startMs: number,
  endMs: number,
  attributes: Attrs = {},
  service = 'dsi-orchestrator',
  events: SpanRecord['events'] = [],
): SpanRecord {
  return {
    traceId,
    spanId: nextId(),
    parentSpanId: parent,
    name,
    kind: 'INTERNAL',
    startTimeUnixNano: ns(startMs),
    endTimeUnixNano: ns(endMs),
    durationMs: endMs - startMs,
    attributes,
    status: { code: 'UNSET' },
    events,
    links: [],
    resource: { 'service.name': service },
    scope: { name: 'dsi' },
  };
}

/** A span event at `ms` milliseconds after the epoch. */
export const event = (name: string, ms: number, attributes: Attrs) => ({ name, timeUnixNano: ns(ms), attributes });

/** The three target replicas of {@link dsiRequest}, in address order. */
export const REPLICA_A = '127.0.0.1:50061';
/** See {@link REPLICA_A}. */
export const REPLICA_B = '127.0.0.1:50062';
/** See {@link REPLICA_A}. */
export const REPLICA_C = '127.0.0.1:50063';
const A = REPLICA_A;
const B = REPLICA_B;
const C = REPLICA_C;
/** Trace id of {@link dsiRequest} (request `req-main`). */
export const MAIN_TRACE = 'aaaa1111bbbb2222cccc3333dddd4444';
/** Trace id of {@link earlierRequest} (request `req-early`) and of a `dsi.simulate` span. */
export const OTHER_TRACE = 'ffff0000eeee1111dddd2222cccc3333';
const TRACE = MAIN_TRACE;
const OTHER = OTHER_TRACE;

/**
 * One DSI request (k=4, prompt 10, three replicas), 0..100 ms:
 *   drafter   d1 0-10 used, d2 10-20 used, d3 20-30 used, d4 30-46 cancelled, d5 46-55 used, d6 58-64 stale
 *   A         #0 10-30 committed 4/4,  #3 55-80 committed 4/4
 *   B         #1 20-45 rejected 2/4 (preemption at 45),  #5 70-96 cancelled
 *   C         #2 30-46 cancelled,       #4 64-95 rejected 1/4 (preemption at 95)
 * plus gRPC client/server spans and dsi.forward spans of the drafter and target processes.
 */
export function dsiRequest(): SpanRecord[] {
  const spans: SpanRecord[] = [];
  const server = record(TRACE, 'grpc.dsi.v1.OrchestratorService/Generate', null, -1, 101);
  const generate = record(
    TRACE,
    DsiSpans.GENERATE,
    server.spanId,
    0,
    100,
    {
      [DsiAttributes.REQUEST_ID]: 'req-main',
      [DsiAttributes.MODE]: 'dsi',
      [DsiAttributes.LOOKAHEAD]: 4,
      [DsiAttributes.TOKENS]: 13,
      [DsiAttributes.FINISH_REASON]: 'length',
    },
    'dsi-orchestrator',
    [
      event(DsiEvents.COMMIT, 30, { [DsiAttributes.TOKENS]: 4, [DsiAttributes.VERIFIED_LENGTH]: 14 }),
      event(DsiEvents.COMMIT, 45, { [DsiAttributes.TOKENS]: 3, [DsiAttributes.VERIFIED_LENGTH]: 17 }),
      event(DsiEvents.PREEMPTION, 45, { [DsiAttributes.EPOCH]: 1, [DsiAttributes.POSITION]: 16 }),
      event(DsiEvents.COMMIT, 80, { [DsiAttributes.TOKENS]: 4, [DsiAttributes.VERIFIED_LENGTH]: 21 }),
      event(DsiEvents.COMMIT, 95, { [DsiAttributes.TOKENS]: 2, [DsiAttributes.VERIFIED_LENGTH]: 23 }),
      event(DsiEvents.PREEMPTION, 95, { [DsiAttributes.EPOCH]: 2, [DsiAttributes.POSITION]: 22 }),
    ],
  );
  const draft = (start: number, end: number, outcome: string, epoch: number, prefix: number) => {
    const d = record(TRACE, DsiSpans.DRAFT, generate.spanId, start, end, {
      [DsiAttributes.EPOCH]: epoch,
      [DsiAttributes.PREFIX_LENGTH]: prefix,
      [DsiAttributes.TOKENS]: 4,
      [DsiAttributes.OUTCOME]: outcome,
    });
    const client = record(TRACE, 'grpc.dsi.v1.DrafterService/Draft', d.spanId, start + 0.1, end - 0.1);
    const srv = record(TRACE, 'grpc.dsi.v1.DrafterService/Draft', client.spanId, start + 0.2, end - 0.2, {}, 'dsi-drafter');
    const fwd = record(TRACE, DsiSpans.FORWARD, srv.spanId, start + 0.5, end - 0.5, { [DsiAttributes.TOKENS_COMPUTED]: 4, [DsiAttributes.TOKENS_REUSED]: prefix }, 'dsi-drafter');
    spans.push(d, client, srv, fwd);
  };
  const verify = (replica: string, index: number, start: number, end: number, outcome: string, blockStart: number, accepted: number, epoch: number) => {
    const v = record(TRACE, DsiSpans.VERIFY, generate.spanId, start, end, {
      [DsiAttributes.REPLICA]: replica,
      [DsiAttributes.BLOCK_INDEX]: index,
      [DsiAttributes.EPOCH]: epoch,
      [DsiAttributes.BLOCK_START]: blockStart,
      [DsiAttributes.BLOCK_SIZE]: 4,
      [DsiAttributes.ACCEPTED]: accepted,
      [DsiAttributes.OUTCOME]: outcome,
    });
    const client = record(TRACE, 'grpc.dsi.v1.TargetService/Verify', v.spanId, start + 0.1, end - 0.1);
    const srv = record(TRACE, 'grpc.dsi.v1.TargetService/Verify', client.spanId, start + 0.2, end - 0.2, {}, 'dsi-target');
    const fwd = record(TRACE, DsiSpans.FORWARD, srv.spanId, start + 1, end - 1, { [DsiAttributes.TOKENS_COMPUTED]: 5, [DsiAttributes.TOKENS_REUSED]: blockStart }, 'dsi-target');
    spans.push(v, client, srv, fwd);
  };
  draft(0, 10, 'used', 0, 10);
  draft(10, 20, 'used', 0, 14);
  verify(A, 0, 10, 30, 'committed', 10, 4, 0);
  draft(20, 30, 'used', 0, 18);
  verify(B, 1, 20, 45, 'rejected', 14, 2, 0);
  draft(30, 46, 'cancelled', 0, 22);
  verify(C, 2, 30, 46, 'cancelled', 18, 0, 0);
  draft(46, 55, 'used', 1, 17);
  verify(A, 3, 55, 80, 'committed', 17, 4, 1);
  draft(58, 64, 'stale', 1, 21);
  verify(C, 4, 64, 95, 'rejected', 21, 1, 1);
  verify(B, 5, 70, 96, 'cancelled', 25, 0, 1);
  // Written by several processes: the orchestrator's root spans end last.
  spans.push(generate, server);
  return spans;
}

/** A non-SI request in another trace that ended before the main one (but is written after it). */
export function earlierRequest(): SpanRecord[] {
  const generate = record(
    OTHER,
    DsiSpans.GENERATE,
    null,
    -500,
    -400,
    { [DsiAttributes.REQUEST_ID]: 'req-early', [DsiAttributes.MODE]: 'nonsi', [DsiAttributes.LOOKAHEAD]: 0, [DsiAttributes.TOKENS]: 2 },
    'dsi-orchestrator',
    [
      event(DsiEvents.COMMIT, -450, { [DsiAttributes.TOKENS]: 1, [DsiAttributes.VERIFIED_LENGTH]: 6 }),
      event(DsiEvents.COMMIT, -400, { [DsiAttributes.TOKENS]: 1, [DsiAttributes.VERIFIED_LENGTH]: 7 }),
    ],
  );
  const verify = (index: number, start: number, end: number) =>
    record(OTHER, DsiSpans.VERIFY, generate.spanId, start, end, {
      [DsiAttributes.REPLICA]: A,
      [DsiAttributes.BLOCK_INDEX]: index,
      [DsiAttributes.BLOCK_START]: 5 + index,
      [DsiAttributes.BLOCK_SIZE]: 0,
      [DsiAttributes.ACCEPTED]: 0,
      [DsiAttributes.OUTCOME]: 'committed',
    });
  return [verify(0, -500, -450), verify(1, -450, -400), generate];
}

/** A span file of two requests and a simulation, the main request not written last. */
export function fixture(): SpanRecord[] {
  return [...dsiRequest(), ...earlierRequest(), record(OTHER, 'dsi.simulate', null, 200, 300, {}, 'dsi-simulator')];
}
