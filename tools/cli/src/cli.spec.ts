import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { testModelsDir } from '@dsi/models/test-models';
import { startService } from './stack';

const bin = path.resolve(__dirname, '../bin/dsi.js');
// `dsi up` writes the built-in model pair on first start: keep the tests' copy out of the home folder.
process.env.DSI_MODELS_DIR ??= testModelsDir();

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function dsi(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { encoding: 'utf8' }, (error, stdout, stderr) => {
      resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('dsi simulate', () => {
  it('reproduces the study with no flags', async () => {
    const run = await dsi('simulate');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('332.8 316.0 314.7 321.0 326.7 | 222 211 210 214 218');
    expect(run.stdout).toContain('229.7 208.7 211.8 226.4 219.3 | 252 243 245 249 247');
  });

  it('prints exactly one JSON document with --json', async () => {
    const run = await dsi('simulate', '--json', '--method', 'exact', '--a', '0.8');
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout);
    expect(Object.keys(doc)).toEqual(['config', 'nonsi', 'si', 'dsi', 'speedup']);
    expect(doc.config).toEqual({ a: 0.8, c: 0.1, k: 5, t: 1, S: 1000, servers: 7, repeats: 5, seed: 42, method: 'exact' });
    expect(doc.si.costs).toEqual([doc.si.cost]);
    expect(doc.speedup.dsi_vs_si).toBeCloseTo(doc.si.cost / doc.dsi.cost, 12);
  });

  it('simulates many requests at once (--concurrency): per-mode load figures, non-SI at every server busy', async () => {
    const run = await dsi('simulate', '--method', 'event', '--concurrency', '6', '--servers', '3', '--drafters', '2', '--tokens', '16', '--requests', '12', '--json');
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout);
    expect(doc.config).toMatchObject({ method: 'event', concurrency: 6, requests: 12, drafters: 2, servers: 3 });
    for (const mode of ['nonsi', 'si', 'dsi']) expect(doc.load[mode]).toMatchObject({ requests: 12, tokens: 12 * 16 });
    // Six clients on three replicas: non-SI keeps all three busy, one token per replica per forward.
    expect(doc.load.nonsi.throughput).toBeCloseTo(3, 9);
    expect(doc.load.nonsi.targetUtilisation).toBeCloseTo(1, 9);
    const table = await dsi('simulate', '--method', 'event', '--concurrency', '2', '--tokens', '16', '--requests', '4');
    expect(table.stdout).toContain('closed loop, concurrency 2');
    expect(table.stdout).toMatch(/non-SI\s+2\.000/);
  });

  it.each([
    [['--servers', '3', '--k', '1', '--c', '0.3'], 'servers=3 is below ceil(t/(k*c)) = 4'],
    [['--a', '1.2'], 'a=1.2 is outside [0, 1]'],
    [['--c', '2'], 'c=2 exceeds t=1'],
    [['--tokens', '0'], 'tokens=0 is below 1'],
    [['--a', 'abc'], "'abc' is invalid"],
    [['--method', 'magic'], "'magic' is invalid"],
    [['--bogus'], "unknown option '--bogus'"],
  ])('exits 2 on %j with one line naming the parameter', async (args, message) => {
    const run = await dsi('simulate', ...args);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr.split('\n')[0]).toContain(message);
  });
});

describe('dsi heatmap', () => {
  it('writes the CSV, the JSON and four SVG panels', async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-heatmap-'));
    const run = await dsi('heatmap', '--ndim', '10', '--out', out, '--json');
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout);
    expect(report.cells).toBe(1089);
    expect(fs.readdirSync(out).sort()).toEqual([
      'heatmap-dsi_vs_baseline.svg',
      'heatmap-dsi_vs_nonsi.svg',
      'heatmap-dsi_vs_si.svg',
      'heatmap-si_vs_nonsi.svg',
      'heatmap.csv',
      'heatmap.json',
    ]);
    expect(fs.readFileSync(path.join(out, 'heatmap.csv'), 'utf8').trim().split('\n')).toHaveLength(1090);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'heatmap.json'), 'utf8')).rows).toHaveLength(1089);
    // Not a terminal: the progress bar still reports on stderr.
    expect(run.stderr).toContain('1089/1089 cells');
    fs.rmSync(out, { recursive: true });
  });

  it('shards a sweep across simulator services and writes the same cells as a local run', async () => {
    const start = () => startService('simulator', ['--port', '0']);
    const simulators = await Promise.all([start(), start()]);
    try {
      const local = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-heatmap-'));
      const remote = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-heatmap-'));
      expect((await dsi('heatmap', '--ndim', '8', '--out', local, '--json')).code).toBe(0);
      const sharded = await dsi('heatmap', '--ndim', '8', '--out', remote, '--json', '--simulator', simulators.map((s) => s.address).join(','));
      expect(sharded.code).toBe(0);
      expect(fs.readFileSync(path.join(remote, 'heatmap.csv'), 'utf8')).toBe(fs.readFileSync(path.join(local, 'heatmap.csv'), 'utf8'));
      fs.rmSync(local, { recursive: true });
      fs.rmSync(remote, { recursive: true });
    } finally {
      await Promise.all(simulators.map((s) => s.stop()));
    }
  });

  it('exits 2 on a bad grid', async () => {
    const run = await dsi('heatmap', '--ndim', '0', '--out', os.tmpdir());
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('ndim=0 is outside [1, 100]');
  });
});

