/*
 * Hostile-input fuzzing of the DSI services, for their `fuzz.spec.ts` files (docs/limits.md): a seeded
 * random source, a minimal protobuf writer (for messages a generated encoder cannot write: invalid
 * UTF-8, out-of-range varints, unknown fields), mutations of valid request bytes, and raw calls that
 * send bytes as they are (a grpc-js client with a passthrough serializer) or a raw HTTP/2 stream (a
 * truncated gRPC frame). Not part of the package's API: import it as `@dsi/wire/fuzz` from specs only
 * (jest maps it to this source file). It imports no gRPC library; the spec passes its own grpc-js
 * `Client` (see {@link RawClient}).
 */
import http2 from 'node:http2';
import v8 from 'node:v8';
import vm from 'node:vm';

/** gRPC status codes by name, as the wire numbers them (grpc-js's `status` without importing it). */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** The status code's name (`INVALID_ARGUMENT`), or `code_N` for a number gRPC does not define. */
export function codeName(code: number): string {
  return Object.entries(Code).find(([, value]) => value === code)?.[0] ?? `code_${code}`;
}

/** A seeded pseudo-random source (mulberry32): the same seed gives the same fuzz cases on every run. */
export class FuzzRandom {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A number in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** n random bytes. */
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

/**
 * A minimal protobuf writer: fields as bytes, concatenated into a message. Values are written as given,
 * so a field may carry what no generated encoder writes (a 10-byte varint in an int32, invalid UTF-8 in
 * a string, a wire type the schema does not expect).
 */
export const pb = {
  /** A base-128 varint; a negative number is written as its 64-bit two's complement (10 bytes), as int32 fields are. */
  varint(value: number | bigint): Buffer {
    let v = BigInt.asUintN(64, BigInt(value));
    const out: number[] = [];
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) byte |= 0x80;
      out.push(byte);
    } while (v !== 0n);
    return Buffer.from(out);
  },
  tag(field: number, wireType: number): Buffer {
    return pb.varint((BigInt(field) << 3n) | BigInt(wireType));
  },
  /** Field `field` as a varint (int32, int64, uint64, bool, enum). */
  int(field: number, value: number | bigint): Buffer {
    return Buffer.concat([pb.tag(field, 0), pb.varint(value)]);
  },
  /** Field `field` as a double (wire type 1). */
  double(field: number, value: number): Buffer {
    const out = Buffer.alloc(8);
    out.writeDoubleLE(value);
    return Buffer.concat([pb.tag(field, 1), out]);
  },
  /** Field `field` as a float (wire type 5). */
  float(field: number, value: number): Buffer {
    const out = Buffer.alloc(4);
    out.writeFloatLE(value);
    return Buffer.concat([pb.tag(field, 5), out]);
  },
  /** Field `field` as length-delimited bytes (a string, a nested message, a packed list). */
  bytes(field: number, payload: Uint8Array | string): Buffer {
    const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : Buffer.from(payload);
    return Buffer.concat([pb.tag(field, 2), pb.varint(body.length), body]);
  },
  /** A packed repeated varint field (repeated int32). */
  packed(field: number, values: readonly (number | bigint)[]): Buffer {
    return pb.bytes(field, Buffer.concat(values.map((v) => pb.varint(v))));
  },
  /** `field` (one encoded field) `times` times over: a repeated field of a million entries without a million buffers. */
  repeat(field: Uint8Array, times: number): Buffer {
    return times === 0 ? Buffer.alloc(0) : Buffer.alloc(field.length * times, field);
  },
  /** Fields concatenated into one message. */
  message(...fields: Uint8Array[]): Buffer {
    return Buffer.concat(fields);
  },
};

/** Bytes that are not valid UTF-8: a lone continuation byte, a truncated sequence, an overlong form, a surrogate. */
export const INVALID_UTF8 = Buffer.from([0x48, 0x69, 0x80, 0xc3, 0x28, 0xe2, 0x82, 0xc0, 0xaf, 0xed, 0xa0, 0x80, 0xff, 0xfe]);

/** The ways {@link mutate} changes valid bytes. */
const MUTATIONS = ['flip', 'byte', 'insert', 'delete', 'truncate', 'duplicate', 'varint', 'length', 'field', 'group'] as const;

