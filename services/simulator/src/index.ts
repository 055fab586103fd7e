export * from './convert';
export * from './service';
