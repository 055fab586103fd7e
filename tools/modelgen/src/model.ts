/**
 * The tiny decoder-only transformer: architecture constants, deterministic weights and the ONNX
 * graph in the Hugging Face Optimum "decoder with past" layout.
 *
 * Graph I/O (batch B, new tokens S, cached tokens P, total T = P + S):
 * - inputs  `input_ids` int64 [B,S], `attention_mask` int64 [B,T], `position_ids` int64 [B,S],
 *           `past_key_values.{i}.key|value` float32 [B,H,P,D] (P may be 0)
 * - outputs `logits` float32 [B,S,V], `present.{i}.key|value` float32 [B,H,T,D] = concat(past, new)
 *
 * Architecture (pre-LN): token embedding + learned position embedding (gathered by position_ids);
 * per layer LayerNorm -> fused QKV projection -> heads -> concat past -> masked softmax attention ->
 * output projection -> residual; LayerNorm -> MLP (ReLU) -> residual; final LayerNorm -> LM head
 * plus a fixed logit bias.
 *
 * Attention mask: cache slot j is visible to the query in cache slot P+i iff j <= P+i and
 * attention_mask[j] == 1. For the usual unpadded batch (position_ids = P+i) this is exactly
 * "j <= position"; keying causality on the cache slot rather than position_ids keeps the model
 * correct for left-padded batches (HF position_ids = cumsum(mask)-1) too.
 */
import { attr, DataType, floatTensor, GraphBuilder, GraphDef, encodeModel } from './onnx';
import { WeightRng } from './prng';
import { BYTE_VOCAB_SIZE, SPECIAL_TOKENS } from './tokenizer';

/** Everything that determines a generated model pair. */
export interface ModelSpec {
  /** Tokenizer/vocabulary size (byte-level: 256 bytes + 3 special tokens). */
  vocabSize: number;
  hiddenSize: number;
  /** Layers of the target; the drafter keeps the first `drafterLayers`. */
  numLayers: number;
  drafterLayers: number;
  numHeads: number;
  headDim: number;
  intermediateSize: number;
  maxPositionEmbeddings: number;
  layerNormEps: number;
  /** PRNG seed for every weight. */
  seed: number;
  /** Standard deviations / gains of the random weights. */
  init: {
    tokenEmbedding: number;
    positionEmbedding: number;
    /** Q and K projection std (sets how peaked attention is). */
    queryKey: number;
    value: number;
    /** Output projection std. */
    attnOut: number;
    /** MLP input std (He init for ReLU: sqrt(2 / hidden)). */
    mlpIn: number;
    mlpOut: number;
    /** LM head std: sets the spread of the random logits (std about 16 * lmHead). */
    lmHead: number;
  };
  /**
   * Multiplier on each layer's residual contribution (attention and MLP outputs). Layer 0 is what
   * the drafter has; the smaller the later layers' scale, the more often drafter and target agree.
   */
  residualScale: readonly number[];
  /** Logit bias: generable bytes get `priorScale * ln(frequency)` (see {@link bytePrior}), others `disallowed`. */
  logitBias: { priorScale: number; disallowed: number };
}

/**
 * The architecture and tuning constants of the default pair. `residualScale` of layers 1..3 is the
 * knob that sets drafter/target agreement (tuned so greedy acceptance is about 0.7).
 */
export const DEFAULT_MODEL_SPEC: Readonly<ModelSpec> = Object.freeze({
  vocabSize: BYTE_VOCAB_SIZE,
  hiddenSize: 256,
  numLayers: 4,
  drafterLayers: 1,
  numHeads: 4,
  headDim: 64,
  intermediateSize: 1024,
  maxPositionEmbeddings: 1024,
  layerNormEps: 1e-5,
  seed: 20240917,
  init: Object.freeze({
    tokenEmbedding: 1.0,
    positionEmbedding: 1.0,
    queryKey: 0.15,
    value: 0.1,
    attnOut: 0.1,
    mlpIn: 0.088,
    mlpOut: 0.03125,
    lmHead: 0.19,
  }),
  residualScale: Object.freeze([1, 0.15, 0.15, 0.15]),
  logitBias: Object.freeze({ priorScale: 0.85, disallowed: -100 }),
});

/**
 * Approximate English character frequencies (per mille of characters, space included) of the bytes
 * the model may generate: newline and printable ASCII 32..126. Their natural logs, scaled by
 * `logitBias.priorScale`, form the generable tokens' logit bias, so greedy output looks text-like
 * (mostly lowercase letters and spaces). Other capitals and digits count 1, other printable bytes
 * {@link RARE_FREQUENCY}; all remaining tokens (control bytes, bytes >= 127, specials) are never
 * generated greedily.
 */
