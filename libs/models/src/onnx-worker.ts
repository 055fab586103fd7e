/**
 * Worker-thread side of the ONNX backend: owns the onnxruntime session and the per-request KV caches,
 * and runs one forward at a time (the parent queues). `session.run` blocks the thread it runs on for
 * the whole forward, which is why it lives here and not on the server's event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import type { DecoderConfig } from './onnx-config';

/** What the parent gives the worker at start. */
export interface OnnxWorkerData {
  modelFile: string;
  config: DecoderConfig;
  threads: number;
  maxCachedRequests: number;
  maxCachedTokens: number;
  executionProvider: 'cpu' | 'cuda';
}

/** Parent -> worker messages. */
export type OnnxWorkerRequest =
  | { type: 'forward'; id: number; requestId: string; tokens: Int32Array; from: number }
  | { type: 'forward-batch'; id: number; items: BatchItem[] }
  | { type: 'release'; id: number; requestId: string }
  | { type: 'evict-idle'; id: number; idleMs: number }
  | { type: 'stats'; id: number };

/** One call of a batched forward. */
export interface BatchItem {
  requestId: string;
  tokens: Int32Array;
  from: number;
}

/** Worker -> parent messages. */
export type OnnxWorkerResponse =
  | { type: 'ready' }
  | { type: 'result'; id: number; logits: Float32Array; rows: number; reused: number; computed: number; modelMs: number }
  | { type: 'batch-result'; id: number; results: Array<{ logits: Float32Array; rows: number; reused: number; computed: number }>; modelMs: number }
  | { type: 'released'; id: number; released: boolean }
  | { type: 'stats'; id: number; requests: number; tokens: number }
  | { type: 'evicted'; id: number; evicted: number; requests: number }
  | { type: 'error'; id: number; message: string };

interface CacheEntry {
  tokens: number[];
  /** present.N.key / present.N.value of the last forward, [1, H, tokens, D] each; undefined when empty. */
  kv?: ort.Tensor[];
  lastUsed: number;
}

const { modelFile, config, threads, maxCachedRequests, maxCachedTokens, executionProvider } = workerData as OnnxWorkerData;
const port = parentPort!;
const cache = new Map<string, CacheEntry>();
const { numLayers, numHeads, headDim, vocabSize } = config;
const kvNames = Array.from({ length: numLayers }, (_, i) => [`past_key_values.${i}.key`, `past_key_values.${i}.value`]).flat();
const presentNames = Array.from({ length: numLayers }, (_, i) => [`present.${i}.key`, `present.${i}.value`]).flat();
const emptyKv = () => kvNames.map(() => new ort.Tensor('float32', new Float32Array(0), [1, numHeads, 0, headDim]));

function commonPrefix(a: readonly number[], b: Int32Array): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** Keeps the first `length` positions of a [1, H, T, D] tensor (a rollback after divergence). */
function truncate(tensor: ort.Tensor, length: number): ort.Tensor {
  const total = tensor.dims[2];
  const data = tensor.data as Float32Array;
  const out = new Float32Array(numHeads * length * headDim);
  for (let h = 0; h < numHeads; h++) {
    out.set(data.subarray(h * total * headDim, h * total * headDim + length * headDim), h * length * headDim);
  }
  return new ort.Tensor('float32', out, [1, numHeads, length, headDim]);
}

function evictOverBudget(keep: string): void {
  let tokens = 0;
  for (const entry of cache.values()) tokens += entry.tokens.length;
  for (const [id, entry] of cache) {
    if (cache.size <= maxCachedRequests && tokens <= maxCachedTokens) break;
    if (id === keep) continue;
    tokens -= entry.tokens.length;
    cache.delete(id);
  }
}

