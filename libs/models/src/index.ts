export * from './backend';
export * from './factory';
export * from './onnx';
export * from './replica';
export * from './serving';
export { checkTokens, ModelLoadError, readDecoderConfig, type DecoderConfig } from './onnx-config';
export * from './synthetic';
export * from './tokenizer';
export * from './wire';
