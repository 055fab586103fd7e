import { Client, credentials } from '@grpc/grpc-js';
import { ensureDefaultModels } from '@dsi/modelgen';
import { createSyntheticModel, TextTokenizer, type LanguageModel } from '@dsi/models';
import { testModelsDir } from '@dsi/models/test-models';
import { drafterService } from '@dsi/drafter-service';
import { targetService } from '@dsi/target-service';
import {
  GenerateRequest,
  GenerateResponse,
  GenerateStreamResponse,
  Mode,
  OrchestratorServiceService,
  VerificationRule,
  type GenerationParams,
} from '@dsi/proto';
import { checkHealth, DsiServer, LoadingSlot, type ServiceRegistration } from '@dsi/rpc';
import { callRaw, Code, FuzzRandom, fuzzService, heapAfterGc, INVALID_UTF8, pb, reportFuzz, TRANSPORT_STATUSES, transportCases, type FuzzResult, type RawOutcome, unexpected } from '@dsi/wire/fuzz';
import { ReplicaPool, type ReplicaClient } from './replicas';
import { countStopSequencesOnWire, DEFAULT_REQUEST_LIMITS, requestLimitsFromEnv, resolveRequestLimits } from './request-limits';
import { orchestratorService } from './service';

/**
 * Hostile input to a real orchestrator on loopback over a synthetic drafter and two synthetic targets:
 * random bytes, mutated valid requests, extreme values, truncated streams and cancellations at random
 * points for Generate and GenerateStream, with a fixed seed. Every server must answer with a caller's
 * status (never INTERNAL), log no internal error, and stay SERVING; the orchestrator must give the same
 * tokens for the same request afterwards, with the process heap back near where it was.
 */

const SEED = 20_261_214;
const MAX_NEW_TOKENS = 256;
const CONTEXT = 4096; // the synthetic target's, which the orchestrator asks it for
const MiB = 1 << 20;

const servers: DsiServer[] = [];
const models: LanguageModel[] = [];
const pools: ReplicaPool<ReplicaClient>[] = [];
const logs = new Map<string, string[]>();
let orchestrator: DsiServer;
let raw: Client;

async function serve(name: string, registration: ServiceRegistration): Promise<DsiServer> {
  const log: string[] = [];
  logs.set(name, log);
  const server = new DsiServer([registration], { port: 0, log: (line) => log.push(line) });
  await server.start();
  server.markServing();
  servers.push(server);
  return server;
}

beforeAll(async () => {
  const pair = await ensureDefaultModels(testModelsDir());
  const drafterModel = createSyntheticModel({ role: 'drafter', seed: 5, acceptance: 0.8 });
  models.push(drafterModel);
  const drafter = await serve('drafter', drafterService(LoadingSlot.of(drafterModel)));
  const targetAddresses: string[] = [];
  for (let i = 0; i < 2; i++) {
    const model = createSyntheticModel({ role: 'target', seed: 5 });
    models.push(model);
    targetAddresses.push((await serve(`target-${i}`, targetService(LoadingSlot.of(model)))).address);
  }
  const targets = ReplicaPool.targets({ addresses: targetAddresses });
  const drafters = ReplicaPool.drafters({ addresses: [drafter.address] });
  await Promise.all([targets.start(), drafters.start()]);
  pools.push(targets, drafters);
  const tokenizer = TextTokenizer.load(pair.target);
  orchestrator = await serve('orchestrator', orchestratorService({ drafters, targets, tokenizer, eosTokenId: 257, maxNewTokensLimit: MAX_NEW_TOKENS }));
  raw = new Client(orchestrator.address, credentials.createInsecure());
}, 60_000);

afterAll(async () => {
  raw.close();
  for (const pool of pools) pool.stop();
  await Promise.all(servers.map((s) => s.shutdown()));
  await Promise.all(models.map((m) => m.close()));
});

const encode = (params: Partial<GenerationParams>) => Buffer.from(GenerateRequest.encode(GenerateRequest.fromPartial({ params })).finish());
const reference = encode({ prompt: 'Hello', mode: Mode.MODE_DSI, maxNewTokens: 16, sampling: { rule: VerificationRule.VERIFICATION_RULE_SEEDED, seed: 9, temperature: 0.9 } });