async function forward(session: ort.InferenceSession, requestId: string, tokens: Int32Array, from: number) {
  const entry: CacheEntry = (requestId && cache.get(requestId)) || { tokens: [], lastUsed: 0 };
  // Reuse the cached prefix, but recompute from `from` at least: logits are not cached.
  const reused = Math.min(commonPrefix(entry.tokens, tokens), from);
  let past = entry.kv && reused > 0 ? entry.kv : emptyKv();
  if (entry.kv && reused > 0 && reused < entry.tokens.length) past = past.map((t) => truncate(t, reused));
  const fresh = tokens.length - reused;
  const inputIds = new BigInt64Array(fresh);
  const positionIds = new BigInt64Array(fresh);
  for (let i = 0; i < fresh; i++) {
    inputIds[i] = BigInt(tokens[reused + i]);
    positionIds[i] = BigInt(reused + i);
  }
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', inputIds, [1, fresh]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(tokens.length).fill(1n), [1, tokens.length]),
    position_ids: new ort.Tensor('int64', positionIds, [1, fresh]),
  };
  kvNames.forEach((name, i) => (feeds[name] = past[i]));
  const started = performance.now();
  const outputs = await session.run(feeds);
  const modelMs = performance.now() - started;
  const all = outputs.logits.data as Float32Array;
  const rows = tokens.length - from;
  const logits = all.slice((from - reused) * vocabSize, (from - reused + rows) * vocabSize);
  if (requestId) {
    cache.delete(requestId); // re-insert: most recently used last
    cache.set(requestId, { tokens: Array.from(tokens), kv: presentNames.map((name) => outputs[name]), lastUsed: Date.now() });
    evictOverBudget(requestId);
  }
  return { logits, rows, reused, computed: fresh, modelMs };
}

/** A request's reusable past for `tokens`: the cached prefix (recomputing from `from` at least), truncated to it. */
function reusablePast(requestId: string, tokens: Int32Array, from: number): { reused: number; past?: ort.Tensor[] } {
  const entry = requestId ? cache.get(requestId) : undefined;
  if (!entry?.kv) return { reused: 0 };
  const reused = Math.min(commonPrefix(entry.tokens, tokens), from);
  if (reused === 0) return { reused: 0 };
  return { reused, past: reused < entry.tokens.length ? entry.kv.map((t) => truncate(t, reused)) : entry.kv };
}

/**
 * One forward over several requests' own KV caches: the pasts left-padded to the longest (mask 0
 * before each), the new tokens right-padded to the longest (mask 0 after, causal attention keeps
 * them out of the real tokens' view), each request's position ids its own. The model keys causality
 * on the cache slot and masks padding, so every request's logits are those of its own forward up to
 * rounding. Each request's cache becomes its own slots of `present`.
 */
