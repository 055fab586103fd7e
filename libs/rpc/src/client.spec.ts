import * as grpc from '@grpc/grpc-js';
import {
  HeatmapRequest,
  type HeatmapResponse,
  SimulateRequest,
  type SimulateResponse,
  SimulatorServiceClient,
  SimulatorServiceService,
} from '@dsi/proto';
import { callUnary, checkHealth, createChannelOptions, waitForServing } from './client';
import { DsiError, notFound } from './errors';
import { DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_RESPONSE_BYTES } from './limits';
import { type CallContext, DsiServer, type ServerOptions, serverStream, unary } from './server';

jest.setTimeout(10_000);

const SIMULATOR = 'dsi.v1.SimulatorService';

const servers: DsiServer[] = [];
const clients: grpc.Client[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await Promise.all(servers.splice(0).map((server) => server.shutdown()));
});

type SimulateHandler = (request: SimulateRequest, context: CallContext) => Promise<SimulateResponse>;

/** A simulator whose Simulate is `simulate` (default: echo k as the non-SI cost). */
async function startSimulator(simulate?: SimulateHandler, options: ServerOptions = {}): Promise<DsiServer> {
  const echoK: SimulateHandler = async (request) => simulateResponse(request.config?.k ?? 0);
  const server = new DsiServer(
    [
      {
        name: SIMULATOR,
        definition: SimulatorServiceService,
        implementation: {
          simulate: unary(simulate ?? echoK),
          heatmap: serverStream<HeatmapRequest, HeatmapResponse>(async () => {
            throw notFound('not used by this test');
          }),
        },
      },
    ],
    { drainGraceMs: 200, ...options },
  );
  servers.push(server);
  await server.start();
  return server;
}

function simulatorClient(address: string): SimulatorServiceClient {
  const client = new SimulatorServiceClient(address, grpc.credentials.createInsecure(), createChannelOptions());
  clients.push(client);
  return client;
}

/** An address nothing listens on: a port that was just bound and released. */
async function closedAddress(): Promise<string> {
  const server = new DsiServer([]);
  await server.start();
  const { address } = server;
  await server.shutdown();
  return address;
}

/** A response whose non-SI cost is `cost`, so tests can tell responses apart. */
function simulateResponse(cost: number): SimulateResponse {
  return { config: undefined, nonsi: { cost, costs: [], iterations: [] }, si: undefined, dsi: undefined, speedup: undefined };
}

function neverAnswers(): SimulateHandler {
  return async (_request, { signal }) => {
    await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
    throw signal.reason;
  };
}

describe('createChannelOptions', () => {
  it("matches the server's default limits and takes overrides", () => {
    expect(createChannelOptions()).toEqual({
      'grpc.max_send_message_length': DEFAULT_MAX_REQUEST_BYTES,
      'grpc.max_receive_message_length': DEFAULT_MAX_RESPONSE_BYTES,
    });
    expect(createChannelOptions({ maxReceiveMessageBytes: 1024 })['grpc.max_receive_message_length']).toBe(1024);
  });

  it('stops an oversized request on the client with RESOURCE_EXHAUSTED', async () => {
    let calls = 0;
    const server = await startSimulator(async () => {
      calls += 1;
      throw notFound('should not be reached');
    });
    const client = new SimulatorServiceClient(
      server.address,
      grpc.credentials.createInsecure(),
      createChannelOptions({ maxSendMessageBytes: 8 }),
    );
    clients.push(client);
    const request = SimulateRequest.fromPartial({ config: { a: 0.5, c: 0.1, k: 5, t: 1, tokens: 1000 } });
    await expect(callUnary(client, 'simulate', request)).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    expect(calls).toBe(0);
  });
});

