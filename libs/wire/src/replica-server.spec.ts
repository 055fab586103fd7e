import { trace } from '@opentelemetry/api';
import { createSyntheticModel, ModelInputError } from '@dsi/models';
import { DsiError, invalidArgument, LoadingSlot, unary } from '@dsi/rpc';
import { asInvalidArgument, replicaHandlers, replicaStartup, requireCallShape, requireValidSampling } from './replica-server';

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

  it('rejects an empty prefix and a count out of range, naming the field', () => {
    expect(thrown(() => requireCallShape(0, 'max_tokens', 1, 1, 16)).rawMessage).toBe('prefix is empty: give at least one token');
    expect(thrown(() => requireCallShape(3, 'max_tokens', 17, 1, 16)).rawMessage).toBe('max_tokens=17 is outside [1, 16]');
    expect(thrown(() => requireCallShape(3, 'block size', 1.5, 0, 16)).code).toBe(INVALID_ARGUMENT);
    expect(() => requireCallShape(3, 'block size', 0, 0, 16)).not.toThrow();
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
