import { trace } from '@opentelemetry/api';
import { createSyntheticModel, ModelInputError } from '@dsi/models';
import { DsiError, invalidArgument, LoadingSlot, unary } from '@dsi/rpc';
import { asInvalidArgument, replicaHandlers, replicaStartup, requireCount, requireTokens, requireValidSampling } from './replica-server';

const INVALID_ARGUMENT = invalidArgument('').code;

/** What a check throws, for asserting on its status and text. */
function thrown(check: () => void): DsiError {
  try {
    check();
  } catch (error) {
    return error as DsiError;
  }
  throw new Error('the check passed');
}

describe('replica call checks', () => {
  it('turns a caller\'s mistake caught by the model into INVALID_ARGUMENT, and leaves other failures alone', () => {
    const mistake = new ModelInputError('token 300 at position 1 is outside the vocabulary [0, 258]');
    const error = asInvalidArgument(mistake) as DsiError;
    expect(error.code).toBe(INVALID_ARGUMENT);
    expect(error.rawMessage).toBe(mistake.message);
    expect(error.cause).toBe(mistake);
    const crash = new Error('worker died');
    expect(asInvalidArgument(crash)).toBe(crash);
  });

  it.each<[string, readonly number[], readonly number[], string]>([
    ['an empty prefix', [], [], 'prefix is empty: give at least one token'],
    ['a prefix beyond the context', new Array(3_000_000).fill(1), [], "prefix has 3000000 tokens; the model's context length is 16"],
    ['a prefix and drafts beyond the context', new Array(14).fill(1), [1, 2, 3], "prefix and drafts have 14 + 3 = 17 tokens; the model's context length is 16"],
    ['a prefix token beyond the vocabulary', [1, 259], [], 'prefix[1]=259 is outside the vocabulary [0, 259)'],
    ['a negative draft', [1], [2, -1], 'drafts[1]=-1 is outside the vocabulary [0, 259)'],
    ['a fractional draft', [1], [2.5], 'drafts[0]=2.5 is outside the vocabulary [0, 259)'],
  ])('rejects %s before any model work, naming the wire field and the limit', (_case, prefix, drafts, message) => {
    const error = thrown(() => requireTokens({ vocabSize: 259, contextLength: 16 }, prefix, drafts));
    expect({ code: error.code, message: error.rawMessage }).toEqual({ code: INVALID_ARGUMENT, message });
  });

  it('accepts tokens that fill the context exactly', () => {
    expect(() => requireTokens({ vocabSize: 259, contextLength: 16 }, new Array(12).fill(258), [0, 1, 2, 3])).not.toThrow();
  });

  it('rejects a count out of range, naming the field', () => {
    expect(thrown(() => requireCount('max_tokens', 17, 1, 16)).rawMessage).toBe('max_tokens=17 is outside [1, 16]');
    expect(thrown(() => requireCount('max_tokens', 1.5, 1, 16)).code).toBe(INVALID_ARGUMENT);
    expect(() => requireCount('max_tokens', 16, 1, 16)).not.toThrow();
  });

  it('rejects sampling the rules cannot use', () => {
    const error = thrown(() => requireValidSampling({ rule: 'seeded', temperature: 1 }));
    expect(error.code).toBe(INVALID_ARGUMENT);
    expect(error.rawMessage).toContain('seed');
    expect(() => requireValidSampling({ rule: 'greedy', temperature: 1 })).not.toThrow();
  });
});

describe('replicaStartup', () => {
  it('answers UNAVAILABLE until the warm-up has loaded the model, then serves it', async () => {
    const lines: string[] = [];
    let seen: LoadingSlot<unknown> | undefined;
    const startup = replicaStartup({ backend: 'synthetic', role: 'target', seed: 1 }, { tracer: trace.getTracer('test'), log: (line) => lines.push(line) }, (slot) => {
      seen = slot;
      return { name: 'dsi.v1.TargetService', definition: {}, implementation: { ...replicaHandlers(slot, 16), verify: unary(async () => ({})) } };
    });
    expect(startup.registrations).toHaveLength(1);
    expect(() => seen!.get()).toThrow('the model is still loading; retry when health reports SERVING');

    await startup.warmUp!();
    expect(lines).toEqual(['loading the synthetic model']);
    const model = seen!.get() as ReturnType<typeof createSyntheticModel>;
    expect(model.info).toMatchObject(createSyntheticModel({ role: 'target', seed: 1 }).info);
    await startup.close!();
  });
});
