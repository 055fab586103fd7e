import { MAX_LOOKAHEAD } from '@dsi/core';
import { UsageError } from '../errors';
import { checkInteger, checkReal, checkText, checkWritableDir, invalidValueMessage, PORT_RANGE } from '../options';
import { DEFAULT_MAX_NEW_TOKENS_LIMIT } from './serve';

/** The flags of `dsi up` that `checkUpFlags` checks, as commander parsed them. */
export interface UpFlagValues {
  targets: number;
  backend: 'onnx' | 'synthetic';
  a: number;
  c: number;
  targetMs: number;
  maxBatchRequests: number;
  lookahead: number | 'auto';
  maxNewTokens: number;
  prompt: string;
  basePort: number;
  /** `--tls DIR`: the folder of the stack's CA and certificates. */
  tls?: string;
}

/** Where a flag's value came from, as commander's `Command.getOptionValueSource` tells. */
export interface OptionSources {
  getOptionValueSource(key: string): string | undefined;
}

/** The most target replicas `dsi up` starts. */
export const MAX_UP_TARGETS = 16;

/** Port offsets from `--base-port`: the orchestrator, the drafter, the simulator, then target i at `TARGETS + i`. */
export const UP_PORT_OFFSETS = { orchestrator: 0, drafter: 2, simulator: 4, targets: 10 } as const;

/** The most calls one forward of a `dsi up` replica may batch. */
export const MAX_UP_BATCH_REQUESTS = 1024;

/** The slowest synthetic target forward `dsi up` accepts (a minute). */
export const MAX_UP_TARGET_MS = 60_000;

const SYNTHETIC_ONLY = [
  ['a', '--a'],
  ['c', '--c'],
  ['targetMs', '--target-ms'],
  ['maxBatchRequests', '--max-batch-requests'],
] as const;

/**
 * Checks every flag of `dsi up` before anything starts, throwing a UsageError (exit 2) whose one line
 * names the flag. Call it first in up's action; pass the command (the action's last argument) as
 * `sources` so a synthetic-only flag given with `--backend onnx` is rejected rather than ignored.
 */
export function checkUpFlags(flags: UpFlagValues, sources?: OptionSources): void {
  const targets = checkInteger('--targets', flags.targets, { min: 1, max: MAX_UP_TARGETS });
  const highestBase = PORT_RANGE.max - UP_PORT_OFFSETS.targets - (targets - 1);
  if (flags.basePort !== 0 && !(Number.isInteger(flags.basePort) && flags.basePort >= PORT_RANGE.min && flags.basePort <= highestBase)) {
    const reason = `expected 0 (free ports) or an integer in [${PORT_RANGE.min}, ${highestBase}], as the ${targets} targets listen on --base-port + ${UP_PORT_OFFSETS.targets}..${UP_PORT_OFFSETS.targets + targets - 1}`;
    throw new UsageError(invalidValueMessage('--base-port', String(flags.basePort), reason));
  }
  if (flags.lookahead !== 'auto') checkInteger('--lookahead', flags.lookahead, { min: 1, max: MAX_LOOKAHEAD });
  checkInteger('--max-new-tokens', flags.maxNewTokens, { min: 1, max: DEFAULT_MAX_NEW_TOKENS_LIMIT });
  checkText('--prompt', flags.prompt);
  if (flags.tls !== undefined) {
    checkText('--tls', flags.tls);
    checkWritableDir(flags.tls, '--tls');
  }
  if (flags.backend === 'synthetic') {
    checkReal('--a', flags.a, { min: 0, max: 1 });
    checkReal('--c', flags.c, { min: 0, max: 1, minExclusive: true });
    checkReal('--target-ms', flags.targetMs, { min: 0, max: MAX_UP_TARGET_MS, minExclusive: true });
    checkInteger('--max-batch-requests', flags.maxBatchRequests, { min: 1, max: MAX_UP_BATCH_REQUESTS });
    return;
  }
  for (const [key, flag] of SYNTHETIC_ONLY) {
    const source = sources?.getOptionValueSource(key);
    if (source === 'cli' || source === 'env') throw new UsageError(`${flag} applies only to --backend synthetic (the backend is ${flags.backend})`);
  }
}
