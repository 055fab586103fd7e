import { credentials } from '@grpc/grpc-js';
import { ensureDefaultModels } from '@dsi/modelgen';
import { OnnxModel } from '@dsi/models';
import { TargetServiceClient, VerifyRequest, type VerifyResponse } from '@dsi/proto';
import { defaultModelsDir } from '../models-dir';
import { median } from '@dsi/core';
import { fixed } from '../options';
import { timeEach } from '../timing';
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

/** What {@link modelBench} measures besides the run count; the defaults are `dsi bench --suite models`. */
export interface ModelBenchOptions {
  /** Where the default pair is cached (default: the `DSI_MODELS_DIR` or per-user default folder). */
  modelsDir?: string;
  /** Requested forward latencies of the synthetic backend rows, in ms (default 5, 20, 50). */
  syntheticMs?: readonly number[];
  /** Largest Verify block measured, k = 0..maxDrafts (default 8). */
  maxDrafts?: number;
}

/**
 * Decode steps of one request in process through the service's own forward path (OnnxModel: worker
 * thread, per-request KV cache): one new token per call after a 100-token prompt.
 */
async function decodeSteps(model: OnnxModel, runs: number): Promise<number[]> {
  const sequence = [...PROMPT];
  await model.logits('decode', sequence, sequence.length - 1);
  sequence.push(65);
  await model.logits('decode', sequence, sequence.length - 1); // warm
  const times = await timeEach(runs, async (i) => {
    sequence.push(32 + (i % 90));
    await model.logits('decode', sequence, sequence.length - 1);
  });
  await model.release('decode');
  return times;
}

/**
 * Batched forwards in process (`--max-batch-requests`): for each batch size B, B requests with a cached
 * 100-token prompt each send a Verify-sized call of 3 new tokens while a 64-token prefill of another
 * request runs, so the B calls queue and run together in the next forward. Returns, per B, the model
 * time of those batched forwards (each call reports its forward's).
 */
async function batchedForwards(model: OnnxModel, sizes: readonly number[], runs: number): Promise<Map<number, number[]>> {
  const times = new Map<number, number[]>();
  for (const size of sizes) {
    const sequences = Array.from({ length: size }, (_, i) => PROMPT.map((token, j) => 32 + ((token + i * 13 + j) % 90)));
    for (let i = 0; i < size; i++) await model.logits(`batch-${size}-${i}`, sequences[i], sequences[i].length - 1);
    const forwardMs: number[] = [];
    for (let run = 0; run < runs + 1; run++) {
      const blocker = model.logits('', PROMPT.slice(0, 64), 63);
      const calls = sequences.map((sequence, i) => {
        sequence.push(32 + ((run + i) % 90), 33 + ((run + i) % 90), 34 + ((run + i) % 90));
        return model.logits(`batch-${size}-${i}`, sequence, sequence.length - 3);
      });
      await blocker;
      const results = await Promise.all(calls);
      if (results.some((result) => (result.batchRequests ?? 1) !== size)) throw new Error(`batch of ${size}: the calls did not share one forward (${results.map((r) => r.batchRequests).join(', ')})`);
      if (run > 0) forwardMs.push(results[0].modelMs ?? NaN); // the first is a warm-up
    }
    for (let i = 0; i < size; i++) await model.release(`batch-${size}-${i}`);
    times.set(size, forwardMs);
  }
  return times;
}

/** Uncached forwards of 64 new tokens (a prefill) in process. */
async function prefills(model: OnnxModel, runs: number): Promise<number[]> {
  const tokens = PROMPT.slice(0, 64);
  await model.logits('', tokens, tokens.length - 1); // warm
  return timeEach(runs, () => model.logits('', tokens, tokens.length - 1));
}

/**
 * Model-service benchmarks, side by side in one run: the serving overhead of a decode step (target
 * service vs the same OnnxModel forward in process), the drafter's and target's forward cost in
 * process, Verify cost against block size with a warm and a cold KV cache, and the synthetic
 * backend's latency accuracy. Small `runs` and options make it a quick check (its test does that).
 */
