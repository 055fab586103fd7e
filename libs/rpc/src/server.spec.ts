import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { service as healthService } from 'grpc-health-check';
import {
  HeatmapRequest,
  type HeatmapResponse,
  type SimulateRequest,
  type SimulateResponse,
  SimulatorServiceClient,
  type SimulatorServiceServer,
  SimulatorServiceService,
} from '@dsi/proto';
import { callUnary, checkHealth, createChannelOptions } from './client';
import { DsiError, notFound } from './errors';
import { type CallContext, DsiServer, type ServerOptions, serverStream, unary } from './server';

// Everything here runs on loopback in milliseconds; fail fast instead of at the preset's minute.
jest.setTimeout(10_000);

const SIMULATOR = 'dsi.v1.SimulatorService';

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * Marks a promise that the test awaits later as handled, so a failure earlier in the test reports
 * that failure instead of crashing the run with an unhandled rejection.
 */
function later<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

/** Resolves with the signal's reason once it aborts: how tests observe cancellation in handlers. */
function aborted(signal: AbortSignal): Promise<unknown> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve(signal.reason);
    else signal.addEventListener('abort', () => resolve(signal.reason), { once: true });
  });
}

function simulateResponse(costs: number[] = []): SimulateResponse {
  return {
    config: undefined,
    nonsi: { cost: 1, costs, iterations: [] },
    si: undefined,
    dsi: undefined,
    speedup: undefined,
  };
}

function heatmapResponse(done: number): HeatmapResponse {
  return { cell: undefined, done, total: 0 };
}

interface Handlers {
  simulate?: SimulatorServiceServer['simulate'];
  heatmap?: SimulatorServiceServer['heatmap'];
}

const notImplemented: SimulatorServiceServer = {
  simulate: unary<SimulateRequest, SimulateResponse>(async () => {
    throw notFound('not used by this test');
  }),
  heatmap: serverStream<HeatmapRequest, HeatmapResponse>(async () => {
    throw notFound('not used by this test');
  }),
};

const servers: DsiServer[] = [];
const clients: grpc.Client[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await Promise.all(servers.splice(0).map((server) => server.shutdown()));
});

async function startSimulator(handlers: Handlers = {}, options: ServerOptions = {}): Promise<DsiServer> {
  const server = new DsiServer(
    [{ name: SIMULATOR, definition: SimulatorServiceService, implementation: { ...notImplemented, ...definedHandlers(handlers) } }],
    { drainGraceMs: 200, ...options },
  );
  servers.push(server);
  await server.start();
  return server;
}

function definedHandlers(handlers: Handlers): grpc.UntypedServiceImplementation {
  return Object.fromEntries(Object.entries(handlers).filter(([, handler]) => handler !== undefined));
}

function simulatorClient(server: DsiServer): SimulatorServiceClient {
  const client = new SimulatorServiceClient(server.address, grpc.credentials.createInsecure(), createChannelOptions());
  clients.push(client);
  return client;
}

/** Reads a whole server stream, resolving with the messages or rejecting with the stream's error. */
function readAll<T>(stream: grpc.ClientReadableStream<T>): Promise<T[]> {
  const messages: T[] = [];
  return new Promise((resolve, reject) => {
    stream.on('data', (message: T) => messages.push(message));
    stream.on('error', reject);
    stream.on('end', () => resolve(messages));
  });
}

