import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { readSpanFile } from '@dsi/telemetry';
import { SimulatorServiceClient, SimulatorServiceService, type HeatmapRequest, type HeatmapResponse, type SimulateRequest, type SimulateResponse } from '@dsi/proto';
import { callUnary, checkHealth, createChannelOptions } from './client';
import { DsiError, notFound } from './errors';
import { runService, type ServiceProcessConfig, type ServiceStartup } from './lifecycle';
import { serverStream, unary, type ServiceRegistration } from './server';

jest.setTimeout(10_000);

// Jest gives each test file its own `process`, which real signals do not reach: deliver them as events.
const SIGNAL = 'SIGUSR2';

function deferred<T = void>(): { promise: Promise<T>; resolve(value: T): void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** A simulator registration whose Simulate waits until its call is cancelled. */
function waitingSimulator(started: () => void): ServiceRegistration {
  return {
    name: 'dsi.v1.SimulatorService',
    definition: SimulatorServiceService,
    implementation: {
      simulate: unary<SimulateRequest, SimulateResponse>(async (_request, { signal }) => {
        started();
        await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
        throw signal.reason;
      }),
      heatmap: serverStream<HeatmapRequest, HeatmapResponse>(async () => {
        throw notFound('not used by this test');
      }),
    },
  };
}

/** Runs a service the way `dsi serve` does, capturing what it would print. */
function run(start: ServiceStartup, traceFile?: string) {
  const lines: string[] = [];
  const serving = deferred<string>();
  const config: ServiceProcessConfig = {
    name: 'test',
    server: { port: 0, drainGraceMs: 600_000 },
    telemetry: { env: {}, traceFile },
    signals: [SIGNAL],
    log: (line) => lines.push(line),
    onServing: serving.resolve,
  };
  const done = runService(config, async ({ tracer }) => {
    tracer.startSpan('test.startup').end();
    return start;
  });
  done.catch(() => undefined); // awaited by each test
  /** The bound address, from the server's `listening on` line (it comes before SERVING). */
  const listening = async (): Promise<string> => {
    for (;;) {
      const match = lines.map((line) => line.match(/^listening on (\S+) /)).find(Boolean);
      if (match) return match[1];
      await new Promise((resolve) => setImmediate(resolve));
    }
  };
  return { lines, serving: serving.promise, done, listening };
}

describe('runService', () => {
  it('reports NOT_SERVING during the warm-up, then SERVING; drains on a signal, closes the service and flushes its spans', async () => {
    const traceFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-lifecycle-')), 'spans.jsonl');
    const warming = deferred();
    const warmed = deferred();
    let closed = 0;
    const listenersBefore = process.listenerCount(SIGNAL);
    const service = run(
      {
        registrations: [waitingSimulator(() => undefined)],
        warmUp: async () => {
          warming.resolve();
          await warmed.promise;
        },
        close: () => void (closed += 1),
      },
      traceFile,
    );
    await warming.promise;
    const address = await service.listening();
    expect(await checkHealth(address)).toBe('NOT_SERVING');

    warmed.resolve();
    expect(await service.serving).toBe(address);
    expect(await checkHealth(address)).toBe('SERVING');
    expect(closed).toBe(0);

    process.emit(SIGNAL, SIGNAL);
    await service.done;
    expect(closed).toBe(1);
    expect(process.listenerCount(SIGNAL)).toBe(listenersBefore);
    expect(service.lines).toContainEqual(expect.stringContaining(`${SIGNAL} received: draining`));
    expect(readSpanFile(traceFile).map((span) => span.name)).toContain('test.startup');
    fs.rmSync(path.dirname(traceFile), { recursive: true, force: true });
  });

  it('cancels the calls still in flight on a second signal', async () => {
    const started = deferred();
    const service = run({ registrations: [waitingSimulator(started.resolve)] });
    const address = await service.serving;
    const client = new SimulatorServiceClient(address, credentials.createInsecure(), createChannelOptions());
    try {
      const call = callUnary(client, 'simulate', { config: undefined }).catch((error: unknown) => error);
      await started.promise;
      process.emit(SIGNAL, SIGNAL); // drains, for up to ten minutes
      process.emit(SIGNAL, SIGNAL); // cancels now
      await service.done;
      expect(await call).toBeInstanceOf(DsiError);
      expect(service.lines).toContainEqual(expect.stringContaining('cancelling 1 in-flight call(s)'));
    } finally {
      client.close();
    }
  });

  it('stops, closes the service and rejects when the warm-up fails, without ever serving', async () => {
    let closed = 0;
    let served = false;
    const listenersBefore = process.listenerCount(SIGNAL);
    const service = run({
      registrations: [waitingSimulator(() => undefined)],
      warmUp: async () => {
        throw new Error('no model in /nowhere');
      },
      close: () => void (closed += 1),
    });
    void service.serving.then(() => (served = true));
    await expect(service.done).rejects.toThrow('no model in /nowhere');
    expect(closed).toBe(1);
    expect(served).toBe(false);
    expect(process.listenerCount(SIGNAL)).toBe(listenersBefore);
  });
});
