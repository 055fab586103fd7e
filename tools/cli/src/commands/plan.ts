import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import type { PairProfile, Plan, PlanOptions, PlanPair } from '@dsi/sim';
import { UsageError } from '../errors';
import { addClientSecurityOptions, addressOption, fixed, integerOption, invalidValueMessage, realOption, textOption } from '../options';
import { progressBar } from '../progress';

interface PlanFlags {
  profile?: string;
  preset?: string;
  listPresets?: boolean;
  a?: number;
  targetMs?: number;
  drafterMs?: number;
  targetTtftMs?: number;
  drafterTtftMs?: number;
  verifyMsPerToken?: number;
  roundTripMs?: number;
  drafterRoundTripMs?: number;
  maxReplicas: number;
  tokens: number;
  maxLookahead: number;
  prompts: number;
  seed: number;
  concurrency?: number;
  arrivalRate?: number;
  requests?: number;
  svg?: string;
  json?: boolean;
  simulator?: string;
}

/** Reads `--profile`: a file that does not read, parse or validate is a usage error naming the field. */
async function readProfile(file: string) {
  const { parseProfile, ProfileError } = await import('@dsi/sim');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new UsageError(invalidValueMessage('--profile', file, `cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`));
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new UsageError(invalidValueMessage('--profile', file, `not JSON (${(error as Error).message})`));
  }
  try {
    return parseProfile(json);
  } catch (error) {
    if (error instanceof ProfileError) throw new UsageError(`--profile ${file}: ${error.message}`);
    throw error;
  }
}

/** The pair to plan: a profile, a preset or the flags, each flag overriding what the first two give. */
async function pairOf(flags: PlanFlags): Promise<{ pair: PlanPair; source: string; profile?: PairProfile }> {
  const { pairFromProfile, presetLatencies, UnknownPresetError } = await import('@dsi/sim');
  if (flags.profile && flags.preset) throw new UsageError('give --profile or --preset, not both');
  let base: Partial<PlanPair> = {};
  let source = 'flags';
  let profile: PairProfile | undefined;
  if (flags.profile) {
    profile = await readProfile(flags.profile);
    base = pairFromProfile(profile);
    source = `profile ${flags.profile}`;
  } else if (flags.preset) {
    try {
      const preset = presetLatencies(flags.preset);
      base = { targetMs: preset.targetMs, targetTtftMs: preset.targetTtftMs, drafterMs: preset.drafterMs, drafterTtftMs: preset.drafterTtftMs, verifyMsPerToken: preset.verifyMsPerToken };
      source = `preset ${preset.name}: ${preset.description}`;
    } catch (error) {
      if (error instanceof UnknownPresetError) throw new UsageError(invalidValueMessage('--preset', flags.preset, `no such preset (dsi plan --list-presets lists them)`));
      throw error;
    }
  }
  const pair: Partial<PlanPair> = {
    ...base,
    ...(flags.a !== undefined ? { a: flags.a } : {}),
    ...(flags.targetMs !== undefined ? { targetMs: flags.targetMs } : {}),
    ...(flags.drafterMs !== undefined ? { drafterMs: flags.drafterMs } : {}),
    ...(flags.targetTtftMs !== undefined ? { targetTtftMs: flags.targetTtftMs } : {}),
    ...(flags.drafterTtftMs !== undefined ? { drafterTtftMs: flags.drafterTtftMs } : {}),
    ...(flags.verifyMsPerToken !== undefined ? { verifyMsPerToken: flags.verifyMsPerToken } : {}),
    ...(flags.roundTripMs !== undefined ? { rttMs: flags.roundTripMs } : {}),
    ...(flags.drafterRoundTripMs !== undefined ? { drafterRttMs: flags.drafterRoundTripMs } : {}),
  };
  if (pair.a === undefined) throw new UsageError(`--a is required${flags.preset ? ' with --preset (a preset gives latencies only)' : ' (or --profile)'}`);
  if (pair.targetMs === undefined) throw new UsageError('--target-ms is required (or --profile or --preset)');
  if (pair.drafterMs === undefined) throw new UsageError('--drafter-ms is required (or --profile or --preset)');
  return { pair: pair as PlanPair, source, profile };
}

/** The profile a plan was made from: the file's, or one written from the preset or flags. */
function profileOf(pair: PlanPair, source: string, measured: PairProfile | undefined): PairProfile {
  const rtt = pair.rttMs ?? 0;
  const drafterRtt = pair.drafterRttMs ?? rtt;
  const spread = (ms: number, trip = rtt) => ({ median: ms + trip, p10: ms + trip, p90: ms + trip });
  const given = measured ?? {
    version: 1 as const,
    measured_at: '',
    source: source.startsWith('preset') ? 'preset' : 'flags',
    method: { prompts: 0, tokens: 0, ttft: 'given', tpot: 'given', acceptance: 'given' },
    acceptance: { a: pair.a, interval: [pair.a, pair.a] as [number, number], per_position: [] },
    target: { source, ttft_ms: spread(pair.targetTtftMs ?? pair.targetMs), tpot_ms: spread(pair.targetMs), verify_ms_per_token: pair.verifyMsPerToken ?? 0, round_trip_ms: rtt },
    drafter: { source, ttft_ms: spread(pair.drafterTtftMs ?? pair.drafterMs, drafterRtt), tpot_ms: spread(pair.drafterMs, drafterRtt), round_trip_ms: drafterRtt },
    round_trip_ms: rtt,
  };
  // Flags given beside a profile override it: the profile printed is the one planned.
  return { ...given, acceptance: { ...given.acceptance, a: pair.a } };
}

