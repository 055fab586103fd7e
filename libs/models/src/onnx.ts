import fs from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { checkTokens, type ForwardResult, type LanguageModel, type ModelInfo } from './backend';
import { ModelLoadError, readDecoderConfig, type DecoderConfig } from './onnx-config';
import type { OnnxWorkerData, OnnxWorkerRequest, OnnxWorkerResponse } from './onnx-worker';

/** How an ONNX model instance runs and how much KV cache it may keep. */
export interface OnnxModelOptions {
  /** onnxruntime intra-op threads for this instance (`--threads`). Default 1. */
  threads?: number;
  /** Where forwards run (`--execution-provider`): `cpu` (default) or `cuda` (with `cpu` as the fallback for unsupported nodes). */
  executionProvider?: 'cpu' | 'cuda';
  /** Requests whose KV cache is kept (least recently used evicted first). Default 64. */
  maxCachedRequests?: number;
  /** Tokens kept across all cached requests. Default 65536. */
  maxCachedTokens?: number;
  /** A request's cache is dropped after this long unused. Default 5 minutes. */
  idleTimeoutMs?: number;
  /**
   * Calls one forward may batch (`--max-batch-requests`): the calls queued while a forward runs go
   * together in the next one, each over its own KV cache. Default 1 (one call per forward).
   */
  maxBatchRequests?: number;
  /** Tokens one batched forward may compute (a larger call runs alone). Default 512. */
  maxBatchTokens?: number;
}

/** What one idle sweep of {@link OnnxModel} did: requests whose cache it dropped, and those still cached. */
export interface IdleSweep {
  evicted: number;
  requests: number;
}

/** Thrown when the model worker fails (its message says why). */
export class ModelWorkerError extends Error {
  override readonly name = 'ModelWorkerError';
}

type Job =
  | { kind: 'forward'; requestId: string; tokens: Int32Array; from: number; signal?: AbortSignal; queuedAt: number; resolve: (r: ForwardResult) => void; reject: (e: unknown) => void }
  | { kind: 'release'; requestId: string; resolve: (released: boolean) => void; reject: (e: unknown) => void };

function workerFile(): string {
  const beside = path.join(__dirname, 'onnx-worker.js');
  if (fs.existsSync(beside)) return beside;
  const built = path.join(__dirname, '../dist/onnx-worker.js');
  if (fs.existsSync(built)) return built;
  throw new ModelWorkerError(`onnx worker not found at ${beside} or ${built}: build libs/models first`);
}

/**
 * A decoder-only ONNX model (Hugging Face Optimum layout) served from a worker thread, so a forward
 * never blocks the caller's event loop: health checks and cancellations are answered meanwhile. One
 * instance runs one forward at a time (a replica is one device); calls queue in order, and a call
 * aborted while queued never runs.
 */
export class OnnxModel implements LanguageModel {
  readonly info: ModelInfo;
  private readonly queue: Job[] = [];
  private running = false;
  private nextId = 1;
  private readonly pending = new Map<number, (response: OnnxWorkerResponse) => void>();
  private closed = false;
  private readonly idleTimer: NodeJS.Timeout;
  private sweepWaiters: { resolve: (sweep: IdleSweep) => void; reject: (error: Error) => void }[] = [];

  private constructor(
    private readonly worker: Worker,
    readonly config: DecoderConfig,
    name: string,
    idleTimeoutMs: number,
    private readonly batch: { requests: number; tokens: number } = { requests: 1, tokens: 512 },
  ) {
    this.info = { name, backend: 'onnx', vocabSize: config.vocabSize, contextLength: config.contextLength, eosTokenId: config.eosTokenId };
    worker.on('message', (response: OnnxWorkerResponse) => {
      if (response.type === 'ready') return;
      if (response.type === 'evicted') {
        const waiters = this.sweepWaiters;
        this.sweepWaiters = [];
        for (const waiter of waiters) waiter.resolve({ evicted: response.evicted, requests: response.requests });
        return;
      }
      const settle = this.pending.get(response.id);
      this.pending.delete(response.id);
      settle?.(response);
    });
    worker.on('error', (error) => this.failAll(new ModelWorkerError(`model worker failed: ${error.message}`, { cause: error })));
    this.idleTimer = setInterval(() => this.post({ type: 'evict-idle', id: this.nextId++, idleMs: idleTimeoutMs }), Math.max(50, idleTimeoutMs / 2));
    this.idleTimer.unref();
  }