const BYTE_FREQUENCIES: ReadonlyArray<readonly [string, number]> = [
  [' ', 180], ['e', 100], ['t', 72], ['a', 64], ['o', 61], ['i', 56], ['n', 56], ['s', 52], ['h', 48],
  ['r', 48], ['d', 34], ['l', 32], ['c', 22], ['u', 22], ['m', 20], ['w', 19], ['f', 18], ['g', 16],
  ['y', 16], ['p', 15], ['b', 12], ['v', 8], ['k', 6], [',', 7], ['.', 6], ['\n', 3], ['T', 3],
  ['I', 2], ['A', 2], ["'", 2], ['S', 1.5], ['-', 1.5], ['j', 1.2], ['x', 1.2], ['q', 0.8], ['z', 0.6],
];
/** Frequency (per mille) assumed for printable bytes not in the table. */
const RARE_FREQUENCY = 0.3;

/**
 * The prior (natural log of the per-mille frequency, rounded to 1e-3 so no engine-specific last
 * bit of Math.log reaches the weights) of every generable byte.
 */
export function bytePrior(): Map<number, number> {
  const freq = new Map<number, number>();
  for (let b = 32; b <= 126; b++) freq.set(b, RARE_FREQUENCY);
  for (let c = 65; c <= 90; c++) freq.set(c, 1); // other capitals
  for (let c = 48; c <= 57; c++) freq.set(c, 1); // digits
  for (const [ch, f] of BYTE_FREQUENCIES) freq.set(ch.charCodeAt(0), f);
  const prior = new Map<number, number>();
  for (const b of [...freq.keys()].sort((x, y) => x - y)) prior.set(b, Math.round(Math.log(freq.get(b) as number) * 1000) / 1000);
  return prior;
}

/** The LM-head bias: generable bytes get `priorScale * prior`, all other tokens `disallowed`. */
export function logitBias(spec: ModelSpec): Float32Array {
  const bias = new Float32Array(spec.vocabSize).fill(spec.logitBias.disallowed);
  for (const [b, prior] of bytePrior()) bias[b] = spec.logitBias.priorScale * prior;
  return bias;
}

/** Ids the model can produce greedily (newline + printable ASCII). */
export function generableTokenIds(): number[] {
  return [...bytePrior().keys()];
}

/** Named float32 weights; names follow Hugging Face conventions (`model.layers.0.mlp.fc1.weight`). */
export type Weights = Map<string, { dims: number[]; data: Float32Array }>;

/**
 * Generates every weight of the target deterministically from `spec.seed`. Matrices are stored
 * [in, out] (the MatMul right operand). Layer residual scales are folded into the output
 * projections. The drafter reuses these same arrays (its first layers, embeddings, head).
 */
