/*
 * Requests that are not valid protobuf answered INVALID_ARGUMENT. grpc-js answers a request its
 * deserializer throws on with INTERNAL ("Error deserializing request") before any handler runs, so
 * the caller's mistake looks like the server's bug and nothing is logged. Every DSI service wraps its
 * registration with {@link rejectingUndecodableRequests}.
 */
import type { MethodDefinition, sendUnaryData, ServerUnaryCall, ServerWritableStream, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { invalidArgument, toServiceError, type DsiError } from './errors';
import type { ServiceRegistration } from './server';

/** Marks what the deserializer returns in place of a request it could not decode. */
const UNDECODABLE = Symbol('undecodable request');

interface Undecodable {
  readonly [UNDECODABLE]: DsiError;
}

function refusalOf(request: unknown): DsiError | undefined {
  return typeof request === 'object' && request !== null && UNDECODABLE in request ? (request as Undecodable)[UNDECODABLE] : undefined;
}

type UnaryHandler = (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => void;
type StreamHandler = (call: ServerWritableStream<unknown, unknown>) => void;

/**
 * A check of a request's bytes before they are decoded (`method` is the definition's key, e.g.
 * `generate`): an error refuses the call without decoding, for requests whose decoding alone would
 * be costly (a million repeated strings take a second to decode).
 */
export type BeforeDecode = (method: string, bytes: Buffer) => DsiError | undefined;

/**
 * The registration with every method's request decoding checked: bytes that do not decode as the
 * method's request message (a bad wire type, a truncated field, a 64-bit number beyond 2^53, nesting
 * too deep) get INVALID_ARGUMENT naming the method and the decoder's reason, and the handler never runs;
 * so do bytes `beforeDecode` refuses, with its error.
 */
export function rejectingUndecodableRequests(registration: ServiceRegistration, beforeDecode?: BeforeDecode): ServiceRegistration {
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  const implementation: UntypedServiceImplementation = {};
  for (const [key, method] of Object.entries(registration.definition)) {
    const decode = method.requestDeserialize;
    definition[key] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        const refused = beforeDecode?.(key, bytes);
        if (refused) return { [UNDECODABLE]: refused } satisfies Undecodable;
        try {
          return decode(bytes);
        } catch (error) {
          const reason = error instanceof Error ? error.message : String(error);
          const refusal = invalidArgument(`the request to ${method.path} is not a valid protobuf message of its type (${bytes.length} bytes): ${reason}`, { cause: error });
          return { [UNDECODABLE]: refusal } satisfies Undecodable;
        }
      },
    };
    const handler = registration.implementation[key] ?? (method.originalName === undefined ? undefined : registration.implementation[method.originalName]);
    if (handler === undefined) continue;
    implementation[key] = method.responseStream
      ? ((call) => {
          const refusal = refusalOf(call.request);
          if (refusal) call.emit('error', toServiceError(refusal));
          else (handler as StreamHandler).call(registration.implementation, call);
        }) satisfies StreamHandler
      : ((call, callback) => {
          const refusal = refusalOf(call.request);
          if (refusal) callback(toServiceError(refusal));
          else (handler as UnaryHandler).call(registration.implementation, call, callback);
        }) satisfies UnaryHandler;
  }
  return { ...registration, definition: definition as ServiceDefinition, implementation };
}
