/**
 * Small helpers shared by the hand-written SVG writers (the simulator's heatmap panels, the trace
 * timeline): escaping, coordinates, axis ticks and text width. No dependencies, no I/O.
 */
export { coord, escapeXml, svgOpenTag } from './markup';
export { labelledIndices, labelStride, niceStep, tickLabel, tickValues } from './ticks';
export { GLYPH_WIDTH, textWidth, truncate } from './text';
