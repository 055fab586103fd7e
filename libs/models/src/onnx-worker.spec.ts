/**
 * The Optimum "decoder with past" contract onnx-worker.ts relies on (input and output names, KV cache
 * layout, attention mask semantics), checked on the generated default pair with onnxruntime directly:
 * batched, padded and masked feeds the backend never sends, and session options it does not expose.
 * The backend's own behaviour (cache reuse, queueing, aborts) is tested in onnx.spec.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type * as Ort from 'onnxruntime-node';
import { buildModelPairFiles, DEFAULT_MODEL_SPEC, ensureDefaultModels, type ModelPairPaths } from '@dsi/modelgen';
import { OnnxModel } from './onnx';
import { onnxruntimeForTests, testModelsDir } from './test-models';

const V = DEFAULT_MODEL_SPEC.vocabSize;
const H = DEFAULT_MODEL_SPEC.numHeads;
const D = DEFAULT_MODEL_SPEC.headDim;
const utf8 = (text: string) => [...Buffer.from(text, 'utf8')];

let ort: typeof Ort;
let pair: ModelPairPaths;
let target: Ort.InferenceSession;
let drafter: Ort.InferenceSession;
let targetModel: OnnxModel;
let drafterModel: OnnxModel;

beforeAll(async () => {
  ort = await onnxruntimeForTests();
  pair = await ensureDefaultModels(testModelsDir());
  const options = { intraOpNumThreads: 1 };
  [target, drafter, targetModel, drafterModel] = await Promise.all([
    ort.InferenceSession.create(path.join(pair.target, 'model.onnx'), options),
    ort.InferenceSession.create(path.join(pair.drafter, 'model.onnx'), options),
    OnnxModel.load(pair.target),
    OnnxModel.load(pair.drafter),
  ]);
});

afterAll(async () => {
  await Promise.all([target?.release(), drafter?.release(), targetModel?.close(), drafterModel?.close()]);
});

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

const int64 = (values: readonly (number | bigint)[], dims: number[]) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);

/** Feeds of one unpadded sequence with an empty cache of `layers` layers (batch 1, positions 0..). */
function freshFeeds(ids: readonly number[], layers: number): Record<string, Ort.Tensor> {
  const feeds: Record<string, Ort.Tensor> = {
    input_ids: int64(ids, [1, ids.length]),
    attention_mask: int64(ids.map(() => 1), [1, ids.length]),
    position_ids: int64(ids.map((_, i) => i), [1, ids.length]),
  };
  for (let l = 0; l < layers; l++) {
    for (const kind of ['key', 'value']) feeds[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, H, 0, D]);
  }
  return feeds;
}

/** The backend's logits for every position of `ids` (one uncached forward). */
async function backendLogits(model: OnnxModel, ids: readonly number[]): Promise<Float32Array> {
  return (await model.logits('', ids, 0)).logits;
}