/**
 * One random mutation of (valid) protobuf bytes: a flipped bit, a random byte, inserted or deleted
 * bytes, a truncation, a duplicated slice, a huge varint, a wrong length prefix, an unknown field of a
 * random wire type, or an unterminated group. Returns a new buffer.
 */
export function mutate(random: FuzzRandom, input: Uint8Array): Buffer {
  const bytes = Buffer.from(input);
  const at = (extra = 0) => random.int(bytes.length + extra);
  switch (random.pick(MUTATIONS)) {
    case 'flip':
      if (bytes.length === 0) return random.bytes(1);
      bytes[at()] ^= 1 << random.int(8);
      return bytes;
    case 'byte':
      if (bytes.length === 0) return random.bytes(1);
      bytes[at()] = random.pick([0x00, 0x7f, 0x80, 0xff, random.int(256)]);
      return bytes;
    case 'insert': {
      const i = at(1);
      return Buffer.concat([bytes.subarray(0, i), random.bytes(1 + random.int(8)), bytes.subarray(i)]);
    }
    case 'delete': {
      const i = at(1);
      return Buffer.concat([bytes.subarray(0, i), bytes.subarray(i + 1 + random.int(8))]);
    }
    case 'truncate':
      return bytes.subarray(0, at());
    case 'duplicate': {
      const i = at(1);
      const j = i + random.int(bytes.length - i + 1);
      return Buffer.concat([bytes.subarray(0, j), bytes.subarray(i, j), bytes.subarray(j)]);
    }
    case 'varint': {
      const i = at(1);
      const huge = random.pick([pb.varint(-1), pb.varint(2n ** 63n), pb.varint(2 ** 31), Buffer.alloc(11, 0xff)]);
      return Buffer.concat([bytes.subarray(0, i), huge, bytes.subarray(i)]);
    }
    case 'length': {
      const i = at(1);
      const field = 1 + random.int(16);
      const length = random.pick([0x7fffffff, 0xffffffff, bytes.length + 1, 1 << 20]);
      return Buffer.concat([bytes.subarray(0, i), pb.tag(field, 2), pb.varint(length), bytes.subarray(i)]);
    }
    case 'field': {
      const field = random.pick([1, 2, 3, 5, 7, 100, 536_870_911]);
      const wireType = random.int(8);
      const value = wireType === 2 ? Buffer.concat([pb.varint(4), random.bytes(4)]) : random.bytes(random.pick([0, 1, 4, 8]));
      return Buffer.concat([bytes, pb.tag(field, wireType), value]);
    }
    case 'group':
      return Buffer.concat([Buffer.alloc(random.int(200), 0x0b), bytes]); // field 1, start group, never ended (nested)
  }
}

/** A method of a generated service definition (`XServiceService`), as far as a raw call needs it. */
export interface RawMethod {
  path: string;
  responseStream: boolean;
}

/** The status a raw call ended with (grpc-js ServiceError or StatusObject shape). */
export interface RawStatus {
  code: number;
  details: string;
}

