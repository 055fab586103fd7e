/**
 * `dsi bench --suite plan`: plan, deploy what the plan says, measure. For six (a, c) configurations
 * the planner (event mode) picks the replica count and k from the latencies measured on this machine's
 * services; the benchmark then runs DSI on exactly that many synthetic target replicas at the planned
 * latencies and acceptance, at the recommended k and at every k in 1..8, over the plan's own prompts
 * (so the generated tokens are the plan's), and checks the two criteria of the planner: measured DSI
 * latency per token within 5% of the plan, recommended k within one step of the best measured k.
 */
import fs from 'node:fs';
import path from 'node:path';
import { acceptanceSlope, loadPrompt, planDeployment, planSvg, syntheticAgreement, type Plan, type PlanPair } from '@dsi/sim';
import { fixed } from '../options';
import type { SupervisedService } from '../supervisor';
import { cadenceOverheadMs, generateOnce, measuredTargetForwardMs, NO_SPIN, orchestratorClient, Stacks } from './bench-load';

/**
 * A synthetic drafter's time per token (its own model time) and the round trip of a Draft call (wall
 * time less the model time), over back-to-back one-token calls on one request, as DSI drafts.
 */
async function measuredDrafter(address: string): Promise<{ tokenMs: number; roundTripMs: number }> {
  const { credentials } = await import('@grpc/grpc-js');
  const { DraftRequest, DrafterServiceClient } = await import('@dsi/proto');
  const { callUnary } = await import('@dsi/rpc');
  const { quantiles } = await import('@dsi/core');
  const client = new DrafterServiceClient(address, credentials.createInsecure());
  try {
    const model: number[] = [];
    const trips: number[] = [];
    const prefix = [...Buffer.from('calibrate drafter', 'utf8')];
    for (let i = 0; i < 24; i++) {
      const start = performance.now();
      const response = await callUnary(client, 'draft', DraftRequest.fromPartial({ requestId: 'calibrate-plan', prefix, maxTokens: 1 }));
      const wall = performance.now() - start;
      prefix.push(response.tokens[0]);
      // The first call is the request's prefill (TTFT), not a token's cost.
      if (i === 0) continue;
      model.push(response.stats?.modelMs ?? 0);
      trips.push(Math.max(0, wall - (response.stats?.modelMs ?? 0)));
    }
    return { tokenMs: quantiles(model, [0.5])[0], roundTripMs: quantiles(trips, [0.5])[0] };
  } finally {
    client.close();
  }
}

/** Calibration requests whose median gives a configuration's Verify overhead. */
const VERIFY_CALIBRATION_RUNS = 3;

/** One (a, c) configuration: none of them an example the README quotes elsewhere. */
export interface PlanBenchConfig {
  a: number;
  c: number;
}

export const PLAN_BENCH_CONFIGS: readonly PlanBenchConfig[] = Object.freeze([
  { a: 0.6, c: 0.05 },
  { a: 0.72, c: 0.22 },
  { a: 0.85, c: 0.07 },
  { a: 0.92, c: 0.15 },
  { a: 0.66, c: 0.4 },
  { a: 0.95, c: 0.03 },
]);

export interface PlanBenchOptions {
  targetMs: number;
  tokens: number;
  prompts: number;
  maxReplicas: number;
  /** Lookaheads measured for the best k in hindsight. */
  lookaheads: number[];
  configs: readonly PlanBenchConfig[];
  outDir: string;
}

export const DEFAULT_PLAN_BENCH: Omit<PlanBenchOptions, 'outDir'> = {
  targetMs: 20,
  tokens: 300,
  prompts: 2,
  maxReplicas: 6,
  lookaheads: [1, 2, 3, 4, 5, 6, 7, 8],
  configs: PLAN_BENCH_CONFIGS,
};

export interface PlanBenchRow {
  a: number;
  c: number;
  drafter_ms: number;
  /** A Draft call's round trip, measured back to back (the target's is the result's round_trip_ms). */
  drafter_round_trip_ms: number;
  /** A Verify call's overhead at the target's cadence, calibrated again just before this configuration. */
  verify_round_trip_ms: number;
  replicas: number;
  planned_k: number;
  planned_dsi_ms_per_token: number;
  planned_si_ms_per_token: number;
  bound_ms_per_token: number;
  /**
   * Measured DSI latency per token (mean over the prompts) at each k on the planned replicas, each
   * generation corrected for its drafter agreement as the plan corrects its own (same tokens).
   */
  measured_dsi_ms_per_token: Record<string, number>;
  measured_si_ms_per_token: number;
  best_measured_k: number;
  /** The measured latency per token at the planned k without the correction. */
  measured_uncorrected_ms_per_token: number;
  measured_vs_plan: number;
  k_steps_from_best: number;
  pass: boolean;
  svg: string;
}

export interface PlanBenchResult {
  target_ms: number;
  target_forward_ms: number;
  round_trip_ms: number;
  tokens: number;
  prompts: number;
  rows: PlanBenchRow[];
  passed: number;
}

