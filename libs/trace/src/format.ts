/*
 * Numbers as the summary, the tooltips and the page write them.
 */

/** Milliseconds with about three significant digits (`130`, `42.0`, `1.25`). */
export function ms(value: number): string {
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

/** A fraction as a whole percentage (`0.61` -> `61%`). */
export function pct(value: number): string {
  return `${(value * 100).toFixed(0)}%`;
}
