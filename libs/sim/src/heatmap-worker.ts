/**
 * Worker-thread entry of {@link runHeatmap} and {@link simulateOffThread}. A heatmap job computes its
 * cells and posts them back in batches (one message per ~20 ms of work, so progress stays smooth
 * without flooding the parent); a simulation job posts its one result.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { SimulationConfig } from './config';
import { HeatmapComputer, type HeatmapPoint, type HeatmapRow, type HeatmapSpec } from './heatmap';
import { simulateEvent } from './event';
import { simulate } from './simulate';

/** What a worker is asked to do. */
export type WorkerJob = { kind: 'heatmap'; spec: HeatmapSpec; points: HeatmapPoint[] } | { kind: 'simulate'; config: SimulationConfig };

const job = workerData as WorkerJob;
if (job.kind === 'simulate') {
  if (job.config.method === 'event') void simulateEvent(job.config).then((result) => parentPort!.postMessage(result));
  else parentPort!.postMessage(simulate(job.config));
} else {
  const computer = new HeatmapComputer(job.spec);
  let batch: HeatmapRow[] = [];
  let lastPost = Date.now();
  for (const point of job.points) {
    batch.push(computer.compute(point));
    const now = Date.now();
    if (now - lastPost >= 20) {
      parentPort!.postMessage(batch);
      batch = [];
      lastPost = now;
    }
  }
  parentPort!.postMessage(batch);
}
