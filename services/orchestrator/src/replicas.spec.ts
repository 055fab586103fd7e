import { status } from '@grpc/grpc-js';
import { generate } from '@dsi/core';
import { drafterService } from '@dsi/drafter-service';
import { createSyntheticModel, realClock } from '@dsi/models';
import { DsiServer, LoadingSlot } from '@dsi/rpc';
import { targetService } from '@dsi/target-service';
import { GrpcTargetReplica, ReplicaPool } from './replicas';

// Real servers on loopback: milliseconds, apart from waiting for a health interval.
jest.setTimeout(20_000);

describe('ReplicaPool', () => {
  const servers: DsiServer[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.shutdown()));
  });

  async function target(ready: boolean): Promise<DsiServer> {
    const server = new DsiServer([targetService(LoadingSlot.of(createSyntheticModel({ role: 'target', seed: 1 })))], { port: 0 });
    await server.start();
    if (ready) server.markServing();
    servers.push(server);
    return server;
  }

  it('finds replicas through DNS (as behind a headless Service) and uses only the SERVING ones', async () => {
    const serving = await target(true);
    const pool = ReplicaPool.targets({ dns: `localhost:${serving.port}` });
    await pool.start();
    expect(pool.healthy().map((r) => r.id)).toContain(`127.0.0.1:${serving.port}`);
    pool.stop();
  });

  it('stopped while it resolves, dials nothing: no replica, no health watch, nothing logged after the stop', async () => {
    const serving = await target(true);
    const lines: string[] = [];
    const pool = ReplicaPool.targets({ dns: `localhost:${serving.port}` }, { log: (line: string) => lines.push(line) });
    const starting = pool.start();
    // The DNS lookup is under way (the container test's orchestrator, stopped by SIGTERM, then logged
    // every target SERVING after "state STOPPED" and kept their watches).
    pool.stop();
    await starting;
    expect(pool.all()).toHaveLength(0);
    expect(lines).toEqual([]);
  });

  it('follows health: a replica that is not ready yet joins once it reports SERVING, and leaves when it drains', async () => {
    const late = await target(false);
    const pool = ReplicaPool.targets({ addresses: [late.address] });
    await pool.start();
    expect(pool.healthy()).toHaveLength(0);
    late.markServing();
    await pool.refresh();
    expect(pool.healthy().map((r) => r.id)).toEqual([late.address]);
    await late.shutdown();
    await pool.refresh();
    expect(pool.healthy()).toHaveLength(0);
    pool.stop();
  });
});

describe('a drafter pool\'s health watch', () => {
  const servers: DsiServer[] = [];
  const closers: Array<() => void> = [];
  afterEach(async () => {
    for (const close of closers.splice(0)) close();
    await Promise.all(servers.splice(0).map((s) => s.shutdown()));
  });

  async function serve(registration: ConstructorParameters<typeof DsiServer>[0][number], port = 0): Promise<DsiServer> {
    const server = new DsiServer([registration], { port, drainGraceMs: 1000 });
    servers.push(server);
    await server.start();
    server.markServing();
    return server;
  }

  const drafterModel = () => LoadingSlot.of(createSyntheticModel({ role: 'drafter', seed: 1, acceptance: 1 }));

  /** Log lines of the watch, with a bounded wait for the next one that matches. */
  function watchLog(): { log: (line: string) => void; next(pattern: RegExp, timeoutMs: number): Promise<number> } {
    const waiters: Array<{ pattern: RegExp; resolve: (at: number) => void }> = [];
    return {
      log: (line) => {
        for (const waiter of waiters.filter((w) => w.pattern.test(line))) {
          waiters.splice(waiters.indexOf(waiter), 1);
          waiter.resolve(Date.now());
        }
      },
      next: (pattern, timeoutMs) =>
        new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no log line matching ${pattern} within ${timeoutMs} ms`)), timeoutMs);
          waiters.push({ pattern, resolve: (at) => (clearTimeout(timer), resolve(at)) });
        }),
    };
  }

  const call = (requestId: string) => ({ requestId, prefix: [1, 2, 3], maxTokens: 3, sampling: { rule: 'greedy' as const, temperature: 1 }, returnProbs: false });

  it('skips drafting while the drafter is down (generation goes on as non-SI) and drafts within a second of its return on the same port', async () => {
    const first = await serve(drafterService(drafterModel()));
    const port = first.port;
    const target = await serve(targetService(LoadingSlot.of(createSyntheticModel({ role: 'target', seed: 1 }))));
    const replica = new GrpcTargetReplica(target.address);
    const { log, next } = watchLog();
    const drafters = ReplicaPool.drafters({ addresses: [first.address] }, { intervalMs: 500, log });
    closers.push(() => drafters.stop(), () => replica.close());
    await drafters.start();
    const [drafter] = drafters.all();
    expect(drafters.healthy()).toEqual([drafter]);
    expect((await drafter.draft(call('before'), new AbortController().signal)).tokens).toHaveLength(3);

    const wentDown = next(/is not serving/, 5000);
    await first.shutdown();
    await wentDown;
    expect(drafter.serving).toBe(false);
    expect(drafters.healthy()).toEqual([]);
    await expect(drafter.draft(call('down'), new AbortController().signal)).rejects.toMatchObject({
      code: status.UNAVAILABLE,
      message: expect.stringContaining('not serving'),
    });
    // A DSI generation while the drafter is down: every token from the target, none drafted.
    const config = { requestId: 'gen-down', mode: 'dsi' as const, prompt: [1, 2, 3], maxNewTokens: 8, lookahead: 3, sampling: { rule: 'greedy' as const, temperature: 1 } };
    const withoutDrafter = await generate(config, { drafter, targets: [replica], clock: realClock });
    const nonSi = await generate({ ...config, requestId: 'gen-nonsi', mode: 'nonsi' }, { drafter, targets: [replica], clock: realClock });
    expect(withoutDrafter.tokens).toEqual(nonSi.tokens);
    expect(withoutDrafter.metrics.drafted).toBe(0);

    // Whatever reconnect backoff the old channels are in, the watch dials afresh (probe and draft
    // channel) as soon as health answers SERVING again.
    const cameBack = next(/is SERVING/, 5000);
    const restartedAt = Date.now();
    await serve(drafterService(drafterModel()), port);
    const seenAt = await cameBack;
    expect(seenAt - restartedAt).toBeLessThan(1000);
    expect((await drafter.draft(call('after'), new AbortController().signal)).tokens).toHaveLength(3);
    const withDrafter = await generate({ ...config, requestId: 'gen-back' }, { drafter, targets: [replica], clock: realClock });
    expect(withDrafter.tokens).toEqual(nonSi.tokens);
    expect(withDrafter.metrics.drafted).toBeGreaterThan(0);
  });
});
