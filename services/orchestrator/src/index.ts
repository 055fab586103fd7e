export * from './admission';
export * from './limits';
export * from './replicas';
export * from './service';
export * from './startup';
export * from './request-limits';
