/**
 * A measured drafter/target pair (`dsi estimate --out profile.json`), what `dsi plan --profile` reads:
 * the acceptance rate (with per-position acceptance), TTFT and TPOT of both models with their spread,
 * the per-call round trip the figures include, and how they were measured.
 */

/** Median and spread of a latency over the prompts measured (ms). */
export interface LatencySpread {
  median: number;
  p10: number;
  p90: number;
}

/** One model's latencies, measured the study's way. */
export interface ModelLatencyProfile {
  /** What was measured: a service address, a model folder, `builtin`, a preset name. */
  source: string;
  /** One forward over the prompt (a live service: one call, round trip included). */
  ttft_ms: LatencySpread;
  /** (time to generate N tokens - TTFT) / (N - 1) (a live service: one call per token, round trip included). */
  tpot_ms: LatencySpread;
  /** Extra latency per extra token in one forward (verifying k drafts costs tpot + k x this); default 0. */
  verify_ms_per_token?: number;
  /** This model's own per-call round trip, included once in its TTFT and TPOT; default the pair's. */
  round_trip_ms?: number;
}

/** Acceptance of draft position j given the drafts before it were accepted. */
export interface PositionAcceptance {
  position: number;
  rate: number;
  /** 95% Wilson interval. */
  interval: [number, number];
  /** Blocks that reached this position (the estimate's denominator). */
  trials: number;
}

export interface AcceptanceProfile {
  /** The study's estimator a = m / (1 + m), m the mean closed run of matches. */
  a: number;
  /** 95% Wilson interval of a (accepted drafts over drafts in closed runs). */
  interval: [number, number];
  /** Plain per-position agreement. */
  agreement?: number;
  /** Positions measured. */
  positions?: number;
  per_position: PositionAcceptance[];
}

export interface PairProfile {
  version: 1;
  /** ISO time of the measurement. */
  measured_at: string;
  /** `services`, `models`, `builtin`, `preset` or `flags`. */
  source: string;
  /** How it was measured (prompts, tokens per prompt, the definitions). */
  method: { prompts: number; tokens: number; ttft: string; tpot: string; acceptance: string };
  acceptance: AcceptanceProfile;
  target: ModelLatencyProfile;
  drafter: ModelLatencyProfile;
  /**
   * The per-call overhead (network and services) included once in each TTFT and TPOT figure above:
   * 0 for models measured in process. The planner takes it out of the forwards and charges it per call.
   */
  round_trip_ms: number;
}

/** A profile that does not parse or holds an impossible value; `field` names it (`acceptance.a`). */
export class ProfileError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`${field}: ${reason}`);
    this.name = 'ProfileError';
  }
}

function object(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ProfileError(field, 'must be an object');
  return value as Record<string, unknown>;
}

function number(value: unknown, field: string, min: number, max = Infinity): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new ProfileError(field, 'must be a number');
  if (value < min || value > max) throw new ProfileError(field, max === Infinity ? `must be >= ${min}` : `must be in [${min}, ${max}]`);
  return value;
}

function text(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new ProfileError(field, 'must be a string');
  return value;
}

function interval(value: unknown, field: string): [number, number] {
  if (!Array.isArray(value) || value.length !== 2) throw new ProfileError(field, 'must be [low, high]');
  const low = number(value[0], `${field}[0]`, 0, 1);
  const high = number(value[1], `${field}[1]`, low, 1);
  return [low, high];
}

function spread(value: unknown, field: string): LatencySpread {
  const o = object(value, field);
  return { median: number(o.median, `${field}.median`, 0), p10: number(o.p10, `${field}.p10`, 0), p90: number(o.p90, `${field}.p90`, 0) };
}

function model(value: unknown, field: string): ModelLatencyProfile {
  const o = object(value, field);
  const parsed: ModelLatencyProfile = {
    source: o.source === undefined ? '' : text(o.source, `${field}.source`),
    ttft_ms: spread(o.ttft_ms, `${field}.ttft_ms`),
    tpot_ms: spread(o.tpot_ms, `${field}.tpot_ms`),
  };
  if (o.verify_ms_per_token !== undefined) parsed.verify_ms_per_token = number(o.verify_ms_per_token, `${field}.verify_ms_per_token`, 0);
  if (o.round_trip_ms !== undefined) parsed.round_trip_ms = number(o.round_trip_ms, `${field}.round_trip_ms`, 0);
  return parsed;
}

/**
 * Checks a parsed JSON document as a {@link PairProfile}: throws {@link ProfileError} naming the first
 * field that is missing or out of range (a in [0, 1], latencies >= 0). Unknown fields are kept.
 */
export function parseProfile(value: unknown): PairProfile {
  const o = object(value, 'profile');
  if (o.version !== 1) throw new ProfileError('version', 'must be 1');
  const acceptance = object(o.acceptance, 'acceptance');
  const a = number(acceptance.a, 'acceptance.a', 0, 1);
  const perPosition = acceptance.per_position === undefined ? [] : acceptance.per_position;
  if (!Array.isArray(perPosition)) throw new ProfileError('acceptance.per_position', 'must be an array');
  const method = o.method === undefined ? {} : object(o.method, 'method');
  const profile: PairProfile = {
    ...(o as object),
    version: 1,
    measured_at: o.measured_at === undefined ? '' : text(o.measured_at, 'measured_at'),
    source: o.source === undefined ? '' : text(o.source, 'source'),
    method: method as PairProfile['method'],
    acceptance: {
      ...(acceptance as object),
      a,
      interval: acceptance.interval === undefined ? [a, a] : interval(acceptance.interval, 'acceptance.interval'),
      per_position: perPosition.map((p, i) => {
        const field = `acceptance.per_position[${i}]`;
        const entry = object(p, field);
        return {
          position: number(entry.position, `${field}.position`, 1),
          rate: number(entry.rate, `${field}.rate`, 0, 1),
          interval: entry.interval === undefined ? [entry.rate as number, entry.rate as number] : interval(entry.interval, `${field}.interval`),
          trials: number(entry.trials ?? 0, `${field}.trials`, 0),
        };
      }),
    },
    target: model(o.target, 'target'),
    drafter: model(o.drafter, 'drafter'),
    round_trip_ms: o.round_trip_ms === undefined ? 0 : number(o.round_trip_ms, 'round_trip_ms', 0),
  };
  return profile;
}
