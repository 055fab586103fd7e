/**
 * Running the generated models with onnxruntime-node (CPU): a minimal KV-cached decoder session,
 * greedy generation, the study's acceptance-rate measurement and forward timings. Used by this
 * package's tests to hold the models to their quality bar, and reusable wherever a model pair in
 * the Optimum decoder layout needs measuring.
 *
 * onnxruntime-node is loaded lazily (on the first session), so writing models never needs it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vm from 'node:vm';
import type * as Ort from 'onnxruntime-node';

/**
 * Prompts the default models are tuned and tested on (prose, code, story); the acceptance and
 * variety figures reported for the default pair are measured over these.
 */
export const BUILTIN_PROMPTS: readonly string[] = Object.freeze([
  'The quick brown fox',
  'def fibonacci(n):',
  'Once upon a time',
]);

const TYPED_ARRAYS = [
  'Float32Array',
  'Float64Array',
  'Int8Array',
  'Uint8Array',
  'Uint8ClampedArray',
  'Int16Array',
  'Uint16Array',
  'Int32Array',
  'Uint32Array',
  'BigInt64Array',
  'BigUint64Array',
] as const;

/**
 * Makes this realm's typed-array constructors the host realm's, when the code runs inside a
 * `vm` sandbox (as jest runs every test file) whose globals differ from the host's. Returns the
 * names it replaced (none outside a sandbox).
 *
 * Why: onnxruntime-node's native binding creates output tensors' typed arrays in the host realm,
 * while onnxruntime-common, evaluated in the sandbox, checks them with `instanceof` against the
 * sandbox's constructors and throws "A float32 tensor's data must be type of Float32Array".
 * Jest already shares Uint8Array and ArrayBuffer this way. Must run before onnxruntime is first
 * loaded in the realm; {@link loadOrt} calls it.
 */
export function adoptHostTypedArrays(): string[] {
  const replaced: string[] = [];
  const g = globalThis as unknown as Record<string, unknown>;
  for (const name of TYPED_ARRAYS) {
    const host = vm.runInThisContext(name) as unknown;
    if (typeof host === 'function' && g[name] !== host) {
      g[name] = host;
      replaced.push(name);
    }
  }
  return replaced;
}

let ortPromise: Promise<typeof Ort> | undefined;
/**
 * The onnxruntime-node module, imported on first use (after {@link adoptHostTypedArrays}, so that
 * it also works inside jest's sandbox).
 */
export function loadOrt(): Promise<typeof Ort> {
  if (!ortPromise) {
    adoptHostTypedArrays();
    ortPromise = import('onnxruntime-node');
  }
  return ortPromise;
}

/** The subset of config.json a runtime needs. */
export interface DecoderConfig {
  numLayers: number;
  numHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
  eosTokenId: number | undefined;
}

/** Reads a model folder's config.json (head_dim falls back to hidden_size / num_attention_heads). */
export function readDecoderConfig(dir: string): DecoderConfig {
  const c = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, number | undefined>;
  const need = (k: string): number => {
    const v = c[k];
    if (typeof v !== 'number') throw new Error(`${dir}/config.json: missing ${k}`);
    return v;
  };
  const numHeads = need('num_attention_heads');
  return {
    numLayers: need('num_hidden_layers'),
    numHeads,
    headDim: c.head_dim ?? need('hidden_size') / numHeads,
    vocabSize: need('vocab_size'),
    maxPositionEmbeddings: need('max_position_embeddings'),
    eosTokenId: c.eos_token_id,
  };
}

/** A KV cache of batch 1: the `past_key_values.*` feeds and the number of cached tokens. */
export interface KvCache {
  length: number;
  feeds: Record<string, Ort.Tensor>;
}

/** Session options: one intra-op thread by default (the measurement setting). */
export interface SessionOptions {
  intraOpNumThreads?: number;
}

/**
 * One decoder model in an onnxruntime session, batch 1, with an explicit KV cache. Small on
 * purpose: enough to generate greedily, compare cached and uncached forwards and time them.
 */
export class DecoderSession {
  private constructor(
    private readonly ort: typeof Ort,
    readonly session: Ort.InferenceSession,
    readonly config: DecoderConfig,
  ) {}

  /** Opens `dir/model.onnx` with its config.json. Call {@link close} when done. */
  static async open(dir: string, options: SessionOptions = {}): Promise<DecoderSession> {
    const ort = await loadOrt();
    const session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'), {
      intraOpNumThreads: options.intraOpNumThreads ?? 1,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
    return new DecoderSession(ort, session, readDecoderConfig(dir));
  }

  /** An empty cache (tensors of dims [1, H, 0, D]) for the first forward. */
  emptyCache(): KvCache {
    const { numLayers, numHeads, headDim } = this.config;
    const feeds: Record<string, Ort.Tensor> = {};
    for (let l = 0; l < numLayers; l++) {
      for (const kind of ['key', 'value']) {
        feeds[`past_key_values.${l}.${kind}`] = new this.ort.Tensor('float32', new Float32Array(0), [1, numHeads, 0, headDim]);
      }
    }
    return { length: 0, feeds };
  }