export async function modelBench(runs: number, log: (line: string) => void, options: ModelBenchOptions = {}): Promise<ModelBenchRow[]> {
  const rows: ModelBenchRow[] = [];
  const pair = await ensureDefaultModels(options.modelsDir ?? defaultModelsDir(process.env));
  const services: StackService[] = [];
  try {
    // 1. Forwards in process, on the path the services use: OnnxModel.logits, one onnxruntime thread.
    const inProcess: Record<'target' | 'drafter', { decode: number[]; prefill: number[] }> = {
      target: { decode: [], prefill: [] },
      drafter: { decode: [], prefill: [] },
    };
    for (const role of ['target', 'drafter'] as const) {
      const model = await OnnxModel.load(pair[role], { threads: 1 });
      try {
        inProcess[role] = { decode: await decodeSteps(model, runs), prefill: await prefills(model, Math.ceil(runs / 2)) };
      } finally {
        await model.close();
      }
    }

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
    const decodeInProcess = median(inProcess.target.decode);
    const ratio = median(served) / decodeInProcess;
    rows.push(
      { name: 'decode step, OnnxModel.logits in process', median_ms: decodeInProcess },
      { name: 'decode step through the target service (Verify, 0 drafts)', median_ms: median(served), ratio_vs_in_process: ratio },
      { name: 'empty RPC round trip (GetModelInfo), the floor', median_ms: median(roundTrip) },
      { name: 'drafter decode step, OnnxModel.logits in process', median_ms: median(inProcess.drafter.decode), ratio_vs_target: median(inProcess.drafter.decode) / decodeInProcess },
      { name: '64-token prefill (target), OnnxModel.logits in process', median_ms: median(inProcess.target.prefill), drafter_ms: median(inProcess.drafter.prefill) },
    );
    log(`  decode step: in process ${fixed(decodeInProcess, 3)} ms, through the service ${fixed(median(served), 3)} ms (ratio ${fixed(ratio, 2)})`);
    log(`  in process: drafter decode step ${fixed(median(inProcess.drafter.decode), 3)} ms, 64-token prefill target ${fixed(median(inProcess.target.prefill), 3)} ms, drafter ${fixed(median(inProcess.drafter.prefill), 3)} ms`);

    // 2b. Batched forwards (--max-batch-requests 8): B calls of 3 new tokens in one forward, against one alone.
    const batching = await OnnxModel.load(pair.target, { threads: 1, maxBatchRequests: 8 });
    try {
      const batched = await batchedForwards(batching, [1, 2, 4, 8], Math.max(3, Math.ceil(runs / 2)));
      const alone = median(batched.get(1) as number[]);
      for (const [size, times] of batched) {
        const forward = median(times);
        rows.push({ name: `batched forward, ${size} call${size === 1 ? '' : 's'} of 3 tokens (target, in process)`, median_ms: forward, per_call_ms: forward / size, ratio_vs_one_call: forward / alone });
        log(`  batched forward of ${size} calls x 3 tokens: ${fixed(forward, 3)} ms (${fixed(forward / alone, 2)}x one call alone, ${fixed(forward / size, 3)} ms a call)`);
      }
    } finally {
      await batching.close();
    }

    // 3. Verify cost against block size, warm (prefix cached) and cold (nothing cached).
    for (let k = 0; k <= (options.maxDrafts ?? 8); k++) {
      const drafts = Array.from({ length: k }, (_, i) => 97 + i);
      const warm = await timeEach(runs, () => verify(client, { requestId: `warm-${k}`, prefix: PROMPT, drafts }));
      const cold = await timeEach(runs, () => verify(client, { prefix: PROMPT, drafts }));
      const lastWarm = await verify(client, { requestId: `warm-${k}`, prefix: PROMPT, drafts });
      rows.push({ name: `Verify k=${k}, 100-token prefix`, median_ms: median(warm), cold_ms: median(cold), warm_computed_tokens: lastWarm.stats?.computedTokens ?? 0 });
      log(`  Verify k=${k}: warm ${fixed(median(warm), 3)} ms (computes ${lastWarm.stats?.computedTokens} tokens), cold ${fixed(median(cold), 3)} ms`);
    }
    client.close();

    // 4. The synthetic backend: requested against measured forward latency, through the service.
    for (const requested of options.syntheticMs ?? [5, 20, 50]) {
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
