import { testModelsDir } from '@dsi/models/test-models';
import { modelBench, type ModelBenchRow } from './bench-models';

/**
 * The model benchmark with few runs: its rows, and figures that must hold whatever the machine's
 * speed and load (a warm Verify computes k + 1 tokens, a wall time includes the model time it
 * reports, ratios are of the figures beside them). Speed itself is the benchmark's to report.
 */
describe('modelBench', () => {
  let rows: ModelBenchRow[];
  const lines: string[] = [];

  beforeAll(async () => {
    rows = await modelBench(5, (line) => lines.push(line), { modelsDir: testModelsDir(), syntheticMs: [5], maxDrafts: 2 });
  }, 120_000);

  const row = (name: string): ModelBenchRow => {
    const found = rows.find((r) => r.name === name);
    if (!found) throw new Error(`no row ${name} in ${rows.map((r) => r.name).join(', ')}`);
    return found;
  };

  it('reports every figure once, in order', () => {
    expect(rows.map((r) => r.name)).toEqual([
      'decode step, OnnxModel.logits in process',
      'decode step through the target service (Verify, 0 drafts)',
      'empty RPC round trip (GetModelInfo), the floor',
      'drafter decode step, OnnxModel.logits in process',
      '64-token prefill (target), OnnxModel.logits in process',
      'batched forward, 1 call of 3 tokens (target, in process)',
      'batched forward, 2 calls of 3 tokens (target, in process)',
      'batched forward, 4 calls of 3 tokens (target, in process)',
      'batched forward, 8 calls of 3 tokens (target, in process)',
      'Verify k=0, 100-token prefix',
      'Verify k=1, 100-token prefix',
      'Verify k=2, 100-token prefix',
      'synthetic forward, requested 5 ms',
    ]);
    for (const r of rows) {
      expect(r.median_ms).toBeGreaterThan(0);
      for (const [key, value] of Object.entries(r)) if (key !== 'name') expect([r.name, key, Number.isFinite(value)]).toEqual([r.name, key, true]);
    }
    expect(lines.length).toBeGreaterThanOrEqual(5);
  });

  it('compares the same forward in process and through the service', () => {
    const served = row('decode step through the target service (Verify, 0 drafts)');
    expect(served.ratio_vs_in_process).toBeCloseTo(served.median_ms / row('decode step, OnnxModel.logits in process').median_ms, 9);
    const drafter = row('drafter decode step, OnnxModel.logits in process');
    expect(drafter.ratio_vs_target).toBeCloseTo(drafter.median_ms / row('decode step, OnnxModel.logits in process').median_ms, 9);
  });

  it('runs B queued calls in one batched forward (the bench throws otherwise) and reports its cost against one call alone', () => {
    // What a batched forward costs is the bench's figure (README), not asserted here: timed on a host
    // shared with other tests it says nothing.
    expect(row('batched forward, 1 call of 3 tokens (target, in process)').ratio_vs_one_call).toBe(1);
    const eight = row('batched forward, 8 calls of 3 tokens (target, in process)');
    expect(eight.per_call_ms).toBeCloseTo(eight.median_ms / 8, 9);
    expect(eight.ratio_vs_one_call).toBeCloseTo(eight.median_ms / row('batched forward, 1 call of 3 tokens (target, in process)').median_ms, 9);
  });

  it('reuses the cached prefix on a warm Verify: it computes the k drafts and one more token', () => {
    for (const k of [0, 1, 2]) expect(row(`Verify k=${k}, 100-token prefix`).warm_computed_tokens).toBe(k + 1);
  });

  it('measures the synthetic backend\'s forward through the service, model time included', () => {
    const synthetic = row('synthetic forward, requested 5 ms');
    expect(synthetic.model_ms).toBeGreaterThanOrEqual(4.5);
    expect(synthetic.median_ms).toBeGreaterThan(synthetic.model_ms as number);
    expect(synthetic.error_ms).toBeCloseTo(synthetic.median_ms - 5, 9);
  });
});
