export * from './errors';
export * from './main';
export { writeHeatmap, type HeatmapReport } from './commands/heatmap';
export { formatSimulation, simulationJson } from './commands/simulate';
export { startService, StackStartError, type StackService } from './stack';
