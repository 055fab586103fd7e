import { chooseLookahead, expectedTokensByLookahead, PositionAcceptance, type LookaheadInputs } from './lookahead';
import { uniform } from './sampling';

const constant = (a: number) => () => a;
const inputs = (change: Partial<LookaheadInputs>): LookaheadInputs => ({
  mode: 'dsi',
  acceptance: constant(0.8),
  verifyMs: 23,
  draftMsPerToken: 2,
  draftCallMs: 3,
  share: 4,
  replicaShare: 4,
  drafterShare: 2,
  maxLookahead: 64,
  ...change,
});

describe('per-position acceptance', () => {
  it('converges on each position rate and forgets: a drift shows within a few dozen drafts', () => {
    const acceptance = new PositionAcceptance();
    let draw = 0;
    const feed = (rates: number[], drafts: number) => {
      for (let n = 0; n < drafts; n++) {
        for (let position = 0; position < rates.length; position++) {
          const accepted = uniform(7, draw++, 1, 0) < rates[position];
          acceptance.record(position, accepted);
          if (!accepted) break;
        }
      }
    };
    feed([0.9, 0.9, 0.6], 400);
    expect(acceptance.rate(0, 0.5)).toBeGreaterThan(0.8);
    expect(acceptance.rate(2, 0.5)).toBeLessThan(acceptance.rate(0, 0.5) - 0.05);
    feed([0.3, 0.3, 0.3], 30);
    expect(acceptance.overall(0.5)).toBeLessThan(0.5);
    // A position never judged takes the request's overall rate.
    expect(acceptance.rate(10, 0.5)).toBeCloseTo(acceptance.overall(0.5), 10);
  });

  it('follows a sudden drop within a few verdicts, and forgets the pool prior as its own drafts come in', () => {
    const acceptance = new PositionAcceptance();
    let draw = 0;
    for (let n = 0; n < 200; n++) acceptance.record(n % 5, uniform(3, draw++, 1, 0) < 0.95);
    expect(acceptance.rate(0, 0.5)).toBeGreaterThan(0.85);
    // The drafter now disagrees every time: each verification judges one draft (position 0).
    let verdicts = 0;
    while (acceptance.rate(0, 0.5) > 0.3) {
      acceptance.record(0, false);
      verdicts++;
    }
    // 8 here; forgetting alone (a draft 23 drafts ago weighs half) takes 17.
    expect(verdicts).toBeLessThanOrEqual(10);
    // A request that keeps agreeing is not held to a pool that mostly rejected: its prior weighs less and
    // less (0.985 after 120 drafts; 0.66 when the prior kept its full weight).
    const agreeing = new PositionAcceptance();
    for (let n = 0; n < 120; n++) agreeing.record(0, true);
    expect(agreeing.overall(0.2)).toBeGreaterThan(0.95);
  });

  it('on a steady rate, the drift watch stays quiet: the estimate keeps the slow memory', () => {
    const acceptance = new PositionAcceptance();
    let draw = 0;
    const estimates: number[] = [];
    for (let n = 0; n < 2000; n++) {
      acceptance.record(0, uniform(5, draw++, 1, 0) < 0.7);
      if (n >= 100) estimates.push(acceptance.rate(0, 0.7));
    }
    const mean = estimates.reduce((sum, x) => sum + x, 0) / estimates.length;
    const sd = Math.sqrt(estimates.reduce((sum, x) => sum + (x - mean) ** 2, 0) / estimates.length);
    expect(mean).toBeGreaterThan(0.65);
    expect(mean).toBeLessThan(0.75);
    // 0.066 here (0.061 without the drift watch): about the spread of the slow memory's evidence, not
    // of the fast estimate's 9 drafts (sqrt(0.21 / 9) = 0.15).
    expect(sd).toBeLessThan(0.1);
  });

  it('is not swung by a new request\'s first verdicts: a position inherits the prior\'s weight while it lasts', () => {
    const acceptance = new PositionAcceptance();
    acceptance.record(0, false);
    acceptance.record(0, false);
    // 0.43 here; 0.35 when a position's rate was shrunk with 6 pseudo-observations alone.
    expect(acceptance.rate(0, 0.5)).toBeGreaterThan(0.4);
  });

  it('starts from the pool prior', () => {
    expect(new PositionAcceptance().rate(0, 0.7)).toBeCloseTo(0.7, 10);
  });

  it('E(k) is 1 + a + ... + a^k for a constant rate', () => {
    const { expected } = expectedTokensByLookahead(constant(0.5), 4);
    expect(expected).toEqual([1, 1.5, 1.75, 1.875, 1.9375]);
  });
});

