import * as grpc from '@grpc/grpc-js';

/**
 * The lowercase snake name of a gRPC status code (`invalid_argument`), as used in
 * {@link DsiError} messages and for the `error.type` attribute of telemetry.
 */
export function statusCodeName(code: grpc.status): string {
  const name: string | undefined = grpc.status[code];
  return name === undefined ? `code_${code}` : name.toLowerCase();
}

/** What a caller may add to a {@link DsiError} besides its code and message. */
export interface DsiErrorOptions {
  /** The value this error was made from, kept for logs; never sent on the wire. */
  cause?: unknown;
}

/**
 * The one error type of DSI RPC code: a gRPC status code with a human message. Throw it from
 * handlers to choose the status the client sees, and expect it from every client helper.
 * `message` is prefixed with the code (`[invalid_argument] k must be >= 1`); `rawMessage` is the
 * text alone, which is what goes on the wire as the status details.
 */
export class DsiError extends Error {
  override name = 'DsiError';
  /** The gRPC status code. */
  readonly code: grpc.status;
  /** The message without the code prefix: the status details on the wire. */
  readonly rawMessage: string;

  constructor(code: grpc.status, message: string, options: DsiErrorOptions = {}) {
    super(message === '' ? `[${statusCodeName(code)}]` : `[${statusCodeName(code)}] ${message}`, options);
    this.code = code;
    this.rawMessage = message;
  }

  /**
   * Normalises anything caught into a DsiError: a DsiError passes through; a gRPC ServiceError
   * keeps its code and details; an AbortError (an aborted signal's default reason) becomes
   * CANCELLED; a TimeoutError (`AbortSignal.timeout`) becomes DEADLINE_EXCEEDED; anything else
   * gets `fallback` and its message. The original value is kept as `cause`.
   */
  static from(reason: unknown, fallback: grpc.status = grpc.status.UNKNOWN): DsiError {
    if (reason instanceof DsiError) return reason;
    if (isStatusLike(reason)) return new DsiError(reason.code, reason.details, { cause: reason });
    const name = errorName(reason);
    if (name === 'AbortError') return new DsiError(grpc.status.CANCELLED, messageOf(reason) || 'operation aborted', { cause: reason });
    if (name === 'TimeoutError') {
      return new DsiError(grpc.status.DEADLINE_EXCEEDED, messageOf(reason) || 'operation timed out', { cause: reason });
    }
    return new DsiError(fallback, messageOf(reason), { cause: reason });
  }
}

/** Bad input from the caller (a parameter out of range, a malformed prefix): never retry as is. */
export function invalidArgument(message: string, options?: DsiErrorOptions): DsiError {
  return new DsiError(grpc.status.INVALID_ARGUMENT, message, options);
}

/** The named thing (a request id, a replica, a service) does not exist. */
export function notFound(message: string, options?: DsiErrorOptions): DsiError {
  return new DsiError(grpc.status.NOT_FOUND, message, options);
}

/** The callee cannot be reached or is not serving yet; the caller may retry with backoff. */
export function unavailable(message: string, options?: DsiErrorOptions): DsiError {
  return new DsiError(grpc.status.UNAVAILABLE, message, options);
}

/** The system is not in a state that allows the operation (e.g. the model is not loaded). */
export function failedPrecondition(message: string, options?: DsiErrorOptions): DsiError {
  return new DsiError(grpc.status.FAILED_PRECONDITION, message, options);
}

/** A limit on size or work was hit (message size, tokens, queue depth). */
export function resourceExhausted(message: string, options?: DsiErrorOptions): DsiError {
  return new DsiError(grpc.status.RESOURCE_EXHAUSTED, message, options);
}

/** The work was cancelled by its caller (client cancel, a superseded speculation epoch). */
export function cancelled(message: string, options?: DsiErrorOptions): DsiError {
  return new DsiError(grpc.status.CANCELLED, message, options);
}

/** The caller's deadline passed before the work finished. */
export function deadlineExceeded(message: string, options?: DsiErrorOptions): DsiError {
  return new DsiError(grpc.status.DEADLINE_EXCEEDED, message, options);
}

/** A broken invariant on our side: a bug, not the caller's mistake. */
export function internal(message: string, options?: DsiErrorOptions): DsiError {
  return new DsiError(grpc.status.INTERNAL, message, options);
}

/** The status details sent for errors that are not DsiErrors, so internals never leak to clients. */
export const INTERNAL_ERROR_DETAILS = 'internal error';

/**
 * Turns whatever a handler threw into the error object grpc-js sends as the call's status. A
 * {@link DsiError} keeps its code and sends its unprefixed `rawMessage` as details; an abort or
 * timeout keeps CANCELLED / DEADLINE_EXCEEDED; anything else becomes INTERNAL with a generic
 * message. The original value stays in `cause` for server-side logs.
 */
export function toServiceError(reason: unknown): grpc.ServiceError {
  const name = errorName(reason);
  const known = reason instanceof DsiError || name === 'AbortError' || name === 'TimeoutError';
  const error = known ? DsiError.from(reason) : new DsiError(grpc.status.INTERNAL, INTERNAL_ERROR_DETAILS);
  return Object.assign(new Error(error.rawMessage, { cause: reason }), {
    code: error.code,
    details: error.rawMessage,
    metadata: new grpc.Metadata(),
  });
}

/** A grpc-js ServiceError or StatusObject: a valid numeric status code with string details. */
function isStatusLike(reason: unknown): reason is { code: grpc.status; details: string } {
  if (typeof reason !== 'object' || reason === null) return false;
  const { code, details } = reason as { code?: unknown; details?: unknown };
  return (
    typeof code === 'number' && code !== grpc.status.OK && code in grpc.status && typeof details === 'string'
  );
}

function errorName(reason: unknown): string | undefined {
  if (typeof reason !== 'object' || reason === null) return undefined;
  const { name } = reason as { name?: unknown };
  return typeof name === 'string' ? name : undefined;
}

function messageOf(reason: unknown): string {
  if (reason instanceof Error) return reason.message;
  if (typeof reason === 'object' && reason !== null) {
    const { message } = reason as { message?: unknown };
    if (typeof message === 'string') return message;
  }
  return String(reason);
}

/**
 * Runs `make` with `Error.stackTraceLimit` 0, so the errors it makes (its own, or grpc-js's inside it)
 * capture no stack: for errors whose stack would only show an event handler or the RPC layer.
 */
export function withoutStack<T>(make: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return make();
  } finally {
    Error.stackTraceLimit = limit;
  }
}
