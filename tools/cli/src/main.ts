import { Command, CommanderError } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { benchCommand } from './commands/bench';
import { estimateCommand } from './commands/estimate';
import { planCommand } from './commands/plan';
import { generateCommand } from './commands/generate';
import { heatmapCommand } from './commands/heatmap';
import { modelsCommand } from './commands/models';
import { serveCommand } from './commands/serve';
import { simulateCommand } from './commands/simulate';
import { traceCommand } from './commands/trace';
import { upCommand } from './commands/up';
import { checkUpFlags, type UpFlagValues } from './commands/up-flags';
import { ExitCode, UsageError } from './errors';
import { invalidValueMessage } from './options';

const { version } = JSON.parse(fs.readFileSync(path.join(__dirname, '../package.json'), 'utf8')) as { version: string };

/** `dsi models init`, `dsi generate`, ...: the command's name after those of its parents. */
function commandPath(command: Command): string {
  const names: string[] = [];
  for (let at: Command | null = command; at; at = at.parent) names.unshift(at.name());
  return names.join(' ');
}

/**
 * Commander's parse error as one line: `dsi: ` and the mistake naming the flag (a bad value worded as
 * the parsers in options.ts word theirs), then where the usage is. Commander's own wording otherwise.
 */
export function parseErrorLine(command: Command, message: string): string {
  let line = message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ').trim();
  const argument = /^option '(-[^\s',]+)[^']*' argument '(.*)' is invalid\. (.*)$/s.exec(line);
  const fromEnv = /^option '(-[^\s',]+)[^']*' value '(.*)' from env '(\w+)' is invalid\. (.*)$/s.exec(line);
  if (argument) line = invalidValueMessage(argument[1], argument[2], argument[3]);
  else if (fromEnv) line = invalidValueMessage(fromEnv[1], fromEnv[2], fromEnv[4], fromEnv[3]);
  return `dsi: ${line} (see \`${commandPath(command)} --help\`)\n`;
}

/** Makes `command` and every subcommand throw instead of exiting, and print a parse error as one line. */
function configure(command: Command): Command {
  command.exitOverride().configureOutput({ outputError: (message, write) => write(parseErrorLine(command, message)) });
  for (const sub of command.commands) configure(sub);
  return command;
}

/** The `dsi` program with every verb. */
export function program(): Command {
  const dsi = new Command('dsi').description('Distributed Speculative Inference: simulate, serve and measure DSI').version(version);
  // Every flag of `dsi up` is checked before its action starts anything.
  const up = upCommand().hook('preAction', (_up, action) => checkUpFlags(action.opts<UpFlagValues>(), action));
  for (const command of [up, generateCommand(), simulateCommand(), heatmapCommand(), serveCommand(), modelsCommand(), estimateCommand(), planCommand(), traceCommand(), benchCommand()]) {
    dsi.addCommand(command);
  }
  return configure(dsi);
}

/**
 * Runs the command line and sets the exit code: 0 on success, 2 for a usage mistake (one line on
 * stderr naming the parameter), 1 for any other failure.
 */
export async function main(argv: string[]): Promise<void> {
  const dsi = program();
  let active = dsi;
  dsi.hook('preAction', (_dsi, action) => {
    active = action;
  });
  try {
    await dsi.parseAsync(argv, { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version exit 0; a parse error was printed as one line by `configure`.
      process.exitCode = error.exitCode === 0 ? ExitCode.OK : ExitCode.USAGE;
      return;
    }
    if (error instanceof UsageError) {
      process.stderr.write(`dsi: ${error.message.replace(/\s*\n\s*/g, ' ')} (see \`${commandPath(active)} --help\`)\n`);
      process.exitCode = ExitCode.USAGE;
      return;
    }
    process.stderr.write(`dsi: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = ExitCode.FAILURE;
  }
}
