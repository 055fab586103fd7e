import os from 'node:os';
import path from 'node:path';

/**
 * Where tests keep the built-in model pair: one folder per machine user, written once (atomically) by
 * the first test that needs it and reused by the others.
 */
export function testModelsDir(): string {
  return path.join(os.tmpdir(), `dsi-test-models-${process.getuid?.() ?? 'user'}`);
}
