/**
 * The synthetic backend: the libs/core oracle language model ({@link OracleModel}, with the latency
 * model of {@link OracleReplica}) served as a {@link LanguageModel}. It makes wall-clock experiments
 * exact and reproducible (the study's sleeps), but through the real services and wire; the simulator's
 * event mode runs the same oracle on a virtual clock, so its predictions produce the same tokens.
 */
import { OracleModel, OracleReplica, type Clock, type OracleBatching, type OracleLatency } from '@dsi/core';
import { checkTokens, type ForwardResult, type LanguageModel, type ModelInfo } from './backend';
import { wallClock } from './clock';

/** Configuration of a synthetic drafter or target (`dsi serve --backend synthetic`). */
export interface SyntheticOptions extends OracleLatency {
  role: 'target' | 'drafter';
  /** The oracle's seed; the drafter and the target must share it. */
  seed: number;
  /** Default 259, like the byte-level default models (eos 257). */
  vocabSize?: number;
  /** Default 4096. */
  contextLength?: number;
  /** Drafter only (a target ignores it): probability it agrees with the target per position. Default 0.8. */
  acceptance?: number;
  /** Drafter only: a drifting workload, agreeing with `acceptanceAfter` from prefix length `acceptanceSwitchAt` on (both or neither). */
  acceptanceAfter?: number;
  acceptanceSwitchAt?: number;
  /** Default a {@link wallClock} with `spinMs`; tests and simulations inject a virtual clock. */
  clock?: Clock;
  /**
   * Without `clock`: the last milliseconds of each latency spent polling for precision (default 2);
   * 0 sleeps on one timer, costing no CPU but ending up to ~1 ms late. A GPU forward costs the host
   * little CPU, so load experiments on few cores use 0.
   */
  spinMs?: number;
  /** Batching of the calls that arrive during a forward (see {@link OracleBatching}); default none. */
  batching?: OracleBatching;
}

const DEFAULT_CONTEXT_LENGTH = 4096;

class SyntheticModel implements LanguageModel {
  readonly info: ModelInfo;
  private readonly oracle: OracleModel;
  private readonly replica: OracleReplica;

  constructor(options: SyntheticOptions) {
    this.oracle = new OracleModel(options);
    const contextLength = options.contextLength ?? DEFAULT_CONTEXT_LENGTH;
    if (!Number.isInteger(contextLength) || contextLength < 1) throw new RangeError(`contextLength=${contextLength} must be an integer >= 1`);
    this.replica = new OracleReplica(this.oracle, options, options.clock ?? wallClock(options.spinMs), options.batching);
    this.info = {
      name: `synthetic-${options.role}`,
      backend: 'synthetic',
      vocabSize: this.oracle.vocabSize,
      contextLength,
      eosTokenId: this.oracle.eosTokenId,
    };
  }

  async logits(requestId: string, tokens: readonly number[], from: number, signal?: AbortSignal): Promise<ForwardResult> {
    checkTokens(tokens, from, this.info.vocabSize, this.info.contextLength);
    const vocab = this.info.vocabSize;
    const rows = tokens.length - from;
    const forward = await this.replica.forward(
      requestId,
      tokens,
      from,
      (hashes) => {
        const logits = new Float32Array(rows * vocab);
        for (let r = 0; r < rows; r++) this.oracle.fillLogits(logits, r * vocab, hashes.at(from + r + 1), from + r + 1);
        return logits;
      },
      signal,
    );
    const { reusedTokens, computedTokens, modelMs, batchRequests, queueMs, batchTokens } = forward;
    return { logits: forward.result, rows, reusedTokens, computedTokens, modelMs, batchRequests, queueMs, batchTokens };
  }

  release(requestId: string): Promise<boolean> {
    return this.replica.release(requestId);
  }

  /** Nothing to load or compile: checks the oracle once, without latency, cache or device. */
  async warmup(): Promise<void> {
    this.oracle.fillLogits(new Float32Array(this.info.vocabSize), 0, this.oracle.hashes([0])[1]);
  }

  async close(): Promise<void> {
    this.replica.close();
  }
}

/** A synthetic drafter or target replica (see {@link OracleModel} for the oracle and the latency model). */
export function createSyntheticModel(options: SyntheticOptions): LanguageModel {
  return new SyntheticModel(options);
}
