/**
 * Worker-thread entry of {@link runHeatmap}: computes the cells it is given and posts them back in
 * batches (one message per ~20 ms of work, so progress stays smooth without flooding the parent).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { HeatmapComputer, type HeatmapPoint, type HeatmapRow, type HeatmapSpec } from './heatmap';

interface Job {
  spec: HeatmapSpec;
  points: HeatmapPoint[];
}

const { spec, points } = workerData as Job;
const computer = new HeatmapComputer(spec);
let batch: HeatmapRow[] = [];
let lastPost = Date.now();
for (const point of points) {
  batch.push(computer.compute(point));
  const now = Date.now();
  if (now - lastPost >= 20) {
    parentPort!.postMessage(batch);
    batch = [];
    lastPost = now;
  }
}
parentPort!.postMessage(batch);
