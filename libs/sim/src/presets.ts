/**
 * GPU latency presets for the planner, built from the H200 measurements in `shared/data`
 * (`h200-forward-latency.csv`, measured 2026-11-26: PyTorch 2.11 eager, bf16, batch 1, 512-token
 * prompt; medians of 20 runs). The table is copied here so a clean clone plans without that folder;
 * a test checks it against the CSV whenever the CSV is present.
 */

/** One model shape's forward latencies on one H200 (ms). */
export interface GpuShape {
  name: string;
  params: number;
  /** Forward over the 512-token prompt: the time to first token. */
  prefill512: number;
  /** Forward over N new tokens with a 512-token KV cache (N = 1 is one decode step). */
  fwd1: number;
  fwd4: number;
  fwd8: number;
  fwd16: number;
  /** Weights bytes / 4.3 TB/s: the memory-bound floor of a decode step a tuned engine approaches. */
  bandwidthFloorFwd1: number;
}

/** `h200-forward-latency.csv`, row for row. */
export const H200_SHAPES: readonly GpuShape[] = Object.freeze([
  { name: 'vicuna-68m', params: 68030208, prefill512: 3.57, fwd1: 2.62, fwd4: 2.13, fwd8: 2.97, fwd16: 2.06, bandwidthFloorFwd1: 0.03 },
  { name: 'qwen2.5-0.5b', params: 494032768, prefill512: 16.51, fwd1: 16.34, fwd4: 17.8, fwd8: 21.36, fwd16: 19.59, bandwidthFloorFwd1: 0.23 },
  { name: 'llama3.2-1b', params: 1235814400, prefill512: 11.81, fwd1: 10.93, fwd4: 13.25, fwd8: 12.6, fwd16: 12.47, bandwidthFloorFwd1: 0.57 },
  { name: 'llama2-7b', params: 6738415616, prefill512: 34.77, fwd1: 20.47, fwd4: 21.97, fwd8: 22.21, fwd16: 21.7, bandwidthFloorFwd1: 3.13 },
  { name: 'qwen2.5-7b', params: 7615616512, prefill512: 19.36, fwd1: 18.57, fwd4: 21.51, fwd8: 21.65, fwd16: 21.5, bandwidthFloorFwd1: 3.54 },
  { name: 'llama3.1-8b', params: 8030261248, prefill512: 20.73, fwd1: 20.57, fwd4: 23.85, fwd8: 24.7, fwd16: 25.3, bandwidthFloorFwd1: 3.74 },
  { name: 'llama2-13b', params: 13015864320, prefill512: 43.46, fwd1: 26.13, fwd4: 26.52, fwd8: 26.74, fwd16: 26.65, bandwidthFloorFwd1: 6.05 },
  { name: 'llama3.1-70b', params: 70553706496, prefill512: 135.43, fwd1: 51.18, fwd4: 59.79, fwd8: 89.65, fwd16: 58.8, bandwidthFloorFwd1: 32.82 },
]);

/** A pair's latencies, as the planner takes them (ms). */
export interface PresetLatencies {
  name: string;
  description: string;
  targetMs: number;
  targetTtftMs: number;
  drafterMs: number;
  drafterTtftMs: number;
  verifyMsPerToken: number;
}

/** A preset name that names no pair; `known` lists the valid ones. */
export class UnknownPresetError extends Error {
  override readonly name = 'UnknownPresetError';
  constructor(
    readonly preset: string,
    readonly known: readonly string[],
  ) {
    super(`unknown preset "${preset}" (known: ${known.join(', ')})`);
  }
}

/** Targets a preset may name (a drafter may be any smaller shape). */
const TARGETS = ['llama3.1-70b', 'llama2-13b', 'llama2-7b', 'llama3.1-8b', 'qwen2.5-7b'];

/**
 * Every preset name: `h200/<target>/<drafter>` uses the eager measurements (decode = fwd1, prefill =
 * prefill512, verifying k drafts costs fwd1 + k (fwd16 - fwd1) / 15); `h200-floor/<target>/<drafter>`
 * puts both decode steps at their bandwidth floor (what a tuned engine approaches), the same prefill
 * and per-token verify cost. Drafters are the shapes with fewer parameters than the target.
 */
export function presetNames(): string[] {
  const names: string[] = [];
  for (const kind of ['h200', 'h200-floor']) {
    for (const target of TARGETS) {
      const t = H200_SHAPES.find((s) => s.name === target)!;
      for (const d of H200_SHAPES) if (d.params < t.params) names.push(`${kind}/${target}/${d.name}`);
    }
  }
  return names;
}

/** The latencies of a preset (see {@link presetNames}); throws {@link UnknownPresetError}. */
export function presetLatencies(name: string): PresetLatencies {
  const [kind, targetName, drafterName, ...rest] = name.split('/');
  const target = H200_SHAPES.find((s) => s.name === targetName);
  const drafter = H200_SHAPES.find((s) => s.name === drafterName);
  if (rest.length || (kind !== 'h200' && kind !== 'h200-floor') || !target || !drafter || !TARGETS.includes(target.name) || drafter.params >= target.params) {
    throw new UnknownPresetError(name, presetNames());
  }
  const floor = kind === 'h200-floor';
  const decode = (s: GpuShape) => (floor ? s.bandwidthFloorFwd1 : s.fwd1);
  return {
    name,
    description: `${target.name} target, ${drafter.name} drafter on one H200 each (${floor ? 'decode at the bandwidth floor' : 'eager PyTorch, measured'})`,
    targetMs: decode(target),
    targetTtftMs: target.prefill512,
    drafterMs: decode(drafter),
    drafterTtftMs: drafter.prefill512,
    verifyMsPerToken: Math.max(0, (target.fwd16 - target.fwd1) / 15),
  };
}