describe('the generated pair as an Optimum decoder', () => {
  it('declares exactly the Optimum decoder-with-past inputs and outputs, with named dynamic dims', () => {
    for (const [session, layers] of [
      [target, 4],
      [drafter, 1],
    ] as const) {
      const kv = (prefix: string, seq: string) =>
        Array.from({ length: layers }, (_, l) =>
          ['key', 'value'].map((kind) => ({ name: `${prefix}.${l}.${kind}`, isTensor: true, type: 'float32', shape: ['batch_size', H, seq, D] })),
        ).flat();
      expect(session.inputMetadata).toEqual([
        { name: 'input_ids', isTensor: true, type: 'int64', shape: ['batch_size', 'sequence_length'] },
        { name: 'attention_mask', isTensor: true, type: 'int64', shape: ['batch_size', 'total_sequence_length'] },
        { name: 'position_ids', isTensor: true, type: 'int64', shape: ['batch_size', 'sequence_length'] },
        ...kv('past_key_values', 'past_sequence_length'),
      ]);
      expect(session.outputMetadata).toEqual([
        { name: 'logits', isTensor: true, type: 'float32', shape: ['batch_size', 'sequence_length', V] },
        ...kv('present', 'total_sequence_length'),
      ]);
    }
  });

  it('computes the backend\'s logits without graph optimisations and with two threads', async () => {
    const ids = utf8('Hello, world');
    const reference = await backendLogits(targetModel, ids);
    for (const options of [{ graphOptimizationLevel: 'disabled' as const }, { intraOpNumThreads: 2 }]) {
      const session = await ort.InferenceSession.create(path.join(pair.target, 'model.onnx'), options);
      try {
        expect(maxAbsDiff((await session.run(freshFeeds(ids, 4))).logits.data as Float32Array, reference)).toBeLessThan(1e-4);
      } finally {
        await session.release();
      }
    }
  });

  it('returns logits [1,S,V] and present = concat(past, new) of dims [1,H,P+S,D]', async () => {
    const first = await target.run(freshFeeds(utf8('Hello'), 4));
    const past: Record<string, Ort.Tensor> = {};
    for (let l = 0; l < 4; l++) for (const kind of ['key', 'value']) past[`past_key_values.${l}.${kind}`] = first[`present.${l}.${kind}`];
    expect(past['past_key_values.0.key'].dims).toEqual([1, H, 5, D]);
    const out = await target.run({
      ...past,
      input_ids: int64([44, 32], [1, 2]),
      attention_mask: int64([1, 1, 1, 1, 1, 1, 1], [1, 7]),
      position_ids: int64([5, 6], [1, 2]),
    });
    expect(out.logits.dims).toEqual([1, 2, V]);
    for (let l = 0; l < 4; l++) {
      for (const kind of ['key', 'value']) {
        const before = past[`past_key_values.${l}.${kind}`].data as Float32Array;
        const present = out[`present.${l}.${kind}`];
        expect(present.dims).toEqual([1, H, 7, D]);
        const data = present.data as Float32Array;
        for (let h = 0; h < H; h++) {
          // Rows 0..4 of head h are the past ones, unchanged.
          expect(Array.from(data.subarray(h * 7 * D, (h * 7 + 5) * D))).toEqual(Array.from(before.subarray(h * 5 * D, (h + 1) * 5 * D)));
        }
      }
    }
  });

  it('masks padding: a left-padded batch row matches the unpadded sequence (HF position_ids)', async () => {
    const a = utf8('Once upon a time');
    const b = utf8('Hi there');
    const pad = a.length - b.length;
    const feeds: Record<string, Ort.Tensor> = {
      input_ids: int64([...a, ...Array(pad).fill(258), ...b], [2, a.length]),
      attention_mask: int64([...a.map(() => 1), ...Array(pad).fill(0), ...b.map(() => 1)], [2, a.length]),
      position_ids: int64([...a.map((_, i) => i), ...Array(pad).fill(0), ...b.map((_, i) => i)], [2, a.length]),
    };
    for (let l = 0; l < 4; l++) {
      feeds[`past_key_values.${l}.key`] = new ort.Tensor('float32', new Float32Array(0), [2, H, 0, D]);
      feeds[`past_key_values.${l}.value`] = new ort.Tensor('float32', new Float32Array(0), [2, H, 0, D]);
    }
    const out = (await target.run(feeds)).logits.data as Float32Array;
    expect(maxAbsDiff(out.subarray(0, a.length * V), await backendLogits(targetModel, a))).toBeLessThan(1e-4);
    expect(maxAbsDiff(out.subarray((a.length + pad) * V, 2 * a.length * V), await backendLogits(targetModel, b))).toBeLessThan(1e-4);
  });

  it('masks keys whose attention_mask is 0 (a masked cache entry has no influence)', async () => {
    const ids = utf8('abc');
    const run = async (middle: number, maskMiddle: number) => {
      const feeds = { ...freshFeeds([ids[0], middle, ids[2]], 1), attention_mask: int64([1, maskMiddle, 1], [1, 3]) };
      const logits = (await drafter.run(feeds)).logits.data as Float32Array;
      return logits.slice(2 * V, 3 * V);
    };
    expect(maxAbsDiff(await run(98, 0), await run(33, 0))).toBe(0);
    expect(maxAbsDiff(await run(98, 1), await run(33, 1))).toBeGreaterThan(1e-3);
  });

  it('has a drafter that is the target\'s first layer with the same embeddings, final norm and head', async () => {
    // With the later layers' residual contribution scaled to 0, target and drafter must coincide.
    const files = buildModelPairFiles({ ...DEFAULT_MODEL_SPEC, residualScale: [1, 0, 0, 0] });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-first-layer-'));
    try {
      for (const [name, data] of files.target) fs.writeFileSync(path.join(dir, name), data);
      const firstLayerTarget = await OnnxModel.load(dir);
      try {
        const ids = utf8('def fibonacci(n):');
        expect(maxAbsDiff(await backendLogits(firstLayerTarget, ids), await backendLogits(drafterModel, ids))).toBeLessThan(1e-4);
      } finally {
        await firstLayerTarget.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
