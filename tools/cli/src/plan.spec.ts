// `dsi plan` through the built bin: the JSON scripts read, the table, the SVG, presets, profiles, a
// simulator service, and every bad input exiting 2 with one line naming the field.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { planDeployment } from '@dsi/sim';
import { startService, type StackService } from './stack';

const bin = path.resolve(__dirname, '../bin/dsi.js');
const run = promisify(execFile);
const env = { ...process.env, OTEL_SDK_DISABLED: 'true' };
const small = ['--max-replicas', '3', '--tokens', '200', '--prompts', '2', '--max-lookahead', '6'];

async function plan(args: string[]): Promise<{ stdout: string; stderr: string }> {
  return run(process.execPath, [bin, 'plan', ...args], { env, timeout: 120_000 });
}

async function fails(args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await plan(args);
  } catch (error) {
    const e = error as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
  throw new Error(`dsi plan ${args.join(' ')} succeeded`);
}

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-plan-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('dsi plan', () => {
  it('prints the documented JSON: the profile, the bound, one row per replica count, the recommendation', async () => {
    const { stdout } = await plan(['--a', '0.8', '--target-ms', '20', '--drafter-ms', '2', ...small, '--json']);
    const doc = JSON.parse(stdout);
    expect(doc.profile.acceptance.a).toBe(0.8);
    expect(doc.profile.target.tpot_ms.median).toBe(20);
    expect(doc.bound_ms_per_token).toBeCloseTo(0.2 * 20 + 0.8 * 2, 6);
    expect(doc.rows.map((r: { replicas: number }) => r.replicas)).toEqual([1, 2, 3]);
    for (const row of doc.rows) {
      expect(row.nonsi.ms_per_token).toBeGreaterThan(0);
      expect(Number.isInteger(row.si.lookahead) && Number.isInteger(row.dsi.lookahead)).toBe(true);
      expect(row.dsi.ms_per_token).toBeGreaterThanOrEqual(doc.bound_ms_per_token);
    }
    const r = doc.recommendation;
    for (const key of ['replicas', 'lookahead', 'dsi_ms_per_token', 'speedup_vs_si', 'speedup_vs_nonsi']) expect(typeof r[key]).toBe('number');
    // The same inputs in process give the same plan (the CLI adds only the profile and its source).
    const local = await planDeployment({ a: 0.8, targetMs: 20, drafterMs: 2 }, { maxReplicas: 3, tokens: 200, prompts: 2, maxLookahead: 6 });
    expect(doc.rows).toEqual(local.rows);
  });

  it('plans a named H200 preset with a measured-style table and an SVG', async () => {
    const svg = path.join(dir, 'plan.svg');
    const { stdout } = await plan(['--preset', 'h200/llama3.1-70b/llama3.2-1b', '--a', '0.7', ...small, '--svg', svg]);
    expect(stdout).toContain('preset h200/llama3.1-70b/llama3.2-1b');
    expect(stdout).toContain('target 51.180 ms/token (TTFT 135.43');
    expect(stdout).toMatch(/recommendation: \d target replicas? with k=\d+/);
    expect(fs.readFileSync(svg, 'utf8')).toContain('data-series="dsi"');
  });

  it('lists its presets', async () => {
    const { stdout } = await plan(['--list-presets']);
    expect(stdout.split('\n')).toContain('h200/llama3.1-70b/vicuna-68m');
  });

  it('plans from a profile, taking its round trip out of the forwards and charging it per call', async () => {
    const file = path.join(dir, 'profile.json');
    const spread = (ms: number) => ({ median: ms, p10: ms, p90: ms });
    fs.writeFileSync(
      file,
      JSON.stringify({
        version: 1,
        measured_at: '2026-12-02T09:00:00Z',
        source: 'services',
        method: { prompts: 3, tokens: 32, ttft: 'x', tpot: 'y', acceptance: 'z' },
        acceptance: { a: 0.75, interval: [0.7, 0.8], per_position: [] },
        target: { source: 't', ttft_ms: spread(32), tpot_ms: spread(22) },
        drafter: { source: 'd', ttft_ms: spread(4), tpot_ms: spread(4) },
        round_trip_ms: 2,
      }),
    );
    const { stdout } = await plan(['--profile', file, ...small, '--json']);
    const doc = JSON.parse(stdout);
    expect(doc.pair).toMatchObject({ a: 0.75, target_ms: 20, drafter_ms: 2, target_ttft_ms: 30, drafter_ttft_ms: 2, round_trip_ms: 2 });
    expect(doc.profile.round_trip_ms).toBe(2);
    // A flag overrides the profile.
    const override = JSON.parse((await plan(['--profile', file, '--a', '0.5', ...small, '--json'])).stdout);
    expect(override.pair.a).toBe(0.5);
    expect(override.profile.acceptance.a).toBe(0.5);
  });

  describe('on a simulator service', () => {
    let simulator: StackService;
    beforeAll(async () => {
      simulator = await startService('simulator', ['--port', '0']);
    }, 60_000);
    afterAll(() => simulator?.stop());

    it('gives the plan the local run gives', async () => {
      const args = ['--a', '0.7', '--target-ms', '10', '--drafter-ms', '1.5', ...small, '--json'];
      const remote = JSON.parse((await plan([...args, '--simulator', simulator.address])).stdout);
      const local = JSON.parse((await plan(args)).stdout);
      expect(remote.rows).toEqual(local.rows);
      expect(remote.recommendation).toEqual(local.recommendation);
    });
  });

  describe('bad input exits 2 with one line naming the field', () => {
    const cases: Array<[string, () => string[], RegExp]> = [
      ['--a 1.5', () => ['--a', '1.5', '--target-ms', '20', '--drafter-ms', '2'], /--a/],
      ['--a -0.1', () => ['--a', '-0.1', '--target-ms', '20', '--drafter-ms', '2'], /--a/],
      ['--target-ms -5', () => ['--a', '0.5', '--target-ms', '-5', '--drafter-ms', '2'], /--target-ms/],
      ['--drafter-ms -1', () => ['--a', '0.5', '--target-ms', '5', '--drafter-ms', '-1'], /--drafter-ms/],
      ['--drafter-ms 0', () => ['--a', '0.5', '--target-ms', '5', '--drafter-ms', '0'], /--drafter-ms/],
      ['--round-trip-ms -1', () => ['--a', '0.5', '--target-ms', '5', '--drafter-ms', '1', '--round-trip-ms', '-1'], /--round-trip-ms/],
      ['no --a', () => ['--target-ms', '5', '--drafter-ms', '1'], /--a/],
      ['--preset unknown', () => ['--preset', 'h200/gpt-5/vicuna-68m', '--a', '0.8'], /--preset/],
      ['--preset without --a', () => ['--preset', 'h200/llama3.1-70b/llama3.2-1b'], /--a/],
      ['--profile missing', () => ['--profile', path.join(dir, 'missing.json')], /--profile/],
      [
        '--profile not JSON',
        () => {
          fs.writeFileSync(path.join(dir, 'bad.json'), '{ not json');
          return ['--profile', path.join(dir, 'bad.json')];
        },
        /--profile/,
      ],
      [
        '--profile with a = 2',
        () => {
          fs.writeFileSync(path.join(dir, 'a2.json'), JSON.stringify({ version: 1, acceptance: { a: 2 } }));
          return ['--profile', path.join(dir, 'a2.json')];
        },
        /acceptance\.a/,
      ],
      [
        '--profile with a negative latency',
        () => {
          const spread = { median: -1, p10: 1, p90: 1 };
          fs.writeFileSync(path.join(dir, 'neg.json'), JSON.stringify({ version: 1, acceptance: { a: 0.5 }, target: { ttft_ms: spread, tpot_ms: spread } }));
          return ['--profile', path.join(dir, 'neg.json')];
        },
        /target\.ttft_ms\.median/,
      ],
      ['--concurrency with --arrival-rate', () => ['--a', '0.5', '--target-ms', '5', '--drafter-ms', '1', '--concurrency', '2', '--arrival-rate', '3'], /--arrival-rate/],
      ['--svg in a missing folder', () => ['--a', '0.5', '--target-ms', '5', '--drafter-ms', '1', '--svg', path.join(dir, 'no', 'plan.svg')], /--svg/],
    ];
    it.each(cases)('%s', async (_name, args, field) => {
      const { code, stderr } = await fails(args());
      expect(code).toBe(2);
      const lines = stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(field);
    });
  });
});