/** GenerateRequest and GenerateStreamRequest have the same fields, so the same bytes serve both. */
const validRequests = [
  reference,
  encode({ prompt: 'Once', mode: Mode.MODE_NON_SI, maxNewTokens: 4, stop: ['a', 'xyz'] }),
  encode({ promptTokens: [72, 101, 108], mode: Mode.MODE_SI, lookahead: 3, maxNewTokens: 6, sampling: { rule: VerificationRule.VERIFICATION_RULE_GREEDY } }),
  encode({ prompt: 'The quick brown fox', mode: Mode.MODE_DSI, lookahead: 2, maxNewTokens: 8, sampling: { rule: VerificationRule.VERIFICATION_RULE_REJECTION, seed: 4, temperature: 1.2 } }),
];

/** GenerateRequest: 1 params. GenerationParams: 1 prompt, 2 prompt_tokens, 3 mode, 4 lookahead, 5 max_new_tokens, 6 sampling (1 rule, 2 temperature, 3 seed), 7 stop. */
const request = (...fields: Buffer[]) => pb.message(pb.bytes(1, pb.message(...fields)));
const prompt = pb.bytes(1, 'Hi');
const few = pb.int(5, 4);
const sampling = (...fields: Buffer[]) => pb.bytes(6, pb.message(...fields));
const extremes = [
  ['a 100 MB prompt', pb.message(pb.tag(1, 2), pb.varint(100 * MiB + 6), pb.tag(1, 2), pb.varint(100 * MiB), Buffer.alloc(100 * MiB, 97))],
  ['a 3 MB prompt', request(pb.bytes(1, 'a'.repeat(3_000_000)))],
  ['a 200 KB prompt', request(pb.bytes(1, 'a'.repeat(200_000)))],
  ['prompt_tokens [999999]', request(pb.packed(2, [999_999]))],
  ['a negative prompt token', request(pb.packed(2, [-1]))],
  ['prompt_tokens 2^31 - 1', request(pb.packed(2, [2 ** 31 - 1]))],
  ['200,000 prompt tokens', request(pb.bytes(2, Buffer.alloc(200_000, 65)))],
  ['an empty prompt', request(pb.bytes(1, ''))],
  ['no params', Buffer.alloc(0)],
  ['an invalid UTF-8 prompt', request(pb.bytes(1, INVALID_UTF8), few)],
  ['an invalid UTF-8 stop', request(prompt, few, pb.bytes(7, INVALID_UTF8))],
  ['10^6 stop sequences', request(prompt, few, pb.repeat(pb.bytes(7, 'a'), 1_000_000))],
  ['10^6 empty stop sequences', request(prompt, few, pb.repeat(pb.bytes(7, ''), 1_000_000))],
  ['a 100 KB stop sequence', request(prompt, few, pb.bytes(7, 'z'.repeat(100_000)))],
  ['max_new_tokens 10^9', request(prompt, pb.int(5, 1e9))],
  ['max_new_tokens -1', request(prompt, pb.int(5, -1))],
  ['max_new_tokens 0', request(prompt, pb.int(5, 0))],
  ['lookahead 1000', request(prompt, few, pb.int(4, 1000))],
  ['lookahead -5', request(prompt, few, pb.int(3, Mode.MODE_SI), pb.int(4, -5))],
  ['lookahead 10^9', request(prompt, few, pb.int(4, 1e9))],
  ['mode 9', request(prompt, few, pb.int(3, 9))],
  ['mode -1', request(prompt, few, pb.int(3, -1))],
  ['temperature NaN', request(prompt, few, sampling(pb.int(1, 2), pb.double(2, NaN), pb.int(3, 1)))],
  ['temperature Infinity', request(prompt, few, sampling(pb.int(1, 2), pb.double(2, Infinity), pb.int(3, 1)))],
  ['temperature -Infinity', request(prompt, few, sampling(pb.int(1, 1), pb.double(2, -Infinity)))],
  ['temperature 1e-300', request(prompt, few, sampling(pb.int(1, 3), pb.double(2, 1e-300), pb.int(3, 1)))],
  ['temperature 1e300', request(prompt, few, sampling(pb.int(1, 3), pb.double(2, 1e300), pb.int(3, 1)))],
  ['the seeded rule without a seed', request(prompt, few, sampling(pb.int(1, 2)))],
  ['rule 10^9', request(prompt, few, sampling(pb.int(1, 1e9)))],
  ['seed 2^64 - 1', request(prompt, few, sampling(pb.int(1, 2), pb.double(2, 1), pb.int(3, 2n ** 64n - 1n)))],
  ['a prompt filling the context with max_new_tokens', request(pb.bytes(2, Buffer.alloc(CONTEXT - 4, 65)), few)],
] as const;