/** A server-streaming call as a grpc-js `Client.makeServerStreamRequest` returns it. */
export interface RawStream {
  on(event: 'data', listener: (message: Buffer) => void): unknown;
  on(event: 'status', listener: (status: RawStatus) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  cancel(): void;
}

/** The two methods of a grpc-js `Client` a raw call uses: pass `new Client(address, credentials.createInsecure())`. */
export interface RawClient {
  makeUnaryRequest(
    method: string,
    serialize: (value: Buffer) => Buffer,
    deserialize: (value: Buffer) => Buffer,
    argument: Buffer,
    options: { deadline?: Date },
    callback: (error: RawStatus | null, value?: Buffer) => void,
  ): { cancel(): void };
  makeServerStreamRequest(
    method: string,
    serialize: (value: Buffer) => Buffer,
    deserialize: (value: Buffer) => Buffer,
    argument: Buffer,
    options: { deadline?: Date },
  ): RawStream;
}

/** How a raw call behaves besides sending its bytes. */
export interface RawCallOptions {
  /** The call's deadline from its start (default 5000 ms): a long valid request ends DEADLINE_EXCEEDED. */
  deadlineMs?: number;
  /** Cancel the call this long after it starts. */
  cancelAfterMs?: number;
  /** Server streams: cancel once this many messages have arrived (a truncated read). */
  cancelAfterMessages?: number;
}

/** How a raw call ended. */
export interface RawOutcome {
  code: number;
  details: string;
  /** Response messages received (1 for a successful unary call). */
  messages: number;
  /** The response bytes (the last message of a stream). */
  response?: Buffer;
}

const passthrough = (value: Buffer): Buffer => value;

/**
 * Calls `method` with `bytes` as the serialized request (no encoding on the client) and resolves with
 * how the call ended; never rejects.
 */
export function callRaw(client: RawClient, method: RawMethod, bytes: Buffer, options: RawCallOptions = {}): Promise<RawOutcome> {
  const deadline = new Date(Date.now() + (options.deadlineMs ?? 5000));
  return new Promise<RawOutcome>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const done = (outcome: RawOutcome): void => {
      clearTimeout(timer);
      resolve(outcome);
    };
    if (!method.responseStream) {
      const call = client.makeUnaryRequest(method.path, passthrough, passthrough, bytes, { deadline }, (error, value) =>
        done(error ? { code: error.code, details: error.details, messages: 0 } : { code: Code.OK, details: '', messages: 1, response: value }),
      );
      if (options.cancelAfterMs !== undefined) timer = setTimeout(() => call.cancel(), options.cancelAfterMs);
      return;
    }
    const stream = client.makeServerStreamRequest(method.path, passthrough, passthrough, bytes, { deadline });
    let messages = 0;
    let last: Buffer | undefined;
    stream.on('data', (message: Buffer) => {
      messages++;
      last = message;
      if (options.cancelAfterMessages !== undefined && messages >= options.cancelAfterMessages) stream.cancel();
    });
    stream.on('error', () => undefined); // the status follows
    stream.on('status', (status: RawStatus) => done({ code: status.code, details: status.code === Code.OK ? '' : status.details, messages, response: last }));
    if (options.cancelAfterMs !== undefined) timer = setTimeout(() => stream.cancel(), options.cancelAfterMs);
  });
}

/** The gRPC frame of one message: uncompressed flag, 4-byte big-endian length, the bytes. */
export function grpcFrame(message: Uint8Array, declaredLength = message.length): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(declaredLength >>> 0, 1);
  return Buffer.concat([header, message]);
}

/** How a raw HTTP/2 exchange ended: the grpc-status (from trailers or headers) or how the stream closed. */
export interface Http2Outcome {
  /** The grpc-status the server sent, or undefined when it sent none (the stream was reset). */
  code?: number;
  details: string;
}

/**
 * Sends `body` (gRPC frames, possibly malformed or truncated) on one HTTP/2 stream to `address` at
 * `path` and resolves with the grpc-status the server answers. With `endStream: false` the request
 * stays half-open and is reset after `resetAfterMs` (a client that vanishes mid-request).
 */
export function sendHttp2(address: string, path: string, body: Buffer, options: { endStream?: boolean; resetAfterMs?: number; timeoutMs?: number } = {}): Promise<Http2Outcome> {
  return new Promise<Http2Outcome>((resolve) => {
    const session = http2.connect(`http://${address}`);
    session.on('error', () => undefined);
    let code: number | undefined;
    let details = '';
    const read = (headers: http2.IncomingHttpHeaders): void => {
      if (headers['grpc-status'] !== undefined) code = Number(headers['grpc-status']);
      if (typeof headers['grpc-message'] === 'string') details = decodeURIComponent(headers['grpc-message']);
    };
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' }, { endStream: false });
    const finish = (): void => {
      clearTimeout(timeout);
      clearTimeout(reset);
      session.close();
      resolve({ code, details });
    };
    const timeout = setTimeout(() => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      finish();
    }, options.timeoutMs ?? 5000);
    let reset: NodeJS.Timeout | undefined;
    stream.on('response', read);
    stream.on('trailers', read);
    stream.on('data', () => undefined);
    stream.on('error', () => undefined);
    stream.on('close', finish);
    stream.write(body);
    if (options.endStream ?? true) stream.end();
    else reset = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), options.resetAfterMs ?? 20);
  });
}

