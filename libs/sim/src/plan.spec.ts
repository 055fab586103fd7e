import fs from 'node:fs';
import path from 'node:path';
import { eventRun } from './event';
import { loadPrompt } from './load';
import { lowerBound, pairFromProfile, planDeployment, PlanInputError, RECOMMENDATION_TOLERANCE, type PlanPair } from './plan';
import { planSvg } from './plan-svg';
import { H200_SHAPES, presetLatencies, presetNames, UnknownPresetError } from './presets';
import { parseProfile, ProfileError, type PairProfile } from './profile';

const pair: PlanPair = { a: 0.8, targetMs: 20, drafterMs: 2 };

describe('planDeployment', () => {
  it('predicts DSI as the event mode does, on the same prompts (mean over them, corrected by a zero-mean control variate)', async () => {
    const plan = await planDeployment(pair, { maxReplicas: 4, tokens: 300, prompts: 6, maxLookahead: 6 });
    for (const row of plan.rows.slice(1)) {
      let sum = 0;
      for (let i = 0; i < 6; i++) {
        const run = await eventRun('dsi', { a: 0.8, c: 2, t: 20, k: row.dsi.lookahead, tokens: 300, servers: row.replicas, seed: 1, prompt: loadPrompt(1, i), rtt: 0 });
        sum += run.cost / run.tokens.length;
      }
      // The correction is (t - c) x (the prompts' agreement - a): a percent or two on 1800 tokens.
      expect(row.dsi.ms_per_token / (sum / 6)).toBeGreaterThan(0.97);
      expect(row.dsi.ms_per_token / (sum / 6)).toBeLessThan(1.03);
    }
  });

  it('equals the event mode exactly where the acceptance is certain (a = 1: no correction)', async () => {
    const plan = await planDeployment({ a: 1, targetMs: 10, drafterMs: 1 }, { maxReplicas: 2, tokens: 100, prompts: 2, maxLookahead: 4 });
    const row = plan.rows[1];
    let sum = 0;
    for (let i = 0; i < 2; i++) {
      const run = await eventRun('dsi', { a: 1, c: 1, t: 10, k: row.dsi.lookahead, tokens: 100, servers: 2, seed: 1, prompt: loadPrompt(1, i) });
      sum += run.cost / run.tokens.length;
    }
    expect(row.dsi.ms_per_token).toBeCloseTo(sum / 2, 5);
  });

  it('never predicts below the lower bound (1 - a) t + a c, across the (a, c) plane', async () => {
    for (const a of [0, 0.3, 0.6, 0.9, 1]) {
      for (const c of [0.05, 0.4, 1]) {
        const plan = await planDeployment({ a, targetMs: 10, drafterMs: 10 * c }, { maxReplicas: 4, tokens: 150, prompts: 2, maxLookahead: 6 });
        expect(plan.bound_ms_per_token).toBeCloseTo(lowerBound({ a, targetMs: 10, drafterMs: 10 * c }), 5);
        for (const row of plan.rows) {
          expect(row.dsi.ms_per_token).toBeGreaterThanOrEqual(plan.bound_ms_per_token);
          expect(row.vs_bound).toBeGreaterThanOrEqual(1);
        }
      }
    }
  });

  it('recommends the fewest replicas within 2% of the best DSI latency, and DSI never loses to SI or non-SI', async () => {
    const plan = await planDeployment(pair, { maxReplicas: 6, tokens: 300, prompts: 3 });
    const best = Math.min(...plan.rows.map((r) => r.dsi.ms_per_token));
    const { recommendation } = plan;
    expect(recommendation.best_dsi_ms_per_token).toBe(best);
    expect(recommendation.dsi_ms_per_token).toBeLessThanOrEqual(best * (1 + RECOMMENDATION_TOLERANCE));
    for (const row of plan.rows.filter((r) => r.replicas < recommendation.replicas)) expect(row.dsi.ms_per_token).toBeGreaterThan(best * (1 + RECOMMENDATION_TOLERANCE));
    const chosen = plan.rows.find((r) => r.replicas === recommendation.replicas)!;
    expect(recommendation.lookahead).toBe(chosen.dsi.lookahead);
    expect(recommendation.speedup_vs_si).toBeCloseTo(chosen.si.ms_per_token / chosen.dsi.ms_per_token, 9);
    // With several replicas DSI beats SI on this pair (a = 0.8, c = 0.1), and SI beats non-SI.
    expect(chosen.speedup_vs_si).toBeGreaterThan(1.1);
    expect(chosen.si.ms_per_token).toBeLessThan(chosen.nonsi.ms_per_token);
    expect(plan.rows.map((r) => r.replicas)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('plans under load: throughput per mode and DSI auto, from load runs over every replica', async () => {
    const plan = await planDeployment(pair, { maxReplicas: 2, tokens: 40, concurrency: 2, requests: 4 });
    expect(plan.options).toMatchObject({ concurrency: 2, requests: 4 });
    for (const row of plan.rows) {
      for (const figure of [row.nonsi, row.si, row.dsi, row.dsi_auto!]) {
        expect(figure.throughput_tps).toBeGreaterThan(0);
        expect(figure.p50_ms).toBeGreaterThan(0);
      }
    }
    // Two clients on two replicas: non-SI serves both at once, twice one replica's rate.
    expect(plan.rows[1].nonsi.throughput_tps! / plan.rows[0].nonsi.throughput_tps!).toBeGreaterThan(1.8);
  });

  it('names the field of a bad input', async () => {
    const field = async (p: Partial<PlanPair>, o = {}) => {
      try {
        await planDeployment({ ...pair, ...p }, { maxReplicas: 1, tokens: 10, ...o });
      } catch (error) {
        expect(error).toBeInstanceOf(PlanInputError);
        return (error as PlanInputError).field;
      }
      return 'none';
    };
    expect(await field({ a: 1.5 })).toBe('a');
    expect(await field({ a: -0.1 })).toBe('a');
    expect(await field({ targetMs: -1 })).toBe('target_ms');
    expect(await field({ drafterMs: Number.NaN })).toBe('drafter_ms');
    expect(await field({ drafterMs: 0 })).toBe('drafter_ms');
    expect(await field({ rttMs: -2 })).toBe('round_trip_ms');
    expect(await field({}, { maxReplicas: 0 })).toBe('max_replicas');
    expect(await field({}, { concurrency: 2, arrivalRate: 1 })).toBe('arrival_rate');
  });

  it('stops when its signal aborts', async () => {
    const abort = new AbortController();
    const run = planDeployment(pair, { maxReplicas: 8, signal: abort.signal, onProgress: () => abort.abort(new Error('stop')) });
    await expect(run).rejects.toThrow('stop');
  });

  it('draws the plan: one line per mode and the bound, speedups, the recommendation marked', async () => {
    const plan = await planDeployment(pair, { maxReplicas: 3, tokens: 100, prompts: 1, maxLookahead: 4 });
    const svg = planSvg(plan);
    expect(svg.startsWith('<svg')).toBe(true);
    for (const series of ['nonsi', 'si', 'dsi', 'bound', 'dsi_vs_si', 'dsi_vs_nonsi']) expect(svg).toContain(`data-series="${series}"`);
    expect(svg).toContain('class="recommended"');
    expect(svg).not.toContain('NaN');
  });
});

describe('presets', () => {
  it('holds the H200 table of shared/data row for row (when the folder is beside the project)', () => {
    const csv = path.resolve(__dirname, '../../../../shared/data/h200-forward-latency.csv');
    if (!fs.existsSync(csv)) return;
    const [header, ...lines] = fs.readFileSync(csv, 'utf8').trim().split('\n');
    expect(header).toBe('model_shape,params,prefill512_ms,fwd1_ms,fwd4_ms,fwd8_ms,fwd16_ms,bandwidth_floor_fwd1_ms');
    const rows = lines.map((line) => {
      const [name, ...numbers] = line.split(',');
      const [params, prefill512, fwd1, fwd4, fwd8, fwd16, bandwidthFloorFwd1] = numbers.map(Number);
      return { name, params, prefill512, fwd1, fwd4, fwd8, fwd16, bandwidthFloorFwd1 };
    });
    expect(H200_SHAPES).toEqual(rows);
  });

  it('builds a 70B target with a 1B or 68M drafter on H200, eager and at the bandwidth floor', () => {
    const eager = presetLatencies('h200/llama3.1-70b/llama3.2-1b');
    expect(eager).toMatchObject({ targetMs: 51.18, targetTtftMs: 135.43, drafterMs: 10.93, drafterTtftMs: 11.81 });
    expect(eager.verifyMsPerToken).toBeCloseTo((58.8 - 51.18) / 15, 9);
    expect(presetLatencies('h200-floor/llama3.1-70b/vicuna-68m')).toMatchObject({ targetMs: 32.82, drafterMs: 0.03 });
    expect(presetNames()).toContain('h200/llama2-13b/vicuna-68m');
    expect(presetNames()).not.toContain('h200/llama3.2-1b/llama3.1-70b');
  });

  it('refuses an unknown preset, listing the known ones', () => {
    expect(() => presetLatencies('h100/llama3.1-70b/llama3.2-1b')).toThrow(UnknownPresetError);
    expect(() => presetLatencies('h200/llama3.2-1b/llama3.1-70b')).toThrow(/known: h200\//);
  });
});

describe('profiles', () => {
  const profile: PairProfile = {
    version: 1,
    measured_at: '2026-12-02T08:00:00Z',
    source: 'services',
    method: { prompts: 3, tokens: 32, ttft: 'one forward over the prompt', tpot: '(T(N) - TTFT) / (N - 1)', acceptance: 'a = m / (1 + m)' },
    acceptance: { a: 0.7, interval: [0.65, 0.75], per_position: [{ position: 1, rate: 0.7, interval: [0.6, 0.8], trials: 90 }] },
    target: { source: '127.0.0.1:1', ttft_ms: { median: 32, p10: 31, p90: 33 }, tpot_ms: { median: 22, p10: 21.5, p90: 22.5 }, verify_ms_per_token: 0.5 },
    drafter: { source: '127.0.0.1:2', ttft_ms: { median: 5, p10: 5, p90: 5 }, tpot_ms: { median: 4, p10: 4, p90: 4 } },
    round_trip_ms: 2,
  };

  it('round-trips through JSON and becomes planner inputs with the round trip taken out of each forward', () => {
    const parsed = parseProfile(JSON.parse(JSON.stringify(profile)));
    expect(parsed).toEqual(profile);
    expect(pairFromProfile(parsed)).toEqual({ a: 0.7, targetMs: 20, drafterMs: 2, targetTtftMs: 30, drafterTtftMs: 3, verifyMsPerToken: 0.5, rttMs: 2, drafterRttMs: 2 });
  });

  it('names the field that is missing or out of range', () => {
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- edits reach into nested JSON
    const broken = (edit: (p: Record<string, any>) => void) => {
      const copy = JSON.parse(JSON.stringify(profile));
      edit(copy);
      try {
        parseProfile(copy);
      } catch (error) {
        expect(error).toBeInstanceOf(ProfileError);
        return (error as ProfileError).field;
      }
      return 'none';
    };
    expect(broken((p) => (p.acceptance.a = 1.2))).toBe('acceptance.a');
    expect(broken((p) => delete p.acceptance)).toBe('acceptance');
    expect(broken((p) => (p.target.tpot_ms.median = -3))).toBe('target.tpot_ms.median');
    expect(broken((p) => (p.drafter.ttft_ms = 'fast'))).toBe('drafter.ttft_ms');
    expect(broken((p) => (p.version = 2))).toBe('version');
    expect(broken((p) => (p.round_trip_ms = -1))).toBe('round_trip_ms');
    expect(broken((p) => (p.acceptance.per_position[0].rate = 2))).toBe('acceptance.per_position[0].rate');
  });
});
