import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';

/** A service of the local stack, running as a child process of `dsi up`. */
export interface StackService {
  name: string;
  address: string;
  child: ChildProcess;
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. Resolves when it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/** Thrown when a service of the local stack fails to start (its stderr tail is in the message). */
export class StackStartError extends Error {
  override readonly name = 'StackStartError';
}

const BIN = path.join(__dirname, '../bin/dsi.js');

/**
 * Starts `dsi serve NAME ARGS...` as a child process and resolves once it prints its
 * `NAME serving on ADDRESS` line. Its stderr is forwarded, prefixed, when `logs` is set.
 */
export function startService(
  name: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; logs?: boolean; timeoutMs?: number } = {},
): Promise<StackService> {
  const child = spawn(process.execPath, [BIN, 'serve', name, ...args], {
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (graceMs = 15_000) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  const stderrTail: string[] = [];
  readline.createInterface({ input: child.stderr! }).on('line', (line) => {
    stderrTail.push(line);
    if (stderrTail.length > 20) stderrTail.shift();
    if (options.logs) process.stderr.write(`[${name}] ${line}\n`);
  });
  return new Promise<StackService>((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop(1000);
      reject(new StackStartError(`${name} did not report ready within ${options.timeoutMs ?? 60_000} ms\n${stderrTail.join('\n')}`));
    }, options.timeoutMs ?? 60_000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new StackStartError(`${name} exited (${signal ?? `code ${code}`}) before it was ready\n${stderrTail.join('\n')}`));
    });
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      const ready = line.match(/ serving on (\S+)$/);
      if (ready) {
        clearTimeout(timer);
        resolve({ name, address: ready[1], child, stop });
      }
    });
  });
}
