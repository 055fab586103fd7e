import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { DsiAttributes, DsiEvents, DsiSpans, type SpanRecord } from '@dsi/telemetry';
import { UsageError } from '../errors';
import { runTrace, traceCommand } from '../commands/trace';
import { buildTimeline, formatSummary, listRequests, selectRequest, timelineHtml, timelineSvg, unionMs } from './timeline';

// ----------------------------------------------------------------------------------------------
// Fixtures: span records built programmatically, times in ms from a fixed epoch.

const T0 = 1_750_000_000_000_000_000n;
const ns = (ms: number) => (T0 + BigInt(Math.round(ms * 1e6))).toString();
let ids = 0;
const nextId = () => (++ids).toString(16).padStart(16, '0');

type Attrs = SpanRecord['attributes'];

function record(
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

const event = (name: string, ms: number, attributes: Attrs) => ({ name, timeUnixNano: ns(ms), attributes });

const A = '127.0.0.1:50061';
const B = '127.0.0.1:50062';
const C = '127.0.0.1:50063';
const TRACE = 'aaaa1111bbbb2222cccc3333dddd4444';
const OTHER = 'ffff0000eeee1111dddd2222cccc3333';

/**
 * One DSI request (k=4, prompt 10, three replicas), 0..100 ms:
 *   drafter   d1 0-10 used, d2 10-20 used, d3 20-30 used, d4 30-46 cancelled, d5 46-55 used, d6 58-64 stale
 *   A         #0 10-30 committed 4/4,  #3 55-80 committed 4/4
 *   B         #1 20-45 rejected 2/4 (preemption at 45),  #5 70-96 cancelled
 *   C         #2 30-46 cancelled,       #4 64-95 rejected 1/4 (preemption at 95)
 * plus gRPC client/server spans and dsi.forward spans of the drafter and target processes.
 */
function dsiRequest(): SpanRecord[] {
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
function earlierRequest(): SpanRecord[] {
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

function fixture(): SpanRecord[] {
  return [...dsiRequest(), ...earlierRequest(), record(OTHER, 'dsi.simulate', null, 200, 300, {}, 'dsi-simulator')];
}

function count(text: string, pattern: RegExp): number {
  return (text.match(pattern) ?? []).length;
}

function laneLabels(svg: string): string[] {
  return [...svg.matchAll(/class="lane-label"[^>]*>([^<]*)</g)].map((m) => m[1]);
}

// ----------------------------------------------------------------------------------------------

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
    expect(attempt).toThrow(UsageError);
    expect(attempt).toThrow(`no dsi.generate span with trace id 0123456789 in run.jsonl; available: ${TRACE} (request req-main, dsi), ${OTHER} (request req-early, nonsi)`);
  });

  it('refuses an ambiguous prefix and an unknown request id', () => {
    const spans = fixture();
    expect(() => selectRequest([...spans, { ...spans[spans.length - 2], traceId: 'ffff9999', spanId: 'x' }], { traceId: 'ffff' })).toThrow('is ambiguous');
    expect(() => selectRequest(spans, { requestId: 'nope' })).toThrow('no dsi.generate span with request id nope');
  });

  it('explains a file without a dsi.generate span', () => {
    const spans = [record(OTHER, 'dsi.simulate', null, 0, 1)];
    expect(() => selectRequest(spans, {}, 'sim.jsonl')).toThrow(UsageError);
    expect(() => selectRequest(spans, {}, 'sim.jsonl')).toThrow('sim.jsonl has no dsi.generate span (1 spans read)');
  });
});

