// `dsi estimate` against real services: synthetic drafter and target processes on loopback (real gRPC,
// the oracle's configured latencies and acceptance), measured by the built CLI (`bin/dsi.js` runs
// dist/: build first). Small --tokens and --repeats keep it short.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseProfile } from '@dsi/sim';
import { testModelsDir } from '@dsi/models/test-models';
import { startService, type StackService } from './stack';

const bin = path.resolve(__dirname, '../bin/dsi.js');
const env = { ...process.env, DSI_MODELS_DIR: testModelsDir() };

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function dsi(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { encoding: 'utf8', env, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr });
    });
  });
}

/**
 * The latency the slow pair is configured with (ms): large enough that 5% is a few milliseconds, so a
 * call delayed by another process on the 2-core machine does not decide the outcome. The service's own
 * forward time includes its timer's lateness, about 1 ms a forward with the other projects' tests on
 * the two cores (a 20 ms drafter forward measured 21.09 ms in one clean-clone CI run), hence 40 ms.
 */
const TARGET = { ttft: 100, tpot: 50, verify: 2 };
const DRAFTER = { ttft: 40, tpot: 40 };
const SEED = '7';
const PROMPTS = ['The quick brown fox', 'def fibonacci(n):', 'Once upon a time', 'In a hole in the ground', 'SELECT * FROM', 'Dear Sir or Madam'];

