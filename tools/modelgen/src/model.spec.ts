import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as Ort from 'onnxruntime-node';
import { buildModelPairFiles, ModelPairPaths, writeDefaultModels } from './files';
import {
  BUILTIN_PROMPTS,
  DecoderSession,
  greedyGenerate,
  loadOrt,
  measureAcceptance,
  readDecoderConfig,
  repeatingTailPeriod,
  timeForward,
} from './measure';
import { DEFAULT_MODEL_SPEC, generableTokenIds } from './model';

const V = DEFAULT_MODEL_SPEC.vocabSize;
const H = DEFAULT_MODEL_SPEC.numHeads;
const D = DEFAULT_MODEL_SPEC.headDim;
const utf8 = (s: string) => [...Buffer.from(s, 'utf8')];

let tmp: string;
let paths: ModelPairPaths;
let target: DecoderSession;
let drafter: DecoderSession;
let ort: typeof Ort;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'modelgen-model-'));
  paths = await writeDefaultModels(tmp);
  ort = await loadOrt();
  target = await DecoderSession.open(paths.target);
  drafter = await DecoderSession.open(paths.drafter);
});

afterAll(async () => {
  await target?.close();
  await drafter?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('generated models: layout', () => {
  it('writes config.json in the Hugging Face style the runtime reads', () => {
    for (const [dir, layers] of [
      [paths.target, 4],
      [paths.drafter, 1],
    ] as const) {
      const c = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
      expect(c).toMatchObject({
        model_type: 'dsi-tiny-decoder',
        architectures: ['DsiTinyDecoder'],
        vocab_size: 259,
        hidden_size: 256,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        head_dim: 64,
        intermediate_size: 1024,
        max_position_embeddings: 1024,
        bos_token_id: 256,
        eos_token_id: 257,
        pad_token_id: 258,
        torch_dtype: 'float32',
      });
      expect(readDecoderConfig(dir)).toEqual({
        numLayers: layers,
        numHeads: 4,
        headDim: 64,
        vocabSize: 259,
        maxPositionEmbeddings: 1024,
        eosTokenId: 257,
      });
    }
  });

  it('declares exactly the Optimum decoder-with-past inputs and outputs, with named dynamic dims', () => {
    for (const [model, layers] of [
      [target, 4],
      [drafter, 1],
    ] as const) {
      const kv = (prefix: string, seq: string) =>
        Array.from({ length: layers }, (_, l) =>
          ['key', 'value'].map((kind) => ({ name: `${prefix}.${l}.${kind}`, isTensor: true, type: 'float32', shape: ['batch_size', H, seq, D] })),
        ).flat();
      expect(model.session.inputMetadata).toEqual([
        { name: 'input_ids', isTensor: true, type: 'int64', shape: ['batch_size', 'sequence_length'] },
        { name: 'attention_mask', isTensor: true, type: 'int64', shape: ['batch_size', 'total_sequence_length'] },
        { name: 'position_ids', isTensor: true, type: 'int64', shape: ['batch_size', 'sequence_length'] },
        ...kv('past_key_values', 'past_sequence_length'),
      ]);
      expect(model.session.outputMetadata).toEqual([
        { name: 'logits', isTensor: true, type: 'float32', shape: ['batch_size', 'sequence_length', V] },
        ...kv('present', 'total_sequence_length'),
      ]);
    }
  });

  it('computes the same logits without graph optimisations and with two threads', async () => {
    const ids = utf8('Hello, world');
    const reference = (await target.forward(ids)).logits;
    for (const options of [{ graphOptimizationLevel: 'disabled' as const }, { intraOpNumThreads: 2 }]) {
      const s = await ort.InferenceSession.create(path.join(paths.target, 'model.onnx'), options);
      try {
        const feeds: Record<string, Ort.Tensor> = {
          input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]),
          attention_mask: new ort.Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]),
          position_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, ids.length]),
        };
        for (let l = 0; l < 4; l++) {
          for (const kind of ['key', 'value']) feeds[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, H, 0, D]);
        }
        expect(maxAbsDiff((await s.run(feeds)).logits.data as Float32Array, reference)).toBeLessThan(1e-4);
      } finally {
        await s.release();
      }
    }
  });

  it('returns logits [1,S,V] and present = concat(past, new) of dims [1,H,P+S,D]', async () => {
    const first = await target.forward(utf8('Hello'));
    expect(first.cache.length).toBe(5);
    const k0 = first.cache.feeds['past_key_values.0.key'];
    expect(k0.dims).toEqual([1, H, 5, D]);
    const out = await target.session.run({
      ...first.cache.feeds,
      input_ids: new ort.Tensor('int64', BigInt64Array.from([44n, 32n]), [1, 2]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(7).fill(1n), [1, 7]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from([5n, 6n]), [1, 2]),
    });
    expect(out.logits.dims).toEqual([1, 2, V]);
    for (let l = 0; l < 4; l++) {
      for (const kind of ['key', 'value']) {
        const past = first.cache.feeds[`past_key_values.${l}.${kind}`].data as Float32Array;
        const present = out[`present.${l}.${kind}`];
        expect(present.dims).toEqual([1, H, 7, D]);
        const p = present.data as Float32Array;
        for (let h = 0; h < H; h++) {
          // Rows 0..4 of head h are the past ones, unchanged.
          expect(Array.from(p.subarray(h * 7 * D, (h * 7 + 5) * D))).toEqual(Array.from(past.subarray(h * 5 * D, (h + 1) * 5 * D)));
        }
      }
    }
  });

  it('gives never-generated tokens a logit of exactly -100, so greedy output is newline or printable ASCII', async () => {
    const { logits } = await target.forward(utf8('any text \u00e9\u{1F600}'));
    const allowed = new Set(generableTokenIds());
    expect(allowed.size).toBe(96);
    for (let row = 0; row < logits.length / V; row++) {
      for (let t = 0; t < V; t++) if (!allowed.has(t)) expect(logits[row * V + t]).toBe(-100);
    }
  });
});