  /** Loads `DIR/model.onnx` with `DIR/config.json` on a new worker thread; resolves once the session is ready. */
  static async load(dir: string, options: OnnxModelOptions = {}): Promise<OnnxModel> {
    const config = readDecoderConfig(dir);
    const data: OnnxWorkerData = {
      modelFile: path.join(dir, 'model.onnx'),
      config,
      threads: options.threads ?? 1,
      executionProvider: options.executionProvider ?? 'cpu',
      maxCachedRequests: options.maxCachedRequests ?? 64,
      maxCachedTokens: options.maxCachedTokens ?? 65_536,
    };
    const worker = new Worker(workerFile(), { workerData: data });
    await new Promise<void>((resolve, reject) => {
      const onMessage = (message: OnnxWorkerResponse) => {
        if (message.type === 'ready') resolve();
        else if (message.type === 'error') reject(new ModelLoadError(message.message));
        else return;
        worker.off('message', onMessage);
      };
      worker.on('message', onMessage);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new ModelLoadError(`model worker exited with code ${code} while loading ${dir}`)));
    }).catch(async (error: unknown) => {
      await worker.terminate();
      throw error;
    });
    worker.removeAllListeners('exit');
    worker.removeAllListeners('error');
    return new OnnxModel(worker, config, path.basename(path.resolve(dir)), options.idleTimeoutMs ?? 300_000, {
      requests: options.maxBatchRequests ?? 1,
      tokens: options.maxBatchTokens ?? 512,
    });
  }

  logits(requestId: string, tokens: readonly number[], from: number, signal?: AbortSignal): Promise<ForwardResult> {
    if (this.closed) return Promise.reject(new ModelWorkerError('the model is closed'));
    try {
      checkTokens(tokens, from, this.info.vocabSize, this.info.contextLength);
      signal?.throwIfAborted();
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise<ForwardResult>((resolve, reject) => {
      const job: Job = { kind: 'forward', requestId, tokens: Int32Array.from(tokens), from, signal, queuedAt: performance.now(), resolve, reject };
      signal?.addEventListener(
        'abort',
        () => {
          // Queued: never runs. Running: the caller is released now; the forward finishes and leaves a
          // cache that is correct for the tokens it computed.
          const index = this.queue.indexOf(job);
          if (index >= 0) this.queue.splice(index, 1);
          reject(signal.reason);
        },
        { once: true },
      );
      this.queue.push(job);
      this.pump();
    });
  }

  release(requestId: string): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    return new Promise<boolean>((resolve, reject) => {
      this.queue.push({ kind: 'release', requestId, resolve, reject });
      this.pump();
    });
  }

  /** Requests and tokens currently cached (for tests and metrics). */
  async cacheStats(): Promise<{ requests: number; tokens: number }> {
    const response = await this.request({ type: 'stats', id: this.nextId++ });
    if (response.type !== 'stats') throw new ModelWorkerError('unexpected reply to stats');
    return { requests: response.requests, tokens: response.tokens };
  }

  /**
   * Resolves after the next idle sweep (one runs every `idleTimeoutMs / 2`) with what it dropped, so
   * tests and metrics can observe idle eviction as it happens instead of sleeping past it.
   */
  nextIdleSweep(): Promise<IdleSweep> {
    if (this.closed) return Promise.reject(new ModelWorkerError('the model is closed'));
    return new Promise((resolve, reject) => this.sweepWaiters.push({ resolve, reject }));
  }

  async warmup(): Promise<void> {
    const probe = [0, 1, 2, 3].map((t) => t % this.info.vocabSize);
    await this.logits('', probe, 0);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.idleTimer);
    this.failAll(new ModelWorkerError('the model is closed'));
    await this.worker.terminate();
  }

  private post(message: OnnxWorkerRequest): void {
    if (!this.closed) this.worker.postMessage(message);
  }

  private request(message: OnnxWorkerRequest): Promise<OnnxWorkerResponse> {
    return new Promise((resolve) => {
      this.pending.set(message.id, resolve);
      this.post(message);
    });
  }

  private failAll(error: Error): void {
    for (const job of this.queue.splice(0)) job.reject(error);
    for (const waiter of this.sweepWaiters.splice(0)) waiter.reject(error);
    for (const settle of this.pending.values()) settle({ type: 'error', id: -1, message: error.message });
    this.pending.clear();
  }

  /** `first` and the forward calls queued right behind it, within the batch limits (never past a release). */
  private takeBatch(first: Job & { kind: 'forward' }): Array<Job & { kind: 'forward' }> {
    const batch = [first];
    let tokens = first.tokens.length - first.from;
    while (batch.length < this.batch.requests) {
      const next = this.queue[0];
      if (next?.kind !== 'forward' || tokens + next.tokens.length - next.from > this.batch.tokens) break;
      this.queue.shift();
      tokens += next.tokens.length - next.from;
      batch.push(next);
    }
    return batch;
  }

  private pump(): void {
    if (this.running) return;
    const job = this.queue.shift();
    if (!job) return;
    this.running = true;
    const done = () => {
      this.running = false;
      this.pump();
    };
    const id = this.nextId++;
    if (job.kind === 'release') {
      void this.request({ type: 'release', id, requestId: job.requestId }).then((response) => {
        job.resolve(response.type === 'released' && response.released);
        done();
      });
      return;
    }
    const batch = this.takeBatch(job);
    const started = performance.now();
    if (batch.length > 1) {
      void this.request({ type: 'forward-batch', id, items: batch.map((b) => ({ requestId: b.requestId, tokens: b.tokens, from: b.from })) }).then((response) => {
        const batchTokens = response.type === 'batch-result' ? response.results.reduce((sum, item) => sum + item.computed, 0) : 0;
        batch.forEach((b, i) => {
          if (response.type === 'batch-result') {
            const r = response.results[i];
            b.resolve({ logits: r.logits, rows: r.rows, reusedTokens: r.reused, computedTokens: r.computed, modelMs: response.modelMs, batchRequests: batch.length, queueMs: started - b.queuedAt, batchTokens });
          } else if (response.type === 'error') {
            b.reject(new ModelWorkerError(response.message));
          }
        });
        done();
      });
      return;
    }
    void this.request({ type: 'forward', id, requestId: job.requestId, tokens: job.tokens, from: job.from }).then((response) => {
      if (response.type === 'result') {
        job.resolve({ logits: response.logits, rows: response.rows, reusedTokens: response.reused, computedTokens: response.computed, modelMs: response.modelMs, queueMs: started - job.queuedAt, batchTokens: response.computed });
      } else if (response.type === 'error') {
        job.reject(new ModelWorkerError(response.message));
      }
      done();
    });
  }
}