  /**
   * Runs `tokens` (appended after the cached ones, at positions cache.length..) and returns the
   * logits of every new token, row-major [tokens.length, vocab], and the grown cache.
   */
  async forward(tokens: readonly number[], cache: KvCache = this.emptyCache()): Promise<{ logits: Float32Array; cache: KvCache }> {
    const S = tokens.length;
    const T = cache.length + S;
    const ids = BigInt64Array.from(tokens.map((t) => BigInt(t)));
    const positions = new BigInt64Array(S);
    for (let i = 0; i < S; i++) positions[i] = BigInt(cache.length + i);
    const feeds: Record<string, Ort.Tensor> = {
      ...cache.feeds,
      input_ids: new this.ort.Tensor('int64', ids, [1, S]),
      attention_mask: new this.ort.Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
      position_ids: new this.ort.Tensor('int64', positions, [1, S]),
    };
    let out: Ort.InferenceSession.ReturnType;
    try {
      out = await this.session.run(feeds);
    } catch (e) {
      if (e instanceof TypeError && /tensor's data must be type of/.test(e.message)) {
        e.message +=
          ' (onnxruntime was loaded in a vm sandbox such as jest before adoptHostTypedArrays() ran; load it through loadOrt() first)';
      }
      throw e;
    }
    const next: Record<string, Ort.Tensor> = {};
    for (let l = 0; l < this.config.numLayers; l++) {
      next[`past_key_values.${l}.key`] = out[`present.${l}.key`];
      next[`past_key_values.${l}.value`] = out[`present.${l}.value`];
    }
    return { logits: out.logits.data as Float32Array, cache: { length: T, feeds: next } };
  }

  /** Releases the native session. */
  async close(): Promise<void> {
    await this.session.release();
  }
}

/** Index of the largest value in row `row` of a row-major [*, width] matrix (first on ties). */
export function argmaxRow(data: Float32Array, row: number, width: number): number {
  let best = 0;
  let bestValue = -Infinity;
  const base = row * width;
  for (let i = 0; i < width; i++) {
    if (data[base + i] > bestValue) {
      bestValue = data[base + i];
      best = i;
    }
  }
  return best;
}

/**
 * Greedy decoding with the KV cache: one forward over the prompt, then one per new token.
 * Stops early at eos_token_id. Returns only the new tokens.
 */
export async function greedyGenerate(model: DecoderSession, promptIds: readonly number[], maxNewTokens: number): Promise<number[]> {
  if (promptIds.length === 0) throw new Error('greedyGenerate: empty prompt');
  const V = model.config.vocabSize;
  let { logits, cache } = await model.forward(promptIds);
  let next = argmaxRow(logits, promptIds.length - 1, V);
  const out: number[] = [];
  while (out.length < maxNewTokens) {
    out.push(next);
    if (next === model.config.eosTokenId || out.length === maxNewTokens) break;
    ({ logits, cache } = await model.forward([next], cache));
    next = argmaxRow(logits, 0, V);
  }
  return out;
}

/** Acceptance statistics from per-position match flags. */
export interface AcceptanceStats {
  /** a = m / (1 + m), m the mean closed run length; 1 when no draft was ever rejected. */
  acceptanceRate: number;
  /** m: mean number of consecutive matches before a mismatch (closed runs only). */
  meanRunLength: number;
  /** Plain per-position agreement: matches / positions. */
  agreement: number;
  /** Closed run lengths (a run is closed by a mismatch; each sequence's last open run is dropped). */
  runs: number[];
  positions: number;
}

/**
 * The study's acceptance estimator: for each sequence of drafter-vs-target match flags, count runs
 * of matches closed by a mismatch (a mismatch right after a mismatch closes a run of 0), drop the
 * last unclosed run, pool the runs of all sequences, and return a = m / (1 + m) with m their mean
 * (the moment estimator of the geometric model), plus the plain agreement.
 */
export function acceptanceFromMatches(matches: readonly (readonly boolean[])[]): AcceptanceStats {
  const runs: number[] = [];
  let hits = 0;
  let positions = 0;
  for (const seq of matches) {
    let run = 0;
    for (const m of seq) {
      positions++;
      if (m) {
        hits++;
        run++;
      } else {
        runs.push(run);
        run = 0;
      }
    }
  }
  const meanRunLength = runs.length ? runs.reduce((a, b) => a + b, 0) / runs.length : Infinity;
  return {
    acceptanceRate: runs.length ? meanRunLength / (1 + meanRunLength) : 1,
    meanRunLength,
    agreement: positions ? hits / positions : NaN,
    runs,
    positions,
  };
}

