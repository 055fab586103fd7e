/**
 * Calls to a running simulator service. Loaded lazily: importing it loads @grpc/grpc-js, which must
 * happen after telemetry starts in processes that trace.
 */
import { type ChannelCredentials, Metadata, status } from '@grpc/grpc-js';
import { GenerateRequest, HeatmapRequest, OrchestratorServiceClient, SimulatorServiceClient, type GenerateResponse } from '@dsi/proto';
import { callUnary, clientCredentials, configureTls, createChannelOptions, DsiError, explainConnectionFailure, statusCodeName, tlsSettings } from '@dsi/rpc';
import type { HeatmapRow, HeatmapSpec, SimulationConfig, SimulationResult } from '@dsi/sim';
import { configToWire, methodToWire, resultFromWire, rowFromWire } from '@dsi/wire';
import { UsageError } from './errors';
import { clientSecurity } from './options';

let tlsConfigured = false;

/**
 * The credentials of this command's channels to DSI services: TLS as its flags (or DSI_TLS_*) say,
 * configured for the process on first use; plaintext without them.
 */
export function channelCredentials(): ChannelCredentials {
  if (!tlsConfigured) {
    tlsConfigured = true;
    if (!tlsSettings()) configureTls(clientSecurity().tls);
  }
  return clientCredentials();
}

/** Metadata of this command's calls: `authorization: Bearer <token>` when it has a token (--auth-token-file, DSI_AUTH_TOKEN). */
export function callMetadata(): Metadata {
  const metadata = new Metadata();
  const { token } = clientSecurity();
  if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

function client(address: string): SimulatorServiceClient {
  return new SimulatorServiceClient(address, channelCredentials(), createChannelOptions());
}

/**
 * A service's INVALID_ARGUMENT is the user's mistake (exit 2); anything else names the service. A
 * connection that failed (UNAVAILABLE "cannot connect to ADDRESS: ...", see `explainConnectionFailure`)
 * reads `SERVICE at ADDRESS: [unavailable] CAUSE`.
 */
export function explainService(service: string, address: string, reason: unknown): Error {
  const error = DsiError.from(reason);
  if (error.code === status.INVALID_ARGUMENT) return new UsageError(error.rawMessage);
  const connect = `cannot connect to ${address}: `;
  const message = error.rawMessage.startsWith(connect) ? `[${statusCodeName(error.code)}] ${error.rawMessage.slice(connect.length)}` : error.message;
  return new Error(`${service} at ${address}: ${message}`, { cause: error });
}

/** {@link explainService} after naming the cause of a failed connection (a TLS handshake, a plaintext client at a TLS server). */
export async function explainRemote(service: string, address: string, reason: unknown): Promise<Error> {
  return explainService(service, address, await explainConnectionFailure(address, reason));
}

function explain(address: string, reason: unknown): Promise<Error> {
  return explainRemote('simulator', address, reason);
}

/** Runs one simulation on the service at `address`. */
export async function simulateRemote(address: string, partial: Partial<SimulationConfig>): Promise<SimulationResult> {
  const simulator = client(address);
  try {
    const response = await callUnary(simulator, 'simulate', { config: configToWire(partial) }, { deadlineMs: 60_000, metadata: callMetadata() });
    return resultFromWire(response);
  } catch (error) {
    throw await explain(address, error);
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
    const stream = simulator.heatmap(request, callMetadata());
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
      throw await explain(address, error);
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
  const orchestrator = new OrchestratorServiceClient(address, channelCredentials(), createChannelOptions());
  try {
    // Params in the proto JSON form (enum names), as grpcurl takes them.
    return await callUnary(orchestrator, 'generate', GenerateRequest.fromJSON({ params }), { signal, deadlineMs: 600_000, metadata: callMetadata() });
  } catch (error) {
    throw await explainRemote('orchestrator', address, error);
  } finally {
    orchestrator.close();
  }
}