/** The tokens of a successful raw call: the response of Generate, the `done` message (the last) of GenerateStream. */
function tokensOf(method: 'generate' | 'generateStream', outcome: RawOutcome): number[] {
  expect({ code: outcome.code, details: outcome.details }).toEqual({ code: Code.OK, details: '' });
  return method === 'generate' ? GenerateResponse.decode(outcome.response!).tokens : GenerateStreamResponse.decode(outcome.response!).done!.tokens;
}

describe('OrchestratorService under hostile input', () => {
  const before: Partial<Record<'generate' | 'generateStream', number[]>> = {};
  let heapBefore: number;
  let results: Record<string, FuzzResult[]>;
  let transport: FuzzResult[];

  beforeAll(async () => {
    for (const method of ['generate', 'generateStream'] as const) before[method] = tokensOf(method, await callRaw(raw, OrchestratorServiceService[method], reference));
    heapBefore = heapAfterGc();
    const random = new FuzzRandom(SEED);
    const valid = { generate: validRequests, generateStream: validRequests };
    results = await fuzzService(raw, OrchestratorServiceService, random, {
      valid,
      extremes: { generate: extremes, generateStream: extremes },
      randomCases: 100,
      mutatedCases: 200,
      cancelledCases: 40,
      cancelWithinMs: 30,
      deadlineMs: 3000,
    });
    transport = [
      ...(await transportCases(orchestrator.address, OrchestratorServiceService.generate.path, reference)),
      ...(await transportCases(orchestrator.address, OrchestratorServiceService.generateStream.path, reference)),
    ];
    reportFuzz(results, transport);
  }, 120_000);

  it('fuzzes every method of the service', () => {
    expect(Object.keys(results).sort()).toEqual(Object.keys(OrchestratorServiceService).sort());
  });

  it.each(Object.keys(OrchestratorServiceService))('answers every %s case with a caller\'s status, naming the problem', (method) => {
    expect(unexpected(results[method])).toEqual([]);
  });

  it.each<[string, keyof typeof Code, string | RegExp]>([
    ['a 100 MB prompt', 'RESOURCE_EXHAUSTED', /^Received message larger than max \(\d+ vs 4194304\)$/],
    ['a 3 MB prompt', 'RESOURCE_EXHAUSTED', `prompt has 3000000 characters; the orchestrator tokenizes at most ${16 * CONTEXT} (16 per token of the target's context length ${CONTEXT})`],
    ['a 200 KB prompt', 'RESOURCE_EXHAUSTED', `prompt has 200000 characters; the orchestrator tokenizes at most ${16 * CONTEXT} (16 per token of the target's context length ${CONTEXT})`],
    ['prompt_tokens [999999]', 'INVALID_ARGUMENT', "prompt_tokens[0]=999999 is outside the target's vocabulary [0, 259)"],
    ['a negative prompt token', 'INVALID_ARGUMENT', "prompt_tokens[0]=-1 is outside the target's vocabulary [0, 259)"],
    ['200,000 prompt tokens', 'INVALID_ARGUMENT', `prompt has 200000 tokens; the target's context length is ${CONTEXT} (prompt + max_new_tokens must fit)`],
    ['10^6 stop sequences', 'RESOURCE_EXHAUSTED', 'stop has 1000000 sequences; at most 32 are accepted (DSI_MAX_STOP_SEQUENCES)'],
    ['10^6 empty stop sequences', 'RESOURCE_EXHAUSTED', 'stop has 1000000 sequences; at most 32 are accepted (DSI_MAX_STOP_SEQUENCES)'],
    ['a 100 KB stop sequence', 'RESOURCE_EXHAUSTED', 'stop[0] has 100000 characters; at most 512 are accepted (DSI_MAX_STOP_SEQUENCE_CHARS)'],
    ['an empty prompt', 'INVALID_ARGUMENT', 'prompt is empty: give prompt or prompt_tokens'],
    ['no params', 'INVALID_ARGUMENT', 'params is missing'],
    ['max_new_tokens 10^9', 'INVALID_ARGUMENT', `max_new_tokens=1000000000 is above the limit ${MAX_NEW_TOKENS}`],
    ['lookahead 1000', 'INVALID_ARGUMENT', "lookahead must be 'auto' or an integer in [1, 64] for MODE_DSI, got 1000"],
    ['mode 9', 'INVALID_ARGUMENT', 'mode=9 is not one of MODE_NON_SI, MODE_SI, MODE_DSI'],
    ['temperature NaN', 'INVALID_ARGUMENT', 'sampling: temperature must be a number, got NaN'],
    ['the seeded rule without a seed', 'INVALID_ARGUMENT', 'sampling: the seeded rule needs a seed'],
    ['an invalid UTF-8 prompt', 'OK', ''],
  ])('answers %s with %s, naming the limit', (name, code, details) => {
    for (const method of ['generate', 'generateStream']) {
      const { outcome } = results[method].find((r) => r.name === `${method} ${name}`)!;
      expect({ method, code: outcome.code, details: outcome.details }).toEqual({ method, code: Code[code], details: typeof details === 'string' ? details : expect.stringMatching(details) });
    }
  });

  it('answers malformed and truncated frames without INTERNAL', () => {
    expect(unexpected(transport, TRANSPORT_STATUSES)).toEqual([]);
  });

  it('logs no internal error in any service', () => {
    const internal = [...logs.entries()].flatMap(([name, lines]) => lines.filter((line) => / failed with (internal|unknown)/.test(line)).map((line) => `${name}: ${line}`));
    expect(internal).toEqual([]);
  });

  it('keeps every service serving, giving the same tokens, the heap back near the baseline', async () => {
    for (const server of servers) {
      expect(server.state).toBe('SERVING');
      expect(await checkHealth(server.address)).toBe('SERVING');
      expect(server.inFlightCalls).toBe(0);
    }
    for (const method of ['generate', 'generateStream'] as const) {
      expect(tokensOf(method, await callRaw(raw, OrchestratorServiceService[method], reference))).toEqual(before[method]);
    }
    const grown = heapAfterGc() - heapBefore;
    console.log(`heap after GC: ${(grown / MiB).toFixed(1)} MiB above the baseline`);
    expect(grown).toBeLessThan(64 * MiB);
  });
});

