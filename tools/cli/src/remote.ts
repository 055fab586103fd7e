/**
 * Calls to a running simulator service. Loaded lazily: importing it loads @grpc/grpc-js, which must
 * happen after telemetry starts in processes that trace.
 */
import { credentials, status } from '@grpc/grpc-js';
import { GenerateRequest, HeatmapRequest, OrchestratorServiceClient, SimulatorServiceClient, type GenerateResponse } from '@dsi/proto';
import { callUnary, createChannelOptions, DsiError } from '@dsi/rpc';
import type { HeatmapRow, HeatmapSpec, SimulationConfig, SimulationResult } from '@dsi/sim';
import { configToWire, methodToWire, resultFromWire, rowFromWire } from '@dsi/simulator-service';
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

/** Streams a heatmap's cells from the service at `address`, in completion order; resolves in grid order. */
export async function heatmapRemote(
  address: string,
  spec: HeatmapSpec,
  onRow: (row: HeatmapRow, done: number, total: number) => void,
  signal?: AbortSignal,
): Promise<HeatmapRow[]> {
  const simulator = client(address);
  const request = HeatmapRequest.fromPartial({ ...spec, method: methodToWire(spec.method) });
  const stream = simulator.heatmap(request);
  const onAbort = () => stream.cancel();
  signal?.addEventListener('abort', onAbort, { once: true });
  const rows: HeatmapRow[] = [];
  try {
    for await (const message of stream as AsyncIterable<{ cell?: Parameters<typeof rowFromWire>[0]; done: number; total: number }>) {
      if (!message.cell) continue;
      const row = rowFromWire(message.cell);
      rows.push(row);
      onRow(row, message.done, message.total);
    }
  } catch (error) {
    throw explain(address, error);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    simulator.close();
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
