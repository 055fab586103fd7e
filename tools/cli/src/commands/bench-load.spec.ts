import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadBench, loadReport, type LoadBenchResult } from './bench-load';

function count(text: string, pattern: RegExp): number {
  return (text.match(pattern) ?? []).length;
}

/** Processes whose parent is this one and that run `dsi serve`. */
function serviceChildren(): string[] {
  const lines = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(process.pid)], { encoding: 'utf8' }).split('\n');
  return lines.filter((line) => line.includes(' serve '));
}

/**
 * The load benchmark in a tiny configuration through real services (2 targets at 5 ms, 2 drafters,
 * concurrency 1 and 2, 2 requests per client): the shape of its result, lossless output against the
 * event-mode prediction, a valid picture, nothing left running. No speed is asserted.
 */
describe('dsi bench --suite load (tiny)', () => {
  const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-bench-load-spec-'));
  let result: LoadBenchResult;

  beforeAll(async () => {
    result = await loadBench(
      {
        targets: 2,
        targetMs: 5,
        drafters: 2,
        pairs: [{ a: 0.8, drafterMs: 1 }],
        concurrencies: [1, 2],
        tokens: 16,
        requestsPerClient: 2,
        minRequests: 2,
        seed: 1,
        outDir,
        drift: [{ mode: 'si', a: 0.95, aAfter: 0.05, switchToken: 8, drafterMs: 1, requests: 1 }],
      },
      () => undefined,
    );
  }, 180_000);

  afterAll(() => fs.rmSync(outDir, { recursive: true, force: true }));

  it('measures every mode at every concurrency beside its prediction', () => {
    expect(result.pairs).toHaveLength(1);
    const [pair] = result.pairs;
    expect(pair.k).toBeGreaterThanOrEqual(1);
    expect(pair.cells.map((cell) => [cell.mode, cell.concurrency, cell.measured.requests, cell.predicted.requests])).toEqual([
      ['nonsi', 1, 2, 2],
      ['si', 1, 2, 2],
      ['dsi', 1, 2, 2],
      ['nonsi', 2, 4, 4],
      ['si', 2, 4, 4],
      ['dsi', 2, 4, 4],
    ]);
    for (const cell of pair.cells) {
      expect(cell.measured.tokens).toBe(cell.measured.requests * 16);
      expect(cell.predicted.tokens).toBe(cell.measured.tokens);
      for (const figures of [cell.measured, cell.predicted]) {
        for (const value of [figures.throughput, figures.latency_p50_ms, figures.latency_p99_ms, figures.ttft_p50_ms]) {
          expect(Number.isFinite(value) && value > 0).toBe(true);
        }
        expect(figures.latency_p99_ms).toBeGreaterThanOrEqual(figures.latency_p50_ms);
      }
      expect(cell.ratio.throughput).toBeCloseTo(cell.measured.throughput / cell.predicted.throughput, 9);
    }
    expect(result.criteria.map((criterion) => criterion.pass === (criterion.failures.length === 0))).toEqual([true, true, true, true, true]);
  });

  it('gives every request exactly the tokens the prediction gives for its prompt', () => {
    expect(result.mismatches).toBe(0);
    for (const cell of result.pairs[0].cells) expect(cell.mismatches).toEqual([]);
    expect(result.criteria.at(-1)).toMatchObject({ pass: true });
  });

  it('draws throughput and p50 against concurrency, measured solid and predicted dashed, per mode', () => {
    const svg = fs.readFileSync(result.pairs[0].svg, 'utf8');
    expect(path.dirname(result.pairs[0].svg)).toBe(outDir);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    for (const tag of ['svg', 'g', 'text', 'title', 'circle']) {
      const open = count(svg, new RegExp(`<${tag}[\\s>]`, 'g'));
      const selfClosed = count(svg, new RegExp(`<${tag}[^>]*/>`, 'g'));
      const close = count(svg, new RegExp(`</${tag}>`, 'g'));
      expect({ tag, balance: open - selfClosed - close }).toEqual({ tag, balance: 0 });
    }
    expect(svg).not.toMatch(/NaN|undefined|Infinity/);
    for (const mode of ['nonsi', 'si', 'dsi']) {
      expect(count(svg, new RegExp(`data-mode="${mode}" data-kind="measured"[^>]*stroke-width="2"/>`, 'g'))).toBe(2);
      expect(count(svg, new RegExp(`data-mode="${mode}" data-kind="predicted"[^>]*stroke-dasharray`, 'g'))).toBe(2);
    }
  });

  it('prints a table row per mode and concurrency and every criterion', () => {
    const report = loadReport(result).join('\n');
    expect(count(report, /^(non-SI|SI|DSI) +[12] /gm)).toBe(6);
    expect(count(report, /^ {2}(PASS|FAIL) /gm)).toBe(5);
    expect(report).toContain('token mismatches against the prediction: 0');
  });

  it('measures a drifting workload in its mode: auto and every fixed k, twice each, beside the prediction, tokens identical', () => {
    expect(result.drift).toHaveLength(1);
    const [drift] = result.drift ?? [];
    expect(drift.workload.mode).toBe('si');
    expect(drift.rows.map((row) => row.k)).toEqual(['auto', 1, 2, 3, 4, 5, 6, 7, 8, 10]);
    for (const row of drift.rows) {
      expect(row.mismatches).toBe(0);
      expect(Number.isFinite(row.wall_ms) && row.wall_ms > 0 && row.predicted_wall_ms > 0).toBe(true);
      // A fixed k runs blocks of at most k drafts.
      if (row.k !== 'auto') expect(row.mean_k).toBeLessThanOrEqual(row.k);
    }
    const best = Math.min(...drift.rows.filter((row) => row.k !== 'auto').map((row) => row.wall_ms));
    expect(drift.best_fixed.wall_ms).toBe(best);
    expect(drift.auto_speedup).toBeCloseTo(best / drift.rows[0].wall_ms, 12);
    const report = loadReport(result).join('\n');
    expect(report).toContain('drifting workload (a=0.95 until token 8, then 0.05; drafter 1 ms; SI, concurrency 1)');
    expect(report).toMatch(/auto vs the best fixed k \(\d+\): \d+\.\d{3}x/);
  });

  it('leaves no service running', () => {
    expect(serviceChildren()).toEqual([]);
  });
});
