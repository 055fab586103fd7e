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

/** How a service process ended: its exit code, or the signal that ended it. */
export interface ServiceExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * A `dsi serve NAME` child from the moment it is spawned, before it is ready: what a supervisor
 * tracks so that a failure anywhere can stop every process it started.
 */
export interface ServiceProcess {
  /** The label it was spawned with (default the service name). */
  readonly name: string;
  readonly child: ChildProcess;
  /** Resolves with the address once the service prints its ready line; rejects with a {@link StackStartError}. */
  readonly ready: Promise<string>;
  /** Resolves once the process has exited and its output has been read to the end. */
  readonly closed: Promise<ServiceExit>;
  /** The last lines the service wrote (stdout and stderr), oldest first. */
  tail(): string[];
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. Resolves when it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/** Options of {@link spawnService}. */
export interface SpawnServiceOptions {
  env?: NodeJS.ProcessEnv;
  /** Give up (stop it, reject `ready`) when the ready line has not come within this long. Default 60 s. */
  timeoutMs?: number;
  /** Receives every line the service writes, stdout and stderr. */
  onLine?: (line: string) => void;
  /** Lines kept for {@link ServiceProcess.tail}. Default 20. */
  tailLines?: number;
  /** Names the process in errors, e.g. `target-2`. Default NAME. */
  label?: string;
}

const BIN = path.join(__dirname, '../bin/dsi.js');

/**
 * Spawns `dsi serve NAME ARGS...` and returns at once, so the caller can track the process before it
 * is ready; `ready` resolves on its `NAME serving on ADDRESS` line. A process that exits first, or
 * stays silent past the timeout (it is then stopped), rejects `ready` with its last lines.
 */
export function spawnService(name: string, args: string[], options: SpawnServiceOptions = {}): ServiceProcess {
  const child = spawn(process.execPath, [BIN, 'serve', name, ...args], {
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const timeoutMs = options.timeoutMs ?? 60_000;
  const tailLines = options.tailLines ?? 20;
  const label = options.label ?? name;
  const lines: string[] = [];
  const exited = new Promise<ServiceExit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  // 'close' comes after 'exit' once stdout and stderr have ended, so the tail is complete then.
  const closed = new Promise<ServiceExit>((resolve) => child.once('close', (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal })));
  const stop = async (graceMs = 15_000): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    }
  };
  const record = (line: string): void => {
    lines.push(line);
    if (lines.length > tailLines) lines.shift();
    options.onLine?.(line);
  };
  let onReadyLine: (address: string) => void = () => undefined;
  readline.createInterface({ input: child.stdout! }).on('line', (line) => {
    record(line);
    const ready = line.match(/ serving on (\S+)$/);
    if (ready) onReadyLine(ready[1]);
  });
  readline.createInterface({ input: child.stderr! }).on('line', record);
  const ready = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new StackStartError(`${label} did not report ready within ${timeoutMs} ms\n${lines.join('\n')}`));
      void stop(1000);
    }, timeoutMs);
    onReadyLine = (address) => {
      clearTimeout(timer);
      resolve(address);
    };
    void closed.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new StackStartError(`${label} exited (${signal ?? `code ${code}`}) before it was ready\n${lines.join('\n')}`));
    });
  });
  ready.catch(() => undefined); // the caller awaits it; a late rejection after stop() is not an error
  return { name: label, child, ready, closed, tail: () => [...lines], stop };
}

/**
 * Starts `dsi serve NAME ARGS...` as a child process and resolves once it prints its
 * `NAME serving on ADDRESS` line. Its output is forwarded, prefixed, when `logs` is set. For several
 * services that must live and die together, use the supervisor (`./supervisor`), which tracks each
 * process from the moment it is spawned.
 */
export async function startService(
  name: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; logs?: boolean; timeoutMs?: number } = {},
): Promise<StackService> {
  const service = spawnService(name, args, {
    env: options.env,
    timeoutMs: options.timeoutMs,
    onLine: options.logs ? (line) => process.stderr.write(`[${name}] ${line}\n`) : undefined,
  });
  const address = await service.ready;
  return { name, address, child: service.child, stop: service.stop };
}