describe('dsi estimate on synthetic services', () => {
  const services: StackService[] = [];
  /** A pair with the latencies above (drafter a = 0.7). */
  let slow: { target: string; drafter: string };
  /** A pair with no latency (a = 0.7), for the acceptance measurements that need many tokens. */
  let fast: { target: string; drafter: string };
  let scratch: string;

  beforeAll(async () => {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-estimate-'));
    const synthetic = ['--port', '0', '--backend', 'synthetic', '--synthetic-seed', SEED];
    const started = await Promise.all([
      startService('target', [...synthetic, '--ttft-ms', String(TARGET.ttft), '--tpot-ms', String(TARGET.tpot), '--verify-ms-per-token', String(TARGET.verify)], { env }),
      startService('drafter', [...synthetic, '--a', '0.7', '--ttft-ms', String(DRAFTER.ttft), '--tpot-ms', String(DRAFTER.tpot)], { env }),
      startService('target', synthetic, { env }),
      startService('drafter', [...synthetic, '--a', '0.7'], { env }),
    ]);
    services.push(...started);
    slow = { target: started[0].address, drafter: started[1].address };
    fast = { target: started[2].address, drafter: started[3].address };
  }, 60_000);

  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
    fs.rmSync(scratch, { recursive: true, force: true });
  });

  it('latency: recovers the target\'s configured TTFT and TPOT within 5% (plus the measured round trip), and its verify cost', async () => {
    const args = ['--target', slow.target, '--drafter', slow.drafter, '--tokens', '6', '--repeats', '2', '--prompt', ...PROMPTS.slice(0, 2)];
    const run = await dsi('estimate', 'latency', ...args, '--json');
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout);
    expect(doc.source).toBe('services');
    expect(doc.method).toMatchObject({ prompts: 2, tokens: 6, repeats: 2 });
    const { target, drafter } = doc;
    console.log(`target ${JSON.stringify(target.ttft_ms)} ${JSON.stringify(target.tpot_ms)} rtt ${target.round_trip_ms}; drafter ${JSON.stringify(drafter.ttft_ms)} ${JSON.stringify(drafter.tpot_ms)} rtt ${drafter.round_trip_ms}`);
    expect(target.source).toBe(slow.target);
    expect(target.samples).toHaveLength(4);
    // A round trip on loopback: above 0, under a forward (1-4 ms on a quiet machine; 18.8 ms in one
    // clean-clone CI run with the other projects' tests on the same two cores).
    expect(target.round_trip_ms).toBeGreaterThan(0);
    expect(target.round_trip_ms).toBeLessThan(TARGET.tpot);
    expect(doc.round_trip_ms).toBeGreaterThan(0);
    const within = (value: number, configured: number, roundTrip: number, tolerance: number) => {
      expect(value).toBeGreaterThanOrEqual((1 - tolerance) * configured);
      expect(value).toBeLessThanOrEqual((1 + tolerance) * configured + roundTrip);
    };
    // The criterion: within 5% of the configured latency, plus the round trip. Each sample
    // carries the round trip of its own calls (wall time less the service's model time: the TTFT call's,
    // and the mean of the later calls', as TPOT is a mean over them); the median over the samples of
    // figure - round trip is what the service's model took, held to 5% of what it was configured for.
    // (Against the mean round trip of all calls the bound missed by 0.2-0.3 ms twice in CI, where a
    // request's first call waits longer than the average one.)
    type Sample = { ttft_ms: number; tpot_ms: number; ttft_round_trip_ms: number; tpot_round_trip_ms: number };
    const median = (values: number[]) => [...values].sort((x, y) => x - y)[(values.length - 1) >> 1];
    for (const [model, configured] of [[target, TARGET], [drafter, DRAFTER]] as const) {
      const samples = model.samples as Sample[];
      for (const sample of samples) expect(sample.ttft_round_trip_ms).toBeGreaterThan(0);
      within(median(samples.map((x) => x.ttft_ms - x.ttft_round_trip_ms)), configured.ttft, 0, 0.05);
      within(median(samples.map((x) => x.tpot_ms - x.tpot_round_trip_ms)), configured.tpot, 0, 0.05);
      // The report's medians, with the mean round trip the report gives: never below the configured latency.
      expect(model.ttft_ms.median).toBeGreaterThanOrEqual(0.95 * configured.ttft);
      expect(model.tpot_ms.median).toBeGreaterThanOrEqual(0.95 * configured.tpot);
    }
    // The service's model time: the round trip is not a token's cost.
    // A difference of two medians of the service's forward times: timer lateness under load moves it
    // (2.21 for 2 ms in one CI run), so 25% either way.
    expect(target.verify_ms_per_token).toBeGreaterThan(0.75 * TARGET.verify);
    expect(target.verify_ms_per_token).toBeLessThan(1.25 * TARGET.verify);
    expect(drafter.verify_ms_per_token).toBeLessThan(0.2);
    expect(target.p90_p10.tpot).toBeCloseTo(target.tpot_ms.p90 / target.tpot_ms.p10, 9);
    // Each generation ran on a fresh request: its first call was a prefill (TTFT), never a cached step.
    for (const sample of target.samples) expect(sample.ttft_ms).toBeGreaterThanOrEqual(0.95 * TARGET.ttft);
  });

  it('acceptance: a drafter agreeing with probability 0.7 is measured with an interval holding 0.7, the same on every run', async () => {
    const args = ['estimate', 'acceptance', '--target', fast.target, '--drafter', fast.drafter, '--tokens', '100', '--positions', '4', '--json', '--prompt', ...PROMPTS];
    const [first, second] = [await dsi(...args), await dsi(...args)];
    expect(first.code).toBe(0);
    const report = JSON.parse(first.stdout);
    console.log(`a = ${report.acceptanceRate} [${report.interval}], per position ${report.perPosition.map((p: { rate: number; trials: number }) => `${p.rate.toFixed(3)}/${p.trials}`).join(' ')}`);
    expect(report.source).toBe('services');
    expect(report.positions).toBe(PROMPTS.length * 100);
    expect(report.interval[0]).toBeLessThan(0.7);
    expect(report.interval[1]).toBeGreaterThan(0.7);
    expect(report.acceptanceRate).toBeGreaterThan(report.interval[0]);
    expect(report.acceptanceRate).toBeLessThan(report.interval[1]);
    expect(report.perPosition.map((p: { position: number }) => p.position)).toEqual([1, 2, 3, 4]);
    expect(report.perPosition[0].trials).toBe(PROMPTS.length * 100);
    expect(report.perPosition[0].rate).toBeCloseTo(report.agreement, 12);
    for (const p of report.perPosition) {
      expect(p.interval[0]).toBeLessThan(0.7);
      expect(p.interval[1]).toBeGreaterThan(0.7);
    }
    // The oracle is deterministic given its seed: the same services, the same numbers.
    const again = JSON.parse(second.stdout);
    expect({ a: again.acceptanceRate, runs: again.runs, perPosition: again.perPosition }).toEqual({ a: report.acceptanceRate, runs: report.runs, perPosition: report.perPosition });
  });

  it('writes one profile with --out that parseProfile accepts, and prints the same with --json', async () => {
    const out = path.join(scratch, 'profile.json');
    const run = await dsi('estimate', '--target', fast.target, '--drafter', fast.drafter, '--tokens', '8', '--repeats', '1', '--out', out, '--json');
    expect(run.code).toBe(0);
    const written = JSON.parse(fs.readFileSync(out, 'utf8'));
    expect(JSON.parse(run.stdout)).toEqual(written);
    const profile = parseProfile(written);
    expect(profile).toMatchObject({ version: 1, source: 'services', method: { prompts: 3, tokens: 8, repeats: 1, positions: 8 } });
    expect(profile.target.source).toBe(fast.target);
    expect(profile.drafter.source).toBe(fast.drafter);
    expect(Date.parse(profile.measured_at)).toBeGreaterThan(Date.now() - 60_000);
    expect(profile.acceptance.a).toBeGreaterThanOrEqual(profile.acceptance.interval[0]);
    expect(profile.acceptance.a).toBeLessThanOrEqual(profile.acceptance.interval[1]);
    expect(profile.acceptance.per_position[0]).toMatchObject({ position: 1, trials: 24 });
    expect(profile.round_trip_ms).toBeGreaterThan(0);
    expect(fs.readdirSync(scratch)).toEqual(['profile.json']); // no temporary file left
  });

  it.each([
    ['--target without --drafter', ['latency', '--target', 'SLOW_TARGET'], '--drafter'],
    ['--drafter-model without --target-model', ['acceptance', '--drafter-model', '.'], '--target-model'],
    ['--tokens 1', ['latency', '--target', 'SLOW_TARGET', '--drafter', 'SLOW_DRAFTER', '--tokens', '1'], '--tokens'],
    ['--out in a missing folder', ['--target', 'SLOW_TARGET', '--drafter', 'SLOW_DRAFTER', '--out', 'MISSING/profile.json'], '--out'],
    ['--target given a model folder', ['latency', '--target', 'SCRATCH', '--drafter', 'SLOW_DRAFTER'], '--target-model'],
    ['--out on latency', ['latency', '--out', 'SCRATCH/profile.json'], '--out'],
  ])('usage error, %s: exits 2 with one line naming the flag, writes nothing', async (_name, args, flag) => {
    const substitute = (arg: string) =>
      arg
        .replace('SLOW_TARGET', slow.target)
        .replace('SLOW_DRAFTER', slow.drafter)
        .replace('MISSING', path.join(scratch, 'missing'))
                .replace('SCRATCH', scratch);
    const before = fs.readdirSync(scratch);
    const run = await dsi('estimate', ...args.map(substitute));
    expect({ code: run.code, stdout: run.stdout }).toEqual({ code: 2, stdout: '' });
    expect(run.stderr).toMatch(/^dsi: [^\n]+\n$/);
    expect(run.stderr).toContain(flag);
    expect(fs.readdirSync(scratch)).toEqual(before);
  });
});
