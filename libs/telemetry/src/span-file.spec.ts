import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { context, propagation, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { ExportResultCode } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOnSampler, BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { DsiAttributes, DsiSpans } from './attributes';
import { JsonLinesSpanExporter, readSpanFile, SpanFileError } from './span-file';
import { withSpan } from './spans';

const run = promisify(execFile);
const registerSwc = path.join(__dirname, 'testing/register-swc.js');

describe('JsonLinesSpanExporter', () => {
  let dir: string;
  let file: string;
  let provider: NodeTracerProvider;

  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'dsi-span-file-'));
    file = path.join(dir, 'nested', 'spans.jsonl');
    provider = new NodeTracerProvider({
      resource: resourceFromAttributes({ 'service.name': 'dsi-simulator' }),
      sampler: new AlwaysOnSampler(),
      spanProcessors: [new BatchSpanProcessor(new JsonLinesSpanExporter(file))],
    });
    provider.register();
  });

  afterEach(async () => {
    await provider.shutdown();
    trace.disable();
    context.disable();
    propagation.disable();
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes parent and child spans with the parent -> child edge, attributes, kind and resource', async () => {
    const tracer = provider.getTracer('dsi-simulator', '0.1.0');
    await withSpan(tracer, DsiSpans.HEATMAP, { [DsiAttributes.HEATMAP_NDIM]: 4 }, async () => {
      await withSpan(tracer, DsiSpans.HEATMAP_CELL, { [DsiAttributes.SIM_A]: 0.5, [DsiAttributes.SIM_K]: 3 }, async (cell) => {
        cell.addEvent('cell.done', { 'dsi.cell.index': 7 });
      });
    });
    const server = tracer.startSpan('grpc.dsi.v1.SimulatorService/Simulate', { kind: SpanKind.SERVER });
    server.setStatus({ code: SpanStatusCode.OK });
    server.end();
    await provider.forceFlush();

    const records = readSpanFile(file);
    expect(records.map((record) => record.name)).toEqual([DsiSpans.HEATMAP_CELL, DsiSpans.HEATMAP, 'grpc.dsi.v1.SimulatorService/Simulate']);
    const [cell, heatmap, simulate] = records;
    expect(heatmap.parentSpanId).toBeNull();
    expect(cell.parentSpanId).toBe(heatmap.spanId);
    expect(cell.traceId).toBe(heatmap.traceId);
    expect(simulate.traceId).not.toBe(heatmap.traceId);
    expect(cell.attributes).toEqual({ 'dsi.sim.a': 0.5, 'dsi.sim.k': 3 });
    expect(heatmap.attributes).toEqual({ 'dsi.heatmap.ndim': 4 });
    expect(cell.events).toEqual([{ name: 'cell.done', timeUnixNano: expect.stringMatching(/^\d{19}$/), attributes: { 'dsi.cell.index': 7 } }]);
    expect(cell.kind).toBe('INTERNAL');
    expect(simulate.kind).toBe('SERVER');
    expect(simulate.status).toEqual({ code: 'OK' });
    expect(heatmap.status).toEqual({ code: 'UNSET' });
    expect(heatmap.resource['service.name']).toBe('dsi-simulator');
    expect(heatmap.scope).toEqual({ name: 'dsi-simulator', version: '0.1.0' });
    // Times are exact epoch nanoseconds; the duration in milliseconds is derived from them.
    expect(heatmap.startTimeUnixNano).toMatch(/^\d{19}$/);
    expect(Math.abs(Number(BigInt(heatmap.startTimeUnixNano) / 1_000_000n) - Date.now())).toBeLessThan(60_000);
    const nanos = Number(BigInt(heatmap.endTimeUnixNano) - BigInt(heatmap.startTimeUnixNano));
    expect(heatmap.durationMs).toBeCloseTo(nanos / 1e6, 6);
  });

  it('records a failure inside withSpan as status ERROR with error.type and an exception event', async () => {
    const tracer = provider.getTracer('dsi-simulator');
    class ConfigError extends Error {}
    const failing = withSpan(tracer, DsiSpans.SIMULATE, { [DsiAttributes.SIM_K]: 0 }, async () => {
      throw new ConfigError('k must be >= 1');
    });
    await expect(failing).rejects.toThrow('k must be >= 1');
    await provider.forceFlush();

    const [record] = readSpanFile(file);
    expect(record.name).toBe(DsiSpans.SIMULATE);
    expect(record.status).toEqual({ code: 'ERROR', message: 'k must be >= 1' });
    expect(record.attributes['error.type']).toBe('ConfigError');
    expect(record.attributes[DsiAttributes.SIM_K]).toBe(0);
    expect(record.events.map((event) => event.name)).toEqual(['exception']);
    expect(record.events[0].attributes['exception.message']).toBe('k must be >= 1');
  });

  it('fails exports after shutdown instead of writing to a file the process has let go of', async () => {
    const exporter = new JsonLinesSpanExporter(file);
    await exporter.shutdown();
    const result = await new Promise((resolve) => exporter.export([], resolve));
    expect(result).toMatchObject({ code: ExportResultCode.FAILED });
  });
});

