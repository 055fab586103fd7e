import { predictSynthetic, requiredServers } from '@dsi/sim';
import { fixed } from '../options';
import { startService, type StackService } from '../stack';
import { measuredDraftTokenMs, measuredTargetForwardMs } from './bench-load';

/** One configuration of the online benchmark, measured and predicted. */
export interface OnlineBenchRow {
  c: number;
  a: number;
  k: number;
  servers: number;
  wall_ms: { nonsi: number; si: number; dsi: number };
  predicted_ms: { nonsi: number; si: number; dsi: number };
  speedup: { dsi_vs_si: number; dsi_vs_nonsi: number };
  measured_vs_predicted: { nonsi: number; si: number; dsi: number };
}

const TARGET_MS = 50;

const LOOKAHEADS = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20];

/**
 * The online benchmark: real services on loopback with the synthetic backend (target 50 ms per
 * forward), for c in {0.05, 0.1, 0.3} and a in {0.5, 0.7, 0.9}. For each pair: the lookahead k that
 * event mode predicts best among those needing at most 7 servers, servers = ceil(1/(k c)); then
 * non-SI, SI and DSI measured side by side, each against its event-mode prediction (the same
 * scheduler and replica logic on a virtual clock with the same oracle seed and prompts, so the same
 * tokens; the per-call overhead measured here is the only calibrated figure).
 */