describe('health', () => {
  it('reports NOT_SERVING until markServing, then SERVING, and NOT_FOUND for unknown services', async () => {
    const server = await startSimulator();
    expect(server.state).toBe('STARTING');
    expect(await checkHealth(server.address)).toBe('NOT_SERVING');
    expect(await checkHealth(server.address, SIMULATOR)).toBe('NOT_SERVING');

    server.markServing();

    expect(server.state).toBe('SERVING');
    expect(await checkHealth(server.address)).toBe('SERVING');
    expect(await checkHealth(server.address, SIMULATOR)).toBe('SERVING');
    await expect(checkHealth(server.address, 'dsi.v1.NoSuchService')).rejects.toMatchObject({
      code: grpc.status.NOT_FOUND,
    });
  });

  it('turns NOT_SERVING for watchers while draining an in-flight call, then cancels it', async () => {
    const started = deferred();
    let handlerSignal: AbortSignal | undefined;
    const server = await startSimulator({
      heatmap: serverStream(async (_request, { signal }) => {
        handlerSignal = signal;
        started.resolve();
        await aborted(signal);
        throw signal.reason;
      }),
    });
    server.markServing();

    // A Watch stream on its own connection, opened while SERVING, sees the drain begin.
    const watcher = new grpc.Client(server.address, grpc.credentials.createInsecure());
    clients.push(watcher);
    const watchMethod = healthWatchMethod();
    const watch = watcher.makeServerStreamRequest(watchMethod.path, watchMethod.requestSerialize, watchMethod.responseDeserialize, {
      service: '',
    });
    const statuses: string[] = [];
    const sawServing = deferred();
    const sawNotServing = deferred();
    watch.on('data', ({ status }: { status: string }) => {
      statuses.push(status);
      if (status === 'SERVING') sawServing.resolve();
      if (status === 'NOT_SERVING') sawNotServing.resolve();
    });
    watch.on('error', () => undefined);

    const heatmap = simulatorClient(server).heatmap(HeatmapRequest.fromPartial({}));
    const heatmapOutcome = readAll(heatmap).catch((error: grpc.ServiceError) => error);
    await Promise.all([started.promise, sawServing.promise]);

    const stopped = server.shutdown();
    expect(server.state).toBe('DRAINING');
    await sawNotServing.promise;
    expect(statuses).toEqual(['SERVING', 'NOT_SERVING']);
    expect(server.state).toBe('DRAINING');

    await stopped;
    expect(server.state).toBe('STOPPED');
    expect(handlerSignal?.aborted).toBe(true);
    expect(handlerSignal?.reason).toMatchObject({ code: grpc.status.CANCELLED });
    expect(await heatmapOutcome).toMatchObject({ code: expect.any(Number) });
    expect(server.inFlightCalls).toBe(0);
  });

  it('ignores markServing once shutdown has begun', async () => {
    const server = await startSimulator();
    await server.shutdown();
    server.markServing();
    expect(server.state).toBe('STOPPED');
  });
});

