// Faults through real processes (`npm run test:faults`): replicas, the drafter and the orchestrator
// are `dsi serve` child processes on loopback with the synthetic backend; a fault is a real signal to a
// real process, or a loopback TCP proxy in front of a replica that delays, drops or swallows traffic.
// The promise under test: a request that can complete does, with exactly the tokens it gives without
// the fault; one that cannot fails fast with UNAVAILABLE naming what is gone; nothing hangs.
import fs from 'node:fs';
import net from 'node:net';
import { credentials } from '@grpc/grpc-js';
import { GenerateRequest, OrchestratorServiceClient } from '@dsi/proto';
import { callUnary, createChannelOptions, DsiError, statusCodeName } from '@dsi/rpc';
import { spawnService, type ServiceProcess } from './stack';

jest.setTimeout(120_000);

const env = { ...process.env, OTEL_SDK_DISABLED: 'true' };
const TOKENS = 300;
const synthetic = (ms: number, extra: string[] = []) => ['--backend', 'synthetic', '--ttft-ms', String(ms), '--tpot-ms', String(ms), ...extra];

/** A free loopback port (to restart a service on the address it had). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const running = new Set<ServiceProcess>();
async function serve(name: string, args: string[], port = 0): Promise<{ service: ServiceProcess; address: string }> {
  const service = spawnService(name, ['--port', String(port), ...args], { env, label: `${name}:${port}`, tailLines: 200 });
  running.add(service);
  const address = await service.ready;
  return { service, address };
}
afterEach(async () => {
  await Promise.all([...running].map((s) => s.stop(2000)));
  running.clear();
});

function client(address: string): OrchestratorServiceClient {
  return new OrchestratorServiceClient(address, credentials.createInsecure(), createChannelOptions());
}

async function generate(orchestrator: OrchestratorServiceClient, mode: 'MODE_NON_SI' | 'MODE_DSI', prompt: string, deadlineMs = 60_000) {
  const params = { prompt, mode, lookahead: 3, maxNewTokens: TOKENS, sampling: { rule: 'VERIFICATION_RULE_GREEDY' } };
  const response = await callUnary(orchestrator, 'generate', GenerateRequest.fromJSON({ params }), { deadlineMs });
  return { tokens: response.tokens, wallMs: response.metrics?.wallMs ?? 0, drafted: response.metrics?.drafted ?? 0 };
}

/** A stack: `targets` synthetic target replicas (fixed ports, so one can be restarted), a drafter, an orchestrator. */
async function stack(targets: number, options: { targetArgs?: string[]; fronts?: (address: string, i: number) => Promise<string> } = {}) {
  const targetPorts = await Promise.all(Array.from({ length: targets }, () => freePort()));
  const replicas = await Promise.all(targetPorts.map((port) => serve('target', synthetic(5, options.targetArgs), port)));
  const drafterPort = await freePort();
  const drafter = await serve('drafter', synthetic(1, ['--a', '0.8']), drafterPort);
  const addresses = await Promise.all(replicas.map((r, i) => (options.fronts ? options.fronts(r.address, i) : r.address)));
  const orchestrator = await serve('orchestrator', ['--drafter', drafter.address, '--targets', addresses.join(',')]);
  return { replicas, targetPorts, drafter, drafterPort, orchestrator, client: client(orchestrator.address) };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What each fault did and how long recovery took; written to $DSI_FAULTS_REPORT (JSON) when set. */
const report: Array<{ fault: string; outcome: string; ms: number }> = [];
afterAll(() => {
  if (process.env.DSI_FAULTS_REPORT) fs.writeFileSync(process.env.DSI_FAULTS_REPORT, JSON.stringify(report, null, 1));
});

describe('faults through real processes', () => {
  it('SIGKILL one of 4 target replicas mid-generation: DSI completes with exactly the non-SI tokens', async () => {
    const s = await stack(4);
    const expected = await generate(s.client, 'MODE_NON_SI', 'fault one replica');
    const pending = generate(s.client, 'MODE_DSI', 'fault one replica');
    await sleep(300);
    s.replicas[1].service.child.kill('SIGKILL');
    const killedAt = performance.now();
    const got = await pending;
    expect(got.tokens).toEqual(expected.tokens);
    report.push({ fault: 'SIGKILL 1 of 4 targets mid-DSI', outcome: `completed, tokens identical (${got.wallMs.toFixed(0)} ms; non-SI ${expected.wallMs.toFixed(0)} ms)`, ms: performance.now() - killedAt });
    s.client.close();
  });

  it('SIGKILL the drafter mid-generation: completes with identical tokens, new requests are served, the drafter is not called after every commit', async () => {
    const s = await stack(2);
    const expected = await generate(s.client, 'MODE_NON_SI', 'fault the drafter');
    const second = await generate(s.client, 'MODE_NON_SI', 'another request');
    const pending = generate(s.client, 'MODE_DSI', 'fault the drafter');
    await sleep(200);
    s.drafter.service.child.kill('SIGKILL');
    const meanwhile = await generate(s.client, 'MODE_DSI', 'another request');
    const got = await pending;
    expect(got.tokens).toEqual(expected.tokens);
    expect(meanwhile.tokens).toEqual(second.tokens);
    report.push({ fault: 'SIGKILL drafter mid-DSI', outcome: `completed, tokens identical (${got.wallMs.toFixed(0)} ms; non-SI ${expected.wallMs.toFixed(0)} ms); a request sent meanwhile served`, ms: got.wallMs });
    // Without a drafter DSI runs as non-SI: a later request drafts nothing and takes about non-SI's time.
    const without = await generate(s.client, 'MODE_DSI', 'fault the drafter');
    expect(without.tokens).toEqual(expected.tokens);
    expect(without.drafted).toBe(0);
    // The orchestrator said once that the drafter is gone, not once per commit.
    const gone = s.orchestrator.service.tail().filter((line) => /drafter .* not serving/.test(line));
    expect(gone.length).toBe(1);
    // Back on its address: drafting resumes within a few health intervals.
    await serve('drafter', synthetic(1, ['--a', '0.8']), s.drafterPort);
    await sleep(2500);
    const back = await generate(s.client, 'MODE_DSI', 'fault the drafter');
    expect(back.tokens).toEqual(expected.tokens);
    expect(back.drafted).toBeGreaterThan(0);
    report.push({ fault: 'drafter restarted on its address', outcome: `drafting resumed (${back.drafted} drafted)`, ms: 2500 });
    s.client.close();
  });

  it('SIGKILL every target: the request fails with UNAVAILABLE within 2 s, naming the replicas', async () => {
    const s = await stack(2);
    const pending = generate(s.client, 'MODE_DSI', 'fault every target').then(
      () => undefined,
      (error: unknown) => ({ error: DsiError.from(error), at: performance.now() }),
    );
    await sleep(300);
    const killedAt = performance.now();
    for (const r of s.replicas) r.service.child.kill('SIGKILL');
    const failure = await pending;
    expect(failure).toBeDefined();
    expect(statusCodeName(failure!.error.code)).toBe('unavailable');
    for (const r of s.replicas) expect(failure!.error.message).toContain(r.address);
    expect(failure!.at - killedAt).toBeLessThan(2000);
    report.push({ fault: 'SIGKILL every target', outcome: `${statusCodeName(failure!.error.code).toUpperCase()}: ${failure!.error.message}`, ms: failure!.at - killedAt });
    // And the orchestrator logs why (its health watch, within a check interval).
    const logged = /target .* (not serving|stopped answering)/;
    for (let waited = 0; waited < 3000 && !logged.test(s.orchestrator.service.tail().join('\n')); waited += 100) await sleep(100);
    expect(s.orchestrator.service.tail().join('\n')).toMatch(logged);
    s.client.close();
  });

  it('a killed replica restarted on its address serves again within 2 s', async () => {
    const s = await stack(1);
    const expected = await generate(s.client, 'MODE_NON_SI', 'restart');
    s.replicas[0].service.child.kill('SIGKILL');
    await s.replicas[0].service.closed;
    await serve('target', synthetic(5), s.targetPorts[0]);
    const restartedAt = performance.now();
    // Poll as a client would: the first request that succeeds after the restart.
    let got: number[] | undefined;
    let servingAfter = Infinity;
    while (performance.now() - restartedAt < 5000) {
      try {
        const sentAt = performance.now();
        got = (await generate(s.client, 'MODE_NON_SI', 'restart', 10_000)).tokens;
        servingAfter = sentAt - restartedAt;
        break;
      } catch {
        await sleep(100);
      }
    }
    // The request that succeeded was sent within 2 s of the restart.
    expect(servingAfter).toBeLessThan(2000);
    expect(got).toEqual(expected.tokens);
    report.push({ fault: 'killed target restarted on its address', outcome: 'served again, tokens identical', ms: servingAfter });
    s.client.close();
  });

  it('SIGTERM the orchestrator mid-request: the request in flight finishes, new ones get UNAVAILABLE, the process exits', async () => {
    const s = await stack(2);
    const expected = await generate(s.client, 'MODE_NON_SI', 'drain');
    const pending = generate(s.client, 'MODE_DSI', 'drain');
    await sleep(200);
    s.orchestrator.service.child.kill('SIGTERM');
    await sleep(100);
    const late = await generate(s.client, 'MODE_DSI', 'too late', 5000).then(
      () => 'served',
      (error: unknown) => statusCodeName(DsiError.from(error).code),
    );
    expect(late).toBe('unavailable');
    expect((await pending).tokens).toEqual(expected.tokens);
    const exit = await s.orchestrator.service.closed;
    expect(exit.code).toBe(0);
    report.push({ fault: 'SIGTERM orchestrator mid-request', outcome: `in-flight request finished with identical tokens, a new one got ${late.toUpperCase()}, exit code ${exit.code}`, ms: 0 });
    s.client.close();
  });

  describe('network faults through a loopback TCP proxy in front of one replica', () => {
    type Mode = 'pass' | 'delay' | 'drop' | 'blackhole';
    /** A proxy to `upstream` whose behaviour can be switched; returns its address and the switch. */
    async function proxy(upstream: string): Promise<{ address: string; set(mode: Mode): void; close(): void }> {
      let mode: Mode = 'pass';
      const sockets = new Set<net.Socket>();
      const [host, port] = [upstream.slice(0, upstream.lastIndexOf(':')), Number(upstream.slice(upstream.lastIndexOf(':') + 1))];
      const server = net.createServer((downstream) => {
        sockets.add(downstream);
        if (mode === 'blackhole') return; // accepted, never answered
        const up = net.connect(port, host);
        sockets.add(up);
        // No Nagle: a gRPC frame must not wait for the peer's delayed ACK (40 ms a round trip).
        downstream.setNoDelay(true);
        up.setNoDelay(true);
        const forward = (from: net.Socket, to: net.Socket) =>
          from.on('data', (chunk) => {
            if (mode === 'blackhole') return;
            if (mode === 'drop') {
              from.destroy();
              to.destroy();
              return;
            }
            if (mode === 'delay') setTimeout(() => to.write(chunk), 50);
            else to.write(chunk);
          });
        forward(downstream, up);
        forward(up, downstream);
        const end = () => {
          downstream.destroy();
          up.destroy();
        };
        downstream.on('error', end).on('close', end);
        up.on('error', end).on('close', end);
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return {
        address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
        set: (next) => {
          mode = next;
          if (next === 'drop') for (const socket of sockets) socket.destroy();
        },
        close: () => {
          for (const socket of sockets) socket.destroy();
          server.close();
        },
      };
    }

    it.each(['delay', 'drop', 'blackhole'] as const)('%s: the request completes with identical tokens, nothing hangs', async (fault) => {
      let front: Awaited<ReturnType<typeof proxy>> | undefined;
      const s = await stack(3, {
        fronts: async (address, i) => {
          if (i !== 0) return address;
          front = await proxy(address);
          return front.address;
        },
      });
      try {
        const expected = await generate(s.client, 'MODE_NON_SI', `network ${fault}`);
        const pending = generate(s.client, 'MODE_DSI', `network ${fault}`, 30_000);
        await sleep(200);
        front!.set(fault);
        const faultAt = performance.now();
        const got = await pending;
        expect(got.tokens).toEqual(expected.tokens);
        report.push({ fault: `proxy ${fault} in front of 1 of 3 targets`, outcome: `completed, tokens identical (${got.wallMs.toFixed(0)} ms; non-SI ${expected.wallMs.toFixed(0)} ms)`, ms: performance.now() - faultAt });
        // And the next request too, with the fault still on.
        expect((await generate(s.client, 'MODE_DSI', `network ${fault}`, 30_000)).tokens).toEqual(expected.tokens);
      } finally {
        front?.close();
        s.client.close();
      }
    });
  });
});
