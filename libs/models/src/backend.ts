/** What a backend tells its callers about the model it serves. */
export interface ModelInfo {
  /** Human-readable name, e.g. the model folder or `synthetic-target`. */
  name: string;
  backend: 'onnx' | 'synthetic';
  /** Token ids are in [0, vocabSize). */
  vocabSize: number;
  /** Longest token sequence (prompt plus generated) the model accepts. */
  contextLength: number;
  /** End-of-sequence token id, when the model has one. */
  eosTokenId?: number;
}

/** Next-token logits for a run of positions, with what the KV cache saved. */
export interface ForwardResult {
  /** Row-major `[rows, vocabSize]`: row r holds the logits predicting token `from + r + 1`. */
  logits: Float32Array;
  rows: number;
  /** Tokens whose keys and values came from the request's cache. */
  reusedTokens: number;
  /** Tokens run through the model in this call. */
  computedTokens: number;
  /** Time spent in the model itself, when the backend measures it. */
  modelMs?: number;
  /** Calls that shared this forward, when the backend batches (absent: 1). */
  batchRequests?: number;
  /** Time the call waited before its forward began, when the backend measures it. */
  queueMs?: number;
  /** Tokens the forward computed over all of its calls (absent: `computedTokens`). */
  batchTokens?: number;
}

/**
 * A causal language model that keeps a KV cache per request. Implementations serialise work per model
 * instance (one replica = one model instance) and honour the AbortSignal: an aborted call rejects
 * promptly and leaves the request's cache consistent (truncated to what is known to be right).
 */
export interface LanguageModel {
  readonly info: ModelInfo;
  /**
   * Logits predicting the tokens after positions `from .. tokens.length - 1` of `tokens` (so `rows =
   * tokens.length - from`, and `from >= 0`). Reuses the longest cached prefix of `tokens` for this
   * request, computes only the rest, and leaves the cache holding `tokens`.
   */
  logits(requestId: string, tokens: readonly number[], from: number, signal?: AbortSignal): Promise<ForwardResult>;
  /**
   * Drops a request's cache (the request finished or was abandoned); resolves with whether anything was
   * cached. Ordered after the instance's queued and running work, so a forward that finishes later
   * cannot bring the cache back.
   */
  release(requestId: string): Promise<boolean>;
  /** Runs one forward so the first real request pays no start-up cost; call before reporting SERVING. */
  warmup(): Promise<void>;
  /** Frees the model (and its worker threads). */
  close(): Promise<void>;
}

/** Thrown for a request the model cannot take (bad token ids, too long): a caller's mistake. */
export class ModelInputError extends Error {
  override readonly name = 'ModelInputError';
}

/** Checks token ids against a vocabulary and a context length; throws {@link ModelInputError}. */
export function checkTokens(tokens: readonly number[], from: number, vocabSize: number, contextLength: number): void {
  if (tokens.length === 0) throw new ModelInputError('the token sequence is empty');
  if (tokens.length > contextLength) {
    throw new ModelInputError(`${tokens.length} tokens exceed the context length ${contextLength}`);
  }
  if (!Number.isInteger(from) || from < 0 || from >= tokens.length) {
    throw new ModelInputError(`from=${from} is outside [0, ${tokens.length - 1}]`);
  }
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i];
    if (!Number.isInteger(token) || token < 0 || token >= vocabSize) {
      throw new ModelInputError(`token ${token} at position ${i} is outside the vocabulary [0, ${vocabSize - 1}]`);
    }
  }
}