/** Per-prompt detail of {@link measureAcceptance}. */
export interface PromptAcceptance extends AcceptanceStats {
  prompt: string;
  /** The target's greedy continuation (token ids). */
  generated: number[];
  /** The continuation as text (the byte-level tokens decoded as UTF-8). */
  text: string;
  /** The drafter's one-token prediction at each generated position. */
  drafted: number[];
  distinctTokens: number;
}

/** Result of {@link measureAcceptance}: pooled statistics plus per-prompt detail. */
export interface AcceptanceReport extends AcceptanceStats {
  prompts: PromptAcceptance[];
}

/** Options of {@link measureAcceptance}. */
export interface AcceptanceOptions {
  prompts?: readonly string[];
  /** Greedy tokens generated by the target per prompt (default 64). */
  maxNewTokens?: number;
  /** Maps a prompt to token ids (default: its UTF-8 bytes, which is what the byte-level tokenizer yields). */
  encode?: (text: string) => number[];
}

/**
 * Measures drafter/target greedy acceptance as the study did: the target generates greedily from
 * each prompt; at each generated position the drafter predicts one token from the target's prefix
 * (prompt + target tokens so far); the match flags go to {@link acceptanceFromMatches}. Accepts
 * model folders (opened and closed here) or open sessions.
 */
export async function measureAcceptance(
  target: string | DecoderSession,
  drafter: string | DecoderSession,
  options: AcceptanceOptions = {},
): Promise<AcceptanceReport> {
  const prompts = options.prompts ?? BUILTIN_PROMPTS;
  const maxNewTokens = options.maxNewTokens ?? 64;
  const encode = options.encode ?? ((text: string) => [...Buffer.from(text, 'utf8')]);
  const t = typeof target === 'string' ? await DecoderSession.open(target) : target;
  const d = typeof drafter === 'string' ? await DecoderSession.open(drafter) : drafter;
  try {
    const details: PromptAcceptance[] = [];
    for (const prompt of prompts) {
      const ids = encode(prompt);
      const generated = await greedyGenerate(t, ids, maxNewTokens);
      // One drafter forward over prompt + generated[0..n-2]; row (len(ids)-1+k) predicts generated[k].
      const { logits } = await d.forward([...ids, ...generated.slice(0, -1)]);
      const drafted = generated.map((_, k) => argmaxRow(logits, ids.length - 1 + k, d.config.vocabSize));
      const stats = acceptanceFromMatches([generated.map((g, k) => g === drafted[k])]);
      details.push({
        ...stats,
        prompt,
        generated,
        drafted,
        text: Buffer.from(generated.filter((x) => x < 256)).toString('utf8'),
        distinctTokens: new Set(generated).size,
      });
    }
    const pooled = acceptanceFromMatches(details.map((p) => p.generated.map((g, k) => g === p.drafted[k])));
    return { ...pooled, prompts: details };
  } finally {
    if (typeof target === 'string') await t.close();
    if (typeof drafter === 'string') await d.close();
  }
}

/**
 * The smallest period p <= maxPeriod such that the last `window` tokens repeat with period p
 * (tokens[i] === tokens[i - p] throughout the window), or 0 if there is none. A nonzero result
 * means generation has fallen into a short loop.
 */
export function repeatingTailPeriod(tokens: readonly number[], window = 24, maxPeriod = 12): number {
  if (tokens.length < window) return 0;
  const start = tokens.length - window;
  for (let p = 1; p <= maxPeriod && p < window; p++) {
    let periodic = true;
    for (let i = start + p; i < tokens.length && periodic; i++) periodic = tokens[i] === tokens[i - p];
    if (periodic) return p;
  }
  return 0;
}

/** Forward timing result, in milliseconds per forward. */
export interface ForwardTiming {
  medianMs: number;
  meanMs: number;
  runs: number;
}

/**
 * Times forwards of `seqLength` new tokens after a `pastLength`-token cache (the cache is built
 * once, then the same forward repeats). Warm-up runs are excluded; reports median and mean.
 */
export async function timeForward(
  model: DecoderSession,
  options: { pastLength: number; seqLength: number; runs?: number; warmup?: number },
): Promise<ForwardTiming> {
  const token = (i: number) => 32 + (i % 95);
  let cache = model.emptyCache();
  if (options.pastLength > 0) {
    cache = (await model.forward(Array.from({ length: options.pastLength }, (_, i) => token(i)))).cache;
  }
  const tokens = Array.from({ length: options.seqLength }, (_, i) => token(i + options.pastLength));
  const runs = options.runs ?? 50;
  for (let i = 0; i < (options.warmup ?? 5); i++) await model.forward(tokens, cache);
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await model.forward(tokens, cache);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  return { medianMs: times[Math.floor(times.length / 2)], meanMs: times.reduce((a, b) => a + b, 0) / runs, runs };
}