describe('reflection', () => {
  const expectedServices = [
    SIMULATOR,
    'grpc.health.v1.Health',
    'grpc.reflection.v1.ServerReflection',
    'grpc.reflection.v1alpha.ServerReflection',
  ].sort();

  it.each(['v1', 'v1alpha'] as const)('lists the served services over reflection %s', async (version) => {
    const server = await startSimulator();
    const reply = await reflect(server.address, version, { list_services: '*' });
    const names = reply.list_services_response?.service.map((service) => service.name).sort();
    expect(names).toEqual(expectedServices);
  });

  it('describes our protos as buf built them: real files, dependencies, field names, comments', async () => {
    const server = await startSimulator();
    const reply = await reflect(server.address, 'v1', { file_containing_symbol: 'dsi.v1.SimulatorService' });
    const files = (reply.file_descriptor_response?.file_descriptor_proto ?? []).map((bytes) =>
      fromBinary(FileDescriptorProtoSchema, bytes),
    );
    expect(files.map((file) => file.name).sort()).toEqual(['dsi/v1/common.proto', 'dsi/v1/simulator.proto']);
    const speedups = files.flatMap((file) => file.messageType).find((message) => message.name === 'Speedups');
    expect(speedups?.field.map((field) => field.name)).toEqual(['si_vs_nonsi', 'dsi_vs_si', 'dsi_vs_nonsi']);
    const simulator = files.find((file) => file.name === 'dsi/v1/simulator.proto');
    expect(simulator?.service[0]?.method.map((method) => method.name)).toEqual(['Simulate', 'Heatmap', 'Plan']);
    const comments = simulator?.sourceCodeInfo?.location.map((location) => location.leadingComments).join('\n');
    expect(comments).toContain('SimulatorService predicts the cost');
  });

  it('describes the reflection protocol itself with its proto field names', async () => {
    const server = await startSimulator();
    const reply = await reflect(server.address, 'v1alpha', { file_containing_symbol: 'grpc.reflection.v1.ServerReflection' });
    const files = (reply.file_descriptor_response?.file_descriptor_proto ?? []).map((bytes) =>
      fromBinary(FileDescriptorProtoSchema, bytes),
    );
    const request = files.flatMap((file) => file.messageType).find((message) => message.name === 'ServerReflectionRequest');
    expect(request?.field.map((field) => field.name)).toContain('file_containing_symbol');
  });

  it('is enough for buf curl to list and call services without .proto files', async () => {
    const server = await startSimulator();
    server.markServing();
    const bufCurl = async (...args: string[]): Promise<string> => {
      const buf = path.resolve(__dirname, '../../../node_modules/.bin/buf');
      const { stdout } = await promisify(execFile)(buf, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', ...args], {
        timeout: 20_000,
      });
      return stdout;
    };

    const listed = (await bufCurl('--list-services', `http://${server.address}`)).trim().split('\n');
    expect(listed).toEqual(expect.arrayContaining([SIMULATOR, 'grpc.health.v1.Health']));
    const health = await bufCurl('-d', '{"service":""}', `http://${server.address}/grpc.health.v1.Health/Check`);
    expect(JSON.parse(health)).toEqual({ status: 'SERVING' });
  });
});

describe('handlers', () => {
  it("aborts the handler's signal when the client cancels", async () => {
    const started = deferred();
    const reason = deferred<unknown>();
    const server = await startSimulator({
      simulate: unary(async (_request, { signal }) => {
        started.resolve();
        reason.resolve(await aborted(signal));
        throw signal.reason;
      }),
    });
    const controller = new AbortController();
    const call = later(callUnary(simulatorClient(server), 'simulate', { config: undefined }, { signal: controller.signal }));
    await started.promise;
    controller.abort();

    await expect(call).rejects.toMatchObject({ code: grpc.status.CANCELLED });
    expect(await reason.promise).toMatchObject({ code: grpc.status.CANCELLED });
  });

  it("aborts the handler's signal with DEADLINE_EXCEEDED when the deadline passes", async () => {
    const reason = deferred<unknown>();
    const server = await startSimulator({
      simulate: unary(async (_request, { signal, deadline }) => {
        expect(deadline).toBeInstanceOf(Date);
        reason.resolve(await aborted(signal));
        throw signal.reason;
      }),
    });
    const call = callUnary(simulatorClient(server), 'simulate', { config: undefined }, { deadlineMs: 50 });

    await expect(call).rejects.toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
    expect(await reason.promise).toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
  });

  it('gives handlers the request metadata and the peer', async () => {
    let seen: Pick<CallContext, 'metadata' | 'peer' | 'deadline'> | undefined;
    const server = await startSimulator({
      simulate: unary(async (_request, context) => {
        seen = context;
        return simulateResponse();
      }),
    });
    const metadata = new grpc.Metadata();
    metadata.set('x-dsi-epoch', '7');
    await callUnary(simulatorClient(server), 'simulate', { config: undefined }, { metadata });
    expect(seen?.metadata.get('x-dsi-epoch')).toEqual(['7']);
    expect(seen?.peer).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(seen?.deadline).toBeUndefined();
  });

  it('streams every message, then ends the stream with the status a handler throws', async () => {
    const server = await startSimulator({
      heatmap: serverStream(async (_request, { send }) => {
        await send(heatmapResponse(1));
        await send(heatmapResponse(2));
        throw notFound('grid cell 3 vanished');
      }),
    });
    const stream = simulatorClient(server).heatmap(HeatmapRequest.fromPartial({}));
    const received: number[] = [];
    stream.on('data', (message: HeatmapResponse) => received.push(message.done));
    const error = await new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    expect(received).toEqual([1, 2]);
    expect(error).toMatchObject({ code: grpc.status.NOT_FOUND, details: 'grid cell 3 vanished' });
  });

  it('makes send wait for the stream to drain instead of buffering, then delivers everything in order', async () => {
    const total = 5_000;
    const producer = deferred<{ blockedAfter: number } | 'never blocked'>();
    const server = await startSimulator({
      heatmap: serverStream(async (_request, { send }) => {
        for (let done = 1; done <= total; done += 1) {
          const sent = send(heatmapResponse(done));
          if (await isPending(sent)) producer.resolve({ blockedAfter: done - 1 });
          await sent;
        }
        producer.resolve('never blocked');
      }),
    });
    const stream = simulatorClient(server).heatmap(HeatmapRequest.fromPartial({}));
    const firstMessage = deferred();
    const received: number[] = [];
    stream.on('data', (message: HeatmapResponse) => {
      received.push(message.done);
      if (received.length === 1) {
        stream.pause(); // a reader that stops reading
        firstMessage.resolve();
      }
    });
    const ended = later(
      new Promise<void>((resolve, reject) => {
        stream.on('end', resolve);
        stream.on('error', reject);
      }),
    );
    await firstMessage.promise;

    const outcome = await producer.promise;
    expect(outcome).not.toBe('never blocked');
    expect(outcome).toMatchObject({ blockedAfter: expect.any(Number) });

    stream.resume();
    await ended;
    expect(received).toEqual(Array.from({ length: total }, (_, index) => index + 1));
  });
});