describe('the timeline model and summary', () => {
  const model = buildTimeline(fixture());

  it('has one drafter lane and one lane per replica, in address order', () => {
    expect(model.lanes.map((l) => l.label)).toEqual(['drafter', `target ${A}`, `target ${B}`, `target ${C}`]);
    expect(model.lanes.map((l) => l.bars.length)).toEqual([6, 2, 2, 2]);
  });

  it('takes the compute of each call from the dsi.forward spans of the other processes', () => {
    const first = model.lanes[1].bars[0];
    expect(first.compute).toEqual([{ startMs: 11, endMs: 29 }]);
    expect(first.tokensComputed).toBe(5);
    expect(first.tokensReused).toBe(10);
  });

  it('summarises busy time, waste, acceptance and preemptions', () => {
    const s = model.summary;
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
  });

  it('handles a non-SI request: no drafter lane, no acceptance', () => {
    const early = buildTimeline(fixture(), { requestId: 'req-early' });
    expect(early.lanes.map((l) => l.label)).toEqual([`target ${A}`]);
    expect(early.summary.acceptance.rate).toBeNull();
    expect(early.summary.verified_length).toEqual({ start: 5, end: 7 });
    expect(timelineSvg(early)).toContain('NONSI, k=0');
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
});

describe('the SVG and HTML', () => {
  const model = buildTimeline(fixture());
  const svg = timelineSvg(model);

  it('is one balanced SVG document', () => {
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(count(svg, /<svg[\s>]/g)).toBe(1);
    for (const tag of ['g', 'text', 'title', 'pattern', 'defs', 'circle', 'line']) {
      const open = count(svg, new RegExp(`<${tag}[\\s>]`, 'g'));
      const selfClosed = count(svg, new RegExp(`<${tag}[^>]*/>`, 'g'));
      const close = count(svg, new RegExp(`</${tag}>`, 'g'));
      expect({ tag, balance: open - selfClosed - close }).toEqual({ tag, balance: 0 });
    }
    expect(svg).not.toMatch(/NaN|undefined|Infinity/);
  });

  it('draws one labelled lane per drafter and replica', () => {
    expect(laneLabels(svg)).toEqual(['drafter', `target ${A}`, `target ${B}`, `target ${C}`]);
    expect(count(svg, /<g class="lane"/g)).toBe(4);
  });

  it('draws one bar per span, coloured by outcome', () => {
    const bars = (kind: string, outcome: string) => count(svg, new RegExp(`class="bar" data-kind="${kind}" data-outcome="${outcome}"`, 'g'));
    expect(bars('verify', 'committed')).toBe(2);
    expect(bars('verify', 'rejected')).toBe(2);
    expect(bars('verify', 'cancelled')).toBe(2);
    expect(bars('draft', 'used')).toBe(4);
    expect(bars('draft', 'stale')).toBe(1);
    expect(bars('draft', 'cancelled')).toBe(1);
    expect(count(svg, /class="bar"/g)).toBe(12);
    expect(svg).toContain('fill="url(#hatch-cancelled)"');
  });

  it('writes the block and accepted/size in bars that have room', () => {
    expect(svg).toContain('>#0 4/4</text>');
    expect(svg).toContain('>#1 2/4</text>');
    expect(svg).toContain('>#2</text>');
  });

  it('marks each preemption across the lanes, and draws the frontier', () => {
    expect(count(svg, /<line class="preemption"/g)).toBe(2);
    expect(svg).toContain('\u2716 @16');
    expect(count(svg, /<path class="frontier"/g)).toBe(1);
    expect(count(svg, /<circle class="commit"/g)).toBe(4);
  });

  it('titles the picture with mode, k, tokens and wall time, and explains hovering', () => {
    expect(svg).toContain('DSI, k=4 \u00b7 13 tokens in 100 ms');
    expect(svg).toContain('time since the request started (ms)');
    expect(svg).toContain('<title>verify block #1 on 127.0.0.1:50062: rejected\n2 of 4 drafts accepted, positions 14..17');
  });

  it('embeds the SVG in a standalone page with the summary', () => {
    const html = timelineHtml(model);
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html).toContain('<title>DSI trace req-main</title>');
    expect(html).toContain(svg.trimEnd());
    expect(html).toContain('<th>acceptance</th><td>11/16 = 0.688</td>');
    expect(html).toContain('<th>wasted on cancelled verifications</th><td>42.0 ms in 2</td>');
    expect(html.trimEnd().endsWith('</html>')).toBe(true);
  });

  it('escapes what it did not write itself', () => {
    const spans = fixture().map((s) =>
      s.name === DsiSpans.VERIFY && s.attributes[DsiAttributes.REPLICA] === A ? { ...s, attributes: { ...s.attributes, [DsiAttributes.REPLICA]: 'a<b>&"c"' } } : s,
    );
    const text = timelineSvg(buildTimeline(spans));
    expect(text).toContain('target a&lt;b&gt;&amp;&quot;c&quot;');
    expect(text).not.toContain('a<b>');
  });
});

// ----------------------------------------------------------------------------------------------

describe('dsi trace', () => {
  let dir: string;
  let file: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-trace-'));
    file = path.join(dir, 'run.jsonl');
    fs.writeFileSync(file, fixture().map((s) => JSON.stringify(s) + '\n').join(''));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('writes the SVG or the HTML and reports the summary', () => {
    const svgOut = path.join(dir, 'out', 'timeline.svg');
    const report = runTrace(file, { out: svgOut });
    expect(report.out).toBe(svgOut);
    expect(report.trace_id).toBe(TRACE);
    expect(report.wasted.cancelled_ms).toBe(42);
    expect(fs.readFileSync(svgOut, 'utf8').startsWith('<svg')).toBe(true);
    const htmlOut = path.join(dir, 'timeline.html');
    expect(runTrace(file, { out: htmlOut, traceId: OTHER }).request_id).toBe('req-early');
    expect(fs.readFileSync(htmlOut, 'utf8')).toContain('<!doctype html>');
  });

  it('turns bad input into usage errors', () => {
    expect(() => runTrace(path.join(dir, 'missing.jsonl'), {})).toThrow(new UsageError(`span file ${path.join(dir, 'missing.jsonl')} does not exist`));
    expect(() => runTrace(file, { out: path.join(dir, 'timeline.png') })).toThrow('name an .svg or .html file');
    expect(() => runTrace(file, { traceId: '0000' })).toThrow(UsageError);
    const empty = path.join(dir, 'empty.jsonl');
    fs.writeFileSync(empty, '');
    expect(() => runTrace(empty, {})).toThrow(`${empty} has no dsi.generate span (0 spans read)`);
    const broken = path.join(dir, 'broken.jsonl');
    fs.writeFileSync(broken, '{"traceId":"x","spanId":"y","name":"z"}\nnot json\n');
    expect(() => runTrace(broken, {})).toThrow(UsageError);
    expect(() => runTrace(broken, {})).toThrow(`${broken}:2: not valid JSON`);
  });

  it('prints one JSON document with --json', async () => {
    const out = path.join(dir, 'cmd.svg');
    const writes: string[] = [];
    const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      writes.push(String(chunk));
      return true;
    });
    try {
      await new Command('dsi').addCommand(traceCommand()).parseAsync(['trace', file, '--out', out, '--json'], { from: 'user' });
    } finally {
      spy.mockRestore();
    }
    const doc = JSON.parse(writes.join(''));
    expect(doc).toMatchObject({ file, out, trace_id: TRACE, request_id: 'req-main', mode: 'dsi', lookahead: 4, tokens: 13, wall_ms: 100, preemptions: 2 });
    expect(doc.acceptance.rate).toBe(0.6875);
    expect(fs.existsSync(out)).toBe(true);
  });

  // Through the built `dsi` binary, once main.ts registers the command.
  const bin = path.resolve(__dirname, '../../bin/dsi.js');
  const registered = (() => {
    try {
      return / trace /.test(execFileSync(process.execPath, [bin, '--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
    } catch {
      return false;
    }
  })();
  const run = (...args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [bin, ...args], { encoding: 'utf8' }, (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }));
    });
  (registered ? it : it.skip)('runs as `dsi trace` (exit 0, exit 2 on a usage error)', async () => {
    const out = path.join(dir, 'bin.html');
    const ok = await run('trace', file, '--out', out, '--json');
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout).trace_id).toBe(TRACE);
    expect(fs.readFileSync(out, 'utf8')).toContain('<svg');
    const human = await run('trace', file);
    expect(human.stdout).toContain('acceptance: 11/16 drafts = 0.688');
    const bad = await run('trace', file, '--trace-id', '0000');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`available: ${TRACE}`);
    const missing = await run('trace', path.join(dir, 'missing.jsonl'));
    expect(missing.code).toBe(2);
  });
});
