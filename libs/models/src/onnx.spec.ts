import { ensureDefaultModels, generableTokenIds, type ModelPairPaths } from '@dsi/modelgen';
import { ModelInputError } from './backend';
import { OnnxModel } from './onnx';
import { readDecoderConfig } from './onnx-config';
import { testModelsDir } from './test-models';
import { TextTokenizer } from './tokenizer';

let pair: ModelPairPaths;
let target: OnnxModel;
let drafter: OnnxModel;

beforeAll(async () => {
  pair = await ensureDefaultModels(testModelsDir());
  [target, drafter] = await Promise.all([OnnxModel.load(pair.target), OnnxModel.load(pair.drafter)]);
});

afterAll(async () => {
  await Promise.all([target?.close(), drafter?.close()]);
});

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

const tokens = Array.from('Speculation parallelism, provably faster.', (ch) => ch.charCodeAt(0));

describe.each([
  ['target', () => target],
  ['drafter', () => drafter],
])('the default %s on onnxruntime', (_name, model) => {
  it('gives incremental cached logits equal to one full forward (within 1e-4)', async () => {
    const full = await model().logits('', tokens, 0);
    expect(full.rows).toBe(tokens.length);
    expect(full.reusedTokens).toBe(0);
    const vocab = model().info.vocabSize;
    // Token by token, then in uneven chunks, through the request's KV cache.
    for (const chunk of [1, 5]) {
      const id = `incremental-${chunk}`;
      for (let start = 0; start < tokens.length; start += chunk) {
        const end = Math.min(start + chunk, tokens.length);
        const step = await model().logits(id, tokens.slice(0, end), start);
        expect(step.reusedTokens).toBe(start);
        expect(step.computedTokens).toBe(end - start);
        expect(maxAbsDiff(step.logits, full.logits.subarray(start * vocab, end * vocab))).toBeLessThan(1e-4);
      }
      await model().release(id);
    }
  });

  // Chunk sizes in order; the last one repeats, and 0 takes the rest of the text.
  it.each([
    ['mixed chunks', [1, 1, 1, 5, 1, 16, 2, 1, 0]],
    ['other mixed chunks', [3, 1, 9, 1, 0]],
    ['prefill then one by one', [40, 1]],
  ])('gives %s through the cache the logits of one full forward (within 1e-4)', async (_label, schedule) => {
    const text = [...Buffer.from('The quick brown fox jumps over the lazy dog.\ndef fibonacci(n): return n', 'utf8')];
    const vocab = model().info.vocabSize;
    const full = await model().logits('', text, 0);
    const id = `schedule-${schedule.join('-')}`;
    let offset = 0;
    for (let step = 0; offset < text.length; step++) {
      const size = schedule[Math.min(step, schedule.length - 1)] || text.length;
      const end = Math.min(offset + size, text.length);
      const part = await model().logits(id, text.slice(0, end), offset);
      expect(part.reusedTokens).toBe(offset);
      expect(maxAbsDiff(part.logits, full.logits.subarray(offset * vocab, end * vocab))).toBeLessThan(1e-4);
      offset = end;
    }
    expect(await model().release(id)).toBe(true);
  });

  it('gives never-generated tokens a logit of exactly -100, so greedy output is newline or printable ASCII', async () => {
    const text = [...Buffer.from('any text \u00e9\u{1F600}', 'utf8')];
    const { logits, rows } = await model().logits('', text, 0);
    const vocab = model().info.vocabSize;
    const allowed = new Set(generableTokenIds());
    expect(allowed.size).toBe(96);
    let masked = 0;
    for (let row = 0; row < rows; row++) {
      for (let t = 0; t < vocab; t++) {
        if (!allowed.has(t)) {
          expect(logits[row * vocab + t]).toBe(-100);
          masked++;
        }
      }
    }
    expect(masked).toBe(rows * (vocab - 96));
  });
});

