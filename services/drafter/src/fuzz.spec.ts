import { Client, credentials } from '@grpc/grpc-js';
import { createSyntheticModel, type LanguageModel } from '@dsi/models';
import {
  DraftRequest,
  DrafterServiceClient,
  DrafterServiceGetModelInfoRequest,
  DrafterServiceReleaseRequest,
  DrafterServiceService,
  DraftResponse,
  VerificationRule,
} from '@dsi/proto';
import { checkHealth, DsiServer, LoadingSlot } from '@dsi/rpc';
import { Code, FuzzRandom, fuzzService, heapAfterGc, INVALID_UTF8, pb, reportFuzz, TRANSPORT_STATUSES, transportCases, type FuzzResult, unexpected } from '@dsi/wire/fuzz';
import { drafterService } from './service';

/**
 * Hostile input to a real drafter replica on loopback (synthetic backend): random bytes, mutated valid
 * requests, extreme values and cancellations for every DrafterService method, with a fixed seed. The
 * replica must answer each with a caller's status (never INTERNAL), log no internal error, and stay
 * SERVING with the same answers and its heap near where it was.
 */

const SEED = 20_261_213;
const MAX_TOKENS = 16;
const MiB = 1 << 20;

let model: LanguageModel;
let server: DsiServer;
let client: DrafterServiceClient;
let raw: Client;
const log: string[] = [];

beforeAll(async () => {
  model = createSyntheticModel({ role: 'drafter', seed: 5, acceptance: 0.8, contextLength: 1024 });
  server = new DsiServer([drafterService(LoadingSlot.of(model), { maxTokens: MAX_TOKENS })], { port: 0, log: (line) => log.push(line) });
  await server.start();
  server.markServing();
  client = new DrafterServiceClient(server.address, credentials.createInsecure());
  raw = new Client(server.address, credentials.createInsecure());
});

afterAll(async () => {
  client.close();
  raw.close();
  await server.shutdown();
  await model.close();
});

function draft(request: Partial<DraftRequest>): Promise<DraftResponse> {
  return new Promise((resolve, reject) => client.draft(DraftRequest.fromPartial(request), (error, response) => (error ? reject(error) : resolve(response!))));
}

const prompt = Array.from('Once upon a time', (ch) => ch.charCodeAt(0));
const reference = { requestId: 'reference', prefix: prompt, maxTokens: 8, sampling: { rule: VerificationRule.VERIFICATION_RULE_SEEDED, seed: 11, temperature: 0.7 } };
const encode = (request: Partial<DraftRequest>) => Buffer.from(DraftRequest.encode(DraftRequest.fromPartial(request)).finish());

const valid = {
  draft: [
    encode(reference),
    encode({ prefix: [1, 2, 3], maxTokens: 2 }),
    encode({ requestId: 'r', prefix: prompt, maxTokens: 4, sampling: { rule: VerificationRule.VERIFICATION_RULE_GREEDY } }),
    encode({ requestId: 'q', prefix: [72], maxTokens: 3, returnProbs: true, sampling: { rule: VerificationRule.VERIFICATION_RULE_REJECTION, seed: 3, temperature: 1 } }),
  ],
  release: [Buffer.from(DrafterServiceReleaseRequest.encode({ requestId: 'r' }).finish()), Buffer.from(DrafterServiceReleaseRequest.encode({ requestId: 'q' }).finish())],
  getModelInfo: [Buffer.from(DrafterServiceGetModelInfoRequest.encode({}).finish())],
};

/** DraftRequest fields: 1 request_id, 2 prefix, 3 max_tokens, 4 sampling (1 rule, 2 temperature, 3 seed), 5 return_probs. */
const sampling = (...fields: Buffer[]) => pb.bytes(4, pb.message(...fields));
const one = pb.packed(2, [1]);
const extremes = {
  draft: [
    ['a 100 MB prefix', pb.message(pb.bytes(2, Buffer.alloc(100 * MiB, 65)), pb.int(3, 1))],
    ['a 3 MB request_id', pb.message(pb.bytes(1, 'x'.repeat(3 * MiB)), one, pb.int(3, 1))],
    ['an empty request_id', pb.message(pb.bytes(1, ''), one, pb.int(3, 1))],
    ['an invalid UTF-8 request_id', pb.message(pb.bytes(1, INVALID_UTF8), one, pb.int(3, 1))],
    ['max_tokens 10^5', pb.message(one, pb.int(3, 100_000))],
    ['max_tokens 10^9', pb.message(one, pb.int(3, 1e9))],
    ['max_tokens -1', pb.message(one, pb.int(3, -1))],
    ['max_tokens 0', pb.message(one, pb.int(3, 0))],
    ['a token far outside the vocabulary', pb.message(pb.packed(2, [999_999]), pb.int(3, 1))],
    ['a negative token', pb.message(pb.packed(2, [-5]), pb.int(3, 1))],
    ['a prefix beyond the context', pb.message(pb.bytes(2, Buffer.alloc(2000, 65)), pb.int(3, 1))],
    ['a prefix filling the context', pb.message(pb.bytes(2, Buffer.alloc(1024, 65)), pb.int(3, 4))],
    ['temperature NaN', pb.message(one, pb.int(3, 1), sampling(pb.int(1, 2), pb.double(2, NaN), pb.int(3, 1)))],
    ['temperature Infinity', pb.message(one, pb.int(3, 1), sampling(pb.int(1, 2), pb.double(2, Infinity), pb.int(3, 1)))],
    ['temperature 1e-300 with probabilities', pb.message(one, pb.int(3, 4), pb.int(5, 1), sampling(pb.int(1, 3), pb.double(2, 1e-300), pb.int(3, 1)))],
    ['temperature 1e300 with probabilities', pb.message(one, pb.int(3, 4), pb.int(5, 1), sampling(pb.int(1, 3), pb.double(2, 1e300), pb.int(3, 1)))],
    ['rule 10^9', pb.message(one, pb.int(3, 1), sampling(pb.int(1, 1e9)))],
    ['seed 2^64 - 1', pb.message(one, pb.int(3, 1), sampling(pb.int(1, 2), pb.double(2, 1), pb.int(3, 2n ** 64n - 1n)))],
    ['return_probs 2^40', pb.message(one, pb.int(3, 1), pb.int(5, 2n ** 40n))],
  ],
  release: [
    ['an empty request_id', pb.message(pb.bytes(1, ''))],
    ['a 3 MB request_id', pb.message(pb.bytes(1, 'x'.repeat(3 * MiB)))],
    ['an invalid UTF-8 request_id', pb.message(pb.bytes(1, INVALID_UTF8))],
  ],
  getModelInfo: [['an unknown field', pb.message(pb.bytes(99, 'x'), pb.int(1, -1))]],
} as const;