describe('generated models: KV cache consistency', () => {
  const text = 'The quick brown fox jumps over the lazy dog.\ndef fibonacci(n): return n';
  // Chunk sizes; the last chunk takes the rest of the text.
  it.each([
    ['target', 'one token at a time', [1]],
    ['drafter', 'one token at a time', [1]],
    ['target', 'mixed chunks', [1, 1, 1, 5, 1, 16, 2, 1, 0]],
    ['drafter', 'mixed chunks', [3, 1, 9, 1, 0]],
    ['target', 'prefill then one by one', [40, 1]],
  ])('%s, %s: cached forwards match one full forward within 1e-4', async (which, _label, schedule) => {
    const model = which === 'target' ? target : drafter;
    const ids = utf8(text);
    const full = (await model.forward(ids)).logits;
    let cache = model.emptyCache();
    let offset = 0;
    let worst = 0;
    for (let step = 0; offset < ids.length; step++) {
      const sizes = schedule as number[];
      const n = sizes[Math.min(step, sizes.length - 1)] || ids.length;
      const part = ids.slice(offset, offset + n);
      const r = await model.forward(part, cache);
      cache = r.cache;
      worst = Math.max(worst, maxAbsDiff(r.logits, full.subarray(offset * V, (offset + part.length) * V)));
      offset += part.length;
    }
    expect(offset).toBe(ids.length);
    expect(worst).toBeLessThan(1e-4);
  });

  it('masks padding: a left-padded batch row matches the unpadded sequence (HF position_ids)', async () => {
    const a = utf8('Once upon a time');
    const b = utf8('Hi there');
    const pad = a.length - b.length;
    const ids = [...a, ...Array(pad).fill(258), ...b].map(BigInt);
    const mask = [...a.map(() => 1n), ...Array(pad).fill(0n), ...b.map(() => 1n)];
    const pos = [...a.map((_, i) => BigInt(i)), ...Array(pad).fill(0n), ...b.map((_, i) => BigInt(i))];
    const feeds: Record<string, Ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids), [2, a.length]),
      attention_mask: new ort.Tensor('int64', BigInt64Array.from(mask), [2, a.length]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from(pos), [2, a.length]),
    };
    for (let l = 0; l < 4; l++) {
      feeds[`past_key_values.${l}.key`] = new ort.Tensor('float32', new Float32Array(0), [2, H, 0, D]);
      feeds[`past_key_values.${l}.value`] = new ort.Tensor('float32', new Float32Array(0), [2, H, 0, D]);
    }
    const out = (await target.session.run(feeds)).logits.data as Float32Array;
    const rowA = (await target.forward(a)).logits;
    const rowB = (await target.forward(b)).logits;
    expect(maxAbsDiff(out.subarray(0, a.length * V), rowA)).toBeLessThan(1e-4);
    expect(maxAbsDiff(out.subarray((a.length + pad) * V, 2 * a.length * V), rowB)).toBeLessThan(1e-4);
  });

  it('masks keys whose attention_mask is 0 (a masked cache entry has no influence)', async () => {
    const ids = utf8('abc');
    const run = async (middle: number, maskMiddle: bigint) => {
      const feeds: Record<string, Ort.Tensor> = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from([ids[0], middle, ids[2]].map(BigInt)), [1, 3]),
        attention_mask: new ort.Tensor('int64', BigInt64Array.from([1n, maskMiddle, 1n]), [1, 3]),
        position_ids: new ort.Tensor('int64', BigInt64Array.from([0n, 1n, 2n]), [1, 3]),
        'past_key_values.0.key': new ort.Tensor('float32', new Float32Array(0), [1, H, 0, D]),
        'past_key_values.0.value': new ort.Tensor('float32', new Float32Array(0), [1, H, 0, D]),
      };
      const logits = (await drafter.session.run(feeds)).logits.data as Float32Array;
      return logits.slice(2 * V, 3 * V);
    };
    expect(maxAbsDiff(await run(98, 0n), await run(33, 0n))).toBe(0);
    expect(maxAbsDiff(await run(98, 1n), await run(33, 1n))).toBeGreaterThan(1e-3);
  });
});

