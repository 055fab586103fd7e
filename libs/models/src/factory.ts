import type { LanguageModel } from './backend';
import { OnnxModel, type OnnxModelOptions } from './onnx';
import { createSyntheticModel, type SyntheticOptions } from './synthetic';

/**
 * Which model a drafter or target replica serves and how to load it: an ONNX folder with its runtime
 * options, or the synthetic oracle. (Not modelgen's `ModelSpec`, the shape of a model to generate.)
 */
export type ModelSource = ({ backend: 'onnx'; dir: string } & OnnxModelOptions) | ({ backend: 'synthetic' } & SyntheticOptions);

/** Loads the model a source names and runs its warm-up forward, so the replica can report SERVING. */
export async function loadModel(source: ModelSource): Promise<LanguageModel> {
  const model = source.backend === 'onnx' ? await OnnxModel.load(source.dir, source) : createSyntheticModel(source);
  try {
    await model.warmup();
  } catch (error) {
    await model.close();
    throw error;
  }
  return model;
}
