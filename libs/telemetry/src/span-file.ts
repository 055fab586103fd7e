import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { type Attributes, type HrTime, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { type ExportResult, ExportResultCode } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';

/** Span kind by name, as written to a span file (`SpanKind` numbers are not meaningful to a reader). */
export type SpanKindName = keyof typeof SpanKind;

/** Span status code by name, as written to a span file. */
export type SpanStatusName = keyof typeof SpanStatusCode;

/**
 * One finished span as a line of a span file: what `dsi trace` and tests read back to check the
 * shape of a run (names, parent -> child edges, attributes, errors) without a tracing backend.
 * Times are Unix epoch nanoseconds as decimal strings, because they do not fit a double exactly.
 */
export interface SpanRecord {
  traceId: string;
  spanId: string;
  /** The parent's span id, or null for a root span (or a span whose parent is in another process and unknown). */
  parentSpanId: string | null;
  name: string;
  kind: SpanKindName;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  durationMs: number;
  attributes: Attributes;
  status: { code: SpanStatusName; message?: string };
  events: { name: string; timeUnixNano: string; attributes: Attributes }[];
  links: { traceId: string; spanId: string; attributes: Attributes }[];
  /** Resource attributes of the process that wrote the span: `service.name`, `service.version`, ... */
  resource: Attributes;
  /** The instrumentation scope (tracer) that created the span. */
  scope: { name: string; version?: string };
}

/** Thrown by `readSpanFile` when a line is not a span record; names the file and the 1-based line. */
export class SpanFileError extends Error {
  override readonly name = 'SpanFileError';

  constructor(
    readonly path: string,
    readonly line: number,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${path}:${line}: ${reason}`, options);
  }
}

function unixNano(time: HrTime): string {
  return (BigInt(time[0]) * 1_000_000_000n + BigInt(time[1])).toString();
}

/** Converts a finished SDK span to the record written to span files. */
export function toSpanRecord(span: ReadableSpan): SpanRecord {
  const { traceId, spanId } = span.spanContext();
  const status: SpanRecord['status'] = { code: SpanStatusCode[span.status.code] as SpanStatusName };
  if (span.status.message) status.message = span.status.message;
  const scope: SpanRecord['scope'] = { name: span.instrumentationScope.name };
  if (span.instrumentationScope.version) scope.version = span.instrumentationScope.version;
  return {
    traceId,
    spanId,
    parentSpanId: span.parentSpanContext?.spanId ?? null,
    name: span.name,
    kind: SpanKind[span.kind] as SpanKindName,
    startTimeUnixNano: unixNano(span.startTime),
    endTimeUnixNano: unixNano(span.endTime),
    durationMs: span.duration[0] * 1e3 + span.duration[1] / 1e6,
    attributes: { ...span.attributes },
    status,
    events: span.events.map((event) => ({
      name: event.name,
      timeUnixNano: unixNano(event.time),
      attributes: { ...event.attributes },
    })),
    links: span.links.map((link) => ({
      traceId: link.context.traceId,
      spanId: link.context.spanId,
      attributes: { ...link.attributes },
    })),
    resource: { ...span.resource.attributes },
    scope,
  };
}

/**
 * Appends finished spans to a file as JSON lines (one `SpanRecord` per line): a tracing backend for
 * local runs, CI and tests, enabled by `DSI_TRACE_FILE`.
 *
 * Each export batch is written with a single `appendFileSync` of whole lines (`O_APPEND`), so several
 * processes (drafter, targets, orchestrator) can share one file and their lines never interleave on a
 * local file system. Network file systems do not guarantee atomic appends; give each process its own
 * file there. Nothing is buffered here, so `forceFlush` has nothing to do: batching is the span
 * processor's job.
 */
export class JsonLinesSpanExporter implements SpanExporter {
  private stopped = false;

  /** Creates the file's directory if needed, so a fresh `DSI_TRACE_FILE=/tmp/dsi/run.jsonl` works. */
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
  }

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    if (this.stopped) {
      resultCallback({ code: ExportResultCode.FAILED, error: new Error(`span file ${this.path} is shut down`) });
      return;
    }
    if (spans.length === 0) {
      resultCallback({ code: ExportResultCode.SUCCESS });
      return;
    }
    try {
      const lines = spans.map((span) => JSON.stringify(toSpanRecord(span)) + '\n').join('');
      appendFileSync(this.path, lines);
      resultCallback({ code: ExportResultCode.SUCCESS });
    } catch (error) {
      resultCallback({ code: ExportResultCode.FAILED, error: error instanceof Error ? error : new Error(String(error)) });
    }
  }

  async forceFlush(): Promise<void> {
    // Every export is already on disk.
  }

  async shutdown(): Promise<void> {
    this.stopped = true;
  }
}

function isSpanRecord(value: unknown): value is SpanRecord {
  if (typeof value !== 'object' || value === null) return false;
  const record = value as Partial<Record<keyof SpanRecord, unknown>>;
  return typeof record.traceId === 'string' && typeof record.spanId === 'string' && typeof record.name === 'string';
}

/**
 * Reads a span file written by `JsonLinesSpanExporter`, in file order (blank lines skipped). Use it in
 * tests and `dsi trace` after the writers flushed. Throws `SpanFileError` naming the line of the first
 * line that is not a span record, and the usual `ENOENT` error if the file does not exist.
 */
export function readSpanFile(path: string): SpanRecord[] {
  const records: SpanRecord[] = [];
  const lines = readFileSync(path, 'utf8').split('\n');
  lines.forEach((text, index) => {
    if (text.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new SpanFileError(path, index + 1, `not valid JSON (${(error as Error).message})`, { cause: error });
    }
    if (!isSpanRecord(value)) {
      throw new SpanFileError(path, index + 1, 'not a span record (needs string traceId, spanId and name)');
    }
    records.push(value);
  });
  return records;
}
