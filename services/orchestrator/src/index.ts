export * from './replicas';
export * from './service';