describe('JsonLinesSpanExporter shared by several processes', () => {
  it('appends only whole lines when four processes export large batches to one file at once', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'dsi-span-file-'));
    const file = path.join(dir, 'shared.jsonl');
    // Each writer is a separate node process (span-file.ts compiled by swc, as jest does) exporting
    // 10 batches of 40 spans with 4 KiB attributes: ~165 KiB per write, far above any pipe or page buffer.
    const writer = `
      const { JsonLinesSpanExporter } = require(${JSON.stringify(path.join(__dirname, 'span-file.ts'))});
      const { BasicTracerProvider } = require('@opentelemetry/sdk-trace-base');
      const [file, writerId] = process.argv.slice(1);
      const tracer = new BasicTracerProvider().getTracer('writer');
      const exporter = new JsonLinesSpanExporter(file);
      for (let batch = 0; batch < 10; batch++) {
        const spans = [];
        for (let i = 0; i < 40; i++) {
          const span = tracer.startSpan('w' + writerId, { attributes: { payload: writerId.repeat(4096), batch, i } });
          span.end();
          spans.push(span);
        }
        exporter.export(spans, (result) => { if (result.code !== 0) throw result.error; });
      }
    `;
    try {
      await Promise.all(['a', 'b', 'c', 'd'].map((id) => run(process.execPath, ['-r', registerSwc, '-e', writer, file, id], { cwd: __dirname })));
      const records = readSpanFile(file);
      expect(records).toHaveLength(4 * 10 * 40);
      for (const id of ['a', 'b', 'c', 'd']) {
        const mine = records.filter((record) => record.name === `w${id}`);
        expect(mine).toHaveLength(400);
        expect(mine.every((record) => record.attributes.payload === id.repeat(4096))).toBe(true);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('readSpanFile', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'dsi-span-file-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const line = (name: string) => JSON.stringify({ traceId: 't'.repeat(32), spanId: 's'.repeat(16), name });

  it('skips blank lines and keeps file order', () => {
    const file = path.join(dir, 'ok.jsonl');
    writeFileSync(file, `\n${line('first')}\n\n  \n${line('second')}\n`);
    expect(readSpanFile(file).map((record) => record.name)).toEqual(['first', 'second']);
  });

  it('names the file and line of bad JSON', () => {
    const file = path.join(dir, 'bad.jsonl');
    writeFileSync(file, `${line('first')}\n\n{"traceId": "abc", "spanId\n`);
    expect(() => readSpanFile(file)).toThrow(SpanFileError);
    expect(() => readSpanFile(file)).toThrow(`${file}:3: not valid JSON`);
  });

  it('rejects a JSON line that is not a span record', () => {
    const file = path.join(dir, 'other.jsonl');
    writeFileSync(file, `${line('first')}\n{"level":"info","msg":"hello"}\n`);
    expect(() => readSpanFile(file)).toThrow(expect.objectContaining({ line: 2, path: file }));
  });
});