describe('limits', () => {
  it('rejects a request larger than maxReceiveMessageBytes with RESOURCE_EXHAUSTED', async () => {
    const server = await startSimulator({}, { maxReceiveMessageBytes: 1024 });
    const client = new grpc.Client(server.address, grpc.credentials.createInsecure());
    clients.push(client);
    const error = await new Promise<grpc.ServiceError | null>((resolve) => {
      client.makeUnaryRequest(
        SimulatorServiceService.simulate.path,
        (bytes: Buffer) => bytes,
        (bytes: Buffer) => bytes,
        Buffer.alloc(2048),
        (err) => resolve(err),
      );
    });
    expect(error).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
  });

  it('fails a response larger than maxSendMessageBytes with RESOURCE_EXHAUSTED', async () => {
    const server = await startSimulator(
      { simulate: unary(async () => simulateResponse(new Array<number>(1000).fill(0.5))) },
      { maxSendMessageBytes: 1024 },
    );
    await expect(callUnary(simulatorClient(server), 'simulate', { config: undefined })).rejects.toMatchObject({
      code: grpc.status.RESOURCE_EXHAUSTED,
    });
  });
});

describe('lifecycle', () => {
  it('lets an in-flight call finish during the drain', async () => {
    const started = deferred();
    const release = deferred();
    let handlerSignal: AbortSignal | undefined;
    const server = await startSimulator(
      {
        simulate: unary(async (_request, { signal }) => {
          handlerSignal = signal;
          started.resolve();
          await release.promise;
          return simulateResponse([42]);
        }),
      },
      { drainGraceMs: 30_000 },
    );
    server.markServing();
    const call = later(callUnary(simulatorClient(server), 'simulate', { config: undefined }));
    await started.promise;

    const stopped = server.shutdown();
    expect(server.state).toBe('DRAINING');
    expect(server.inFlightCalls).toBe(1);
    release.resolve();

    expect((await call).nonsi?.costs).toEqual([42]);
    await stopped;
    expect(server.state).toBe('STOPPED');
    expect(handlerSignal?.aborted).toBe(false);
  });

  it('answers a new call UNAVAILABLE "draining" while an in-flight call completes', async () => {
    const started = deferred();
    const release = deferred();
    let calls = 0;
    const server = await startSimulator(
      {
        simulate: unary(async () => {
          calls += 1;
          started.resolve();
          await release.promise;
          return simulateResponse([7]);
        }),
        heatmap: serverStream(async () => undefined),
      },
      { drainGraceMs: 30_000 },
    );
    server.markServing();
    const client = simulatorClient(server);
    const inFlight = later(callUnary(client, 'simulate', { config: undefined }));
    await started.promise;

    const stopped = server.shutdown();
    expect(server.state).toBe('DRAINING');
    // The same connection and a new one both hear why.
    const refused = await callUnary(client, 'simulate', { config: undefined }).catch((error: unknown) => error);
    const fresh = await callUnary(simulatorClient(server), 'simulate', { config: undefined }).catch((error: unknown) => error);
    const stream = await readAll(simulatorClient(server).heatmap(HeatmapRequest.fromPartial({}))).catch((error: unknown) => error);
    for (const error of [refused, fresh, stream]) {
      expect(error).toMatchObject({ code: grpc.status.UNAVAILABLE, message: expect.stringContaining('draining') });
    }
    expect(calls).toBe(1);
    expect(server.state).toBe('DRAINING');

    release.resolve();
    expect((await inFlight).nonsi?.costs).toEqual([7]);
    await stopped;
    expect(server.state).toBe('STOPPED');
  });

  it('cancels a call that outlives the grace period and stops; shutdown is idempotent', async () => {
    const started = deferred();
    let handlerSignal: AbortSignal | undefined;
    const lines: string[] = [];
    const server = await startSimulator(
      {
        simulate: unary(async (_request, { signal }) => {
          handlerSignal = signal;
          started.resolve();
          await aborted(signal);
          throw signal.reason;
        }),
      },
      { drainGraceMs: 200, log: (line) => lines.push(line) },
    );
    server.markServing();
    const call = later(callUnary(simulatorClient(server), 'simulate', { config: undefined }));
    await started.promise;

    const first = server.shutdown();
    expect(server.shutdown()).toBe(first);
    await first;

    expect(server.state).toBe('STOPPED');
    expect(handlerSignal?.reason).toMatchObject({ code: grpc.status.CANCELLED });
    await expect(call).rejects.toBeInstanceOf(DsiError);
    expect(lines).toContainEqual(expect.stringContaining('cancelling 1 in-flight call(s)'));
    expect(lines).toContainEqual(expect.stringContaining('/dsi.v1.SimulatorService/Simulate'));
  });

  it('logs an internal failure with every cause in its chain, and the caller gets INTERNAL without them', async () => {
    const lines: string[] = [];
    const server = await startSimulator(
      {
        simulate: unary(async () => {
          const disk = new Error('ENOSPC: no space left on device');
          throw new Error('cannot write the result', { cause: new Error('the cache rejected it', { cause: disk }) });
        }),
      },
      { log: (line) => lines.push(line) },
    );
    server.markServing();
    const error = await callUnary(simulatorClient(server), 'simulate', { config: undefined }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: grpc.status.INTERNAL });
    expect((error as Error).message).not.toContain('ENOSPC');
    const logged = lines.find((line) => line.includes('/dsi.v1.SimulatorService/Simulate failed with internal'));
    expect(logged).toContain('cannot write the result');
    expect(logged).toContain('caused by: Error: the cache rejected it');
    expect(logged).toContain('caused by: Error: ENOSPC: no space left on device');
  });

  it('rejects with a message naming host:port when the port is taken', async () => {
    const first = await startSimulator();
    const second = new DsiServer([], { port: first.port });
    servers.push(second);

    const failure = second.start();
    await expect(failure).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    await expect(failure).rejects.toThrow(`127.0.0.1:${first.port}`);
    expect(second.state).toBe('FAILED');
    await second.shutdown();
    expect(second.state).toBe('FAILED');
  });

  it('drains on the first signal and cancels at once on the second', async () => {
    const started = deferred();
    const server = await startSimulator(
      {
        simulate: unary(async (_request, { signal }) => {
          started.resolve();
          await aborted(signal);
          throw signal.reason;
        }),
      },
      { drainGraceMs: 600_000 },
    );
    const listenersBefore = process.listenerCount('SIGUSR2');
    const dispose = server.handleSignals(['SIGUSR2']);
    try {
      const call = callUnary(simulatorClient(server), 'simulate', { config: undefined }).catch((e: unknown) => e);
      await started.promise;

      // Jest gives each test file its own `process` object, which real signals do not reach, so
      // deliver the signal the way Node does: as an event on process.
      process.emit('SIGUSR2', 'SIGUSR2');
      await until(() => server.state === 'DRAINING');
      process.emit('SIGUSR2', 'SIGUSR2');

      // The signals alone stop it: `stopped` resolves without anyone calling shutdown().
      await server.stopped;
      await server.shutdown();
      expect(server.state).toBe('STOPPED');
      expect(await call).toBeInstanceOf(DsiError);
    } finally {
      dispose();
    }
    expect(process.listenerCount('SIGUSR2')).toBe(listenersBefore);
  });

  it('refuses registrations that reflection could not describe', () => {
    expect(
      () => new DsiServer([{ name: 'dsi.v1.Simulator', definition: SimulatorServiceService, implementation: notImplemented }]),
    ).toThrow(/belongs to another service/);
    const renamed = {
      simulate: { ...SimulatorServiceService.simulate, path: '/dsi.v1.MissingService/Simulate' },
    };
    expect(
      () => new DsiServer([{ name: 'dsi.v1.MissingService', definition: renamed, implementation: notImplemented }]),
    ).toThrow(/not in the @dsi\/proto descriptor set/);
  });
});