describe('the model folder', () => {
  it('has the config.json fields the backend reads', () => {
    for (const [dir, layers] of [
      [pair.target, 4],
      [pair.drafter, 1],
    ] as const) {
      expect(readDecoderConfig(dir)).toEqual({ numLayers: layers, numHeads: 4, headDim: 64, vocabSize: 259, contextLength: 1024, eosTokenId: 257 });
    }
  });
});

describe('the KV cache', () => {
  it('reuses the longest cached prefix, truncates on divergence, and stays correct', async () => {
    const vocab = target.info.vocabSize;
    const a = [...tokens, 65, 66, 67];
    const b = [...tokens, 88, 89];
    await target.logits('rollback', a, a.length - 1);
    const diverged = await target.logits('rollback', b, tokens.length - 1);
    expect(diverged.reusedTokens).toBe(tokens.length - 1);
    expect(diverged.computedTokens).toBe(b.length - (tokens.length - 1));
    const fresh = await target.logits('', b, tokens.length - 1);
    expect(maxAbsDiff(diverged.logits, fresh.logits)).toBeLessThan(1e-4);
    expect(fresh.logits.length).toBe(3 * vocab);
    expect(await target.release('rollback')).toBe(true);
    expect(await target.release('rollback')).toBe(false);
  });

  it('keeps at most the configured number of requests (least recently used dropped)', async () => {
    const small = await OnnxModel.load(pair.drafter, { maxCachedRequests: 2 });
    try {
      for (const id of ['r1', 'r2', 'r3']) await small.logits(id, tokens, tokens.length - 1);
      expect(await small.cacheStats()).toEqual({ requests: 2, tokens: 2 * tokens.length });
      expect(await small.release('r1')).toBe(false);
      expect(await small.release('r3')).toBe(true);
    } finally {
      await small.close();
    }
  });

  it('drops a request\'s cache after it sat unused for the idle timeout, not at the first sweep', async () => {
    const idle = await OnnxModel.load(pair.drafter, { idleTimeoutMs: 1000 });
    try {
      await idle.logits('idle', tokens, tokens.length - 1);
      expect((await idle.cacheStats()).requests).toBe(1);
      // Sweeps run every 500 ms: the first one after the forward finds the entry younger than 1 s.
      expect(await idle.nextIdleSweep()).toEqual({ evicted: 0, requests: 1 });
      let sweep = await idle.nextIdleSweep();
      for (let more = 0; sweep.evicted === 0 && more < 4; more++) sweep = await idle.nextIdleSweep();
      expect(sweep).toEqual({ evicted: 1, requests: 0 });
      expect(await idle.cacheStats()).toEqual({ requests: 0, tokens: 0 });
    } finally {
      await idle.close();
    }
    await expect(idle.nextIdleSweep()).rejects.toThrow('the model is closed');
  });

  it('drops a call aborted while queued, and the next call is still right', async () => {
    const controller = new AbortController();
    const long = Array.from({ length: 400 }, (_, i) => 32 + (i % 90));
    const running = target.logits('', long, 0);
    const queued = target.logits('abort-me', tokens, 0, controller.signal);
    controller.abort(new Error('client went away'));
    await expect(queued).rejects.toThrow('client went away');
    await running;
    const after = await target.logits('abort-me', tokens, 0);
    expect(after.reusedTokens).toBe(0); // the aborted call never ran, so nothing was cached
    const reference = await target.logits('', tokens, 0);
    expect(maxAbsDiff(after.logits, reference.logits)).toBe(0);
    await target.release('abort-me');
  });

  it('does not block the event loop during a forward', async () => {
    const long = Array.from({ length: 600 }, (_, i) => 32 + ((i * 7) % 90));
    let settled = false;
    const forward = target.logits('', long, 0).then(() => (settled = true));
    // The next turn of the event loop comes while the forward is still in flight on its worker thread
    // (a forward on this thread would have settled first: its continuation is a microtask).
    const settledAtNextTurn = await new Promise<boolean>((resolve) => setImmediate(() => resolve(settled)));
    await forward;
    expect(settledAtNextTurn).toBe(false);
    expect(settled).toBe(true);
  });
});

