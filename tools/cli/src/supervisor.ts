import fs from 'node:fs';
import path from 'node:path';
import { spawnService, type ServiceExit, type ServiceProcess } from './stack';

/** How a {@link StackSupervisor} runs its services; `dsi up` builds it from its flags. */
export interface SupervisorOptions {
  env?: NodeJS.ProcessEnv;
  /** Each service writes its log to `DIR/NAME.log` (created; truncated when the supervisor starts it). */
  logDir: string;
  /** Also echo every service line to the terminal, prefixed `[NAME]` (`--logs`). */
  echo?: (line: string) => void;
  /** Start a service again, on the same address, when it dies (`--restart`). */
  restart?: boolean;
  /** Where deaths and restarts are reported, one line each; `dsi up` passes stderr. */
  report: (line: string) => void;
  /** How long a service may take to print its ready line. Default 60 s. */
  startTimeoutMs?: number;
  /** Restart attempts in a row before giving up on a service that keeps dying. Default 5. */
  maxRestarts?: number;
}

/** A running service of the stack, as its supervisor sees it. */
export interface SupervisedService {
  readonly name: string;
  /** `host:port`; it stays the same across restarts. */
  readonly address: string;
  /** The file the service's output goes to. */
  readonly logFile: string;
  /** Process id of the current incarnation. */
  readonly pid: number | undefined;
  /** How many times it has been restarted. */
  readonly restarts: number;
}

interface Entry {
  name: string;
  args: string[];
  logFile: string;
  log: fs.WriteStream;
  process: ServiceProcess;
  address?: string;
  restarts: number;
  /** Restarts since it last stayed up for {@link STABLE_MS}. */
  recentRestarts: number;
  readySince?: number;
}

/** A service that has stayed up this long is healthy again: its restart backoff starts over. */
const STABLE_MS = 10_000;
/** Lines of a dead service's log shown in its death report. */
const REPORT_LINES = 10;

/**
 * The processes of `dsi up`. Every child is tracked from the moment it is spawned, so
 * {@link stopAll} stops each one whatever state it is in (a failed start, Ctrl-C, the end of `--once`).
 * Once a service is ready, its death is reported at once with its last log lines and, with
 * `restart`, it is started again with the same arguments on the same address (restarts back off
 * when it keeps dying, and stop after `maxRestarts` in a row).
 */
export class StackSupervisor {
  private readonly entries: Entry[] = [];
  private readonly spawned: ServiceProcess[] = [];
  private stopping = false;

  constructor(private readonly options: SupervisorOptions) {
    fs.mkdirSync(options.logDir, { recursive: true });
  }

  /** The services started so far, in start order. */
  get services(): SupervisedService[] {
    return this.entries.filter((e) => e.address !== undefined).map((e) => this.view(e));
  }

  /** Process ids of every child it has spawned, current and past, ready or not: what must be gone after {@link stopAll}. */
  pids(): number[] {
    return this.spawned.flatMap((p) => (p.child.pid === undefined ? [] : [p.child.pid]));
  }

  /**
   * Spawns `dsi serve NAME ARGS...` (tracked at once) and resolves when it is ready; rejects with
   * its last lines when it exits or times out first. `label` names it in reports and its log file
   * (default NAME), e.g. `target-0`.
   */
  async start(name: string, args: string[], label = name): Promise<SupervisedService> {
    if (this.stopping) throw new Error(`not starting ${label}: the stack is stopping`);
    const logFile = path.join(this.options.logDir, `${label}.log`);
    const log = fs.createWriteStream(logFile, { flags: 'w' });
    log.on('error', (error) => this.options.report(`dsi up: cannot write ${logFile}: ${error.message}`));
    const entry: Entry = { name: label, args, logFile, log, process: this.spawn(label, name, args, log), restarts: 0, recentRestarts: 0 };
    this.entries.push(entry);
    entry.address = await entry.process.ready;
    entry.readySince = Date.now();
    this.watch(entry, entry.process, name);
    return this.view(entry);
  }