/** Runs `tasks` with at most `concurrency` at once, resolving with their results in order. */
export async function runLimited<T>(tasks: readonly (() => Promise<T>)[], concurrency: number): Promise<T[]> {
  const results = new Array<T>(tasks.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, tasks.length) }, worker));
  return results;
}

/** One fuzz case: its name (kind and index, for the report), how it ended, and its bytes when small (to replay it). */
export interface FuzzResult {
  name: string;
  outcome: RawOutcome;
  /** The request bytes, kept up to 64 KiB. */
  bytes?: Buffer;
}

/** How many cases ended with each status (`{ OK: 12, INVALID_ARGUMENT: 80 }`). */
export function tally(results: readonly FuzzResult[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const { outcome } of results) counts[codeName(outcome.code)] = (counts[codeName(outcome.code)] ?? 0) + 1;
  return counts;
}

/**
 * The cases that ended with a status other than `allowed` (by default the statuses a caller's mistake,
 * a deadline or a cancellation may end with), or with INVALID_ARGUMENT / RESOURCE_EXHAUSTED and no
 * message: what a fuzz spec expects to be empty.
 */
export function unexpected(results: readonly FuzzResult[], allowed: readonly number[] = CALLER_STATUSES): string[] {
  return results
    .filter(({ outcome }) => !allowed.includes(outcome.code) || ((outcome.code === Code.INVALID_ARGUMENT || outcome.code === Code.RESOURCE_EXHAUSTED) && outcome.details === ''))
    .map(({ name, outcome }) => `${name}: ${codeName(outcome.code)} ${JSON.stringify(outcome.details)}`);
}

/** What a fuzzed call may end with: success, a refusal naming the problem, or the client's own deadline or cancel. */
export const CALLER_STATUSES: readonly number[] = [Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED, Code.OUT_OF_RANGE, Code.DEADLINE_EXCEEDED, Code.CANCELLED];

let gc: (() => void) | undefined;

/**
 * The heap in use after a full garbage collection, in bytes. The collector is exposed at run time
 * (`--expose-gc` through V8's flags, read from a fresh context), so the spec needs no node flag.
 */