/** Runs the benchmark; every service it starts is stopped when it returns or throws. */
export async function planBench(options: PlanBenchOptions, log: (line: string) => void, signal: AbortSignal = new AbortController().signal): Promise<PlanBenchResult> {
  fs.mkdirSync(options.outDir, { recursive: true });
  const stacks = new Stacks(path.join(options.outDir, 'logs'));
  try {
    return await stacks.with('plan', async (supervisor) => {
      // Timer sleeps, as in the load benchmark (NO_SPIN): DSI keeps its drafter busy, and a drafter
      // polling the last 2 ms of every forward took up to a core of two, a CPU cost charged to DSI's
      // calls that neither the calibration (drafter idle) nor a GPU deployment has.
      const synthetic = (ms: number, extra: string[] = []) => ['--port', '0', '--backend', 'synthetic', '--synthetic-seed', '1', ...NO_SPIN, '--ttft-ms', String(ms), '--tpot-ms', String(ms), ...extra];
      const targets: SupervisedService[] = [];
      for (let i = 0; i < options.maxReplicas; i++) targets.push(await supervisor.start('target', synthetic(options.targetMs), `target-${i}`));
      const targetForwardMs = await measuredTargetForwardMs(targets[0].address);
      // The per-call overhead at this cadence: non-SI on one replica, wall per token less the forward.
      const calibrationDrafter = await supervisor.start('drafter', synthetic(0), 'calibration-drafter');
      const calibration = await supervisor.start('orchestrator', ['--port', '0', '--drafter', calibrationDrafter.address, '--targets', targets[0].address], 'calibration');
      const calibrationClient = await orchestratorClient(calibration.address);
      try {
        const roundTripMs = await cadenceOverheadMs(calibrationClient, options.tokens, targetForwardMs, signal);
        log(`  target forward ${fixed(targetForwardMs, 3)} ms (asked ${options.targetMs}), per-Verify overhead at this cadence ${fixed(roundTripMs, 3)} ms`);

        const rows: PlanBenchRow[] = [];
        for (const config of options.configs) {
          signal.throwIfAborted();
          const drafterMs = config.c * options.targetMs;
          // Each configuration's drafter and orchestrator live in their own stack, stopped after it.
          const row = await stacks.with(`a${config.a}-c${config.c}`, async (configStack) => {
          const drafter = await configStack.start('drafter', synthetic(drafterMs, ['--a', String(config.a)]), `drafter-a${config.a}-c${config.c}`);
          const { tokenMs: drafterTokenMs, roundTripMs: drafterRoundTripMs } = await measuredDrafter(drafter.address);
          // The Verify overhead drifts on this shared machine: calibrate it again now, median of three.
          const verifyRoundTripMs = await cadenceOverheadMs(calibrationClient, options.tokens, targetForwardMs, signal, VERIFY_CALIBRATION_RUNS);
          const pair: PlanPair = { a: config.a, targetMs: targetForwardMs, drafterMs: drafterTokenMs, drafterTtftMs: drafterMs, rttMs: verifyRoundTripMs, drafterRttMs: drafterRoundTripMs };
          const plan: Plan = await planDeployment(
            pair,
            { maxReplicas: options.maxReplicas, tokens: options.tokens, prompts: options.prompts, maxLookahead: Math.max(...options.lookaheads), signal },
          );
          const { replicas, lookahead } = plan.recommendation;
          const chosen = plan.rows[replicas - 1];
          const orchestrator = await configStack.start(
            'orchestrator',
            ['--port', '0', '--drafter', drafter.address, '--targets', targets.slice(0, replicas).map((t) => t.address).join(',')],
            `orchestrator-a${config.a}-c${config.c}`,
          );
          const client = await orchestratorClient(orchestrator.address);
          // Mean latency per token over the plan's prompts, each corrected as the plan corrects its own
          // generations: the services run the same oracle, so the tokens (and the drafter's agreement on
          // them) are the plan's; the correction brings a few hundred tokens' luck to the expectation.
          const raw: Record<string, number> = {};
          const perToken = async (wireMode: string, k: number) => {
            let sum = 0;
            let rawSum = 0;
            const mode = wireMode === 'MODE_SI' ? 'si' : 'dsi';
            for (let i = 0; i < options.prompts; i++) {
              const prompt = loadPrompt(1, i);
              const run = await generateOnce(client, wireMode, k, prompt, options.tokens, signal);
              const p = syntheticAgreement(1, config.a, prompt, run.tokens);
              rawSum += run.wallMs / run.tokens.length;
              sum += run.wallMs / run.tokens.length - acceptanceSlope(pair, mode, k) * (p - config.a);
            }
            raw[`${mode}${k}`] = rawSum / options.prompts;
            return sum / options.prompts;
          };
          try {
            // One warm-up generation: a fresh stack's first requests run slower.
            await generateOnce(client, 'MODE_DSI', lookahead, [...Buffer.from('warm up', 'utf8')], options.tokens, signal);
            const measured: Record<string, number> = {};
            for (const k of options.lookaheads) measured[k] = await perToken('MODE_DSI', k);
            const plannedMeasured = measured[lookahead] ?? (await perToken('MODE_DSI', lookahead));
            const si = await perToken('MODE_SI', chosen.si.lookahead);
            const bestK = options.lookaheads.reduce((best, k) => (measured[k] < measured[best] ? k : best), options.lookaheads[0]);
            const svgFile = path.join(options.outDir, `plan-a${config.a}-c${config.c}.svg`);
            fs.writeFileSync(svgFile, planSvg(plan));
            const row: PlanBenchRow = {
              a: config.a,
              c: config.c,
              drafter_ms: drafterTokenMs,
              drafter_round_trip_ms: drafterRoundTripMs,
              verify_round_trip_ms: verifyRoundTripMs,
              replicas,
              planned_k: lookahead,
              planned_dsi_ms_per_token: plan.recommendation.dsi_ms_per_token,
              planned_si_ms_per_token: chosen.si.ms_per_token,
              bound_ms_per_token: plan.bound_ms_per_token,
              measured_dsi_ms_per_token: measured,
              measured_si_ms_per_token: si,
              best_measured_k: bestK,
              measured_vs_plan: plannedMeasured / plan.recommendation.dsi_ms_per_token,
              measured_uncorrected_ms_per_token: raw[`dsi${lookahead}`],
              k_steps_from_best: Math.abs(lookahead - bestK),
              pass: false,
              svg: svgFile,
            };
            row.pass = Math.abs(row.measured_vs_plan - 1) <= 0.05 && row.k_steps_from_best <= 1;
            log(
              `  a=${config.a} c=${config.c} (drafter ${fixed(drafterTokenMs, 3)} ms/token, ${fixed(drafterRoundTripMs, 3)} ms per Draft call, ${fixed(verifyRoundTripMs, 3)} per Verify): plan ${replicas} replicas k=${lookahead} ${fixed(row.planned_dsi_ms_per_token, 3)} ms/token; measured ${fixed(plannedMeasured, 3)} (${fixed(row.measured_vs_plan, 3)}x), best measured k=${bestK}; ${row.pass ? 'pass' : 'FAIL'}`,
            );
            return row;
          } finally {
            client.close();
          }
          });
          rows.push(row);
        }
        return {
          target_ms: options.targetMs,
          target_forward_ms: targetForwardMs,
          round_trip_ms: roundTripMs,
          tokens: options.tokens,
          prompts: options.prompts,
          rows,
          passed: rows.filter((r) => r.pass).length,
        };
      } finally {
        calibrationClient.close();
      }
    });
  } finally {
    await stacks.stopAll(2_000);
  }
}