export function generateWeights(spec: ModelSpec): Weights {
  const rng = new WeightRng(spec.seed);
  const { hiddenSize: d, vocabSize: V, intermediateSize: ff } = spec;
  if (spec.numHeads * spec.headDim !== d) throw new Error(`numHeads * headDim (${spec.numHeads * spec.headDim}) must equal hiddenSize (${d})`);
  const w: Weights = new Map();
  const put = (name: string, dims: number[], data: Float32Array) => w.set(name, { dims, data });
  const ones = (n: number) => new Float32Array(n).fill(1);

  put('model.embed_tokens.weight', [V, d], rng.normal('model.embed_tokens.weight', V * d, spec.init.tokenEmbedding));
  put(
    'model.embed_positions.weight',
    [spec.maxPositionEmbeddings, d],
    rng.normal('model.embed_positions.weight', spec.maxPositionEmbeddings * d, spec.init.positionEmbedding),
  );
  for (let l = 0; l < spec.numLayers; l++) {
    const p = `model.layers.${l}`;
    const scale = spec.residualScale[l] ?? 1;
    put(`${p}.input_layernorm.weight`, [d], ones(d));
    put(`${p}.input_layernorm.bias`, [d], new Float32Array(d));
    // Fused QKV [d, 3d]: columns 0..d-1 = Q, d..2d-1 = K, 2d..3d-1 = V (head-major inside each).
    const q = rng.normal(`${p}.self_attn.q_proj.weight`, d * d, spec.init.queryKey);
    const k = rng.normal(`${p}.self_attn.k_proj.weight`, d * d, spec.init.queryKey);
    const v = rng.normal(`${p}.self_attn.v_proj.weight`, d * d, spec.init.value);
    const qkv = new Float32Array(d * 3 * d);
    for (let r = 0; r < d; r++) {
      qkv.set(q.subarray(r * d, (r + 1) * d), r * 3 * d);
      qkv.set(k.subarray(r * d, (r + 1) * d), r * 3 * d + d);
      qkv.set(v.subarray(r * d, (r + 1) * d), r * 3 * d + 2 * d);
    }
    put(`${p}.self_attn.qkv_proj.weight`, [d, 3 * d], qkv);
    put(`${p}.self_attn.qkv_proj.bias`, [3 * d], new Float32Array(3 * d));
    put(`${p}.self_attn.o_proj.weight`, [d, d], scaled(rng.normal(`${p}.self_attn.o_proj.weight`, d * d, spec.init.attnOut), scale));
    put(`${p}.self_attn.o_proj.bias`, [d], new Float32Array(d));
    put(`${p}.post_attention_layernorm.weight`, [d], ones(d));
    put(`${p}.post_attention_layernorm.bias`, [d], new Float32Array(d));
    put(`${p}.mlp.fc1.weight`, [d, ff], rng.normal(`${p}.mlp.fc1.weight`, d * ff, spec.init.mlpIn));
    put(`${p}.mlp.fc1.bias`, [ff], new Float32Array(ff));
    put(`${p}.mlp.fc2.weight`, [ff, d], scaled(rng.normal(`${p}.mlp.fc2.weight`, ff * d, spec.init.mlpOut), scale));
    put(`${p}.mlp.fc2.bias`, [d], new Float32Array(d));
  }
  put('model.norm.weight', [d], ones(d));
  put('model.norm.bias', [d], new Float32Array(d));
  // LM head: columns of tokens that can never be generated are zero, so their logits are exactly
  // the (large negative) bias in every forward, whatever the numerical path.
  const head = rng.normal('lm_head.weight', d * V, spec.init.lmHead);
  const allowed = new Set(generableTokenIds());
  for (let r = 0; r < d; r++) for (let c = 0; c < V; c++) if (!allowed.has(c)) head[r * V + c] = 0;
  put('lm_head.weight', [d, V], head);
  put('lm_head.bias', [V], logitBias(spec));
  return w;
}

function scaled(a: Float32Array, s: number): Float32Array {
  if (s === 1) return a;
  for (let i = 0; i < a.length; i++) a[i] = a[i] * s;
  return a;
}

/**
 * Builds the decoder graph with the first `numLayers` layers of `weights`. With all layers it is
 * the target; with `spec.drafterLayers` the drafter (same embeddings, final norm, head, bias).
 */
