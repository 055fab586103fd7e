/**
 * What the generated pair's files declare: config.json, the graph's inputs and outputs, the logit
 * bias and how the drafter derives from the target. Running the models (KV cache, masks, quality
 * and the acceptance figure) is tested in libs/models, through the forward path the services use.
 */
import { buildModelPairFiles, defaultModelPairFiles } from './files';
import { buildDecoderGraph, bytePrior, DEFAULT_MODEL_SPEC, generableTokenIds, generateWeights, logitBias } from './model';
import { DataType } from './onnx';

const V = DEFAULT_MODEL_SPEC.vocabSize;
const H = DEFAULT_MODEL_SPEC.numHeads;
const D = DEFAULT_MODEL_SPEC.headDim;

describe('generated models: layout', () => {
  it('writes config.json in the Hugging Face style the runtime reads', () => {
    const { target, drafter } = defaultModelPairFiles();
    for (const [files, layers] of [
      [target, 4],
      [drafter, 1],
    ] as const) {
      const c = JSON.parse(Buffer.from(files.get('config.json') as Uint8Array).toString('utf8'));
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
    }
  });

  it('declares exactly the Optimum decoder-with-past inputs and outputs, with named dynamic dims', () => {
    const weights = generateWeights(DEFAULT_MODEL_SPEC);
    for (const layers of [4, 1]) {
      const graph = buildDecoderGraph(DEFAULT_MODEL_SPEC, weights, layers, 'layout');
      const kv = (prefix: string, seq: string) =>
        Array.from({ length: layers }, (_, l) =>
          ['key', 'value'].map((kind) => ({ name: `${prefix}.${l}.${kind}`, elemType: DataType.FLOAT, shape: ['batch_size', H, seq, D] })),
        ).flat();
      expect(graph.inputs).toEqual([
        { name: 'input_ids', elemType: DataType.INT64, shape: ['batch_size', 'sequence_length'] },
        { name: 'attention_mask', elemType: DataType.INT64, shape: ['batch_size', 'total_sequence_length'] },
        { name: 'position_ids', elemType: DataType.INT64, shape: ['batch_size', 'sequence_length'] },
        ...kv('past_key_values', 'past_sequence_length'),
      ]);
      expect(graph.outputs).toEqual([{ name: 'logits', elemType: DataType.FLOAT, shape: ['batch_size', 'sequence_length', V] }, ...kv('present', 'total_sequence_length')]);
    }
  });

  it('writes a drafter that does not depend on the target\'s later layers', () => {
    // The drafter is the target's first layer: scaling the later layers away leaves its file unchanged.
    const files = buildModelPairFiles({ ...DEFAULT_MODEL_SPEC, residualScale: [1, 0, 0, 0] });
    expect(Buffer.compare(files.drafter.get('model.onnx') as Uint8Array, defaultModelPairFiles().drafter.get('model.onnx') as Uint8Array)).toBe(0);
    expect(Buffer.compare(files.target.get('model.onnx') as Uint8Array, defaultModelPairFiles().target.get('model.onnx') as Uint8Array)).not.toBe(0);
  });
});

describe('the logit bias', () => {
  it('biases generation to newline + printable ASCII with an English-like prior', () => {
    const ids = generableTokenIds();
    expect(ids).toEqual([10, ...Array.from({ length: 95 }, (_, i) => 32 + i)]);
    const bias = logitBias(DEFAULT_MODEL_SPEC);
    const prior = bytePrior();
    for (let t = 0; t < DEFAULT_MODEL_SPEC.vocabSize; t++) {
      if (prior.has(t)) expect(bias[t]).toBeCloseTo(DEFAULT_MODEL_SPEC.logitBias.priorScale * (prior.get(t) as number), 5);
      else expect(bias[t]).toBe(-100);
    }
    expect(prior.get(32)).toBeGreaterThan(prior.get(101) as number); // ' ' > 'e'
    expect(prior.get(101)).toBeGreaterThan(prior.get(122) as number); // 'e' > 'z'
  });
});