/** The plan as a table for a terminal. */
export function formatPlan(plan: Plan, source: string): string {
  const p = plan.pair;
  const underLoad = plan.options.concurrency !== undefined || plan.options.arrival_rate !== undefined;
  const load = plan.options.concurrency !== undefined ? `${plan.options.concurrency} clients back to back` : `Poisson arrivals at ${plan.options.arrival_rate} requests/s`;
  const lines = [
    `DSI plan (event mode: the serving scheduler on a virtual clock; ${plan.options.tokens}-token greedy generations, ${underLoad ? `${load}, ${plan.options.requests} requests per figure` : `mean of ${plan.options.prompts} prompts`})`,
    `  pair (${source}): a=${fixed(p.a, 3)}  target ${fixed(p.target_ms, 3)} ms/token (TTFT ${fixed(p.target_ttft_ms, 2)}, +${fixed(p.verify_ms_per_token, 3)} per verified draft)  drafter ${fixed(p.drafter_ms, 3)} ms/token (TTFT ${fixed(p.drafter_ttft_ms, 2)})  round trip ${fixed(p.round_trip_ms, 3)} ms per Verify, ${fixed(p.drafter_round_trip_ms, 3)} per Draft`,
    `  lower bound (1 - a) t + a c = ${fixed(plan.bound_ms_per_token, 3)} ms/token`,
    '',
    `  ${'replicas'.padStart(8)} ${'non-SI'.padStart(9)} ${'SI k'.padStart(5)} ${'SI'.padStart(9)} ${'DSI k'.padStart(6)} ${'DSI'.padStart(9)} ${'DSI/SI'.padStart(7)} ${'DSI/nonSI'.padStart(9)} ${'DSI/bound'.padStart(9)}${underLoad ? `  ${'tok/s non-SI'.padStart(12)} ${'SI'.padStart(8)} ${'DSI'.padStart(8)} ${'DSI auto'.padStart(9)}` : ''}`,
  ];
  for (const row of plan.rows) {
    const mark = row.replicas === plan.recommendation.replicas ? ' <' : '';
    lines.push(
      `  ${String(row.replicas).padStart(8)} ${fixed(row.nonsi.ms_per_token, 3).padStart(9)} ${String(row.si.lookahead).padStart(5)} ${fixed(row.si.ms_per_token, 3).padStart(9)} ${String(row.dsi.lookahead).padStart(6)} ${fixed(row.dsi.ms_per_token, 3).padStart(9)} ${`${fixed(row.speedup_vs_si, 2)}x`.padStart(7)} ${`${fixed(row.speedup_vs_nonsi, 2)}x`.padStart(9)} ${fixed(row.vs_bound, 3).padStart(9)}` +
        (underLoad
          ? `  ${fixed(row.nonsi.throughput_tps ?? 0, 1).padStart(12)} ${fixed(row.si.throughput_tps ?? 0, 1).padStart(8)} ${fixed(row.dsi.throughput_tps ?? 0, 1).padStart(8)} ${fixed(row.dsi_auto?.throughput_tps ?? 0, 1).padStart(9)}`
          : '') +
        mark,
    );
  }
  const r = plan.recommendation;
  lines.push(
    '',
    `  latencies in ms per generated token${underLoad ? ' (mean request latency / tokens)' : ''}; k: the best lookahead at that replica count`,
    `  recommendation: ${r.replicas} target replica${r.replicas === 1 ? '' : 's'} with k=${r.lookahead}: DSI ${fixed(r.dsi_ms_per_token, 3)} ms/token, ${fixed(r.speedup_vs_si, 2)}x SI, ${fixed(r.speedup_vs_nonsi, 2)}x non-SI, ${fixed(r.dsi_ms_per_token / plan.bound_ms_per_token, 3)}x the bound (the fewest replicas within 2% of DSI's best, ${fixed(r.best_dsi_ms_per_token, 3)} ms/token)`,
  );
  return lines.join('\n');
}