describe('dsi serve and dsi up', () => {
  it('serves the simulator until SIGTERM, then drains, flushes its spans and exits 0', async () => {
    const traceFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-trace-')), 'spans.jsonl');
    const child = spawn(process.execPath, [bin, 'serve', 'simulator', '--port', '0', '--trace-file', traceFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const address = await new Promise<string>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`exited ${code}`)));
      readline.createInterface({ input: child.stdout }).on('line', (line) => {
        const match = line.match(/^simulator serving on (\S+)$/);
        if (match) resolve(match[1]);
      });
    });
    const remote = await dsi('simulate', '--simulator', address, '--json', '--tokens', '100');
    expect(JSON.parse(remote.stdout).config.S).toBe(100);
    const invalid = await dsi('simulate', '--simulator', address, '--a', '3');
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toContain('a=3 is outside [0, 1]');
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    // Telemetry started before gRPC loaded: the instrumentation's server span is the parent of ours.
    const spans = fs.readFileSync(traceFile, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    const simulateSpans = spans.filter((s) => s.name === 'dsi.simulate');
    expect(simulateSpans).toHaveLength(1);
    const server = spans.find((s) => s.kind === 'SERVER' && s.spanId === simulateSpans[0].parentSpanId);
    expect(server?.name).toContain('dsi.v1.SimulatorService/Simulate');
    expect(server?.traceId).toBe(simulateSpans[0].traceId);
    expect(simulateSpans[0].attributes['dsi.sim.tokens']).toBe(100);
    // The rejected call is visible as a failed server span with its status code.
    const rejected = spans.filter((s) => s.kind === 'SERVER' && s.attributes['rpc.grpc.status_code'] === 3);
    expect(rejected).toHaveLength(1);
    expect(rejected[0].status.code).toBe('ERROR');
    fs.rmSync(path.dirname(traceFile), { recursive: true, force: true });
  });

  it('exits 2 for an unknown service', async () => {
    const run = await dsi('serve', 'teapot');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('unknown service teapot');
  });

  it('runs the whole stack, one request per mode with identical outputs, and exits 0 with --once', async () => {
    const run = await dsi('up', '--once', '--json', '--base-port', '0', '--targets', '2', '--max-new-tokens', '24');
    expect(run.code).toBe(0);
    const doc = JSON.parse(run.stdout);
    expect(doc.services.orchestrator).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(doc.services.targets).toHaveLength(2);
    expect(Object.keys(doc.modes)).toEqual(['non_si', 'si', 'dsi']);
    expect(doc.modes.dsi.tokens).toHaveLength(24);
    expect(doc.modes.si.tokens).toEqual(doc.modes.non_si.tokens);
    expect(doc.modes.dsi.tokens).toEqual(doc.modes.non_si.tokens);
    expect(doc.identical).toBe(true);
    expect(doc.modes.dsi.wall_ms).toBeGreaterThan(0);
  });

  it('streams a generation through dsi generate, and exits 2 on a bad request', async () => {
    const up = spawn(process.execPath, [bin, 'up', '--base-port', '0', '--targets', '1', '--backend', 'synthetic', '--target-ms', '1', '--max-new-tokens', '4'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const address = await new Promise<string>((resolve, reject) => {
      up.once('exit', (code) => reject(new Error(`dsi up exited ${code}`)));
      readline.createInterface({ input: up.stdout }).on('line', (line) => {
        const match = line.match(/dsi generate --orchestrator (\S+)/);
        if (match) resolve(match[1]);
      });
    });
    try {
      const streamed = await dsi('generate', '--orchestrator', address, '--prompt', 'Hi', '--max-new-tokens', '12', '--mode', 'dsi');
      expect(streamed.code).toBe(0);
      expect(streamed.stderr).toMatch(/\[dsi\] 12 tokens in/);
      const full = await dsi('generate', '--orchestrator', address, '--prompt', 'Hi', '--max-new-tokens', '12', '--mode', 'nonsi', '--json');
      const doc = JSON.parse(full.stdout);
      expect(doc.tokens).toHaveLength(12);
      expect(doc.metrics.targetForwards).toBe(12);
      const bad = await dsi('generate', '--orchestrator', address, '--prompt', 'Hi', '--rule', 'seeded');
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain('seed');
    } finally {
      const exited = new Promise((resolve) => up.once('exit', resolve));
      up.kill('SIGINT');
      await exited;
    }
  });
});
