import fs from 'node:fs';
import path from 'node:path';

/** The parts of a Hugging Face `config.json` the ONNX backend needs. */
export interface DecoderConfig {
  vocabSize: number;
  numLayers: number;
  numHeads: number;
  headDim: number;
  contextLength: number;
  eosTokenId?: number;
}

/** Thrown when a model folder is missing files or its config.json lacks what a decoder needs. */
export class ModelLoadError extends Error {
  override readonly name = 'ModelLoadError';
}

function integer(config: Record<string, unknown>, file: string, ...keys: string[]): number | undefined {
  for (const key of keys) {
    const value = config[key];
    if (typeof value === 'number' && Number.isInteger(value) && value > 0) return value;
  }
  return undefined;
}

/**
 * Reads `DIR/config.json` of an Optimum-layout decoder (`model.onnx` beside it). Understands the common
 * key spellings (`num_hidden_layers`/`n_layer`, `num_key_value_heads` for grouped-query attention, ...).
 */
export function readDecoderConfig(dir: string): DecoderConfig {
  const file = path.join(dir, 'config.json');
  for (const needed of ['config.json', 'model.onnx']) {
    if (!fs.existsSync(path.join(dir, needed))) throw new ModelLoadError(`${path.join(dir, needed)} does not exist (expected an Optimum ONNX export)`);
  }
  const config = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  const vocabSize = integer(config, file, 'vocab_size');
  const numLayers = integer(config, file, 'num_hidden_layers', 'n_layer', 'num_layers');
  const attentionHeads = integer(config, file, 'num_attention_heads', 'n_head');
  const numHeads = integer(config, file, 'num_key_value_heads') ?? attentionHeads;
  const hidden = integer(config, file, 'hidden_size', 'n_embd', 'd_model');
  const headDim = integer(config, file, 'head_dim') ?? (hidden && attentionHeads ? hidden / attentionHeads : undefined);
  const contextLength = integer(config, file, 'max_position_embeddings', 'n_positions', 'max_sequence_length') ?? 2048;
  const missing = Object.entries({ vocab_size: vocabSize, num_hidden_layers: numLayers, num_attention_heads: numHeads, head_dim: headDim })
    .filter(([, v]) => v === undefined || !Number.isInteger(v))
    .map(([k]) => k);
  if (missing.length > 0) throw new ModelLoadError(`${file} lacks ${missing.join(', ')}`);
  const eos = config.eos_token_id;
  return {
    vocabSize: vocabSize!,
    numLayers: numLayers!,
    numHeads: numHeads!,
    headDim: headDim!,
    contextLength,
    eosTokenId: typeof eos === 'number' ? eos : Array.isArray(eos) && typeof eos[0] === 'number' ? eos[0] : undefined,
  };
}
