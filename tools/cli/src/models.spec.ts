import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ensureDefaultModels } from '@dsi/modelgen';
import { testModelsDir } from '@dsi/models/test-models';
import { startService, type StackService } from './stack';

const root = path.resolve(__dirname, '../../..');
const bin = path.resolve(__dirname, '../bin/dsi.js');
const buf = path.join(root, 'node_modules/.bin/buf');
const run = promisify(execFile);
const env = { ...process.env, DSI_MODELS_DIR: testModelsDir() };

async function curl(address: string, method: string, body: object): Promise<Record<string, unknown>> {
  const { stdout } = await run(buf, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '-d', JSON.stringify(body), `http://${address}/${method}`], { cwd: root });
  return JSON.parse(stdout);
}

describe('dsi serve target and drafter', () => {
  const services: StackService[] = [];
  afterAll(async () => {
    await Promise.all(services.map((s) => s.stop()));
  });

  it('serves the default ONNX target: reflection lists it and a Verify with a JSON body works', async () => {
    const target = await startService('target', ['--port', '0'], { env });
    services.push(target);
    const { stdout } = await run(buf, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '--list-services', `http://${target.address}`], { cwd: root });
    expect(stdout.split('\n')).toEqual(expect.arrayContaining(['dsi.v1.TargetService', 'grpc.health.v1.Health']));
    expect(await curl(target.address, 'grpc.health.v1.Health/Check', { service: 'dsi.v1.TargetService' })).toEqual({ status: 'SERVING' });
    // The README's example: "The q" with drafts "ui".
    const response = await curl(target.address, 'dsi.v1.TargetService/Verify', {
      requestId: 'readme',
      prefix: [84, 104, 101, 32, 113],
      drafts: [117, 105],
      sampling: { rule: 'VERIFICATION_RULE_GREEDY' },
    });
    const tokens = response.tokens as number[];
    expect(tokens.length).toBe(Number(response.accepted ?? 0) + 1);
    const error = await run(buf, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '-d', '{"prefix":[]}', `http://${target.address}/dsi.v1.TargetService/Verify`], { cwd: root }).catch(
      (e: { stderr: string }) => e,
    );
    expect((error as { stderr: string }).stderr).toContain('prefix is empty');
  });

  it('serves a synthetic drafter and target that agree at the configured rate', async () => {
    const synthetic = ['--backend', 'synthetic', '--synthetic-seed', '7', '--a', '0.7'];
    const [drafter, target] = await Promise.all([
      startService('drafter', ['--port', '0', ...synthetic], { env }),
      startService('target', ['--port', '0', ...synthetic], { env }),
    ]);
    services.push(drafter, target);
    const prefix = [72, 101, 108, 108, 111];
    const drafted = await curl(drafter.address, 'dsi.v1.DrafterService/Draft', { prefix, maxTokens: 8 });
    const drafts = drafted.tokens as number[];
    expect(drafts).toHaveLength(8);
    const verdict = await curl(target.address, 'dsi.v1.TargetService/Verify', { prefix, drafts });
    expect((verdict.tokens as number[]).slice(0, Number(verdict.accepted ?? 0))).toEqual(drafts.slice(0, Number(verdict.accepted ?? 0)));
    const info = await curl(target.address, 'dsi.v1.TargetService/GetModelInfo', {});
    expect(info.model).toMatchObject({ backend: 'synthetic', vocabSize: 259 });
  });
});

describe('dsi models init', () => {
  it('writes the built-in pair with the pinned fingerprints', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-models-'));
    const { stdout } = await run(process.execPath, [bin, 'models', 'init', '--dir', dir, '--json']);
    const doc = JSON.parse(stdout);
    expect(doc.fingerprint).toEqual({
      target: '860ee1d2ff9efee682b69217a2a580cd627c86327cd48ee4600578ecf56c6b62',
      drafter: '6e6fe4f77efd0f6358dd23a77df1dfadad2432b79a766b1824170d236e2dd65c',
    });
    expect(fs.readdirSync(doc.target).sort()).toEqual(['config.json', 'model.onnx', 'tokenizer.json', 'tokenizer_config.json']);
    fs.rmSync(dir, { recursive: true });
  });
});

describe('dsi estimate', () => {
  it('acceptance: reports the built-in pair\'s acceptance rate as the study estimated it, with its interval and per position', async () => {
    const { stdout } = await run(process.execPath, [bin, 'estimate', 'acceptance', '--json'], { env });
    const report = JSON.parse(stdout);
    expect(report.source).toBe('builtin');
    expect(report.acceptanceRate).toBeGreaterThanOrEqual(0.6);
    expect(report.acceptanceRate).toBeLessThan(0.95);
    expect(report.positions).toBe(192);
    expect(report.interval[0]).toBeLessThan(report.acceptanceRate);
    expect(report.interval[1]).toBeGreaterThan(report.acceptanceRate);
    expect(report.perPosition).toHaveLength(8);
    expect(report.perPosition[0]).toMatchObject({ position: 1, trials: 192 });
  });

  it('latency: times model folders in process (--target-model, --drafter-model), round trip 0', async () => {
    const pair = await ensureDefaultModels(testModelsDir());
    const { stdout } = await run(process.execPath, [bin, 'estimate', 'latency', '--target-model', pair.target, '--drafter-model', pair.drafter, '--tokens', '8', '--repeats', '2', '--json'], { env });
    const doc = JSON.parse(stdout);
    expect(doc).toMatchObject({ source: 'models', round_trip_ms: 0, method: { prompts: 3, tokens: 8, repeats: 2 } });
    expect(doc.target.source).toBe(pair.target);
    for (const model of [doc.target, doc.drafter]) {
      expect(model.samples).toHaveLength(6);
      expect(model.ttft_ms.p10).toBeGreaterThan(0);
      expect(model.ttft_ms.p10).toBeLessThanOrEqual(model.ttft_ms.median);
      expect(model.ttft_ms.median).toBeLessThanOrEqual(model.ttft_ms.p90);
      expect(model.tpot_ms.median).toBeGreaterThan(0);
      expect(model.round_trip_ms).toBe(0);
    }
    // The target is the larger model: slower per token than its drafter.
    expect(doc.target.tpot_ms.median).toBeGreaterThan(doc.drafter.tpot_ms.median);
  });
});
