/**
 * Writing SVG markup by hand: escape every string interpolated into text or an attribute, round
 * coordinates so the documents stay small and stable, and open a document the same way everywhere.
 */

/**
 * Escapes text for XML content and double-quoted attributes. Call it on every string that reaches
 * markup and was not written by the drawing code itself (titles, labels, names from a span file).
 */
export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * A coordinate rounded to a tenth of a pixel, as text: finer than any screen shows, and it keeps
 * floating-point noise (`12.300000000000001`) out of the document.
 */
export function coord(value: number): string {
  return String(Math.round(value * 10) / 10);
}

/** The opening `<svg>` tag of a standalone document `width` x `height` pixels, in the house font. */
export function svgOpenTag(width: number, height: number): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`;
}
