/**
 * `dsi estimate`: measure a drafter/target pair the study's way, to calibrate the simulator and the
 * planner on it.
 *
 * - `dsi estimate latency`: TTFT and TPOT of both models with their spread, the verify cost per token
 *   and (services) the per-call round trip.
 * - `dsi estimate acceptance`: the greedy acceptance rate a = m/(1+m) with its Wilson interval and the
 *   acceptance at each draft position.
 * - `dsi estimate [--out profile.json]`: both, as one `PairProfile` (libs/sim/src/profile.ts).
 *
 * Every verb measures one of three sources: running services (`--target ADDR --drafter ADDR`), model
 * folders loaded in process (`--target-model DIR --drafter-model DIR`), or neither (the built-in pair).
 *
 * Why the flags live on `estimate` itself: commander runs a parent command's action when no subcommand
 * is named, so `dsi estimate --out F` works; but the root `dsi` program does not enable positional
 * options, so every flag after `dsi estimate latency` is parsed by `estimate` before `latency` sees it.
 * A flag declared on both would be swallowed by the parent; declared on the parent only, the verbs
 * read it with `optsWithGlobals()` and their help lists it under "Global Options". A flag that does
 * not apply to a verb (`--out` on `latency`) is a usage error, not silently ignored.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import type { AcceptanceReport, GreedyStepper, LatencyReport, LatencySpread } from '@dsi/models';
import type { PairProfile } from '@dsi/sim';
import { UsageError } from '../errors';
import { defaultModelsDir } from '../models-dir';
import { addClientSecurityOptions, checkWritableDir, fixed, integerOption, invalidValueMessage, parseAddress, textOption } from '../options';
import { progressBar } from '../progress';

/** The most tokens `dsi estimate` generates per prompt. */
export const MAX_ESTIMATE_TOKENS = 65_536;
/** The most times each prompt is measured. */
export const MAX_ESTIMATE_REPEATS = 1_000;
/** The most draft positions reported. */
export const MAX_ESTIMATE_POSITIONS = 64;
/** Defaults: tokens per prompt for latency (the issue's N) and for acceptance and the profile (the study's 64). */
export const DEFAULT_LATENCY_TOKENS = 32;
export const DEFAULT_ACCEPTANCE_TOKENS = 64;
export const DEFAULT_REPEATS = 3;
export const DEFAULT_POSITIONS = 8;

/** The definitions written into a profile's `method` and printed by the verbs. */
export const METHOD = {
  ttft: 'one forward over the prompt, no cache (a service: one Verify or Draft call, round trip included)',
  tpot: '(time to generate N tokens - TTFT) / (N - 1), one cached forward per token (a service: one call per token)',
  acceptance:
    'target greedy; at each generated position the drafter predicts one token from the target prefix; a = m/(1+m), m the mean run of matches closed by a mismatch; 95% Wilson intervals',
} as const;

/** Every flag of `dsi estimate` and its verbs (declared on `estimate`: see the module comment). */
export interface EstimateFlags {
  target?: string;
  drafter?: string;
  targetModel?: string;
  drafterModel?: string;
  tokenizer?: string;
  prompt?: string[];
  tokens?: number;
  repeats?: number;
  positions?: number;
  out?: string;
  json?: boolean;
}

type Verb = 'latency' | 'acceptance' | 'profile';
type SourceKind = 'services' | 'models' | 'builtin';

/** Where the pair comes from, checked. */
export type PairSource = { kind: 'services'; target: string; drafter: string } | { kind: 'models'; target: string; drafter: string } | { kind: 'builtin' };

/** Flags that only some verbs take, and the verbs. */
const ONLY: Array<[keyof EstimateFlags, string, Verb[]]> = [
  ['repeats', '--repeats', ['latency', 'profile']],
  ['positions', '--positions', ['acceptance', 'profile']],
  ['out', '--out', ['profile']],
];

const VERB_NAME: Record<Verb, string> = { latency: 'dsi estimate latency', acceptance: 'dsi estimate acceptance', profile: 'dsi estimate' };

