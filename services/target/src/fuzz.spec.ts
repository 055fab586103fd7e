import { Client, credentials } from '@grpc/grpc-js';
import { createSyntheticModel, type LanguageModel } from '@dsi/models';
import {
  TargetServiceClient,
  TargetServiceGetModelInfoRequest,
  TargetServiceReleaseRequest,
  TargetServiceService,
  VerificationRule,
  VerifyRequest,
  type VerifyResponse,
} from '@dsi/proto';
import { checkHealth, DsiServer, LoadingSlot } from '@dsi/rpc';
import { Code, FuzzRandom, fuzzService, heapAfterGc, INVALID_UTF8, pb, reportFuzz, TRANSPORT_STATUSES, transportCases, type FuzzResult, unexpected } from '@dsi/wire/fuzz';
import { targetService } from './service';

/**
 * Hostile input to a real target replica on loopback (synthetic backend): random bytes, mutated valid
 * requests, extreme values and cancellations for every TargetService method, with a fixed seed. The
 * replica must answer each with a caller's status (never INTERNAL), log no internal error, and stay
 * SERVING with the same answers and its heap near where it was.
 */

const SEED = 20_261_212;
const VOCAB = 259;
const MAX_BLOCK = 16;
const MiB = 1 << 20;

let model: LanguageModel;
let server: DsiServer;
let client: TargetServiceClient;
let raw: Client;
const log: string[] = [];

beforeAll(async () => {
  model = createSyntheticModel({ role: 'target', seed: 5, contextLength: 1024 });
  server = new DsiServer([targetService(LoadingSlot.of(model), { maxBlock: MAX_BLOCK })], { port: 0, log: (line) => log.push(line) });
  await server.start();
  server.markServing();
  client = new TargetServiceClient(server.address, credentials.createInsecure());
  raw = new Client(server.address, credentials.createInsecure());
});

afterAll(async () => {
  client.close();
  raw.close();
  await server.shutdown();
  await model.close();
});

function verify(request: Partial<VerifyRequest>): Promise<VerifyResponse> {
  return new Promise((resolve, reject) => client.verify(VerifyRequest.fromPartial(request), (error, response) => (error ? reject(error) : resolve(response!))));
}

const prompt = Array.from('The quick brown fox', (ch) => ch.charCodeAt(0));
const reference = { requestId: 'reference', prefix: prompt, drafts: [104, 101, 108, 108], sampling: { rule: VerificationRule.VERIFICATION_RULE_SEEDED, seed: 7, temperature: 0.8 } };
const encode = (request: Partial<VerifyRequest>) => Buffer.from(VerifyRequest.encode(VerifyRequest.fromPartial(request)).finish());

const valid = {
  verify: [
    encode(reference),
    encode({ prefix: [1, 2, 3], drafts: [] }),
    encode({ requestId: 'r', prefix: prompt, drafts: [65, 66, 67], sampling: { rule: VerificationRule.VERIFICATION_RULE_GREEDY } }),
    encode({ requestId: 'q', prefix: [72], drafts: [65], sampling: { rule: VerificationRule.VERIFICATION_RULE_REJECTION, seed: 3, temperature: 1 }, draftProbs: new Array(VOCAB).fill(1 / VOCAB) }),
  ],
  release: [Buffer.from(TargetServiceReleaseRequest.encode({ requestId: 'r' }).finish()), Buffer.from(TargetServiceReleaseRequest.encode({ requestId: 'q' }).finish())],
  getModelInfo: [Buffer.from(TargetServiceGetModelInfoRequest.encode({}).finish())],
};

