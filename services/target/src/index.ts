export * from './service';
export * from './startup';