describe('generated models: behaviour', () => {
  let report: Awaited<ReturnType<typeof measureAcceptance>>;
  beforeAll(async () => {
    report = await measureAcceptance(target, drafter);
  });

  it('generates varied, printable text from every built-in prompt (>= 20 distinct of 64, no short loop)', () => {
    const allowed = new Set(generableTokenIds());
    expect(report.prompts.map((p) => p.prompt)).toEqual(BUILTIN_PROMPTS);
    for (const p of report.prompts) {
      expect(p.generated).toHaveLength(64);
      expect(p.distinctTokens).toBeGreaterThanOrEqual(20);
      expect(repeatingTailPeriod(p.generated)).toBe(0);
      expect(repeatingTailPeriod(p.generated, 16, 8)).toBe(0);
      for (const t of p.generated) expect(allowed.has(t)).toBe(true);
    }
    // Different prompts lead to different continuations.
    expect(new Set(report.prompts.map((p) => p.text)).size).toBe(report.prompts.length);
    console.log(
      report.prompts.map((p) => `${JSON.stringify(p.prompt)} -> ${JSON.stringify(p.text)} (${p.distinctTokens} distinct)`).join('\n'),
    );
  });

  it('has a drafter that agrees with the target often but not always (greedy acceptance 0.6-0.85)', () => {
    console.log(
      `acceptance a=${report.acceptanceRate.toFixed(3)} (m=${report.meanRunLength.toFixed(2)}, ${report.runs.length} runs), ` +
        `agreement=${report.agreement.toFixed(3)} over ${report.positions} positions; per prompt: ` +
        report.prompts.map((p) => `${p.acceptanceRate.toFixed(2)}/${p.agreement.toFixed(2)}`).join(', '),
    );
    expect(report.acceptanceRate).toBeGreaterThanOrEqual(0.6);
    expect(report.acceptanceRate).toBeLessThanOrEqual(0.85);
    expect(report.agreement).toBeGreaterThanOrEqual(0.6);
    expect(report.agreement).toBeLessThanOrEqual(0.9);
    expect(report.positions).toBe(64 * BUILTIN_PROMPTS.length);
  });

  it('greedy generation with the cache equals argmax of full forwards (drafter, 24 tokens)', async () => {
    const prompt = utf8('Once upon a time');
    const gen = await greedyGenerate(drafter, prompt, 24);
    const { logits } = await drafter.forward([...prompt, ...gen.slice(0, -1)]);
    for (let k = 0; k < gen.length; k++) {
      const row = Array.from(logits.subarray((prompt.length - 1 + k) * V, (prompt.length + k) * V));
      expect(row.indexOf(Math.max(...row))).toBe(gen[k]);
    }
  });

  it('drafter = the target first layer with the same embeddings, final norm and head', async () => {
    // With the later layers' residual contribution scaled to 0, target and drafter must coincide.
    const spec = { ...DEFAULT_MODEL_SPEC, residualScale: [1, 0, 0, 0] };
    const files = buildModelPairFiles(spec);
    const t = await ort.InferenceSession.create(files.target.get('model.onnx') as Uint8Array, { intraOpNumThreads: 1 });
    try {
      const ids = utf8('def fibonacci(n):');
      const feeds: Record<string, Ort.Tensor> = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]),
        position_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, ids.length]),
      };
      for (let l = 0; l < 4; l++) {
        for (const kind of ['key', 'value']) feeds[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, H, 0, D]);
      }
      const tl = (await t.run(feeds)).logits.data as Float32Array;
      const dl = (await drafter.forward(ids)).logits;
      expect(maxAbsDiff(tl, dl)).toBeLessThan(1e-4);
      // The drafter file itself is the same in both builds (it does not depend on later layers).
      expect(Buffer.compare(files.drafter.get('model.onnx') as Uint8Array, fs.readFileSync(path.join(paths.drafter, 'model.onnx')))).toBe(0);
    } finally {
      await t.release();
    }
  });

  it('is fast on CPU (one thread): single-token forward after a 100-token past, and a 64-token forward', async () => {
    const lines: string[] = [];
    const results: Record<string, number> = {};
    for (const [name, model] of [
      ['target', target],
      ['drafter', drafter],
    ] as const) {
      const one = await timeForward(model, { pastLength: 100, seqLength: 1, runs: 100 });
      const full = await timeForward(model, { pastLength: 0, seqLength: 64, runs: 20 });
      results[name] = one.medianMs;
      lines.push(`${name}: 1 token after 100 = ${one.medianMs.toFixed(3)} ms (median), 64 tokens = ${full.medianMs.toFixed(3)} ms`);
    }
    console.log(lines.join('\n'));
    // Loose bounds (shared CI machines); the budget is "well under 2 ms".
    expect(results.target).toBeLessThan(5);
    expect(results.drafter).toBeLessThan(results.target);
  });
});
