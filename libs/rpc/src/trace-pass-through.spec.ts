import * as grpc from '@grpc/grpc-js';
import {
  type SimulateRequest,
  type SimulateResponse,
  SimulatorServiceClient,
  SimulatorServiceService,
  type HeatmapRequest,
  type HeatmapResponse,
} from '@dsi/proto';
import { startTelemetry, type Telemetry, tracePassesByHand, withTraceContext } from '@dsi/telemetry';
import { callUnary, createChannelOptions } from './client';
import { notFound } from './errors';
import { type CallContext, DsiServer, serverStream, unary } from './server';

// A process with no exporter passes the caller's trace context on by hand (no gRPC instrumentation,
// no async hooks): what a front service receives reaches the services it calls, also after awaits.
jest.setTimeout(10_000);

const SIMULATOR = 'dsi.v1.SimulatorService';
const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

const servers: DsiServer[] = [];
const clients: grpc.Client[] = [];
let telemetry: Telemetry | undefined;

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await Promise.all(servers.splice(0).map((server) => server.shutdown()));
  await telemetry?.shutdown();
  telemetry = undefined;
});

function response(cost: number): SimulateResponse {
  return { config: undefined, nonsi: { cost, costs: [], iterations: [] }, si: undefined, dsi: undefined, speedup: undefined };
}

const noHeatmap = serverStream<HeatmapRequest, HeatmapResponse>(async () => {
  throw notFound('not used by this test');
});

async function start(simulate: (request: SimulateRequest, call: CallContext) => Promise<SimulateResponse>): Promise<SimulatorServiceClient> {
  const server = new DsiServer([{ name: SIMULATOR, definition: SimulatorServiceService, implementation: { simulate: unary(simulate), heatmap: noHeatmap } }], { drainGraceMs: 100 });
  servers.push(server);
  await server.start();
  server.markServing();
  const client = new SimulatorServiceClient(server.address, grpc.credentials.createInsecure(), createChannelOptions());
  clients.push(client);
  return client;
}

/** A back service that records the trace headers of each call, and a front one that calls it after an await. */
async function frontAndBack(): Promise<{ front: SimulatorServiceClient; seen: { traceparent?: string; baggage?: string }[] }> {
  const seen: { traceparent?: string; baggage?: string }[] = [];
  const back = await start(async (_request, call) => {
    const [traceparent] = call.metadata.get('traceparent');
    const [baggage] = call.metadata.get('baggage');
    seen.push({ traceparent: traceparent as string | undefined, baggage: baggage as string | undefined });
    return response(1);
  });
  const front = await start(async (_request, call) => {
    await new Promise((resolve) => setTimeout(resolve, 5)); // the context must outlive an await
    return withTraceContext(call.traceContext, () => callUnary(back, 'simulate', {}));
  });
  return { front, seen };
}

describe('trace context passed through by hand (no exporter)', () => {
  it('sends the caller traceparent and baggage on to the next service, unchanged, and nothing for a caller without one', async () => {
    telemetry = startTelemetry({ serviceName: 'pass-through-test' });
    expect(telemetry.exporters).toEqual([]);
    expect(tracePassesByHand()).toBe(true);
    const { front, seen } = await frontAndBack();

    const metadata = new grpc.Metadata();
    metadata.set('traceparent', TRACEPARENT);
    metadata.set('baggage', 'tenant=blue');
    await callUnary(front, 'simulate', {}, { metadata });
    await callUnary(front, 'simulate', {});

    expect(seen).toEqual([{ traceparent: TRACEPARENT, baggage: 'tenant=blue' }, { traceparent: undefined, baggage: undefined }]);
    // The caller's own metadata is not changed by what a call adds.
    expect(metadata.get('traceparent')).toEqual([TRACEPARENT]);
  });

  it('passes nothing once telemetry is shut down', async () => {
    telemetry = startTelemetry({ serviceName: 'pass-through-test' });
    const { front, seen } = await frontAndBack();
    await telemetry.shutdown();
    telemetry = undefined;
    expect(tracePassesByHand()).toBe(false);

    const metadata = new grpc.Metadata();
    metadata.set('traceparent', TRACEPARENT);
    await callUnary(front, 'simulate', {}, { metadata });
    expect(seen).toEqual([{ traceparent: undefined, baggage: undefined }]);
  });
});
