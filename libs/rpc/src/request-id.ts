import type { handleUnaryCall } from '@grpc/grpc-js';
import { invalidArgument, toServiceError } from './errors';

/** Longest request_id a replica accepts by default: far above the orchestrator's own ids (`gen-` and a UUID, 40 characters). */
export const DEFAULT_MAX_REQUEST_ID_LENGTH = 256;

/** The environment variable that sets {@link DEFAULT_MAX_REQUEST_ID_LENGTH} for a process. */
export const MAX_REQUEST_ID_LENGTH_ENV = 'DSI_MAX_REQUEST_ID_LENGTH';

/**
 * A positive integer limit from the environment variable `name`, or `fallback` when it is unset or
 * empty; throws a RangeError naming the variable when it holds anything else (the process does not start).
 */
export function limitFromEnv(name: string, fallback: number, env: NodeJS.ProcessEnv = process.env): number {
  const text = env[name]?.trim();
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name}=${JSON.stringify(env[name])} is not an integer >= 1`);
  return value;
}

/**
 * Rejects a request_id longer than `max` characters: a replica keeps a KV cache under it (and the
 * cache map holds the string), so its length is bounded like any other input.
 */
export function requireRequestIdLength(requestId: string, max: number): void {
  if (requestId.length > max) {
    throw invalidArgument(`request_id has ${requestId.length} characters; at most ${max} are accepted (${MAX_REQUEST_ID_LENGTH_ENV})`);
  }
}

/** A unary handler (Release) with its request_id checked by {@link requireRequestIdLength} first. */
export function requestIdLimited<Req extends { requestId: string }, Res>(handler: handleUnaryCall<Req, Res>, max: number): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    try {
      requireRequestIdLength(call.request.requestId, max);
    } catch (error) {
      callback(toServiceError(error));
      return;
    }
    handler(call, callback);
  };
}