describe('callUnary', () => {
  it('resolves with the typed response', async () => {
    const server = await startSimulator();
    const response = await callUnary(simulatorClient(server.address), 'simulate', SimulateRequest.fromPartial({ config: { k: 7 } }));
    expect(response.nonsi?.cost).toBe(7);
  });

  it('does not send the call when the signal is already aborted', async () => {
    let calls = 0;
    const server = await startSimulator(async () => {
      calls += 1;
      return simulateResponse(0);
    });
    const client = simulatorClient(server.address);
    const controller = new AbortController();
    controller.abort(new DsiError(grpc.status.CANCELLED, 'epoch 4 superseded'));

    await expect(callUnary(client, 'simulate', { config: undefined }, { signal: controller.signal })).rejects.toMatchObject({
      code: grpc.status.CANCELLED,
      rawMessage: 'epoch 4 superseded',
    });
    await callUnary(client, 'simulate', { config: undefined });
    expect(calls).toBe(1);
  });

  it('turns an AbortSignal.timeout into DEADLINE_EXCEEDED', async () => {
    const server = await startSimulator(neverAnswers());
    const call = callUnary(simulatorClient(server.address), 'simulate', { config: undefined }, { signal: AbortSignal.timeout(50) });
    await expect(call).rejects.toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
  });
});

describe('waitForServing', () => {
  it('resolves only once the server has been marked serving', async () => {
    const server = await startSimulator();
    let ready = false;
    const waiting = waitForServing(server.address, SIMULATOR, { pollIntervalMs: 10 }).then(() => {
      ready = true;
    });
    expect(await checkHealth(server.address, SIMULATOR)).toBe('NOT_SERVING');
    expect(ready).toBe(false);

    server.markServing();
    await waiting;
    expect(ready).toBe(true);
  });

  it('waits for a server that starts listening after the wait began', async () => {
    const address = await closedAddress();
    const waiting = waitForServing(address, '', { pollIntervalMs: 20, timeoutMs: 8_000 });
    const port = Number(address.split(':').pop());
    const server = await startSimulator(undefined, { port });
    server.markServing();
    await expect(waiting).resolves.toBeUndefined();
  });

  it('rejects with UNAVAILABLE naming the address when nothing listens', async () => {
    const address = await closedAddress();
    const waiting = waitForServing(address, '', { timeoutMs: 300, pollIntervalMs: 20 });
    await expect(waiting).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    await expect(waiting).rejects.toThrow(address);
  });

  it('rejects with DEADLINE_EXCEEDED naming the address and the last status when never serving', async () => {
    const server = await startSimulator();
    const waiting = waitForServing(server.address, SIMULATOR, { timeoutMs: 300, pollIntervalMs: 20 });
    await expect(waiting).rejects.toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
    await expect(waiting).rejects.toThrow(new RegExp(`${server.address}.*NOT_SERVING`));
  });

  it('rejects at once with NOT_FOUND for a service the server does not have', async () => {
    const server = await startSimulator();
    server.markServing();
    const waiting = waitForServing(server.address, 'dsi.v1.DrafterService', { timeoutMs: 60_000 });
    await expect(waiting).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    await expect(waiting).rejects.toThrow('dsi.v1.DrafterService');
  });

  it('stops waiting with CANCELLED when its signal aborts', async () => {
    const server = await startSimulator();
    const controller = new AbortController();
    const waiting = waitForServing(server.address, '', { signal: controller.signal, timeoutMs: 60_000, pollIntervalMs: 10 });
    expect(await checkHealth(server.address)).toBe('NOT_SERVING');
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: grpc.status.CANCELLED });
  });
});

describe('checkHealth', () => {
  it('rejects with UNAVAILABLE when nothing listens', async () => {
    await expect(checkHealth(await closedAddress(), '', { deadlineMs: 2_000 })).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
    });
  });
});

// Compile-time checks (tsc): only unary methods are accepted and types flow from the client.
async function _typeChecks(client: SimulatorServiceClient): Promise<void> {
  const response: SimulateResponse = await callUnary(client, 'simulate', { config: undefined });
  void response;
  // @ts-expect-error Heatmap is server-streaming, not unary
  await callUnary(client, 'heatmap', HeatmapRequest.fromPartial({}));
  // @ts-expect-error the request must be a SimulateRequest
  await callUnary(client, 'simulate', { ndim: 3 });
}
