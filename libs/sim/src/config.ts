/**
 * How costs are computed: the study's Monte Carlo stream (`seed`), exact expectations of the study's
 * rules (`exact`), or the libs/core scheduler itself on a virtual clock with simulated ports (`event`).
 */
export type SimulationMethod = 'seed' | 'exact' | 'event';

/** Every simulation parameter, defaults applied and validated. */
export interface SimulationConfig {
  /** Acceptance rate: each draft is accepted with probability `a`, independently, until the first rejection. */
  a: number;
  /** Drafter forward latency, in the same unit as `t`. */
  c: number;
  /** Lookahead: drafts per verification. */
  /** Lookahead: drafts per verification, or 'auto' (event method only: the scheduler chooses as it goes). */
  k: number | 'auto';
  /** Target forward latency (the unit of time). */
  t: number;
  /** Tokens to generate (the study's `S`). */
  tokens: number;
  /** Target servers available to DSI. */
  servers: number;
  /** Independent repeats (seed method). */
  repeats: number;
  /** Seed of the MT19937 stream (seed method). */
  seed: number;
  method: SimulationMethod;
  /** Event method: latency of a replica's first target forward for the request, its prefill (default `t`). */
  ttft?: number;
  /** Event method: extra target latency per additional token computed in one forward (default 0), as in the synthetic backend. */
  verifyPerToken?: number;
  /** Event method: network round trip added to every call (default 0). */
  rtt?: number;
  /**
   * Event method under load, closed loop: this many clients, each sending its next request as soon as
   * the last one finishes. Exclusive with `arrivalRate`; unset (with `arrivalRate` unset): one request.
   */
  concurrency?: number;
  /** Event method under load, open loop: Poisson arrivals, this many requests per unit of time (of `t`). */
  arrivalRate?: number;
  /**
   * Event method under load: requests per mode in total. Default {@link DEFAULT_REQUESTS_PER_CLIENT}
   * per client (closed loop) or {@link DEFAULT_OPEN_LOOP_REQUESTS} (open loop).
   */
  requests?: number;
  /** Event method: simulated drafter replicas shared by every request (default 1). */
  drafters?: number;
}

/** Default requests per client of a closed-loop load simulation (`concurrency` set, `requests` not). */
export const DEFAULT_REQUESTS_PER_CLIENT = 8;

/** Default requests of an open-loop load simulation (`arrivalRate` set, `requests` not). */
export const DEFAULT_OPEN_LOOP_REQUESTS = 100;

/** The event method's bound on simulated tokens per mode (tokens x repeats, or tokens x requests under load). */
export const EVENT_TOKEN_LIMIT = 200_000;

/** The reference study's defaults. */
export const DEFAULT_CONFIG: Readonly<SimulationConfig> = Object.freeze({
  a: 0.9,
  c: 0.1,
  k: 5,
  t: 1,
  tokens: 1000,
  servers: 7,
  repeats: 5,
  seed: 42,
  method: 'seed',
});

/** Upper bounds that keep one request's work bounded (a service must not be asked for hours of work). */
export const LIMITS = Object.freeze({
  tokens: 1_000_000,
  repeats: 100_000,
  k: 10_000,
  servers: 1_000_000,
  workPerRequest: 1e9,
  concurrency: 10_000,
  requests: 100_000,
  drafters: 10_000,
});

/**
 * Thrown when a simulation parameter is out of its domain. `parameter` names it and the message states
 * the value and the bound, in one line, for a CLI exit code 2 or a gRPC INVALID_ARGUMENT.
 */
export class SimulationConfigError extends Error {
  override readonly name = 'SimulationConfigError';
  constructor(
    readonly parameter: string,
    message: string,
  ) {
    super(message);
  }
}

/** A lookahead the closed-form and seed methods can use: a number (resolveConfig keeps 'auto' to the event method). */
export function fixedK(k: number | 'auto'): number {
  if (k === 'auto') throw new SimulationConfigError('k', 'k=auto needs the event method');
  return k;
}

/** The minimum number of target servers DSI needs to hide every verification: `ceil(t / (max(1, k) * c))`. */
export function requiredServers(t: number, k: number, c: number): number {
  return Math.ceil(t / (Math.max(1, k) * c));
}

function fmt(value: number): string {
  return String(value);
}

function requireFinite(name: string, value: number): void {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new SimulationConfigError(name, `${name}=${fmt(value)} is not a finite number`);
  }
}

function requireInteger(name: string, value: number, min: number, max: number): void {
  requireFinite(name, value);
  if (!Number.isInteger(value)) throw new SimulationConfigError(name, `${name}=${fmt(value)} is not an integer`);
  if (value < min) throw new SimulationConfigError(name, `${name}=${fmt(value)} is below ${min}`);
  if (value > max) throw new SimulationConfigError(name, `${name}=${fmt(value)} is above the limit ${max}`);
}

/** Whether a configuration asks for a simulation under load (many requests): concurrency or arrivalRate set. */
export function isLoadConfig(config: Pick<SimulationConfig, 'concurrency' | 'arrivalRate'>): boolean {
  return config.concurrency !== undefined || config.arrivalRate !== undefined;
}