describe('input checks', () => {
  it.each([
    [[], 0, 'the token sequence is empty'],
    [[1, 2, 999], 0, 'token 999 at position 2 is outside the vocabulary [0, 258]'],
    [[1, -1], 0, 'token -1 at position 1 is outside the vocabulary'],
    [[1, 2], 2, 'from=2 is outside [0, 1]'],
  ])('rejects %j from %i', async (input, from, message) => {
    const call = target.logits('', input, from);
    await expect(call).rejects.toBeInstanceOf(ModelInputError);
    await expect(call).rejects.toThrow(message);
  });

  it('rejects a sequence longer than the context', async () => {
    const tooLong = new Array(target.info.contextLength + 1).fill(65);
    await expect(target.logits('', tooLong, 0)).rejects.toThrow(`exceed the context length ${target.info.contextLength}`);
  });
});

describe('the tokenizer', () => {
  it('reads tokenizer.json with the Hugging Face library: text <-> bytes', () => {
    const tokenizer = TextTokenizer.load(pair.target);
    const text = 'Héllo, wörld! 🚀\n';
    const ids = tokenizer.encode(text);
    expect(ids).toEqual([...Buffer.from(text, 'utf8')]);
    expect(tokenizer.decode(ids)).toBe(text);
  });
});

describe('batched forwards (maxBatchRequests)', () => {
  it('runs the calls queued behind a forward as one batch, over each request own cache, with the unbatched logits (within 1e-4) and greedy tokens', async () => {
    const batched = await OnnxModel.load(pair.target, { maxBatchRequests: 4 });
    try {
      const text = (s: string) => Array.from(s, (ch) => ch.charCodeAt(0));
      // Requests with caches of different lengths (and none), asking for different numbers of rows.
      const calls = [
        { id: 'long', tokens: text('Once upon a time there was a model that'), from: 30 },
        { id: 'short', tokens: text('Hi there'), from: 5 },
        { id: 'fresh', tokens: text('The quick brown fox jumps'), from: 0 },
        { id: 'one', tokens: text('Speculation is'), from: 13 },
      ];
      for (const model of [batched, target]) {
        await model.logits('long', calls[0].tokens.slice(0, 25), 24);
        await model.logits('short', calls[1].tokens.slice(0, 3), 2);
        await model.logits('one', calls[3].tokens.slice(0, 13), 12);
      }
      // The first call holds the worker; the four others queue behind it and go together.
      const hold = batched.logits('hold', text('x'.repeat(300)), 0);
      const results = await Promise.all(calls.map((call) => batched.logits(call.id, call.tokens, call.from)));
      await hold;
      expect(results.map((r) => r.batchRequests)).toEqual([4, 4, 4, 4]);
      for (const [i, call] of calls.entries()) {
        const alone = await target.logits(call.id, call.tokens, call.from);
        expect({ i, rows: results[i].rows, reused: results[i].reusedTokens }).toEqual({ i, rows: alone.rows, reused: alone.reusedTokens });
        expect(maxAbsDiff(results[i].logits, alone.logits)).toBeLessThan(1e-4);
        const argmax = (logits: Float32Array, row: number) => {
          let best = 0;
          for (let v = 1; v < target.info.vocabSize; v++) if (logits[row * target.info.vocabSize + v] > logits[row * target.info.vocabSize + best]) best = v;
          return best;
        };
        for (let row = 0; row < alone.rows; row++) expect(argmax(results[i].logits, row)).toBe(argmax(alone.logits, row));
      }
      // Each request's cache is its own: the next step reuses it.
      const next = await batched.logits('long', [...calls[0].tokens, 65], calls[0].tokens.length);
      expect(next.reusedTokens).toBe(calls[0].tokens.length);
      const reference = await target.logits('long', [...calls[0].tokens, 65], calls[0].tokens.length);
      expect(maxAbsDiff(next.logits, reference.logits)).toBeLessThan(1e-4);
    } finally {
      await batched.close();
    }
  });
});
