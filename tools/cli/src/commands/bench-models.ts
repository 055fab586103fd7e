import { credentials } from '@grpc/grpc-js';
import { DecoderSession, ensureDefaultModels } from '@dsi/modelgen';
import { TargetServiceClient, VerifyRequest, type VerifyResponse } from '@dsi/proto';
import { defaultModelsDir } from '../models-dir';
import { fixed, median, timeEach } from '../options';
import { startService, type StackService } from '../stack';

/** One row of the model-service benchmarks. */
export interface ModelBenchRow {
  name: string;
  median_ms: number;
  [key: string]: number | string;
}

function verify(client: TargetServiceClient, request: Partial<VerifyRequest>): Promise<VerifyResponse> {
  return new Promise((resolve, reject) =>
    client.verify(VerifyRequest.fromPartial(request), (error, response) => (error ? reject(error) : resolve(response!))),
  );
}

const PROMPT = Array.from({ length: 100 }, (_, i) => 32 + ((i * 7) % 90));

/**
 * Model-service benchmarks, side by side in one run: the serving overhead of a decode step (target
 * service vs the same session.run in process), Verify cost against block size with a warm and a cold
 * KV cache, and the synthetic backend's latency accuracy.
 */
export async function modelBench(runs: number, log: (line: string) => void): Promise<ModelBenchRow[]> {
  const rows: ModelBenchRow[] = [];
  const pair = await ensureDefaultModels(defaultModelsDir(process.env));
  const services: StackService[] = [];
  try {
    // 1. A decode step in process: session.run over one new token with a growing KV cache.
    const session = await DecoderSession.open(pair.target, { intraOpNumThreads: 1 });
    let { cache } = await session.forward(PROMPT);
    await session.forward([65], cache); // warm
    const inProcess = await timeEach(runs, async (i) => {
      ({ cache } = await session.forward([32 + (i % 90)], cache));
    });
    await session.close();

    // 2. The same step through the target service: Verify with zero drafts on a cached request.
    const target = await startService('target', ['--port', '0', '--models-dir', pair.root]);
    services.push(target);
    const client = new TargetServiceClient(target.address, credentials.createInsecure());
    const sequence = [...PROMPT];
    await verify(client, { requestId: 'decode', prefix: sequence, drafts: [] });
    const served = await timeEach(runs, async (i) => {
      sequence.push(32 + (i % 90));
      await verify(client, { requestId: 'decode', prefix: sequence, drafts: [] });
    });
    const roundTrip = await timeEach(runs, () => new Promise((resolve, reject) => client.getModelInfo({}, (e, r) => (e ? reject(e) : resolve(r)))));
    const ratio = median(served) / median(inProcess);
    rows.push(
      { name: 'decode step, session.run in process', median_ms: median(inProcess) },
      { name: 'decode step through the target service (Verify, 0 drafts)', median_ms: median(served), ratio_vs_in_process: ratio },
      { name: 'empty RPC round trip (GetModelInfo), the floor', median_ms: median(roundTrip) },
    );
    log(`  decode step: in process ${fixed(median(inProcess), 3)} ms, through the service ${fixed(median(served), 3)} ms (ratio ${fixed(ratio, 2)})`);

    // 3. Verify cost against block size, warm (prefix cached) and cold (nothing cached).
    for (let k = 0; k <= 8; k++) {
      const drafts = Array.from({ length: k }, (_, i) => 97 + i);
      const warm = await timeEach(runs, () => verify(client, { requestId: `warm-${k}`, prefix: PROMPT, drafts }));
      const cold = await timeEach(runs, () => verify(client, { prefix: PROMPT, drafts }));
      const lastWarm = await verify(client, { requestId: `warm-${k}`, prefix: PROMPT, drafts });
      rows.push({ name: `Verify k=${k}, 100-token prefix`, median_ms: median(warm), cold_ms: median(cold), warm_computed_tokens: lastWarm.stats?.computedTokens ?? 0 });
      log(`  Verify k=${k}: warm ${fixed(median(warm), 3)} ms (computes ${lastWarm.stats?.computedTokens} tokens), cold ${fixed(median(cold), 3)} ms`);
    }
    client.close();

    // 4. The synthetic backend: requested against measured forward latency, through the service.
    for (const requested of [5, 20, 50]) {
      const synthetic = await startService('target', ['--port', '0', '--backend', 'synthetic', '--ttft-ms', String(requested), '--tpot-ms', String(requested)]);
      services.push(synthetic);
      const syntheticClient = new TargetServiceClient(synthetic.address, credentials.createInsecure());
      const sequenceSynthetic = [...PROMPT];
      await verify(syntheticClient, { requestId: 's', prefix: sequenceSynthetic, drafts: [] });
      const modelMs: number[] = [];
      const wall = await timeEach(Math.min(runs, 40), async (i) => {
        sequenceSynthetic.push(32 + (i % 90));
        const response = await verify(syntheticClient, { requestId: 's', prefix: sequenceSynthetic, drafts: [] });
        modelMs.push(response.stats?.modelMs ?? NaN);
      });
      syntheticClient.close();
      rows.push({ name: `synthetic forward, requested ${requested} ms`, median_ms: median(wall), model_ms: median(modelMs), error_ms: median(wall) - requested });
      log(`  synthetic ${requested} ms: measured through the service ${fixed(median(wall), 3)} ms`);
      await synthetic.stop();
    }
  } finally {
    await Promise.all(services.map((s) => s.stop()));
  }
  return rows;
}