/** Requests per mode of a load simulation: `requests`, or its default for the loop. */
export function loadRequests(config: Pick<SimulationConfig, 'concurrency' | 'arrivalRate' | 'requests'>): number {
  if (config.requests !== undefined) return config.requests;
  return config.concurrency !== undefined ? config.concurrency * DEFAULT_REQUESTS_PER_CLIENT : DEFAULT_OPEN_LOOP_REQUESTS;
}

/** The load parameters: event method only; one loop (closed or open); bounded work. */
function checkLoad(config: SimulationConfig): void {
  for (const name of ['concurrency', 'arrivalRate', 'requests', 'drafters'] as const) {
    if (config[name] !== undefined && config.method !== 'event') throw new SimulationConfigError(name, `${name} is only used by the event method`);
  }
  if (config.concurrency !== undefined) requireInteger('concurrency', config.concurrency, 1, LIMITS.concurrency);
  if (config.arrivalRate !== undefined) {
    requireFinite('arrivalRate', config.arrivalRate);
    if (config.arrivalRate <= 0) throw new SimulationConfigError('arrivalRate', `arrivalRate=${fmt(config.arrivalRate)} must be positive`);
  }
  if (config.drafters !== undefined) requireInteger('drafters', config.drafters, 1, LIMITS.drafters);
  if (config.concurrency !== undefined && config.arrivalRate !== undefined) {
    throw new SimulationConfigError('arrivalRate', 'concurrency (closed loop) and arrivalRate (open loop) are exclusive: set one');
  }
  if (config.requests !== undefined) {
    if (!isLoadConfig(config)) throw new SimulationConfigError('requests', 'requests is only used with concurrency or arrivalRate');
    requireInteger('requests', config.requests, 1, LIMITS.requests);
  }
  if (!isLoadConfig(config)) return;
  const requests = loadRequests(config);
  if (config.tokens * requests > EVENT_TOKEN_LIMIT) {
    const defaultRequests = config.concurrency !== undefined ? `${DEFAULT_REQUESTS_PER_CLIENT} per client` : String(DEFAULT_OPEN_LOOP_REQUESTS);
    const origin = config.requests === undefined ? ` (requests defaults to ${defaultRequests})` : '';
    throw new SimulationConfigError('requests', `tokens*requests=${config.tokens * requests} is above the event method's limit ${EVENT_TOKEN_LIMIT}${origin}`);
  }
}

/**
 * Applies defaults to a partial configuration and validates it, the same way for the CLI and the
 * service. Checks the cheap domain rules first, then DSI's server requirement.
 */
export function resolveConfig(partial: Partial<SimulationConfig> = {}): SimulationConfig {
  const defined = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined));
  const config: SimulationConfig = { ...DEFAULT_CONFIG, ...defined };
  const { a, c, k, t } = config;
  requireFinite('a', a);
  if (a < 0 || a > 1) throw new SimulationConfigError('a', `a=${fmt(a)} is outside [0, 1]`);
  requireFinite('t', t);
  if (t <= 0) throw new SimulationConfigError('t', `t=${fmt(t)} must be positive`);
  requireFinite('c', c);
  if (c <= 0) throw new SimulationConfigError('c', `c=${fmt(c)} must be positive`);
  if (c > t) throw new SimulationConfigError('c', `c=${fmt(c)} exceeds t=${fmt(t)} (the drafter must not be slower than the target)`);
  if (k === 'auto') {
    if (config.method !== 'event') throw new SimulationConfigError('k', `k=auto (the scheduler's own choice as it goes) needs the event method, which runs the scheduler; method=${config.method}`);
  } else {
    requireInteger('k', k, 1, LIMITS.k);
  }
  requireInteger('tokens', config.tokens, 1, LIMITS.tokens);
  requireInteger('repeats', config.repeats, 1, LIMITS.repeats);
  requireInteger('seed', config.seed, 0, 0xffffffff);
  requireInteger('servers', config.servers, 1, LIMITS.servers);
  if (config.method !== 'seed' && config.method !== 'exact' && config.method !== 'event') {
    throw new SimulationConfigError('method', `method=${String(config.method)} is not one of seed, exact, event`);
  }
  for (const name of ['ttft', 'verifyPerToken', 'rtt'] as const) {
    const value = config[name];
    if (value === undefined) continue;
    if (config.method !== 'event') throw new SimulationConfigError(name, `${name} is only used by the event method`);
    requireFinite(name, value);
    if (value < 0) throw new SimulationConfigError(name, `${name}=${fmt(value)} is below 0`);
  }
  if (config.method === 'event' && config.tokens * config.repeats > EVENT_TOKEN_LIMIT) {
    throw new SimulationConfigError('repeats', `tokens*repeats=${config.tokens * config.repeats} is above the event method's limit ${EVENT_TOKEN_LIMIT}`);
  }
  checkLoad(config);
  // The event method simulates finite servers (verifications queue), so any count is valid there.
  if (config.method !== 'event') {
    const needed = requiredServers(t, fixedK(k), c);
    if (config.servers < needed) throw new SimulationConfigError('servers', `servers=${config.servers} is below ceil(t/(k*c)) = ${needed}`);
  }
  if (config.method === 'seed' && config.tokens * config.repeats > LIMITS.workPerRequest / 10) {
    throw new SimulationConfigError(
      'repeats',
      `tokens*repeats=${config.tokens * config.repeats} is above the limit ${LIMITS.workPerRequest / 10}`,
    );
  }
  return config;
}