/** VerifyRequest fields: 1 request_id, 2 prefix, 3 drafts, 4 sampling (1 rule, 2 temperature, 3 seed), 5 draft_probs. */
const sampling = (...fields: Buffer[]) => pb.bytes(4, pb.message(...fields));
const extremes = {
  verify: [
    ['a 100 MB prefix', pb.message(pb.bytes(2, Buffer.alloc(100 * MiB, 65)))],
    ['a 3 MB request_id', pb.message(pb.bytes(1, 'x'.repeat(3 * MiB)), pb.packed(2, [1]))],
    ['an empty request_id', pb.message(pb.bytes(1, ''), pb.packed(2, [1]))],
    ['an invalid UTF-8 request_id', pb.message(pb.bytes(1, INVALID_UTF8), pb.packed(2, [1]))],
    ['a token far outside the vocabulary', pb.message(pb.packed(2, [2 ** 31 - 1]))],
    ['a negative token', pb.message(pb.packed(2, [-1]))],
    ['a negative draft', pb.message(pb.packed(2, [1]), pb.packed(3, [-(2 ** 31)]))],
    ['a 64-bit token', pb.message(pb.packed(2, [2n ** 63n]))],
    ['a 4 MB prefix of zeros', pb.message(pb.bytes(2, Buffer.alloc(4 * MiB - 64)))],
    ['1,000,000 drafts', pb.message(pb.packed(2, [1]), pb.bytes(3, Buffer.alloc(MiB, 1)))],
    ['rule 10^9', pb.message(pb.packed(2, [1]), sampling(pb.int(1, 1e9)))],
    ['rule -1', pb.message(pb.packed(2, [1]), sampling(pb.int(1, -1)))],
    ['temperature NaN', pb.message(pb.packed(2, [1]), sampling(pb.int(1, 2), pb.double(2, NaN), pb.int(3, 1)))],
    ['temperature Infinity', pb.message(pb.packed(2, [1]), sampling(pb.int(1, 2), pb.double(2, Infinity), pb.int(3, 1)))],
    ['temperature -Infinity', pb.message(pb.packed(2, [1]), sampling(pb.int(1, 1), pb.double(2, -Infinity)))],
    ['temperature 1e-300', pb.message(pb.packed(2, [1]), pb.packed(3, [5]), sampling(pb.int(1, 2), pb.double(2, 1e-300), pb.int(3, 1)))],
    ['temperature 1e300', pb.message(pb.packed(2, [1]), pb.packed(3, [5]), sampling(pb.int(1, 2), pb.double(2, 1e300), pb.int(3, 1)))],
    ['seed 2^64 - 1', pb.message(pb.packed(2, [1]), sampling(pb.int(1, 2), pb.double(2, 1), pb.int(3, 2n ** 64n - 1n)))],
    ['seed 2^53', pb.message(pb.packed(2, [1]), sampling(pb.int(1, 2), pb.double(2, 1), pb.int(3, 2n ** 53n)))],
    [
      'rejection with NaN draft probabilities',
      pb.message(pb.packed(2, [1]), pb.packed(3, [5]), sampling(pb.int(1, 3), pb.double(2, 1), pb.int(3, 1)), pb.bytes(5, Buffer.alloc(4 * VOCAB, 0xff))),
    ],
    [
      'rejection with negative and infinite probabilities',
      pb.message(pb.packed(2, [1]), pb.packed(3, [5]), sampling(pb.int(1, 3), pb.double(2, 1), pb.int(3, 1)), pb.bytes(5, Buffer.concat(Array.from({ length: VOCAB }, (_, i) => pb.float(1, i % 2 ? -1 : Infinity).subarray(1))))),
    ],
    ['drafts filling the context exactly', pb.message(pb.bytes(2, Buffer.alloc(1024 - MAX_BLOCK, 65)), pb.bytes(3, Buffer.alloc(MAX_BLOCK, 65)))],
    ['a deeply nested unknown group', Buffer.concat([Buffer.alloc(5000, 0x0b)])],
  ],
  release: [
    ['an empty request_id', pb.message(pb.bytes(1, ''))],
    ['a 3 MB request_id', pb.message(pb.bytes(1, 'x'.repeat(3 * MiB)))],
    ['an invalid UTF-8 request_id', pb.message(pb.bytes(1, INVALID_UTF8))],
    ['a request_id that is a number', pb.message(pb.int(1, 5))],
  ],
  getModelInfo: [['an unknown field', pb.message(pb.bytes(99, 'x'), pb.int(1, -1))]],
} as const;


