import { Command } from 'commander';
import { defaultModelsDir } from '../models-dir';
import { textOption } from '../options';

/** `dsi models init`: write the built-in model pair (deterministic, same bytes on every run). */
export function modelsCommand(): Command {
  const models = new Command('models').description('manage the built-in ONNX model pair');
  models
    .command('init')
    .description('write the built-in target and drafter ONNX models (skipped when already there and intact)')
    .addOption(textOption('--dir <dir>', 'folder for the pair (default: $DSI_MODELS_DIR or ~/.cache/dsi/models)'))
    .option('--json', 'print one JSON document on stdout')
    .action(async (flags: { dir?: string; json?: boolean }) => {
      const { ensureDefaultModels, modelFingerprint } = await import('@dsi/modelgen');
      const pair = await ensureDefaultModels(flags.dir ?? defaultModelsDir(process.env));
      const doc = { root: pair.root, target: pair.target, drafter: pair.drafter, fingerprint: { target: modelFingerprint(pair.target), drafter: modelFingerprint(pair.drafter) } };
      process.stdout.write(flags.json ? JSON.stringify(doc) + '\n' : `target  ${pair.target}\ndrafter ${pair.drafter}\n`);
    });
  return models;
}