describe('chooseLookahead', () => {
  it('with replicas to spare: DSI, the smallest k whose blocks fit them (ceil(t / (replicas c)))', () => {
    const choice = chooseLookahead(inputs({}));
    expect(choice).toMatchObject({ behaviour: 'dsi', lookahead: 3 });
    expect(choice.parallel).toBeLessThanOrEqual(4);
    // More replicas, smaller blocks; one replica each is no longer spare.
    expect(chooseLookahead(inputs({ share: 8, replicaShare: 8 })).lookahead).toBe(2);
    expect(chooseLookahead(inputs({ share: 1, replicaShare: 1 })).behaviour).not.toBe('dsi');
  });

  it('on a saturated pool: SI-like lanes with the k that maximises committed tokens per ms', () => {
    const choice = chooseLookahead(inputs({ share: 1, replicaShare: 1, drafterShare: 0.5 }));
    expect(choice.behaviour).toBe('si');
    // The k that maximises E(k) / (23 + 3 + 2k) at a = 0.8 (the replica and drafter shares do not bind here).
    const rate = (k: number) => (1 - 0.8 ** (k + 1)) / 0.2 / (26 + 2 * k);
    const best = [...Array(64).keys()].map((i) => i + 1).reduce((b, k) => (rate(k) > rate(b) ? k : b), 1);
    expect(choice.lookahead).toBe(best);
    // Mode si never overlaps and never spreads.
    expect(chooseLookahead(inputs({ mode: 'si' }))).toMatchObject({ behaviour: 'si', parallel: 1, lookahead: best });
  });

  it('drafts ahead of the lane only with a drafter to itself, however many calls each drafter batches', () => {
    // One replica each (the lane only): with a drafter each it drafts the next block while the lane verifies.
    expect(chooseLookahead(inputs({ share: 1, replicaShare: 1, drafterShare: 1, drafterReplicaShare: 1 })).behaviour).toBe('overlap');
    // Two batching drafters (8 calls a forward) shared by 4 requests: 4 slots each, but a call sent to a
    // busy drafter waits for its forward to end, so the drafting ahead only delays other lanes' drafts
    // (event mode, a = 0.5, 4 targets and 2 drafters batching 8, 4 clients: 0.955x SI before, 0.969x after).
    expect(chooseLookahead(inputs({ share: 8, replicaShare: 1, drafterShare: 4, drafterReplicaShare: 0.5 })).behaviour).toBe('si');
  });

  it('shorter blocks when every token in a call costs the replicas time (a batched forward), and a lane that waits for drafts pays its wait', () => {
    const base = { mode: 'si' as const, verifyTokens: 5 };
    const free = chooseLookahead(inputs({ ...base, verifyMsPerToken: 0 })).lookahead;
    // 8 calls a forward, 0.2 ms a token: each token of every call adds 1.6 ms to every call.
    const costly = chooseLookahead(inputs({ ...base, verifyMsPerToken: 1.6 })).lookahead;
    expect(costly).toBeLessThan(free);
    // The rate at k uses the call at k + 1 tokens: t + 1.6 (k + 1 - 5), E(k) / (t(k) + 3 + 2k).
    const rate = (k: number) => (1 - 0.8 ** (k + 1)) / 0.2 / (23 + 1.6 * (k + 1 - 5) + 3 + 2 * k);
    const best = [...Array(64).keys()].map((i) => i + 1).reduce((b, k) => (rate(k) > rate(b) ? k : b), 1);
    expect(costly).toBe(best);
    // A wait at the replica only for lanes that wait for drafts: enough of it and plain decoding wins.
    expect(chooseLookahead(inputs({ ...base, acceptance: constant(0.5), waitingLaneQueueMs: 0 })).behaviour).toBe('si');
    expect(chooseLookahead(inputs({ ...base, acceptance: constant(0.5), waitingLaneQueueMs: 20 })).behaviour).toBe('nonsi');
  });

  it('batching pools: when the replicas and the drafters both bind near alike, the block that leaves one of them room', () => {
    // 64 requests on 4 targets and 2 drafters batching 8 (event mode, a = 0.8): a forward of 8 calls
    // of 8 tokens takes 38.4 ms a call, 1.62 ms more a token in every call; a drafter 2.39 ms a token.
    // Its forwards take 33 ms of model time (the rest of the call is the round trip and the service).
    const base = { mode: 'dsi' as const, verifyMs: 38.4, verifyTokens: 8.09, verifyMsPerToken: 1.62, verifyForwardMs: 33, draftMsPerToken: 2.39, draftCallMs: 1.19, share: 0.5, replicaShare: 0.0625, drafterShare: 0.25, drafterReplicaShare: 2 / 64 };
    const apart = chooseLookahead(inputs(base)).lookahead;
    const coupled = chooseLookahead(inputs({ ...base, batching: true })).lookahead;
    const call = (k: number) => 38.4 + 1.62 * (k + 1 - 8.09);
    const forward = (k: number) => 33 + 1.62 * (k + 1 - 8.09);
    const e = (k: number) => (1 - 0.8 ** (k + 1)) / 0.2;
    const ks = [...Array(64).keys()].map((i) => i + 1);
    const best = (rate: (k: number) => number) => ks.reduce((b, k) => (rate(k) > rate(b) + 1e-12 ? k : b), 1);
    const own = (k: number) => 1 / (call(k) + 1.19 + 2.39 * k);
    expect(apart).toBe(best((k) => e(k) * Math.min(own(k), 0.5 / call(k), 0.25 / (1.19 + 2.39 * k))));
    // Coupled: the shares in forwards (a place in a replica's forward, k places in the drafters'),
    // combined softly; then the shortest k within 1% of the best.
    const rate = (k: number) => e(k) * Math.min(own(k), ((0.5 / forward(k)) ** -2 + (0.25 / (2.39 * k)) ** -2) ** -0.5);
    const top = rate(best(rate));
    expect(coupled).toBe(ks.find((k) => rate(k) >= top * 0.99));
    // SI at each fixed k measured k = 4 (3279 tokens/s), 5 (3228), 7 (3129): the apart choice was 7,
    expect(apart).toBe(7);
    // and 3 (3141): coupled, a block of 3 to 5.
    expect(coupled).toBeGreaterThanOrEqual(3);
    expect(coupled).toBeLessThanOrEqual(5);
    // A lane's drafter call that queues for a drafter lengthens the cycle of a lane that waits for it.
    const plain = { ...base, acceptance: constant(0.5), share: 2, replicaShare: 1, drafterShare: 1 };
    expect(chooseLookahead(inputs({ ...plain, laneDraftQueueMs: 0 })).behaviour).toBe('si');
    expect(chooseLookahead(inputs({ ...plain, laneDraftQueueMs: 40 })).behaviour).toBe('nonsi');
  });

  it('when the drafters are the bottleneck, shorter blocks', () => {
    const free = chooseLookahead(inputs({ share: 0.25, replicaShare: 0.25, drafterShare: 4 })).lookahead;
    const busy = chooseLookahead(inputs({ share: 0.25, replicaShare: 0.25, drafterShare: 0.125 })).lookahead;
    expect(busy).toBeLessThan(free);
  });

  it('follows acceptance: more drafts when they are accepted, none worth waiting for when they are not', () => {
    const high = chooseLookahead(inputs({ mode: 'si', acceptance: constant(0.95) })).lookahead;
    const low = chooseLookahead(inputs({ mode: 'si', acceptance: constant(0.5) })).lookahead;
    expect(high).toBeGreaterThan(low);
    // a < c / t: speculation loses to plain decoding, so the lane never waits for drafts.
    expect(chooseLookahead(inputs({ mode: 'si', acceptance: constant(0.05), draftMsPerToken: 6 })).behaviour).toBe('nonsi');
  });

  it('switches between speculating and plain decoding only for a 5% gain, either way', () => {
    // SI with k = 1 commits (1 + a) per t + d + c = 23 + 3 + 6 ms; plain decoding 1 per 23 ms: break-even at a = 9 / 23.
    const si = (a: number, speculating?: boolean) => chooseLookahead(inputs({ mode: 'si', acceptance: constant(a), draftMsPerToken: 6, speculating })).behaviour;
    const breakEven = 9 / 23;
    expect([si(breakEven - 0.02), si(breakEven + 0.02)]).toEqual(['nonsi', 'si']);
    // Near it, a request keeps what it does: noise in the acceptance estimate does not flap the lanes.
    expect([si(breakEven - 0.02, true), si(breakEven + 0.02, false)]).toEqual(['si', 'nonsi']);
    // Well past it (5% of the rate either way), it switches.
    expect([si(breakEven - 0.08, true), si(breakEven + 0.08, false)]).toEqual(['nonsi', 'si']);
  });
});
