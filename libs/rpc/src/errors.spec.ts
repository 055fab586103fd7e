import * as grpc from '@grpc/grpc-js';
import { HeatmapRequest, type SimulateRequest, type SimulateResponse, SimulatorServiceClient, SimulatorServiceService } from '@dsi/proto';
import { callUnary, createChannelOptions } from './client';
import {
  cancelled,
  DsiError,
  INTERNAL_ERROR_DETAILS,
  internal,
  invalidArgument,
  notFound,
  resourceExhausted,
  statusCodeName,
  toServiceError,
} from './errors';
import { DsiServer, serverStream, unary } from './server';

jest.setTimeout(10_000);

describe('DsiError', () => {
  it('prefixes the message with the snake-case code and keeps the raw text', () => {
    const error = invalidArgument('k must be >= 1, got 0');
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe('DsiError');
    expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(error.message).toBe('[invalid_argument] k must be >= 1, got 0');
    expect(error.rawMessage).toBe('k must be >= 1, got 0');
    expect(notFound('').message).toBe('[not_found]');
    expect(statusCodeName(grpc.status.RESOURCE_EXHAUSTED)).toBe('resource_exhausted');
    expect(resourceExhausted('too big').code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  });

  it('keeps a cause for logs', () => {
    const cause = new Error('socket closed');
    expect(internal('verify failed', { cause }).cause).toBe(cause);
  });

  describe('from', () => {
    it('passes a DsiError through unchanged', () => {
      const error = notFound('replica 3');
      expect(DsiError.from(error)).toBe(error);
    });

    it('keeps the code and details of a gRPC ServiceError', () => {
      const serviceError = Object.assign(new Error('14 UNAVAILABLE: connect ECONNREFUSED'), {
        code: grpc.status.UNAVAILABLE,
        details: 'connect ECONNREFUSED',
        metadata: new grpc.Metadata(),
      });
      const error = DsiError.from(serviceError);
      expect(error.code).toBe(grpc.status.UNAVAILABLE);
      expect(error.rawMessage).toBe('connect ECONNREFUSED');
      expect(error.cause).toBe(serviceError);
    });

    it("makes an aborted signal's reason CANCELLED and a timeout DEADLINE_EXCEEDED", () => {
      const controller = new AbortController();
      controller.abort();
      expect(DsiError.from(controller.signal.reason).code).toBe(grpc.status.CANCELLED);
      expect(DsiError.from(new DOMException('signal timed out', 'TimeoutError')).code).toBe(grpc.status.DEADLINE_EXCEEDED);
    });

    it('gives anything else the fallback code and its message', () => {
      expect(DsiError.from(new Error('boom')).message).toBe('[unknown] boom');
      expect(DsiError.from('plain text', grpc.status.INTERNAL).message).toBe('[internal] plain text');
      expect(DsiError.from({ code: grpc.status.OK, details: 'fine' }).code).toBe(grpc.status.UNKNOWN);
      expect(DsiError.from({ code: 99, details: 'from the future' }).code).toBe(grpc.status.UNKNOWN);
    });
  });
});

describe('toServiceError', () => {
  it('sends a DsiError with its code and unprefixed message', () => {
    const sent = toServiceError(invalidArgument('lookahead must be >= 1'));
    expect(sent).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: 'lookahead must be >= 1' });
  });

  it('hides anything else behind INTERNAL but keeps it as the cause', () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'logits')");
    const sent = toServiceError(bug);
    expect(sent).toMatchObject({ code: grpc.status.INTERNAL, details: INTERNAL_ERROR_DETAILS });
    expect(sent.cause).toBe(bug);
  });

  it('keeps cancellation as CANCELLED', () => {
    expect(toServiceError(cancelled('epoch superseded')).code).toBe(grpc.status.CANCELLED);
    expect(toServiceError(new DOMException('aborted', 'AbortError')).code).toBe(grpc.status.CANCELLED);
  });
});

describe('errors on the wire', () => {
  let server: DsiServer;
  let client: SimulatorServiceClient;
  const logLines: string[] = [];
  let nextFailure: () => never = () => {
    throw new Error('unset');
  };

  beforeAll(async () => {
    server = new DsiServer(
      [
        {
          name: 'dsi.v1.SimulatorService',
          definition: SimulatorServiceService,
          implementation: {
            simulate: unary<SimulateRequest, SimulateResponse>(async () => nextFailure()),
            heatmap: serverStream(async () => nextFailure()),
          },
        },
      ],
      { log: (line) => logLines.push(line) },
    );
    await server.start();
    client = new SimulatorServiceClient(server.address, grpc.credentials.createInsecure(), createChannelOptions());
  });

  afterAll(async () => {
    client.close();
    await server.shutdown();
  });

  function simulateRaw(): Promise<grpc.ServiceError | null> {
    return new Promise((resolve) => client.simulate({ config: undefined }, (error) => resolve(error)));
  }

  it("delivers a handler's invalidArgument as INVALID_ARGUMENT with the exact text", async () => {
    nextFailure = () => {
      throw invalidArgument('a must be in [0, 1], got 1.5');
    };
    expect(await simulateRaw()).toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      details: 'a must be in [0, 1], got 1.5',
    });
    const viaHelper = callUnary(client, 'simulate', { config: undefined });
    await expect(viaHelper).rejects.toBeInstanceOf(DsiError);
    await expect(viaHelper).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
      rawMessage: 'a must be in [0, 1], got 1.5',
      message: '[invalid_argument] a must be in [0, 1], got 1.5',
    });
  });

  it('turns any other throw into INTERNAL without leaking it, and logs it on the server', async () => {
    nextFailure = () => {
      throw new Error('ONNX session at /models/secret-path.onnx crashed');
    };
    const error = await simulateRaw();
    expect(error).toMatchObject({ code: grpc.status.INTERNAL, details: INTERNAL_ERROR_DETAILS });
    expect(JSON.stringify({ details: error?.details, message: error?.message })).not.toContain('secret-path');
    expect(logLines).toContainEqual(expect.stringMatching(/\/dsi\.v1\.SimulatorService\/Simulate failed.*secret-path/));

    const stream = client.heatmap(HeatmapRequest.fromPartial({}));
    stream.on('data', () => undefined);
    const streamError = await new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    expect(streamError).toMatchObject({ code: grpc.status.INTERNAL, details: INTERNAL_ERROR_DETAILS });
    expect(logLines).toContainEqual(expect.stringMatching(/\/dsi\.v1\.SimulatorService\/Heatmap failed.*secret-path/));
  });

  it('maps a synchronous throw the same way', async () => {
    const syncServer = new DsiServer([
      {
        name: 'dsi.v1.SimulatorService',
        definition: SimulatorServiceService,
        implementation: {
          simulate: unary<SimulateRequest, SimulateResponse>(() => {
            throw invalidArgument('thrown before any await');
          }),
          heatmap: serverStream(() => {
            throw invalidArgument('thrown before any await');
          }),
        },
      },
    ]);
    await syncServer.start();
    const syncClient = new SimulatorServiceClient(syncServer.address, grpc.credentials.createInsecure());
    try {
      await expect(callUnary(syncClient, 'simulate', { config: undefined })).rejects.toMatchObject({
        code: grpc.status.INVALID_ARGUMENT,
        rawMessage: 'thrown before any await',
      });
    } finally {
      syncClient.close();
      await syncServer.shutdown();
    }
  });
});
