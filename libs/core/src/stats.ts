/**
 * Small summary statistics shared by the simulator's load figures and the benchmarks, so a prediction
 * and a measurement compute their percentiles the same way. Pure functions of a list of numbers; the
 * input is never modified.
 */

/** Thrown when a statistic is asked of an empty list or with a quantile outside [0, 1]. */
export class StatisticsError extends RangeError {
  override readonly name = 'StatisticsError';
}

function requireValues(values: readonly number[], statistic: string): void {
  if (values.length === 0) throw new StatisticsError(`the ${statistic} of an empty list is undefined`);
}

/** The arithmetic mean; throws a {@link StatisticsError} for an empty list. */
export function mean(values: readonly number[]): number {
  requireValues(values, 'mean');
  let sum = 0;
  for (const value of values) sum += value;
  return sum / values.length;
}

/** Quantile `q` of values already sorted ascending (linear interpolation between the closest ranks). */
function sortedQuantile(sorted: readonly number[], q: number): number {
  const position = (sorted.length - 1) * q;
  const below = Math.floor(position);
  const above = Math.min(below + 1, sorted.length - 1);
  const fraction = position - below;
  return fraction === 0 ? sorted[below] : sorted[below] + (sorted[above] - sorted[below]) * fraction;
}

function requireQuantile(q: number): void {
  if (!(q >= 0 && q <= 1)) throw new StatisticsError(`quantile q=${q} is outside [0, 1]`);
}

/**
 * The quantiles `qs` (each in [0, 1]: 0.5 the median, 0.99 the p99) of `values`, sorting once. Uses
 * linear interpolation between the closest ranks (numpy's default, spreadsheets' PERCENTILE.INC): the
 * q-quantile of n sorted values sits at rank (n - 1) q. Throws a {@link StatisticsError} for an empty
 * list or a q outside [0, 1].
 */
export function quantiles(values: readonly number[], qs: readonly number[]): number[] {
  requireValues(values, 'quantile');
  qs.forEach(requireQuantile);
  const sorted = [...values].sort((x, y) => x - y);
  return qs.map((q) => sortedQuantile(sorted, q));
}

/** One quantile (q in [0, 1]) of `values`; see {@link quantiles}. */
export function quantile(values: readonly number[], q: number): number {
  return quantiles(values, [q])[0];
}

/** The p-th percentile (p in [0, 100]: 99 is p99) of `values`; see {@link quantiles}. */
export function percentile(values: readonly number[], p: number): number {
  return quantile(values, p / 100);
}

/** The median: the middle value, or the mean of the two middle values of an even-length list. */
export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}
