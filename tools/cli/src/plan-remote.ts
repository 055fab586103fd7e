/**
 * `dsi plan --simulator ADDR`: the deployment planner run by a simulator service
 * (`dsi.v1.SimulatorService/Plan`). Loaded lazily: importing it loads @grpc/grpc-js, which must happen
 * after telemetry starts in processes that trace.
 */
import { status } from '@grpc/grpc-js';
import { SimulatorServiceClient, type PlanResponse } from '@dsi/proto';
import { createChannelOptions, DsiError } from '@dsi/rpc';
import { PlanInputError, type Plan, type PlanOptions, type PlanPair } from '@dsi/sim';
import { planFromWire, planRequestToWire } from '@dsi/wire';
import { callMetadata, channelCredentials, explainRemote } from './remote';

/** The service's INVALID_ARGUMENT for a planner input reads `field: reason`, as PlanInputError's message. */
const PLAN_INPUT_ERROR = /^([a-z_]+): ([\s\S]*)$/;

/**
 * Plans a deployment on the simulator service at `address`: the same inputs, defaults and result as
 * `planDeployment` run here. `onProgress` (or `options.onProgress`) sees the planner's progress as the
 * service streams it; aborting `signal` (or `options.signal`) cancels the call, which stops the planner
 * on the service, and rejects with the signal's reason, as the local planner does. An input out of range
 * rejects with the {@link PlanInputError} naming it, as locally; any other failure names the service.
 */
export async function planRemote(
  address: string,
  pair: PlanPair,
  options: Partial<PlanOptions>,
  onProgress?: (done: number, total: number) => void,
  signal?: AbortSignal,
): Promise<Plan> {
  const { signal: optionsSignal, onProgress: optionsProgress, ...inputs } = options;
  const abort = signal ?? optionsSignal;
  const progress = onProgress ?? optionsProgress;
  abort?.throwIfAborted();
  const simulator = new SimulatorServiceClient(address, channelCredentials(), createChannelOptions());
  // No deadline: a large plan takes minutes; the caller stops it with the signal.
  const stream = simulator.plan(planRequestToWire(pair, inputs), callMetadata());
  const cancel = () => stream.cancel();
  abort?.addEventListener('abort', cancel, { once: true });
  let plan: Plan | undefined;
  try {
    for await (const message of stream as AsyncIterable<PlanResponse>) {
      if (message.progress) progress?.(message.progress.done, message.progress.total);
      if (message.plan) plan = planFromWire(message.plan);
    }
  } catch (error) {
    if (abort?.aborted) throw abort.reason;
    const failure = DsiError.from(error);
    const input = failure.code === status.INVALID_ARGUMENT ? PLAN_INPUT_ERROR.exec(failure.rawMessage) : null;
    if (input) throw new PlanInputError(input[1], input[2]);
    throw await explainRemote('simulator', address, failure);
  } finally {
    abort?.removeEventListener('abort', cancel);
    simulator.close();
  }
  if (!plan) throw new Error(`simulator at ${address}: the Plan stream ended without a plan`);
  return plan;
}
