import { unavailable } from '@dsi/rpc';
import { TargetLimitsSource, type TargetLimits } from './limits';

/** A fake GetModelInfo: each address answers its limits, or fails when it has none. */
function replicas(answers: Record<string, TargetLimits | undefined>) {
  const asked: string[] = [];
  const ask = async (address: string): Promise<TargetLimits> => {
    asked.push(address);
    const limits = answers[address];
    if (!limits) throw unavailable(`${address} is loading`);
    return limits;
  };
  return { asked, ask };
}

describe('TargetLimitsSource', () => {
  it('uses configured limits without asking any replica', async () => {
    const fake = replicas({});
    const source = new TargetLimitsSource({ vocabSize: 100, contextLength: 50 }, fake.ask);
    expect(await source.get(['a:1'])).toEqual({ vocabSize: 100, contextLength: 50 });
    expect(fake.asked).toEqual([]);
  });

  it('learns the smallest limits of the replicas that answer, once', async () => {
    const fake = replicas({ 'a:1': { vocabSize: 259, contextLength: 4096 }, 'b:1': { vocabSize: 300, contextLength: 1024 }, 'c:1': undefined });
    const source = new TargetLimitsSource(undefined, fake.ask);
    const [first, second] = await Promise.all([source.get(['a:1', 'b:1', 'c:1']), source.get(['a:1', 'b:1', 'c:1'])]);
    expect(first).toEqual({ vocabSize: 259, contextLength: 1024 });
    expect(second).toEqual(first);
    expect(await source.get(['a:1'])).toEqual(first);
    expect(fake.asked).toEqual(['a:1', 'b:1', 'c:1']);
  });

  it('stays unknown while no replica answers, and asks again next time', async () => {
    const answers: Record<string, TargetLimits | undefined> = { 'a:1': undefined };
    const fake = replicas(answers);
    const source = new TargetLimitsSource(undefined, fake.ask);
    expect(await source.get([])).toBeUndefined();
    expect(await source.get(['a:1'])).toBeUndefined();
    answers['a:1'] = { vocabSize: 259, contextLength: 32 };
    expect(await source.get(['a:1'])).toEqual({ vocabSize: 259, contextLength: 32 });
    expect(fake.asked).toEqual(['a:1', 'a:1']);
  });
});