/** Whether a promise is still pending after already-settled work has run (no clock involved). */
async function isPending(promise: Promise<unknown>): Promise<boolean> {
  const pending = Symbol('pending');
  const winner = await Promise.race([promise.then(() => undefined, () => undefined), new Promise((r) => setImmediate(r, pending))]);
  return winner === pending;
}

/** Waits for a condition that an event we caused will make true, checking once per event-loop turn. */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
}

/** grpc.health.v1.Health/Watch, the streaming form of a health check. */
function healthWatchMethod(): protoLoader.MethodDefinition<object, { status: string }> {
  return healthService.Watch as protoLoader.MethodDefinition<object, { status: string }>;
}

interface ReflectionReply {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Uint8Array[] };
  error_response?: { error_code: number; error_message: string };
}

const reflectionPackage = protoLoader.loadSync(
  ['grpc/reflection/v1/reflection.proto', 'grpc/reflection/v1alpha/reflection.proto'],
  {
    keepCase: true,
    oneofs: true,
    includeDirs: [path.join(path.dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto')],
  },
);

/** One request/response exchange on ServerReflectionInfo, the way grpcurl starts. */
async function reflect(address: string, version: 'v1' | 'v1alpha', request: object): Promise<ReflectionReply> {
  const service = reflectionPackage[`grpc.reflection.${version}.ServerReflection`] as protoLoader.ServiceDefinition;
  const method = service.ServerReflectionInfo;
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  try {
    const call = client.makeBidiStreamRequest(method.path, method.requestSerialize, method.responseDeserialize);
    return await new Promise<ReflectionReply>((resolve, reject) => {
      call.once('data', (reply: ReflectionReply) => {
        resolve(reply);
        call.end();
      });
      call.once('error', reject);
      call.write(request);
    });
  } finally {
    client.close();
  }
}
