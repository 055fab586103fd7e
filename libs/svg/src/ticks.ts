/**
 * Axis ticks: a round step for a numeric axis (1, 2 or 5 times a power of ten), the tick values it
 * gives, their labels, and which categories of a categorical axis to label when they do not all fit.
 */

/**
 * A round step (1, 2 or 5 times a power of ten) that cuts `range` into about `target` intervals; 1 for
 * an empty or invalid range. Use it to place grid lines a reader can add up.
 */
export function niceStep(range: number, target: number): number {
  if (!(range > 0)) return 1;
  const raw = range / Math.max(1, target);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * magnitude;
}

/**
 * The ticks `from`, `from + step`, ... up to `to` (inclusive, allowing for rounding: the last tick is
 * kept when accumulated error puts it a hair past `to`).
 */
export function tickValues(from: number, to: number, step: number): number[] {
  const ticks: number[] = [];
  for (let value = from; value <= to + step * 1e-9; value += step) ticks.push(value);
  return ticks;
}

/** A tick's label with as many decimals as the step needs (none for steps of 1 and up, at most 6). */
export function tickLabel(value: number, step: number): string {
  const digits = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step)));
  return value.toFixed(digits);
}

/** Every how many categories to write a label so that at most about `maxLabels` of `count` are written. */
export function labelStride(count: number, maxLabels: number): number {
  return Math.max(1, Math.ceil(count / maxLabels));
}

/**
 * Indices of the categories `0 .. count - 1` to label: every `stride`-th one and the last, so both
 * ends of a categorical axis are always named.
 */
export function labelledIndices(count: number, stride: number): number[] {
  const indices: number[] = [];
  for (let i = 0; i < count; i++) if (i % stride === 0 || i === count - 1) indices.push(i);
  return indices;
}
