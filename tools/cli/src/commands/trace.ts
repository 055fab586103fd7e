import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { readSpanFile, SpanFileError, type SpanRecord } from '@dsi/telemetry';
import { buildTimeline, formatSummary, timelineHtml, timelineSvg, TraceInputError, type TraceSummary } from '@dsi/trace';
import { UsageError } from '../errors';

/** The flags of `dsi trace`, as commander parses them. */
export interface TraceFlags {
  out?: string;
  traceId?: string;
  requestId?: string;
  json?: boolean;
}

/** What `dsi trace` reports: the summary of the request and the file it wrote, if any. */
export interface TraceReport extends TraceSummary {
  file: string;
  out: string | null;
}

function outputFormat(out: string): 'svg' | 'html' {
  const ext = path.extname(out).toLowerCase();
  if (ext === '.svg') return 'svg';
  if (ext === '.html' || ext === '.htm') return 'html';
  throw new UsageError(`--out ${out}: name an .svg or .html file`);
}

function readSpans(file: string): SpanRecord[] {
  try {
    return readSpanFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UsageError(`span file ${file} does not exist`);
    if (code === 'EISDIR') throw new UsageError(`span file ${file} is a folder`);
    if (error instanceof SpanFileError) throw new UsageError(error.message);
    throw error;
  }
}

/** Reads a span file, picks one request, writes its timeline (SVG or HTML by `--out`'s extension). */
export function runTrace(file: string, flags: TraceFlags): TraceReport {
  const format = flags.out !== undefined ? outputFormat(flags.out) : undefined;
  const spans = readSpans(file);
  if (flags.traceId !== undefined && flags.traceId.trim() === '') throw new UsageError('--trace-id is empty');
  let model;
  try {
    model = buildTimeline(spans, { traceId: flags.traceId, requestId: flags.requestId }, file);
  } catch (error) {
    if (error instanceof TraceInputError) throw new UsageError(error.message, { cause: error });
    throw error;
  }
  if (flags.out !== undefined) {
    fs.mkdirSync(path.dirname(flags.out), { recursive: true });
    fs.writeFileSync(flags.out, format === 'html' ? timelineHtml(model) : timelineSvg(model));
  }
  return { file, out: flags.out ?? null, ...model.summary };
}

/** `dsi trace FILE`: one request of a span file as a timeline of drafter and target lanes, with a summary. */
export function traceCommand(): Command {
  return new Command('trace')
    .description('show one generation request of a span file (DSI_TRACE_FILE) as a timeline: lanes per drafter and target replica, preemptions, verified tokens')
    .argument('<file>', 'JSON-lines span file written by the services (DSI_TRACE_FILE)')
    .option('--out <file>', 'write the timeline: timeline.svg, or timeline.html (SVG, summary and hover details)')
    .option('--trace-id <id>', 'the request by trace id or a unique prefix (default: the request that ended last)')
    .option('--request-id <id>', 'the request by dsi.request_id')
    .option('--json', 'print one JSON document on stdout')
    .action((file: string, flags: TraceFlags) => {
      const report = runTrace(file, flags);
      if (flags.json) {
        process.stdout.write(JSON.stringify(report) + '\n');
        return;
      }
      process.stdout.write(formatSummary(report) + (report.out ? `  wrote ${report.out}\n` : ''));
    });
}
