/**
 * Calls to a running simulator service. Loaded lazily: importing it loads @grpc/grpc-js, which must
 * happen after telemetry starts in processes that trace.
 */
import { credentials, status } from '@grpc/grpc-js';
import { GenerateRequest, HeatmapRequest, OrchestratorServiceClient, SimulatorServiceClient, type GenerateResponse } from '@dsi/proto';
import { callUnary, createChannelOptions, DsiError } from '@dsi/rpc';
import type { HeatmapRow, HeatmapSpec, SimulationConfig, SimulationResult } from '@dsi/sim';
import { configToWire, methodToWire, resultFromWire, rowFromWire } from '@dsi/wire';
import { UsageError } from './errors';

function client(address: string): SimulatorServiceClient {
  return new SimulatorServiceClient(address, credentials.createInsecure(), createChannelOptions());
}

/** A service's INVALID_ARGUMENT is the user's mistake (exit 2); anything else names the service. */
export function explainService(service: string, address: string, reason: unknown): Error {
  const error = DsiError.from(reason);
  if (error.code === status.INVALID_ARGUMENT) return new UsageError(error.rawMessage);
  return new Error(`${service} at ${address}: ${error.message}`, { cause: error });
}

function explain(address: string, reason: unknown): Error {
  return explainService('simulator', address, reason);
}

/** Runs one simulation on the service at `address`. */
export async function simulateRemote(address: string, partial: Partial<SimulationConfig>): Promise<SimulationResult> {
  const simulator = client(address);
  try {
    const response = await callUnary(simulator, 'simulate', { config: configToWire(partial) }, { deadlineMs: 60_000 });
    return resultFromWire(response);
  } catch (error) {
    throw explain(address, error);
  } finally {
    simulator.close();
  }
}

/**
 * Streams a heatmap's cells from simulator services. With several addresses the sweep is sharded:
 * replica i computes the cells whose index mod N is i, all at once, and progress counts every shard.
 * Resolves with the rows in grid order; any shard failing cancels the others.
 */
export async function heatmapRemote(
  addresses: string | readonly string[],
  spec: HeatmapSpec,
  onRow: (row: HeatmapRow, done: number, total: number) => void,
  signal?: AbortSignal,
): Promise<HeatmapRow[]> {
  const list = typeof addresses === 'string' ? [addresses] : addresses;
  const totals = new Array<number>(list.length).fill(0);
  const rows: HeatmapRow[] = [];
  const abort = new AbortController();
  const onAbort = () => abort.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  const shard = async (address: string, index: number) => {
    const simulator = client(address);
    const request = HeatmapRequest.fromPartial({ ...spec, method: methodToWire(spec.method), shardIndex: index, shardCount: list.length });
    const stream = simulator.heatmap(request);
    const cancel = () => stream.cancel();
    abort.signal.addEventListener('abort', cancel, { once: true });
    try {
      for await (const message of stream as AsyncIterable<{ cell?: Parameters<typeof rowFromWire>[0]; done: number; total: number }>) {
        totals[index] = message.total;
        if (!message.cell) continue;
        const row = rowFromWire(message.cell);
        rows.push(row);
        onRow(row, rows.length, totals.reduce((sum, t) => sum + t, 0));
      }
    } catch (error) {
      abort.abort(error);
      throw explain(address, error);
    } finally {
      abort.signal.removeEventListener('abort', cancel);
      simulator.close();
    }
  };
  try {
    await Promise.all(list.map(shard));
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  return rows.sort((x, y) => x.index - y.index);
}

/** Runs one generation on the orchestrator at `address`. */
export async function generateRemote(address: string, params: Record<string, unknown>, signal?: AbortSignal): Promise<GenerateResponse> {
  const orchestrator = new OrchestratorServiceClient(address, credentials.createInsecure(), createChannelOptions());
  try {
    // Params in the proto JSON form (enum names), as grpcurl takes them.
    return await callUnary(orchestrator, 'generate', GenerateRequest.fromJSON({ params }), { signal, deadlineMs: 600_000 });
  } catch (error) {
    throw explainService('orchestrator', address, error);
  } finally {
    orchestrator.close();
  }
}
