import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { fixture, MAIN_TRACE as TRACE, OTHER_TRACE as OTHER } from '@dsi/trace/testing';
import { UsageError } from '../errors';
import { runTrace, traceCommand } from './trace';

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
    expect(() => runTrace(file, { traceId: ' ' })).toThrow(new UsageError('--trace-id is empty'));
    expect(() => runTrace(file, { requestId: 'nope' })).toThrow(UsageError);
    expect(() => runTrace(file, { requestId: 'nope' })).toThrow(`no dsi.generate span with request id nope in ${file}; available: ${TRACE} (request req-main, dsi), ${OTHER} (request req-early, nonsi)`);
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