/** `dsi plan`: the best lookahead and replica count for a pair, with predicted speedups and the bound. */
export function planCommand(): Command {
  // --simulator's channel: TLS and a bearer token like every client command's.
  return addClientSecurityOptions(new Command('plan'))
    .description('plan a deployment: for 1..N target replicas, the best lookahead and the predicted latency per token of non-SI, SI and DSI (event mode), the lower bound, and the fewest replicas within 2% of the best')
    .addOption(textOption('--profile <file>', 'a measured pair (dsi estimate --out)'))
    .addOption(textOption('--preset <name>', 'GPU latencies from measured H200 figures, e.g. h200/llama3.1-70b/llama3.2-1b (needs --a); see --list-presets'))
    .option('--list-presets', 'print the preset names and exit')
    .addOption(realOption('--a <rate>', 'acceptance rate', { min: 0, max: 1 }))
    .addOption(realOption('--target-ms <ms>', 'target forward per token (TPOT)', { min: 0, minExclusive: true }))
    .addOption(realOption('--drafter-ms <ms>', 'drafter forward per token (TPOT)', { min: 0, minExclusive: true }))
    .addOption(realOption('--target-ttft-ms <ms>', 'target prefill (default: --target-ms)', { min: 0 }))
    .addOption(realOption('--drafter-ttft-ms <ms>', 'drafter prefill (default: --drafter-ms)', { min: 0 }))
    .addOption(realOption('--verify-ms-per-token <ms>', 'extra target latency per verified draft (default 0)', { min: 0 }))
    .addOption(realOption('--round-trip-ms <ms>', 'per-call overhead, network and services (default 0; a profile has its own)', { min: 0 }))
    .addOption(realOption('--drafter-round-trip-ms <ms>', "a Draft call's overhead when it differs (default: --round-trip-ms)", { min: 0 }))
    .addOption(integerOption('--max-replicas <n>', 'plan 1..n target replicas', { min: 1, max: 64 }).default(8))
    .addOption(integerOption('--tokens <n>', 'tokens per generation', { min: 2, max: 100_000 }).default(1000))
    .addOption(integerOption('--max-lookahead <k>', 'largest lookahead tried', { min: 1, max: 64 }).default(12))
    .addOption(integerOption('--prompts <n>', 'prompts each single-request figure averages', { min: 1, max: 64 }).default(4))
    .addOption(integerOption('--seed <n>', 'oracle seed', { min: 0, max: 2_147_483_647 }).default(1))
    .addOption(integerOption('--concurrency <n>', 'plan under load: n clients sending back to back', { min: 1, max: 256 }))
    .addOption(realOption('--arrival-rate <r>', 'plan under load: Poisson arrivals, requests per second', { min: 0, minExclusive: true }))
    .addOption(integerOption('--requests <n>', 'under load: requests per figure (default max(8, 2 x concurrency); open loop 32)', { min: 1, max: 4096 }))
    .addOption(textOption('--svg <file>', 'also write the plan as an SVG (latency per token and speedup against replicas)'))
    .addOption(addressOption('--simulator <address>', 'plan on a simulator service (host:port) instead of in this process'))
    .option('--json', 'print one JSON document on stdout')
    .action(async (flags: PlanFlags) => {
      const { presetNames, planDeployment, planSvg, PlanInputError } = await import('@dsi/sim');
      if (flags.listPresets) {
        process.stdout.write(presetNames().join('\n') + '\n');
        return;
      }
      if (flags.concurrency !== undefined && flags.arrivalRate !== undefined) throw new UsageError('give --concurrency or --arrival-rate, not both');
      if (flags.svg) {
        const dir = path.dirname(path.resolve(flags.svg));
        if (!fs.existsSync(dir)) throw new UsageError(invalidValueMessage('--svg', flags.svg, `folder ${dir} does not exist`));
      }
      const { pair, source, profile } = await pairOf(flags);
      const options: Partial<PlanOptions> = {
        maxReplicas: flags.maxReplicas,
        tokens: flags.tokens,
        maxLookahead: flags.maxLookahead,
        prompts: flags.prompts,
        seed: flags.seed,
        ...(flags.concurrency !== undefined ? { concurrency: flags.concurrency } : {}),
        ...(flags.arrivalRate !== undefined ? { arrivalRate: flags.arrivalRate } : {}),
        ...(flags.requests !== undefined ? { requests: flags.requests } : {}),
      };
      const bar = progressBar('planning', true, 'replica counts');
      const abort = new AbortController();
      const onSignal = () => abort.abort(new Error('interrupted'));
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      let plan: Plan;
      try {
        if (flags.simulator) {
          const { planRemote } = await import('../plan-remote');
          plan = await planRemote(flags.simulator, pair, options, (done, total) => bar.update(done, total), abort.signal);
        } else {
          plan = await planDeployment(pair, { ...options, signal: abort.signal, onProgress: (done, total) => bar.update(done, total) });
        }
      } catch (error) {
        if (error instanceof PlanInputError) throw new UsageError(`--${error.field.replace(/_/g, '-')}: ${error.message.slice(error.field.length + 2)}`);
        throw error;
      } finally {
        bar.stop();
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      if (flags.svg) fs.writeFileSync(flags.svg, planSvg(plan));
      if (flags.json) {
        process.stdout.write(JSON.stringify({ profile: profileOf(pair, source, profile), source, ...plan }) + '\n');
        return;
      }
      process.stdout.write(formatPlan(plan, source) + '\n' + (flags.svg ? `  SVG: ${flags.svg}\n` : ''));
    });
}
