/**
 * Text sizes without a font engine: an estimate good enough to decide whether a label fits (in a bar,
 * on a line) before writing it.
 */

/** Average glyph width of Helvetica/Arial as a fraction of the font size (digits and lower case). */
export const GLYPH_WIDTH = 0.6;

/** Estimated width in pixels of `text` at `fontSize`; use it to check that a label fits before drawing it. */
export function textWidth(text: string, fontSize: number): number {
  return text.length * fontSize * GLYPH_WIDTH;
}

/** `text` cut to at most `max` characters, ending in an ellipsis when cut (for labels of a fixed column). */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}\u2026`;
}