describe('request limits', () => {
  const request = (...fields: Buffer[]) => pb.message(pb.bytes(1, pb.message(...fields)));

  it('counts stop sequences on the wire, in every params field, without decoding', () => {
    expect(countStopSequencesOnWire(request(pb.bytes(1, 'x'), pb.bytes(7, 'a'), pb.int(5, 3), pb.double(9, 1), pb.bytes(7, '')))).toBe(2);
    expect(countStopSequencesOnWire(Buffer.concat([request(pb.bytes(7, 'a')), request(pb.bytes(7, 'b'))]))).toBe(2);
    expect(countStopSequencesOnWire(request(pb.repeat(pb.bytes(7, ''), 2_000_000)))).toBe(2_000_000);
    expect(countStopSequencesOnWire(pb.bytes(7, 'a'))).toBe(0); // a top-level field 7 is not a stop
    expect(countStopSequencesOnWire(Buffer.from([0x0a, 0xff]))).toBe(0); // cut short: the decoder says why
  });

  it('reads each limit from its DSI_* variable, the service options first', () => {
    const env = { DSI_MAX_PROMPT_TOKENS: '1000', DSI_MAX_STOP_SEQUENCES: ' 4 ', DSI_MAX_STOP_SEQUENCE_CHARS: '', DSI_MAX_PROMPT_CHARS: '5000' };
    expect(requestLimitsFromEnv(env)).toEqual({ maxPromptTokens: 1000, maxStopSequences: 4, maxPromptChars: 5000 });
    expect(resolveRequestLimits({ maxStopSequences: 2 }, env)).toEqual({ maxPromptTokens: 1000, maxStopSequences: 2, maxStopSequenceChars: 512, maxPromptChars: 5000 });
    expect(resolveRequestLimits({}, {})).toEqual({ ...DEFAULT_REQUEST_LIMITS, maxPromptChars: undefined });
    expect(() => requestLimitsFromEnv({ DSI_MAX_STOP_SEQUENCES: '0' })).toThrow('DSI_MAX_STOP_SEQUENCES="0" is not an integer >= 1');
    expect(() => requestLimitsFromEnv({ DSI_MAX_PROMPT_TOKENS: '1e5' })).toThrow('DSI_MAX_PROMPT_TOKENS="1e5" is not an integer >= 1');
  });
});
