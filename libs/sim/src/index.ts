export * from './config';
export * from './exact';
export * from './mt19937';
export * from './rules';
export * from './sampler';
export * from './simulate';
