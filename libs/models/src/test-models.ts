import os from 'node:os';
import path from 'node:path';
import * as vm from 'node:vm';
import type * as Ort from 'onnxruntime-node';

/**
 * Where tests keep the built-in model pair: one folder per machine user, written once (atomically) by
 * the first test that needs it and reused by the others.
 */
export function testModelsDir(): string {
  return path.join(os.tmpdir(), `dsi-test-models-${process.getuid?.() ?? 'user'}`);
}

const TYPED_ARRAYS = [
  'Float32Array',
  'Float64Array',
  'Int8Array',
  'Uint8Array',
  'Uint8ClampedArray',
  'Int16Array',
  'Uint16Array',
  'Int32Array',
  'Uint32Array',
  'BigInt64Array',
  'BigUint64Array',
] as const;

/**
 * Makes this realm's typed-array constructors the host realm's, when the code runs inside a `vm`
 * sandbox (as jest runs every test file) whose globals differ from the host's. Returns the names it
 * replaced (none outside a sandbox).
 *
 * Why: onnxruntime-node's native binding creates output tensors' typed arrays in the host realm, while
 * onnxruntime-common, evaluated in the sandbox, checks them with `instanceof` against the sandbox's
 * constructors and throws "A float32 tensor's data must be type of Float32Array". Must run before
 * onnxruntime is first loaded in the realm; {@link onnxruntimeForTests} calls it. {@link OnnxModel}
 * does not need it: its session lives on a worker thread, outside the sandbox.
 */
export function adoptHostTypedArrays(): string[] {
  const replaced: string[] = [];
  const globals = globalThis as unknown as Record<string, unknown>;
  for (const name of TYPED_ARRAYS) {
    const host = vm.runInThisContext(name) as unknown;
    if (typeof host === 'function' && globals[name] !== host) {
      globals[name] = host;
      replaced.push(name);
    }
  }
  return replaced;
}

let onnxruntime: Promise<typeof Ort> | undefined;
/**
 * onnxruntime-node loaded into a test's own realm (after {@link adoptHostTypedArrays}), for tests that
 * check a model file against the runtime directly (batched or masked feeds the backend never sends).
 */
export function onnxruntimeForTests(): Promise<typeof Ort> {
  if (!onnxruntime) {
    adoptHostTypedArrays();
    onnxruntime = import('onnxruntime-node');
  }
  return onnxruntime;
}