describe('TargetService under hostile input', () => {
  let before: VerifyResponse;
  let heapBefore: number;
  let results: Record<string, FuzzResult[]>;
  let transport: FuzzResult[];

  beforeAll(async () => {
    before = await verify(reference);
    heapBefore = heapAfterGc();
    const random = new FuzzRandom(SEED);
    results = await fuzzService(raw, TargetServiceService, random, { valid, extremes, randomCases: 150, mutatedCases: 300, cancelledCases: 40, cancelWithinMs: 5 });
    transport = await transportCases(server.address, TargetServiceService.verify.path, valid.verify[0]);
    reportFuzz(results, transport);
  }, 60_000);

  it('fuzzes every method of the service', () => {
    expect(Object.keys(results).sort()).toEqual(Object.keys(TargetServiceService).sort());
  });

  it.each(Object.keys(TargetServiceService))('answers every %s case with a caller\'s status, naming the problem', (method) => {
    expect(unexpected(results[method])).toEqual([]);
  });

  it('refuses a 100 MB request by the message size limit', () => {
    const huge = results.verify.find((r) => r.name.endsWith('a 100 MB prefix'))!;
    expect(huge.outcome.code).toBe(Code.RESOURCE_EXHAUSTED);
  });

  it.each([
    ['verify', 'a 3 MB request_id'],
    ['release', 'a 3 MB request_id'],
  ])('refuses %s with %s, naming the limit', (method, name) => {
    const { outcome } = results[method].find((r) => r.name === `${method} ${name}`)!;
    expect({ code: outcome.code, details: outcome.details }).toEqual({
      code: Code.INVALID_ARGUMENT,
      details: `request_id has ${3 * MiB} characters; at most 256 are accepted (DSI_MAX_REQUEST_ID_LENGTH)`,
    });
  });

  it.each([
    ['rejection with NaN draft probabilities', 'draft_probs[0]=NaN is not a probability in [0, 1]'],
    ['rejection with negative and infinite probabilities', 'draft_probs[0]=Infinity is not a probability in [0, 1]'],
    ['seed 2^53', 'the request to /dsi.v1.TargetService/Verify is not a valid protobuf message of its type (25 bytes): Value is larger than Number.MAX_SAFE_INTEGER'],
  ])('refuses Verify with %s', (name, details) => {
    const { outcome } = results.verify.find((r) => r.name === `verify ${name}`)!;
    expect({ code: outcome.code, details: outcome.details }).toEqual({ code: Code.INVALID_ARGUMENT, details });
  });

  it('answers malformed and truncated frames without INTERNAL', () => {
    expect(unexpected(transport, TRANSPORT_STATUSES)).toEqual([]);
  });

  it('logs no internal error', () => {
    expect(log.filter((line) => / failed with (internal|unknown)/.test(line))).toEqual([]);
  });

  it('keeps serving with the same answers, its heap back near the baseline', async () => {
    expect(server.state).toBe('SERVING');
    expect(await checkHealth(server.address)).toBe('SERVING');
    expect(await checkHealth(server.address, 'dsi.v1.TargetService')).toBe('SERVING');
    const after = await verify(reference);
    expect({ accepted: after.accepted, tokens: after.tokens }).toEqual({ accepted: before.accepted, tokens: before.tokens });
    expect(server.inFlightCalls).toBe(0);
    const grown = heapAfterGc() - heapBefore;
    console.log(`heap after GC: ${(grown / MiB).toFixed(1)} MiB above the baseline`);
    expect(grown).toBeLessThan(48 * MiB);
  });
});
