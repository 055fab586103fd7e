import os from 'node:os';
import path from 'node:path';

/** Where the built-in model pair is cached: `DSI_MODELS_DIR`, else `$XDG_CACHE_HOME/dsi/models`, else `~/.cache/dsi/models`. */
export function defaultModelsDir(env: NodeJS.ProcessEnv): string {
  if (env.DSI_MODELS_DIR) return env.DSI_MODELS_DIR;
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'dsi', 'models');
}
