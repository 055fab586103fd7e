export * from './service';
export * from './startup';
export { DEFAULT_MAX_REQUEST_ID_LENGTH, MAX_REQUEST_ID_LENGTH_ENV } from '@dsi/rpc';
