import { createSyntheticModel } from '@dsi/models';
import { DsiServer, LoadingSlot } from '@dsi/rpc';
import { targetService } from '@dsi/target-service';
import { ReplicaPool } from './replicas';

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
    const pool = new ReplicaPool({ dns: `localhost:${serving.port}` });
    await pool.start();
    expect(pool.healthy().map((r) => r.id)).toContain(`127.0.0.1:${serving.port}`);
    pool.stop();
  });

  it('follows health: a replica that is not ready yet joins once it reports SERVING, and leaves when it drains', async () => {
    const late = await target(false);
    const pool = new ReplicaPool({ addresses: [late.address] });
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
