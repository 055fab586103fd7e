/**
 * The orchestrator's limits on the size of a request, beyond the target's vocabulary and context
 * (./limits.ts) and max_new_tokens: each has a default and a `DSI_*` environment variable, read when
 * the service is made (docs/limits.md lists them with the status and message a caller gets).
 */

/** Limits on what one Generate request may carry. */
export interface RequestLimits {
  /**
   * Most characters of prompt text (and of all stop texts together) the orchestrator tokenizes; unset:
   * 16 per token of the target's context length (see PROMPT_CHARS_PER_TOKEN in ./service).
   */
  maxPromptChars?: number;
  /** Most prompt tokens (given, or from the prompt text), whatever the target's context length. */
  maxPromptTokens: number;
  /** Most stop sequences (the `stop` list's entries, empty ones included). */
  maxStopSequences: number;
  /** Most characters of one stop sequence. */
  maxStopSequenceChars: number;
}

/** The defaults: a 128 Ki-token prompt (the longest context of common models), 32 stop sequences of at most 512 characters. */
export const DEFAULT_REQUEST_LIMITS: Readonly<RequestLimits> = {
  maxPromptTokens: 131_072,
  maxStopSequences: 32,
  maxStopSequenceChars: 512,
};

/** The environment variable of each limit. */
export const REQUEST_LIMIT_ENV: Readonly<Record<keyof RequestLimits, string>> = {
  maxPromptChars: 'DSI_MAX_PROMPT_CHARS',
  maxPromptTokens: 'DSI_MAX_PROMPT_TOKENS',
  maxStopSequences: 'DSI_MAX_STOP_SEQUENCES',
  maxStopSequenceChars: 'DSI_MAX_STOP_SEQUENCE_CHARS',
};

/**
 * The limits the environment sets (unset or empty variables are left out); throws a RangeError naming
 * the variable when one holds anything but an integer >= 1, so the process does not start with it.
 */
export function requestLimitsFromEnv(env: NodeJS.ProcessEnv = process.env): Partial<RequestLimits> {
  const limits: Partial<RequestLimits> = {};
  for (const [key, name] of Object.entries(REQUEST_LIMIT_ENV) as [keyof RequestLimits, string][]) {
    const text = env[name]?.trim();
    if (text === undefined || text === '') continue;
    const value = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name}=${JSON.stringify(env[name])} is not an integer >= 1`);
    limits[key] = value;
  }
  return limits;
}

/** The limits in force: each from `given` (the service's options), else the environment, else the default. */
export function resolveRequestLimits(given: Partial<RequestLimits>, env: NodeJS.ProcessEnv = process.env): RequestLimits {
  const fromEnv = requestLimitsFromEnv(env);
  const pick = <K extends keyof RequestLimits>(key: K): RequestLimits[K] => {
    const value = given[key] ?? fromEnv[key] ?? DEFAULT_REQUEST_LIMITS[key];
    if (value !== undefined && !(Number.isSafeInteger(value) && (value as number) >= 1)) throw new RangeError(`${key}=${value} must be an integer >= 1`);
    return value as RequestLimits[K];
  };
  return {
    maxPromptChars: pick('maxPromptChars'),
    maxPromptTokens: pick('maxPromptTokens'),
    maxStopSequences: pick('maxStopSequences'),
    maxStopSequenceChars: pick('maxStopSequenceChars'),
  };
}

/** Field numbers of a GenerateRequest (and GenerateStreamRequest) on the wire: `params`, and its `stop`. */
const PARAMS_FIELD = 1;
const STOP_FIELD = 7;

/**
 * How many `stop` entries a serialized GenerateRequest or GenerateStreamRequest holds, counted on the
 * wire without decoding anything (decoding a million stop strings holds the event loop for a second,
 * so a request over the limit is refused before it is decoded). Bytes that are not well-formed are
 * counted as far as they go; the decoder reports what is wrong with them.
 */
export function countStopSequencesOnWire(bytes: Uint8Array): number {
  return countOnWire(bytes, 0, bytes.length, false);
}

/** Where {@link readVarint} left off: the value read and the position after it (-1: malformed). */
const cursor = { value: 0, at: 0 };

/** Reads the varint at `at` (before `end`) into {@link cursor}; a varint beyond 2^53 or cut short sets `at` to -1. */
function readVarint(bytes: Uint8Array, at: number, end: number): void {
  let value = 0;
  let scale = 1;
  while (at < end) {
    const byte = bytes[at++];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      cursor.value = value;
      cursor.at = at;
      return;
    }
    scale *= 128;
    if (scale > 2 ** 56) break;
  }
  cursor.at = -1;
}

function countOnWire(bytes: Uint8Array, start: number, end: number, inParams: boolean): number {
  let count = 0;
  let at = start;
  while (at < end) {
    readVarint(bytes, at, end);
    if (cursor.at < 0) break;
    const tag = cursor.value;
    at = cursor.at;
    const wireType = tag % 8;
    if (wireType === 0) {
      readVarint(bytes, at, end);
      if (cursor.at < 0) break;
      at = cursor.at;
    } else if (wireType === 1) {
      at += 8;
    } else if (wireType === 5) {
      at += 4;
    } else if (wireType === 2) {
      readVarint(bytes, at, end);
      if (cursor.at < 0 || cursor.at + cursor.value > end) break;
      const field = (tag - wireType) / 8;
      const length = cursor.value;
      at = cursor.at;
      if (inParams && field === STOP_FIELD) count++;
      else if (!inParams && field === PARAMS_FIELD) count += countOnWire(bytes, at, at + length, true);
      at += length;
    } else {
      break; // groups and invalid wire types: left to the decoder
    }
  }
  return count;
}
