import { Command } from 'commander';
import type { AcceptanceReport } from '@dsi/models';
import { UsageError } from '../errors';
import { defaultModelsDir } from '../models-dir';
import { fixed, integerOption, textOption } from '../options';

interface AcceptanceFlags {
  target?: string;
  drafter?: string;
  prompt?: string[];
  tokens: number;
  json?: boolean;
}

/** The most tokens `dsi estimate acceptance` generates per prompt. */
export const MAX_ESTIMATE_TOKENS = 65_536;

/** `dsi estimate acceptance`: a model pair's greedy acceptance rate, measured as the study did. */
export function estimateCommand(): Command {
  const estimate = new Command('estimate').description('measure a model pair: acceptance rate');
  estimate
    .command('acceptance')
    .description('greedy acceptance rate of a drafter against a target (default: the built-in pair), the study estimator a = m/(1+m)')
    .addOption(textOption('--target <dir>', 'target ONNX folder (Optimum layout)'))
    .addOption(textOption('--drafter <dir>', 'drafter ONNX folder (Optimum layout)'))
    .addOption(textOption('--prompt <text...>', 'prompts (default: the built-in ones)'))
    .addOption(integerOption('--tokens <n>', 'greedy tokens the target generates per prompt', { min: 2, max: MAX_ESTIMATE_TOKENS }).default(64))
    .option('--json', 'print one JSON document on stdout')
    .action(async (flags: AcceptanceFlags) => {
      if (Boolean(flags.target) !== Boolean(flags.drafter)) throw new UsageError('give both --target and --drafter, or neither');
      const { ensureDefaultModels } = await import('@dsi/modelgen');
      const { measureAcceptance, OnnxModel, TextTokenizer } = await import('@dsi/models');
      const pair = flags.target ? { target: flags.target, drafter: flags.drafter! } : await ensureDefaultModels(defaultModelsDir(process.env));
      const tokenizer = TextTokenizer.load(pair.target);
      // The same forward path as the services: OnnxModel on a worker thread, one onnxruntime thread.
      const target = await OnnxModel.load(pair.target);
      let report: AcceptanceReport;
      try {
        const drafter = await OnnxModel.load(pair.drafter);
        try {
          report = await measureAcceptance(target, drafter, { prompts: flags.prompt, maxNewTokens: flags.tokens, encode: (text) => tokenizer.encode(text) });
        } finally {
          await drafter.close();
        }
      } finally {
        await target.close();
      }
      if (flags.json) {
        process.stdout.write(JSON.stringify({ target: pair.target, drafter: pair.drafter, ...report }) + '\n');
        return;
      }
      process.stdout.write(
        `acceptance rate a = ${fixed(report.acceptanceRate, 3)} (mean run m = ${fixed(report.meanRunLength, 2)} over ${report.runs.length} closed runs)\n` +
          `per-position agreement ${fixed(report.agreement, 3)} over ${report.positions} positions\n`,
      );
    });
  return estimate;
}