export async function onlineBench(
  tokens: number,
  log: (line: string) => void,
): Promise<{ overheadMs: number; cadenceOverheadMs: number; targetForwardMs: number; rows: OnlineBenchRow[] }> {
  const services: StackService[] = [];
  const stop = async (service: StackService) => {
    services.splice(services.indexOf(service), 1);
    await service.stop();
  };
  try {
    const { generateRemote } = await import('../remote');
    const ms = String(TARGET_MS);
    const targets = await Promise.all(
      Array.from({ length: 7 }, () => startService('target', ['--port', '0', '--backend', 'synthetic', '--ttft-ms', ms, '--tpot-ms', ms])),
    );
    services.push(...targets);

    // Per-call overhead (scheduling, RPC, service): non-SI against a zero-latency target.
    const instant = await startService('target', ['--port', '0', '--backend', 'synthetic']);
    services.push(instant);
    const instantDrafter = await startService('drafter', ['--port', '0', '--backend', 'synthetic']);
    services.push(instantDrafter);
    const probe = await startService('orchestrator', ['--port', '0', '--drafter', instantDrafter.address, '--targets', instant.address]);
    services.push(probe);
    const params = (mode: string, extra: object = {}) => ({ prompt: 'bench', mode, maxNewTokens: tokens, sampling: { rule: 'VERIFICATION_RULE_GREEDY' }, ...extra });
    await generateRemote(probe.address, params('MODE_NON_SI'));
    const probeRun = await generateRemote(probe.address, params('MODE_NON_SI'));
    const overheadMs = (probeRun.metrics?.wallMs ?? 0) / tokens;
    log(`  overhead per verification (scheduling + RPC + service), non-SI on a 0 ms target: ${fixed(overheadMs, 3)} ms`);
    for (const s of [probe, instantDrafter, instant]) await stop(s);
    const targetForwardMs = await measuredTargetForwardMs(targets[0].address);
    // At a 50 ms cadence a call costs more than back to back (idle processes wake up slower): calibrate
    // the prediction's per-call overhead with one non-SI request on another prompt.
    const calibrationDrafter = await startService('drafter', ['--port', '0', '--backend', 'synthetic']);
    services.push(calibrationDrafter);
    const calibration = await startService('orchestrator', ['--port', '0', '--drafter', calibrationDrafter.address, '--targets', targets[0].address]);
    services.push(calibration);
    const calibrationRun = await generateRemote(calibration.address, { ...params('MODE_NON_SI'), prompt: 'calibration' });
    const cadenceOverheadMs = (calibrationRun.metrics?.wallMs ?? 0) / tokens - targetForwardMs;
    for (const s of [calibration, calibrationDrafter]) await stop(s);
    log(`  measured: target forward ${fixed(targetForwardMs, 3)} ms (asked for ${TARGET_MS}), per-call overhead at this cadence ${fixed(cadenceOverheadMs, 3)} ms`);

    const rows: OnlineBenchRow[] = [];
    const prompts = ['bench one', 'bench two'].map((text) => [...Buffer.from(text, 'utf8')]);
    const modes = [['MODE_NON_SI', 'nonsi'], ['MODE_SI', 'si'], ['MODE_DSI', 'dsi']] as const;
    for (const c of [0.05, 0.1, 0.3]) {
      for (const a of [0.5, 0.7, 0.9]) {
        const stack = { seed: 1, a, drafterMs: c * TARGET_MS, targetMs: TARGET_MS, overheadMs: cadenceOverheadMs };
        // The best valid k: the one event mode predicts fastest for DSI among those needing <= 7 servers.
        let best: { k: number; servers: number; dsiMs: number } | undefined;
        for (const k of LOOKAHEADS) {
          const servers = requiredServers(1, k, c);
          if (servers > 7) continue;
          let dsiMs = 0;
          for (const prompt of prompts) dsiMs += (await predictSynthetic({ ...stack, servers }, 'dsi', prompt, tokens, k)).wallMs;
          if (!best || dsiMs < best.dsiMs) best = { k, servers, dsiMs };
        }
        const { k, servers } = best!;
        const drafterMs = String(c * TARGET_MS);
        const drafter = await startService('drafter', ['--port', '0', '--backend', 'synthetic', '--a', String(a), '--ttft-ms', drafterMs, '--tpot-ms', drafterMs]);
        services.push(drafter);
        // Calibrate the prediction with this machine's real forward times (timer lateness included).
        const calibrated = { ...stack, servers, drafterMs: await measuredDraftTokenMs(drafter.address), targetMs: targetForwardMs };
        const orchestrator = await startService('orchestrator', [
          '--port', '0', '--drafter', drafter.address, '--targets', targets.slice(0, servers).map((t) => t.address).join(','),
        ]);
        services.push(orchestrator);
        const wall = { nonsi: 0, si: 0, dsi: 0 };
        const predicted = { nonsi: 0, si: 0, dsi: 0 };
        for (const prompt of prompts) {
          for (const [wireMode, mode] of modes) {
            const response = await generateRemote(orchestrator.address, { ...params(wireMode, { lookahead: k }), prompt: '', promptTokens: prompt });
            const prediction = await predictSynthetic(calibrated, mode, prompt, tokens, k);
            if (JSON.stringify(prediction.tokens) !== JSON.stringify(response.tokens)) throw new Error('the prediction and the run produced different tokens');
            wall[mode] += response.metrics?.wallMs ?? 0;
            predicted[mode] += prediction.wallMs;
          }
        }
        const row: OnlineBenchRow = {
          c,
          a,
          k,
          servers,
          wall_ms: wall,
          predicted_ms: predicted,
          speedup: { dsi_vs_si: wall.si / wall.dsi, dsi_vs_nonsi: wall.nonsi / wall.dsi },
          measured_vs_predicted: { nonsi: wall.nonsi / predicted.nonsi, si: wall.si / predicted.si, dsi: wall.dsi / predicted.dsi },
        };
        rows.push(row);
        log(
          `  c=${c} a=${a} k=${k} servers=${servers}: DSI/SI ${fixed(row.speedup.dsi_vs_si, 2)}x, DSI/non-SI ${fixed(row.speedup.dsi_vs_nonsi, 2)}x, ` +
            `measured/predicted non-SI ${fixed(row.measured_vs_predicted.nonsi, 3)} SI ${fixed(row.measured_vs_predicted.si, 3)} DSI ${fixed(row.measured_vs_predicted.dsi, 3)}`,
        );
        await stop(orchestrator);
        await stop(drafter);
      }
    }
    return { overheadMs, cadenceOverheadMs, targetForwardMs, rows };
  } finally {
    await Promise.all(services.map((s) => s.stop()));
  }
}
