/**
 * @dsi/modelgen: deterministic tiny ONNX decoder models (a target and a drafter that agrees with it
 * often) in the Hugging Face Optimum export layout, with a byte-level tokenizer. They are the
 * project's default local models and its test fixtures. It only writes models: running and measuring
 * them (one forward path, the acceptance estimate) is `@dsi/models`, whose tests use these as fixtures.
 *
 * Entry points:
 * - {@link writeDefaultModels}: write the pair into a folder (fixtures in a test's temp folder).
 * - {@link ensureDefaultModels}: the cached, atomic variant for the local default.
 * - {@link modelFingerprint}: sha256 of a model folder, to pin or validate it.
 * - Building blocks: {@link GraphBuilder} and the ONNX encoders, {@link ProtoWriter}, {@link WeightRng}.
 */
export {
  MODEL_FILES,
  buildModelPairFiles,
  defaultModelPairFiles,
  ensureDefaultModels,
  filesFingerprint,
  modelFingerprint,
  writeDefaultModels,
} from './files';
export type { ModelFiles, ModelPairPaths } from './files';
export {
  DEFAULT_MODEL_SPEC,
  buildDecoderGraph,
  bytePrior,
  encodeDecoderModel,
  generableTokenIds,
  generateWeights,
  logitBias,
  modelConfig,
} from './model';
export type { ModelSpec, Weights } from './model';
export { BYTE_VOCAB_SIZE, SPECIAL_TOKENS, byteLevelTokenizerConfig, byteLevelTokenizerJson, bytesToUnicode } from './tokenizer';
export {
  DataType,
  GraphBuilder,
  attr,
  encodeAttribute,
  encodeGraph,
  encodeModel,
  encodeNode,
  encodeTensor,
  encodeValueInfo,
  floatTensor,
  int64Tensor,
} from './onnx';
export type { Attribute, DataTypeCode, Dim, GraphDef, ModelOptions, NodeDef, TensorValue, ValueInfo } from './onnx';
export { ProtoWriter, encodeVarint } from './protobuf';
export { WeightRng, fnv1a, mulberry32 } from './prng';
