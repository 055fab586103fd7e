import { Command, CommanderError } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { benchCommand } from './commands/bench';
import { estimateCommand } from './commands/estimate';
import { generateCommand } from './commands/generate';
import { heatmapCommand } from './commands/heatmap';
import { modelsCommand } from './commands/models';
import { serveCommand } from './commands/serve';
import { simulateCommand } from './commands/simulate';
import { traceCommand } from './commands/trace';
import { upCommand } from './commands/up';
import { ExitCode, UsageError } from './errors';

const { version } = JSON.parse(fs.readFileSync(path.join(__dirname, '../package.json'), 'utf8')) as { version: string };

/** The `dsi` program with every verb. */
export function program(): Command {
  const dsi = new Command('dsi')
    .description('Distributed Speculative Inference: simulate, serve and measure DSI')
    .version(version)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  for (const command of [upCommand(), generateCommand(), simulateCommand(), heatmapCommand(), serveCommand(), modelsCommand(), estimateCommand(), traceCommand(), benchCommand()]) {
    dsi.addCommand(command.exitOverride().showHelpAfterError('(run with --help for usage)'));
  }
  return dsi;
}

/**
 * Runs the command line and sets the exit code: 0 on success, 2 for a usage mistake (one line on
 * stderr naming the parameter), 1 for any other failure.
 */
export async function main(argv: string[]): Promise<void> {
  try {
    await program().parseAsync(argv, { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version exit 0; commander already printed its own message for usage errors.
      process.exitCode = error.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
      return;
    }
    if (error instanceof UsageError) {
      process.stderr.write(`dsi: ${error.message}\n`);
      process.exitCode = ExitCode.USAGE;
      return;
    }
    process.stderr.write(`dsi: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = ExitCode.FAILURE;
  }
}