  /**
   * Stops every process it started, ready or not: SIGTERM, then SIGKILL after `graceMs`. Resolves
   * once all have exited and their logs are flushed; no restart happens after it is called.
   */
  async stopAll(graceMs = 15_000): Promise<void> {
    this.stopping = true;
    await Promise.all(this.entries.map((e) => e.process.stop(graceMs)));
    await Promise.all(this.entries.map((e) => new Promise<void>((resolve) => e.log.end(resolve))));
  }

  private view(entry: Entry): SupervisedService {
    return {
      name: entry.name,
      address: entry.address ?? '',
      logFile: entry.logFile,
      pid: entry.process.child.pid,
      restarts: entry.restarts,
    };
  }

  private spawn(label: string, name: string, args: string[], log: fs.WriteStream): ServiceProcess {
    const { echo } = this.options;
    const spawned = spawnService(name, args, {
      label,
      env: this.options.env,
      timeoutMs: this.options.startTimeoutMs,
      onLine: (line) => {
        log.write(`${new Date().toISOString()} ${line}\n`);
        echo?.(`[${label}] ${line}`);
      },
    });
    this.spawned.push(spawned);
    return spawned;
  }

  /** Reports the death of a ready service at once and, with `restart`, brings it back. */
  private watch(entry: Entry, incarnation: ServiceProcess, name: string): void {
    void incarnation.closed.then((exit) => {
      if (this.stopping || entry.process !== incarnation) return;
      this.options.report(this.deathReport(entry, incarnation, exit));
      if (!this.options.restart) {
        this.options.report(`dsi up: the stack goes on without ${entry.name}; \`dsi up --restart\` brings a dead service back`);
        return;
      }
      void this.restart(entry, name);
    });
  }

  private deathReport(entry: Entry, incarnation: ServiceProcess, exit: ServiceExit): string {
    const how = exit.signal ? `killed by ${exit.signal}` : `exited with code ${exit.code}`;
    const tail = incarnation.tail().slice(-REPORT_LINES);
    return [
      `dsi up: ${entry.name} (${entry.address}, pid ${incarnation.child.pid}) died: ${how}; its log is ${entry.logFile}${tail.length > 0 ? ', ending:' : ''}`,
      ...tail.map((line) => `  | ${line}`),
    ].join('\n');
  }

  private async restart(entry: Entry, name: string): Promise<void> {
    const maxRestarts = this.options.maxRestarts ?? 5;
    const stable = entry.readySince !== undefined && Date.now() - entry.readySince >= STABLE_MS;
    if (stable) entry.recentRestarts = 0;
    for (;;) {
      if (this.stopping) return;
      if (entry.recentRestarts >= maxRestarts) {
        this.options.report(`dsi up: giving up on ${entry.name} after ${maxRestarts} restarts in a row; the stack goes on without it`);
        return;
      }
      // Back off when it keeps dying: at once the first time, then 1 s, 2 s, 4 s...
      const delayMs = entry.recentRestarts === 0 ? 0 : 1000 * 2 ** (entry.recentRestarts - 1);
      if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
      if (this.stopping) return;
      entry.recentRestarts += 1;
      entry.restarts += 1;
      this.options.report(`dsi up: restarting ${entry.name} on ${entry.address}${delayMs > 0 ? ` (after ${delayMs} ms)` : ''}`);
      entry.log.write(`${new Date().toISOString()} --- dsi up: restart ${entry.restarts} ---\n`);
      const incarnation = this.spawn(entry.name, name, samePort(entry.args, entry.address!), entry.log);
      entry.process = incarnation;
      try {
        await incarnation.ready;
      } catch (error) {
        if (this.stopping) return;
        this.options.report(`dsi up: ${entry.name} failed to restart: ${error instanceof Error ? error.message : String(error)}`);
        continue;
      }
      entry.readySince = Date.now();
      this.options.report(`dsi up: ${entry.name} is back on ${entry.address} (pid ${incarnation.child.pid})`);
      this.watch(entry, incarnation, name);
      return;
    }
  }
}

/** The arguments with `--port` set to the port of `address`, so a restart (even after `--port 0`) binds where clients dial. */
function samePort(args: readonly string[], address: string): string[] {
  const port = address.slice(address.lastIndexOf(':') + 1);
  const out = [...args];
  const at = out.indexOf('--port');
  if (at >= 0) out[at + 1] = port;
  else out.push('--port', port);
  return out;
}