async function forwardBatch(session: ort.InferenceSession, items: readonly BatchItem[]) {
  const prepared = items.map((item) => ({ ...item, ...reusablePast(item.requestId, item.tokens, item.from) }));
  const B = prepared.length;
  const P = Math.max(...prepared.map((p) => p.reused));
  const F = Math.max(...prepared.map((p) => p.tokens.length - p.reused));
  const T = P + F;
  const inputIds = new BigInt64Array(B * F);
  const positionIds = new BigInt64Array(B * F);
  const mask = new BigInt64Array(B * T);
  prepared.forEach((p, b) => {
    const fresh = p.tokens.length - p.reused;
    for (let j = 0; j < F; j++) {
      inputIds[b * F + j] = j < fresh ? BigInt(p.tokens[p.reused + j]) : 0n;
      positionIds[b * F + j] = BigInt(j < fresh ? p.reused + j : p.reused);
    }
    mask.fill(1n, b * T + (P - p.reused), b * T + P + fresh);
  });
  const feeds: Record<string, ort.Tensor> = {
    input_ids: new ort.Tensor('int64', inputIds, [B, F]),
    attention_mask: new ort.Tensor('int64', mask, [B, T]),
    position_ids: new ort.Tensor('int64', positionIds, [B, F]),
  };
  kvNames.forEach((name, n) => {
    const data = new Float32Array(B * numHeads * P * headDim);
    prepared.forEach((p, b) => {
      if (!p.past) return;
      const source = p.past[n].data as Float32Array;
      for (let h = 0; h < numHeads; h++) {
        data.set(source.subarray(h * p.reused * headDim, (h + 1) * p.reused * headDim), ((b * numHeads + h) * P + (P - p.reused)) * headDim);
      }
    });
    feeds[name] = new ort.Tensor('float32', data, [B, numHeads, P, headDim]);
  });
  const started = performance.now();
  const outputs = await session.run(feeds);
  const modelMs = performance.now() - started;
  const all = outputs.logits.data as Float32Array;
  const present = presentNames.map((name) => outputs[name].data as Float32Array);
  const results = prepared.map((p, b) => {
    const fresh = p.tokens.length - p.reused;
    const rows = p.tokens.length - p.from;
    const first = b * F + (p.from - p.reused);
    const logits = all.slice(first * vocabSize, (first + rows) * vocabSize);
    if (p.requestId) {
      const length = p.reused + fresh;
      const kv = present.map((data) => {
        const out = new Float32Array(numHeads * length * headDim);
        for (let h = 0; h < numHeads; h++) {
          const start = ((b * numHeads + h) * T + (P - p.reused)) * headDim;
          out.set(data.subarray(start, start + length * headDim), h * length * headDim);
        }
        return new ort.Tensor('float32', out, [1, numHeads, length, headDim]);
      });
      cache.delete(p.requestId);
      cache.set(p.requestId, { tokens: Array.from(p.tokens), kv, lastUsed: Date.now() });
      evictOverBudget(p.requestId);
    }
    return { logits, rows, reused: p.reused, computed: fresh };
  });
  return { results, modelMs };
}

async function main(): Promise<void> {
  const session = await ort.InferenceSession.create(modelFile, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    // CUDA needs onnxruntime-node's CUDA libraries (installed with ONNXRUNTIME_NODE_INSTALL=cuda12) and a GPU.
    executionProviders: executionProvider === 'cuda' ? ['cuda', 'cpu'] : ['cpu'],
  });
  port.on('message', async (message: OnnxWorkerRequest) => {
    try {
      switch (message.type) {
        case 'forward': {
          const result = await forward(session, message.requestId, message.tokens, message.from);
          const reply: OnnxWorkerResponse = { type: 'result', id: message.id, ...result };
          port.postMessage(reply, [result.logits.buffer as ArrayBuffer]);
          break;
        }
        case 'forward-batch': {
          const { results, modelMs } = await forwardBatch(session, message.items);
          const reply: OnnxWorkerResponse = { type: 'batch-result', id: message.id, results, modelMs };
          port.postMessage(
            reply,
            results.map((r) => r.logits.buffer as ArrayBuffer),
          );
          break;
        }
        case 'release':
          port.postMessage({ type: 'released', id: message.id, released: cache.delete(message.requestId) } satisfies OnnxWorkerResponse);
          break;
        case 'evict-idle': {
          const cutoff = Date.now() - message.idleMs;
          let evicted = 0;
          for (const [id, entry] of cache) {
            if (entry.lastUsed < cutoff) {
              cache.delete(id);
              evicted++;
            }
          }
          port.postMessage({ type: 'evicted', id: message.id, evicted, requests: cache.size } satisfies OnnxWorkerResponse);
          break;
        }
        case 'stats': {
          let tokens = 0;
          for (const entry of cache.values()) tokens += entry.tokens.length;
          port.postMessage({ type: 'stats', id: message.id, requests: cache.size, tokens } satisfies OnnxWorkerResponse);
          break;
        }
      }
    } catch (error) {
      port.postMessage({ type: 'error', id: message.id, message: error instanceof Error ? error.message : String(error) } satisfies OnnxWorkerResponse);
    }
  });
  port.postMessage({ type: 'ready' } satisfies OnnxWorkerResponse);
}

main().catch((error: unknown) => {
  port.postMessage({ type: 'error', id: -1, message: `cannot load ${modelFile}: ${error instanceof Error ? error.message : String(error)}` });
});