/** The human report: one line per configuration, measured beside planned. */
export function planBenchReport(result: PlanBenchResult): string[] {
  const lines = [
    '',
    `plan, deploy, measure (synthetic targets ${result.target_ms} ms/forward, measured ${fixed(result.target_forward_ms, 3)}; per-Verify overhead ${fixed(result.round_trip_ms, 3)} ms; ${result.tokens}-token greedy generations, mean of ${result.prompts} prompts; ms/token, measured figures corrected for the prompts' drafter agreement as the plan corrects its own; raw: uncorrected)`,
    `${'a'.padStart(5)} ${'c'.padStart(5)} ${'R'.padStart(3)} ${'k'.padStart(3)} ${'plan'.padStart(8)} ${'measured'.padStart(9)} ${'meas/plan'.padStart(9)} ${'raw'.padStart(7)} ${'best k'.padStart(7)} ${'SI plan'.padStart(8)} ${'SI meas'.padStart(8)} ${'bound'.padStart(7)}  k=1..8 measured`,
  ];
  for (const r of result.rows) {
    lines.push(
      `${String(r.a).padStart(5)} ${String(r.c).padStart(5)} ${String(r.replicas).padStart(3)} ${String(r.planned_k).padStart(3)} ${fixed(r.planned_dsi_ms_per_token, 3).padStart(8)} ${fixed(r.measured_dsi_ms_per_token[r.planned_k], 3).padStart(9)} ${fixed(r.measured_vs_plan, 3).padStart(9)} ${fixed(r.measured_uncorrected_ms_per_token, 3).padStart(7)} ${String(r.best_measured_k).padStart(7)} ${fixed(r.planned_si_ms_per_token, 3).padStart(8)} ${fixed(r.measured_si_ms_per_token, 3).padStart(8)} ${fixed(r.bound_ms_per_token, 3).padStart(7)}  ${Object.values(r.measured_dsi_ms_per_token)
        .map((v) => fixed(v, 2))
        .join(' ')}${r.pass ? '' : '  FAIL'}`,
    );
  }
  lines.push(`${result.passed}/${result.rows.length} configurations: measured DSI within 5% of the plan and the planned k within one step of the best measured k`);
  return lines;
}