export function heapAfterGc(): number {
  if (!gc) {
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc') as () => void;
  }
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

/** What {@link fuzzService} sends to each method of a service, keyed like the generated definition (`verify`). */
export interface FuzzPlan {
  /** Valid requests per method, serialized: sent as they are, and the seeds of the mutations and cancellations. */
  valid: Record<string, readonly Uint8Array[]>;
  /** Hand-made hostile requests per method: a name, the bytes, and how to call. */
  extremes?: Record<string, readonly (readonly [string, Buffer, RawCallOptions?])[]>;
  /** Random byte strings per method (lengths 0..256). */
  randomCases: number;
  /** Mutations of the valid requests per method (1 to 3 mutations each). */
  mutatedCases: number;
  /** Valid requests cancelled at a random point per method: after 0..`cancelWithinMs` ms, or after some stream messages. */
  cancelledCases: number;
  cancelWithinMs?: number;
  /** Each call's deadline (default 5000 ms). */
  deadlineMs?: number;
  /** Calls in flight at once (default 8). */
  concurrency?: number;
}

/**
 * Fuzzes every method of a service definition with `plan`, in a fixed order from `random`: per method
 * the valid requests, random bytes, mutated valid requests, the extremes, then cancellations at random
 * points. Resolves with each method's results (never rejects: each call's status is the result).
 */
export async function fuzzService(
  client: RawClient,
  definition: Record<string, RawMethod>,
  random: FuzzRandom,
  plan: FuzzPlan,
): Promise<Record<string, FuzzResult[]>> {
  const results: Record<string, FuzzResult[]> = {};
  const deadlineMs = plan.deadlineMs ?? 5000;
  for (const [key, method] of Object.entries(definition)) {
    const valid = (plan.valid[key] ?? []).map((bytes) => Buffer.from(bytes));
    const seeds = valid.length > 0 ? valid : [Buffer.alloc(0)];
    const cases: [string, Buffer, RawCallOptions][] = valid.map((bytes, i) => [`valid ${i}`, bytes, { deadlineMs }]);
    for (let i = 0; i < plan.randomCases; i++) cases.push([`random ${i}`, random.bytes(random.int(257)), { deadlineMs }]);
    for (let i = 0; i < plan.mutatedCases; i++) {
      let bytes: Buffer = random.pick(seeds);
      for (let m = 1 + random.int(3); m > 0; m--) bytes = mutate(random, bytes);
      cases.push([`mutated ${i}`, bytes, { deadlineMs }]);
    }
    for (const [name, bytes, options] of plan.extremes?.[key] ?? []) cases.push([name, bytes, { deadlineMs, ...options }]);
    for (let i = 0; i < plan.cancelledCases; i++) {
      const options: RawCallOptions = { deadlineMs };
      if (method.responseStream && random.chance(0.5)) options.cancelAfterMessages = 1 + random.int(4);
      else options.cancelAfterMs = random.int((plan.cancelWithinMs ?? 20) + 1);
      cases.push([`cancelled ${i}`, random.pick(seeds), options]);
    }
    const outcomes = await runLimited(
      cases.map(([, bytes, options]) => () => callRaw(client, method, bytes, options)),
      plan.concurrency ?? 8,
    );
    results[key] = cases.map(([name, bytes], i) => ({ name: `${key} ${name}`, outcome: outcomes[i], bytes: bytes.length <= 65_536 ? bytes : undefined }));
  }
  return results;
}

/** Transport-level abuse of one method: truncated and oversized gRPC frames, and a client that resets mid-request. */
export function transportCases(address: string, path: string, valid: Uint8Array): Promise<FuzzResult[]> {
  const cases: [string, Buffer, { endStream?: boolean; resetAfterMs?: number }][] = [
    ['a frame cut short (length says more than follows)', grpcFrame(valid.subarray(0, valid.length >> 1), valid.length), {}],
    ['a frame header alone', Buffer.from([0, 0, 0]), {}],
    ['a frame declaring 100 MB', grpcFrame(Buffer.alloc(16), 100 << 20), {}],
    ['a frame declaring 4 GiB - 1', grpcFrame(Buffer.alloc(16), 0xffffffff), {}],
    ['a compressed flag without an encoding', Buffer.concat([Buffer.from([1]), grpcFrame(valid).subarray(1)]), {}],
    ['two messages on a unary method', Buffer.concat([grpcFrame(valid), grpcFrame(valid)]), {}],
    ['no message at all', Buffer.alloc(0), {}],
    ['a request reset half-sent', grpcFrame(valid.subarray(0, valid.length >> 1), valid.length), { endStream: false, resetAfterMs: 10 }],
  ];
  return Promise.all(
    cases.map(async ([name, body, options]) => {
      const { code, details } = await sendHttp2(address, path, body, options);
      // A reset stream has no status: the client vanished, nothing was answered.
      return { name: `${path} ${name}`, outcome: { code: code ?? Code.CANCELLED, details, messages: 0 } };
    }),
  );
}

/** What grpc-js answers a broken frame with (UNIMPLEMENTED for no message or two; OK for a compressed flag it ignores). */
export const TRANSPORT_STATUSES: readonly number[] = [Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED, Code.UNIMPLEMENTED, Code.CANCELLED];

/**
 * Prints a fuzz run's tally (cases and status counts per method, then the transport cases'); with
 * FUZZ_VERBOSE set, also every named (not random, mutated or cancelled) case's status and details.
 */
export function reportFuzz(results: Record<string, FuzzResult[]>, transport: readonly FuzzResult[]): void {
  if (process.env.FUZZ_VERBOSE) {
    for (const r of Object.values(results).flat().filter((r) => !/ (random|mutated|cancelled) /.test(r.name))) console.log(r.name, r.outcome.code, r.outcome.details.slice(0, 200));
  }
  console.log(Object.fromEntries(Object.entries(results).map(([method, list]) => [method, { cases: list.length, ...tally(list) }])), tally(transport));
}