describe('DrafterService under hostile input', () => {
  let before: DraftResponse;
  let heapBefore: number;
  let results: Record<string, FuzzResult[]>;
  let transport: FuzzResult[];

  beforeAll(async () => {
    before = await draft(reference);
    heapBefore = heapAfterGc();
    const random = new FuzzRandom(SEED);
    results = await fuzzService(raw, DrafterServiceService, random, { valid, extremes, randomCases: 150, mutatedCases: 300, cancelledCases: 40, cancelWithinMs: 5 });
    transport = await transportCases(server.address, DrafterServiceService.draft.path, valid.draft[0]);
    reportFuzz(results, transport);
  }, 60_000);

  it('fuzzes every method of the service', () => {
    expect(Object.keys(results).sort()).toEqual(Object.keys(DrafterServiceService).sort());
  });

  it.each(Object.keys(DrafterServiceService))('answers every %s case with a caller\'s status, naming the problem', (method) => {
    expect(unexpected(results[method])).toEqual([]);
  });

  it.each([
    ['draft', 'a 100 MB prefix', 'RESOURCE_EXHAUSTED', 'Received message larger than max (104857607 vs 4194304)'],
    ['draft', 'a 3 MB request_id', 'INVALID_ARGUMENT', `request_id has ${3 * MiB} characters; at most 256 are accepted (DSI_MAX_REQUEST_ID_LENGTH)`],
    ['release', 'a 3 MB request_id', 'INVALID_ARGUMENT', `request_id has ${3 * MiB} characters; at most 256 are accepted (DSI_MAX_REQUEST_ID_LENGTH)`],
    ['draft', 'max_tokens 10^5', 'INVALID_ARGUMENT', `max_tokens=100000 is outside [1, ${MAX_TOKENS}]`],
    ['draft', 'max_tokens -1', 'INVALID_ARGUMENT', `max_tokens=-1 is outside [1, ${MAX_TOKENS}]`],
    ['draft', 'a token far outside the vocabulary', 'INVALID_ARGUMENT', 'prefix[0]=999999 is outside the vocabulary [0, 259)'],
    ['draft', 'temperature NaN', 'INVALID_ARGUMENT', 'temperature must be a number, got NaN'],
  ] as const)('answers %s with %s: %s', (method, name, code, details) => {
    const { outcome } = results[method].find((r) => r.name === `${method} ${name}`)!;
    expect({ code: outcome.code, details: outcome.details }).toEqual({ code: Code[code], details });
  });

  it.each(['temperature 1e-300 with probabilities', 'temperature 1e300 with probabilities'])('drafts with %s, every probability in [0, 1]', (name) => {
    const { outcome } = results.draft.find((r) => r.name === `draft ${name}`)!;
    expect(outcome.code).toBe(Code.OK);
    const { tokens, probs, vocabSize } = DraftResponse.decode(outcome.response!);
    expect(probs).toHaveLength(tokens.length * vocabSize);
    expect(probs.filter((q) => !(q >= 0 && q <= 1))).toEqual([]);
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
    expect(await checkHealth(server.address, 'dsi.v1.DrafterService')).toBe('SERVING');
    const after = await draft({ ...reference, requestId: 'reference-after' });
    expect(after.tokens).toEqual(before.tokens);
    expect(server.inFlightCalls).toBe(0);
    const grown = heapAfterGc() - heapBefore;
    console.log(`heap after GC: ${(grown / MiB).toFixed(1)} MiB above the baseline`);
    expect(grown).toBeLessThan(48 * MiB);
  });
});
