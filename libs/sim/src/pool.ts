import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { SimulationConfig } from './config';
import { heatmapGrid, type HeatmapRow, type HeatmapSpec } from './heatmap';
import type { WorkerJob } from './heatmap-worker';
import type { SimulationResult } from './simulate';

/** How {@link runHeatmap} spreads and reports its work. */
export interface HeatmapRunOptions {
  /** Worker threads; default: the machine's available parallelism. */
  threads?: number;
  /** Compute only cells whose grid index mod `count` is `index` (to spread a sweep over processes). */
  shard?: { index: number; count: number };
  /** Stops the workers; the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called for every finished cell, in completion order. */
  onRow?: (row: HeatmapRow, done: number, total: number) => void;
}

/**
 * Thrown when a simulator worker thread (a heatmap sweep's or an off-thread simulation's) cannot start,
 * fails or exits abnormally; the message says which job and carries the worker's error as `cause`.
 */
export class SimulationWorkerError extends Error {
  override readonly name = 'SimulationWorkerError';
}

function workerFile(): string {
  // Compiled code sits beside its worker; under ts-jest-like runners (sources) use the built copy.
  const beside = path.join(__dirname, 'heatmap-worker.js');
  if (fs.existsSync(beside)) return beside;
  const built = path.join(__dirname, '../dist/heatmap-worker.js');
  if (fs.existsSync(built)) return built;
  throw new SimulationWorkerError(`simulator worker not found at ${beside} or ${built}: build libs/sim first`);
}

/**
 * Computes the valid cells of a heatmap on worker threads, never blocking the caller's event loop.
 * Resolves with the rows in grid order.
 */
export async function runHeatmap(spec: HeatmapSpec, options: HeatmapRunOptions = {}): Promise<HeatmapRow[]> {
  const shard = options.shard ?? { index: 0, count: 1 };
  const points = heatmapGrid(spec).filter((p) => p.index % shard.count === shard.index);
  const total = points.length;
  const rows: HeatmapRow[] = [];
  if (total === 0) return rows;
  options.signal?.throwIfAborted();
  const threads = Math.max(1, Math.min(options.threads ?? os.availableParallelism(), total));
  const file = workerFile();
  const workers: Worker[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      let running = threads;
      const fail = (error: unknown) => {
        for (const w of workers) void w.terminate();
        reject(error);
      };
      const onAbort = () => fail(options.signal?.reason);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      for (let w = 0; w < threads; w++) {
        // Interleave so that every worker gets a similar mix of cheap and expensive cells.
        const share = points.filter((_, i) => i % threads === w);
        const job: WorkerJob = { kind: 'heatmap', spec, points: share };
        const worker = new Worker(file, { workerData: job });
        workers.push(worker);
        worker.on('message', (batch: HeatmapRow[]) => {
          for (const row of batch) {
            rows.push(row);
            options.onRow?.(row, rows.length, total);
          }
        });
        worker.on('error', (error) => fail(new SimulationWorkerError(`heatmap worker failed: ${error.message}`, { cause: error })));
        worker.on('exit', (code) => {
          if (code !== 0) return fail(new SimulationWorkerError(`heatmap worker exited with code ${code}`));
          running -= 1;
          if (running === 0) {
            options.signal?.removeEventListener('abort', onAbort);
            resolve();
          }
        });
      }
    });
  } finally {
    for (const w of workers) void w.terminate();
  }
  return rows.sort((x, y) => x.index - y.index);
}

/**
 * Runs {@link simulate} on a worker thread, so a long simulation never blocks a server's event loop
 * (health checks and other calls keep being answered). Rejects with the signal's reason when aborted.
 */
export function simulateOffThread(config: SimulationConfig, signal?: AbortSignal): Promise<SimulationResult> {
  signal?.throwIfAborted();
  const job: WorkerJob = { kind: 'simulate', config };
  const worker = new Worker(workerFile(), { workerData: job });
  return new Promise<SimulationResult>((resolve, reject) => {
    const onAbort = () => {
      void worker.terminate();
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.once('message', (result: SimulationResult) => resolve(result));
    worker.once('error', (error) => reject(new SimulationWorkerError(`simulation worker failed: ${error.message}`, { cause: error })));
    worker.once('exit', (code) => {
      signal?.removeEventListener('abort', onAbort);
      if (code !== 0) reject(new SimulationWorkerError(`simulation worker exited with code ${code}`));
    });
  });
}
