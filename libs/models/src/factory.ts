import type { LanguageModel } from './backend';
import { OnnxModel, type OnnxModelOptions } from './onnx';
import { createSyntheticModel, type SyntheticOptions } from './synthetic';

/** Which model a drafter or target replica serves. */
export type ModelSpec = ({ backend: 'onnx'; dir: string } & OnnxModelOptions) | ({ backend: 'synthetic' } & SyntheticOptions);

/** Loads the model a spec names and runs its warm-up forward, so the replica can report SERVING. */
export async function loadModel(spec: ModelSpec): Promise<LanguageModel> {
  const model = spec.backend === 'onnx' ? await OnnxModel.load(spec.dir, spec) : createSyntheticModel(spec);
  try {
    await model.warmup();
  } catch (error) {
    await model.close();
    throw error;
  }
  return model;
}