export function buildDecoderGraph(spec: ModelSpec, weights: Weights, numLayers: number, name: string): GraphDef {
  const b = new GraphBuilder(name);
  const { hiddenSize: d, numHeads: H, headDim: D, vocabSize: V } = spec;
  const W = (n: string): string => {
    const t = weights.get(n);
    if (!t) throw new Error(`missing weight ${n}`);
    return b.initializer(floatTensor(n, t.dims, t.data));
  };

  const inputIds = b.input('input_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  const mask = b.input('attention_mask', DataType.INT64, ['batch_size', 'total_sequence_length']);
  const positionIds = b.input('position_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  const past: { key: string; value: string }[] = [];
  for (let l = 0; l < numLayers; l++) {
    const shape = ['batch_size', H, 'past_sequence_length', D];
    past.push({
      key: b.input(`past_key_values.${l}.key`, DataType.FLOAT, shape),
      value: b.input(`past_key_values.${l}.value`, DataType.FLOAT, shape),
    });
  }

  // Embeddings.
  let h = b.scope('embed', () => {
    const tok = b.op('Gather', [W('model.embed_tokens.weight'), inputIds], { axis: attr.int(0) });
    const pos = b.op('Gather', [W('model.embed_positions.weight'), positionIds], { axis: attr.int(0) });
    return b.op('Add', [tok, pos]);
  });

  // Visibility [B,1,S,T]: causal on cache slots, and attention_mask.
  const visible = b.scope('mask', () => {
    const one = b.constInt64([1], []);
    const zero = b.constInt64([0], []);
    const total = b.op('Gather', [b.op('Shape', [mask]), one], { axis: attr.int(0) });
    const seq = b.op('Gather', [b.op('Shape', [inputIds]), one], { axis: attr.int(0) });
    const pastLen = b.op('Sub', [total, seq]);
    const keySlots = b.op('Range', [zero, total, one]); // [T]
    const querySlots = b.op('Unsqueeze', [b.op('Range', [pastLen, total, one]), b.constInt64([1])]); // [S,1]
    const causal = b.op('LessOrEqual', [keySlots, querySlots]); // [S,T]
    const keep = b.op('Unsqueeze', [b.op('Cast', [mask], { to: attr.int(DataType.BOOL) }), b.constInt64([1, 2])]); // [B,1,1,T]
    return b.op('And', [causal, keep]);
  });
  const negInf = b.constFloat([-1e9], []);
  const invSqrtD = b.constFloat([1 / Math.sqrt(D)], []);
  const eps = attr.float(spec.layerNormEps);
  const layerNorm = (x: string, prefix: string) =>
    b.op('LayerNormalization', [x, W(`${prefix}.weight`), W(`${prefix}.bias`)], { axis: attr.int(-1), epsilon: eps });
  const linear = (x: string, prefix: string) => b.op('Add', [b.op('MatMul', [x, W(`${prefix}.weight`)]), W(`${prefix}.bias`)]);

  for (let l = 0; l < numLayers; l++) {
    const p = `model.layers.${l}`;
    h = b.scope(`model/layers.${l}`, () => {
      const attnOut = b.scope('self_attn', () => {
        const x = layerNorm(h, `${p}.input_layernorm`);
        const qkv = linear(x, `${p}.self_attn.qkv_proj`); // [B,S,3d]
        const heads = b.op('Transpose', [b.op('Reshape', [qkv, b.constInt64([0, 0, 3 * H, D])])], {
          perm: attr.ints([0, 2, 1, 3]),
        }); // [B,3H,S,D]
        const [q, k, v] = b.opN('Split', [heads, b.constInt64([H, H, H])], 3, { axis: attr.int(1) });
        const keys = b.op('Concat', [past[l].key, k], { axis: attr.int(2) }, `present.${l}.key`);
        const values = b.op('Concat', [past[l].value, v], { axis: attr.int(2) }, `present.${l}.value`);
        const scores = b.op('MatMul', [
          b.op('Mul', [q, invSqrtD]),
          b.op('Transpose', [keys], { perm: attr.ints([0, 1, 3, 2]) }),
        ]); // [B,H,S,T]
        const probs = b.op('Softmax', [b.op('Where', [visible, scores, negInf])], { axis: attr.int(-1) });
        const ctx = b.op('Transpose', [b.op('MatMul', [probs, values])], { perm: attr.ints([0, 2, 1, 3]) }); // [B,S,H,D]
        return linear(b.op('Reshape', [ctx, b.constInt64([0, 0, d])]), `${p}.self_attn.o_proj`);
      });
      const h1 = b.op('Add', [h, attnOut]);
      const mlpOut = b.scope('mlp', () => {
        const x = layerNorm(h1, `${p}.post_attention_layernorm`);
        return linear(b.op('Relu', [linear(x, `${p}.mlp.fc1`)]), `${p}.mlp.fc2`);
      });
      return b.op('Add', [h1, mlpOut]);
    });
  }

  b.scope('model/norm', () => {
    const x = layerNorm(h, 'model.norm');
    b.op('Add', [b.op('MatMul', [x, W('lm_head.weight')]), W('lm_head.bias')], {}, 'logits');
  });

  b.output('logits', DataType.FLOAT, ['batch_size', 'sequence_length', V]);
  for (let l = 0; l < numLayers; l++) {
    const shape = ['batch_size', H, 'total_sequence_length', D];
    b.output(`present.${l}.key`, DataType.FLOAT, shape);
    b.output(`present.${l}.value`, DataType.FLOAT, shape);
  }
  return b.graph;
}

/** Hugging Face style config.json for a model with `numLayers` layers. */
export function modelConfig(spec: ModelSpec, numLayers: number): Record<string, unknown> {
  return {
    model_type: 'dsi-tiny-decoder',
    architectures: ['DsiTinyDecoder'],
    vocab_size: spec.vocabSize,
    hidden_size: spec.hiddenSize,
    num_hidden_layers: numLayers,
    num_attention_heads: spec.numHeads,
    num_key_value_heads: spec.numHeads,
    head_dim: spec.headDim,
    intermediate_size: spec.intermediateSize,
    max_position_embeddings: spec.maxPositionEmbeddings,
    hidden_act: 'relu',
    layer_norm_eps: spec.layerNormEps,
    bos_token_id: SPECIAL_TOKENS.bos,
    eos_token_id: SPECIAL_TOKENS.eos,
    pad_token_id: SPECIAL_TOKENS.pad,
    tie_word_embeddings: false,
    use_cache: true,
    torch_dtype: 'float32',
  };
}

/** Serialises a model with `numLayers` layers to ONNX bytes (IR 8, opset 17). */
export function encodeDecoderModel(spec: ModelSpec, weights: Weights, numLayers: number, name: string): Uint8Array {
  return encodeModel(buildDecoderGraph(spec, weights, numLayers, name), { irVersion: 8, opsetVersion: 17 });
}