function serviceAddress(flag: string, modelFlag: string, value: string): string {
  const stat = fs.statSync(value, { throwIfNoEntry: false });
  if (stat?.isDirectory()) {
    throw new UsageError(invalidValueMessage(flag, value, `it is a folder: ${flag} takes a running service's host:port; use ${modelFlag} ${value} for a model folder`));
  }
  try {
    return parseAddress(value);
  } catch (error) {
    throw new UsageError(invalidValueMessage(flag, value, `${(error as Error).message} (a model folder goes to ${modelFlag})`));
  }
}

function modelFolder(flag: string, value: string): string {
  const stat = fs.statSync(value, { throwIfNoEntry: false });
  if (!stat?.isDirectory()) throw new UsageError(invalidValueMessage(flag, value, stat ? 'not a folder' : 'no such folder'));
  return path.resolve(value);
}

/**
 * Checks the flags of `verb` before any work: the source (a pair of services, a pair of folders, or
 * neither), the flags the verb takes, and the --out path. Throws a {@link UsageError} naming the flag.
 */
export function checkEstimateFlags(verb: Verb, flags: EstimateFlags): PairSource {
  for (const [key, flag, verbs] of ONLY) {
    if (flags[key] !== undefined && !verbs.includes(verb)) {
      throw new UsageError(`${flag} does not apply to \`${VERB_NAME[verb]}\` (it is a flag of ${verbs.map((v) => `\`${VERB_NAME[v]}\``).join(' and ')})`);
    }
  }
  if (flags.target !== undefined && flags.targetModel !== undefined) throw new UsageError('--target and --target-model both given: measure the target as a service (host:port) or as a model folder, not both');
  if (flags.drafter !== undefined && flags.drafterModel !== undefined) throw new UsageError('--drafter and --drafter-model both given: measure the drafter as a service (host:port) or as a model folder, not both');
  const pairs: Array<[string | undefined, string, string | undefined, string]> = [
    [flags.target, '--target', flags.drafter, '--drafter'],
    [flags.targetModel, '--target-model', flags.drafterModel, '--drafter-model'],
  ];
  for (const [one, oneFlag, other, otherFlag] of pairs) {
    if (one !== undefined && other === undefined) throw new UsageError(`${oneFlag} needs ${otherFlag} too: measure a pair, both as services or both as model folders (or neither: the built-in pair)`);
    if (other !== undefined && one === undefined) throw new UsageError(`${otherFlag} needs ${oneFlag} too: measure a pair, both as services or both as model folders (or neither: the built-in pair)`);
  }
  if (flags.out !== undefined) checkOutFile(flags.out);
  if (flags.tokenizer !== undefined) modelFolder('--tokenizer', flags.tokenizer);
  if (flags.target !== undefined) {
    return { kind: 'services', target: serviceAddress('--target', '--target-model', flags.target), drafter: serviceAddress('--drafter', '--drafter-model', flags.drafter!) };
  }
  if (flags.targetModel !== undefined) {
    return { kind: 'models', target: modelFolder('--target-model', flags.targetModel), drafter: modelFolder('--drafter-model', flags.drafterModel!) };
  }
  return { kind: 'builtin' };
}

/** The profile file must go into an existing folder the command can write in, and must not be a folder. */
function checkOutFile(out: string): void {
  const file = path.resolve(out);
  const dir = path.dirname(file);
  const dirStat = fs.statSync(dir, { throwIfNoEntry: false });
  if (!dirStat?.isDirectory()) throw new UsageError(invalidValueMessage('--out', out, `the folder ${dir} does not exist`));
  if (fs.statSync(file, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(invalidValueMessage('--out', out, 'it is a folder; give a file name'));
  checkWritableDir(dir, '--out');
}

async function withProgress<T>(label: string, unit: string, work: (onProgress: (done: number, total: number) => void) => Promise<T>): Promise<T> {
  const bar = progressBar(label, true, unit);
  try {
    return await work((done, total) => bar.update(done, total));
  } finally {
    bar.stop();
  }
}

/** An open pair: each model as a stepper, the prompts encoded, and the acceptance measurement. */
interface PairSession {
  kind: SourceKind;
  /** What each model is, as a profile's `source`: its address, its folder, or `builtin`. */
  names: { target: string; drafter: string };
  /** Where each model is: its address or its folder (the built-in pair's too). */
  locations: { target: string; drafter: string };
  prompts: Array<{ text: string; ids: number[] }>;
  steppers: { target: GreedyStepper; drafter: GreedyStepper };
  /** Request id prefixes (a shared service needs ids no one else uses). */
  requestPrefixes: { target: string; drafter: string };
  acceptance(tokens: number, positions: number, onProgress: (done: number, total: number) => void): Promise<AcceptanceReport>;
  close(): Promise<void>;
}

async function openSession(source: PairSource, flags: EstimateFlags): Promise<PairSession> {
  const { BUILTIN_PROMPTS, TextTokenizer, acceptanceReport, measureAcceptance, modelStepper, OnnxModel } = await import('@dsi/models');
  const texts = flags.prompt ?? [...BUILTIN_PROMPTS];
  if (source.kind === 'services') {
    const { drafterStepper, remoteAcceptance, targetStepper } = await import('./estimate-remote');
    // A service's tokenizer is not on the wire: a folder's tokenizer.json, or the byte-level default's UTF-8 bytes.
    const tokenizer = flags.tokenizer ? TextTokenizer.load(flags.tokenizer) : undefined;
    const prompts = texts.map((text) => ({ text, ids: tokenizer ? tokenizer.encode(text) : [...Buffer.from(text, 'utf8')] }));
    const target = targetStepper(source.target);
    const drafter = drafterStepper(source.drafter);
    return {
      kind: 'services',
      names: { target: source.target, drafter: source.drafter },
      locations: { target: source.target, drafter: source.drafter },
      prompts,
      steppers: { target, drafter },
      requestPrefixes: { target: target.requestPrefix, drafter: drafter.requestPrefix },
      acceptance: async (tokens, positions, onProgress) => acceptanceReport(await remoteAcceptance(target, drafter, prompts, tokens, onProgress), positions),
      close: async () => {
        target.close();
        drafter.close();
      },
    };
  }
  let dirs: { target: string; drafter: string };
  if (source.kind === 'models') dirs = { target: source.target, drafter: source.drafter };
  else {
    const { ensureDefaultModels } = await import('@dsi/modelgen');
    dirs = await ensureDefaultModels(defaultModelsDir(process.env));
  }
  const tokenizer = TextTokenizer.load(flags.tokenizer ?? dirs.target);
  const encode = (text: string) => tokenizer.encode(text);
  const prompts = texts.map((text) => ({ text, ids: encode(text) }));
  const empty = prompts.find((p) => p.ids.length === 0);
  if (empty) throw new UsageError(invalidValueMessage('--prompt', empty.text, 'it encodes to no token'));
  // The same forward path as the services: OnnxModel on a worker thread, one onnxruntime thread.
  const target = await OnnxModel.load(dirs.target, { threads: 1 });
  let drafter;
  try {
    drafter = await OnnxModel.load(dirs.drafter, { threads: 1 });
    await Promise.all([target.warmup(), drafter.warmup()]);
  } catch (error) {
    await Promise.all([target.close(), drafter?.close()]);
    throw error;
  }
  const loaded = drafter;
  return {
    kind: source.kind,
    names: source.kind === 'builtin' ? { target: 'builtin', drafter: 'builtin' } : dirs,
    locations: dirs,
    prompts,
    steppers: { target: modelStepper(target), drafter: modelStepper(loaded) },
    requestPrefixes: { target: 'estimate-latency-target-', drafter: 'estimate-latency-drafter-' },
    acceptance: (tokens, positions, onProgress) => measureAcceptance(target, loaded, { prompts: texts, maxNewTokens: tokens, encode, positions, onProgress }),
    close: async () => {
      await Promise.all([target.close(), loaded.close()]);
    },
  };
}

/** One model's latencies as `--json` and the profile print them. */
export interface ModelLatencyJson {
  source: string;
  ttft_ms: LatencySpread;
  tpot_ms: LatencySpread;
  verify_ms_per_token: number;
  round_trip_ms: number;
  /** p90 / p10 of each (the spread over prompts x repeats). */
  p90_p10: { ttft: number; tpot: number };
  /** round_trip_ms: a service's TTFT call's round trip and its later calls' mean (wall less model time), when reported. */
  samples: Array<{ prompt: number; repeat: number; ttft_ms: number; tpot_ms: number; generate_ms: number; ttft_round_trip_ms?: number; tpot_round_trip_ms?: number }>;
}

/** What `dsi estimate latency --json` prints. */
export interface LatencyJson {
  source: SourceKind;
  method: { prompts: number; tokens: number; repeats: number; ttft: string; tpot: string };
  target: ModelLatencyJson;
  drafter: ModelLatencyJson;
  /** The pair's per-call round trip: mean over every call of both (0 in process). */
  round_trip_ms: number;
}

const ratio = (spread: LatencySpread) => (spread.p10 > 0 ? spread.p90 / spread.p10 : Infinity);

function modelLatencyJson(source: string, report: LatencyReport): ModelLatencyJson {
  return {
    source,
    ttft_ms: report.ttftMs,
    tpot_ms: report.tpotMs,
    verify_ms_per_token: report.verifyMsPerToken,
    round_trip_ms: report.roundTripMs,
    p90_p10: { ttft: ratio(report.ttftMs), tpot: ratio(report.tpotMs) },
    samples: report.samples.map((s) => ({
      prompt: s.prompt,
      repeat: s.repeat,
      ttft_ms: s.ttftMs,
      tpot_ms: s.tpotMs,
      generate_ms: s.generateMs,
      ...(s.ttftRoundTripMs !== undefined ? { ttft_round_trip_ms: s.ttftRoundTripMs, tpot_round_trip_ms: s.tpotRoundTripMs } : {}),
    })),
  };
}

async function measurePairLatency(session: PairSession, tokens: number, repeats: number): Promise<LatencyJson> {
  const { measureLatencyWith } = await import('@dsi/models');
  const prompts = session.prompts.map((p) => p.ids);
  const reports: Partial<Record<'target' | 'drafter', LatencyReport>> = {};
  for (const role of ['target', 'drafter'] as const) {
    reports[role] = await withProgress(`${role} latency`, 'generations', (onProgress) =>
      measureLatencyWith(session.steppers[role], prompts, tokens, { repeats, onProgress, requestPrefix: session.requestPrefixes[role] }),
    );
  }
  const target = reports.target!;
  const drafter = reports.drafter!;
  const roundTrips = [...target.callRoundTripsMs, ...drafter.callRoundTripsMs];
  return {
    source: session.kind,
    method: { prompts: prompts.length, tokens, repeats, ttft: METHOD.ttft, tpot: METHOD.tpot },
    target: modelLatencyJson(session.names.target, target),
    drafter: modelLatencyJson(session.names.drafter, drafter),
    round_trip_ms: roundTrips.length ? roundTrips.reduce((sum, x) => sum + x, 0) / roundTrips.length : 0,
  };
}

function measureAcceptanceOf(session: PairSession, tokens: number, positions: number): Promise<AcceptanceReport> {
  return withProgress('acceptance', 'prompts', (onProgress) => session.acceptance(tokens, positions, onProgress));
}

/** The measured pair as a {@link PairProfile}, checked by `parseProfile`. */
export async function profileOf(latency: LatencyJson, acceptance: AcceptanceReport, positions: number): Promise<PairProfile> {
  const { parseProfile } = await import('@dsi/sim');
  const model = (m: ModelLatencyJson) => ({ source: m.source, ttft_ms: m.ttft_ms, tpot_ms: m.tpot_ms, verify_ms_per_token: m.verify_ms_per_token, round_trip_ms: m.round_trip_ms });
  // The method also records the repeats and the positions (a profile keeps fields it does not know).
  const method: PairProfile['method'] & { repeats: number; positions: number } = {
    prompts: latency.method.prompts,
    tokens: latency.method.tokens,
    repeats: latency.method.repeats,
    positions,
    ttft: METHOD.ttft,
    tpot: METHOD.tpot,
    acceptance: METHOD.acceptance,
  };
  const profile: PairProfile = {
    version: 1,
    measured_at: new Date().toISOString(),
    source: latency.source,
    method,
    acceptance: {
      a: acceptance.acceptanceRate,
      interval: acceptance.interval,
      agreement: acceptance.agreement,
      positions: acceptance.positions,
      // A position no block reached has no estimate: it is left out (its trials would be 0).
      per_position: acceptance.perPosition.filter((p) => p.trials > 0).map((p) => ({ position: p.position, rate: p.rate, interval: p.interval, trials: p.trials })),
    },
    target: model(latency.target),
    drafter: model(latency.drafter),
    round_trip_ms: latency.round_trip_ms,
  };
  parseProfile(JSON.parse(JSON.stringify(profile)));
  return profile;
}

/** Writes `text` to `file` whole or not at all (a temporary file in the same folder, renamed). */
function writeAtomically(file: string, text: string): void {
  const temporary = path.join(path.dirname(path.resolve(file)), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(temporary, text);
    fs.renameSync(temporary, file);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw new Error(`cannot write --out ${file}: ${(error as Error).message}`, { cause: error });
  }
}

const pad = (text: string, width: number) => text.padStart(width);
const ms = (value: number) => fixed(value, value < 10 ? 3 : 2);

function latencyTable(latency: LatencyJson, locations: { target: string; drafter: string }): string {
  const header =
    `${'model'.padEnd(8)}${pad('TTFT median', 13)}${pad('p10', 10)}${pad('p90', 10)}${pad('p90/p10', 9)}` +
    `${pad('TPOT median', 14)}${pad('p10', 10)}${pad('p90', 10)}${pad('p90/p10', 9)}${pad('verify/token', 14)}`;
  const row = (name: string, m: ModelLatencyJson) =>
    `${name.padEnd(8)}${pad(ms(m.ttft_ms.median), 13)}${pad(ms(m.ttft_ms.p10), 10)}${pad(ms(m.ttft_ms.p90), 10)}${pad(fixed(m.p90_p10.ttft, 2), 9)}` +
    `${pad(ms(m.tpot_ms.median), 14)}${pad(ms(m.tpot_ms.p10), 10)}${pad(ms(m.tpot_ms.p90), 10)}${pad(fixed(m.p90_p10.tpot, 2), 9)}${pad(ms(m.verify_ms_per_token), 14)}`;
  const roundTrip =
    latency.source === 'services'
      ? `round trip per call: ${ms(latency.round_trip_ms)} ms (mean of wall time - the service's model time; target ${ms(latency.target.round_trip_ms)}, drafter ${ms(latency.drafter.round_trip_ms)}), included once in every figure above`
      : 'round trip per call: 0 ms (models in process)';
  return (
    `latency in ms of ${latency.source === 'builtin' ? 'the built-in pair' : latency.source} over ${latency.method.prompts} prompts x ${latency.method.repeats} repeats, ${latency.method.tokens} tokens each:\n` +
    `  target  ${locations.target}\n  drafter ${locations.drafter}\n` +
    `${header}\n${row('target', latency.target)}\n${row('drafter', latency.drafter)}\n${roundTrip}\n`
  );
}

function acceptanceText(report: AcceptanceReport): string {
  const [low, high] = report.interval;
  const lines = [
    `acceptance rate a = ${fixed(report.acceptanceRate, 3)} [95% ${fixed(low, 3)}, ${fixed(high, 3)}] (mean run m = ${fixed(report.meanRunLength, 2)} over ${report.runs.length} closed runs)`,
    `per-position agreement ${fixed(report.agreement, 3)} over ${report.positions} positions`,
    'draft position j: acceptance given drafts 1..j-1 accepted [95% interval] (blocks that reached j)',
    ...report.perPosition.map(
      (p) => `  j=${String(p.position).padEnd(3)}${p.trials ? `${fixed(p.rate, 3)} [${fixed(p.interval[0], 3)}, ${fixed(p.interval[1], 3)}]` : 'no block reached it'} (${p.trials})`,
    ),
  ];
  return lines.join('\n') + '\n';
}

/** Runs `work` on the pair the flags name, closing it afterwards. */
async function withSession<T>(verb: Verb, command: Command, work: (session: PairSession, flags: EstimateFlags) => Promise<T>): Promise<T> {
  const flags = command.optsWithGlobals<EstimateFlags>();
  const source = checkEstimateFlags(verb, flags);
  const session = await openSession(source, flags);
  try {
    return await work(session, flags);
  } finally {
    await session.close();
  }
}

/** `dsi estimate` and its verbs (module comment). */
export function estimateCommand(): Command {
  const estimate = new Command('estimate')
    .description(
      'measure a drafter/target pair the study\'s way and write its profile (TTFT, TPOT, acceptance): running services (--target/--drafter), model folders (--target-model/--drafter-model) or the built-in pair',
    )
    .configureHelp({ showGlobalOptions: true })
    .addOption(textOption('--target <host:port>', 'a running target service (dsi.v1.TargetService)'))
    .addOption(textOption('--drafter <host:port>', 'a running drafter service (dsi.v1.DrafterService)'))
    .addOption(textOption('--target-model <dir>', 'target ONNX folder (Optimum layout), run in process'))
    .addOption(textOption('--drafter-model <dir>', 'drafter ONNX folder (Optimum layout), run in process'))
    .addOption(textOption('--tokenizer <dir>', 'folder with the tokenizer.json that encodes the prompts (default: the target folder\'s; services: UTF-8 bytes, the built-in byte-level tokenizer)'))
    .addOption(textOption('--prompt <text...>', 'prompts (default: the built-in ones)'))
    .addOption(integerOption('--tokens <n>', `tokens generated per prompt, N >= 2 (default ${DEFAULT_LATENCY_TOKENS} for latency, ${DEFAULT_ACCEPTANCE_TOKENS} for acceptance and the profile)`, { min: 2, max: MAX_ESTIMATE_TOKENS }))
    .addOption(integerOption('--repeats <n>', `latency and profile: times each prompt is measured, each on a fresh request (default ${DEFAULT_REPEATS})`, { min: 1, max: MAX_ESTIMATE_REPEATS }))
    .addOption(integerOption('--positions <n>', `acceptance and profile: draft positions of the per-position acceptance (default ${DEFAULT_POSITIONS})`, { min: 1, max: MAX_ESTIMATE_POSITIONS }))
    .addOption(textOption('--out <file>', 'profile only: write the profile (JSON, what `dsi plan --profile` reads) to this file in an existing folder'))
    .option('--json', 'print one JSON document on stdout')
    .action(async (_options: EstimateFlags, command: Command) => {
      await withSession('profile', command, async (session, flags) => {
        const tokens = flags.tokens ?? DEFAULT_ACCEPTANCE_TOKENS;
        const positions = flags.positions ?? DEFAULT_POSITIONS;
        const latency = await measurePairLatency(session, tokens, flags.repeats ?? DEFAULT_REPEATS);
        const acceptance = await measureAcceptanceOf(session, tokens, positions);
        const profile = await profileOf(latency, acceptance, positions);
        const text = JSON.stringify(profile, null, 2) + '\n';
        if (flags.out) writeAtomically(flags.out, text);
        if (flags.json) {
          process.stdout.write(JSON.stringify(profile) + '\n');
          return;
        }
        process.stdout.write(latencyTable(latency, session.locations) + acceptanceText(acceptance) + (flags.out ? `profile written to ${flags.out}\n` : ''));
      });
    });
  estimate
    .command('latency')
    .description('TTFT and TPOT of the target and the drafter (median, p10, p90 over prompts x repeats), the verify cost per token and the per-call round trip')
    .action(async (_options: unknown, command: Command) => {
      await withSession('latency', command, async (session, flags) => {
        const latency = await measurePairLatency(session, flags.tokens ?? DEFAULT_LATENCY_TOKENS, flags.repeats ?? DEFAULT_REPEATS);
        process.stdout.write(flags.json ? JSON.stringify(latency) + '\n' : latencyTable(latency, session.locations));
      });
    });
  estimate
    .command('acceptance')
    .description('greedy acceptance rate of the drafter against the target, the study estimator a = m/(1+m), with its 95% interval and the acceptance at each draft position')
    .action(async (_options: unknown, command: Command) => {
      await withSession('acceptance', command, async (session, flags) => {
        const report = await measureAcceptanceOf(session, flags.tokens ?? DEFAULT_ACCEPTANCE_TOKENS, flags.positions ?? DEFAULT_POSITIONS);
        if (flags.json) {
          process.stdout.write(JSON.stringify({ source: session.kind, target: session.locations.target, drafter: session.locations.drafter, ...report }) + '\n');
          return;
        }
        process.stdout.write(acceptanceText(report));
      });
    });
  // --target/--drafter channels: TLS and a bearer token like every client command's (its subcommands too).
  return addClientSecurityOptions(estimate);
}
