import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

// `dsi up` starts real services (the built CLI): seconds each on a busy machine.
jest.setTimeout(90_000);

const bin = path.resolve(__dirname, '../../bin/dsi.js');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Live `dsi serve` processes listening on one of `ports` by their command line (Linux /proc): what a failed `dsi up` must not leave. */
function servicesOnPorts(ports: readonly number[]): number[] {
  return fs
    .readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        const at = args.indexOf('--port');
        return args.includes('serve') && at >= 0 && ports.includes(Number(args[at + 1]));
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Lines of a child's stderr, with a bounded wait for the next one matching a pattern. */
function stderrLines(child: ChildProcess): { lines: string[]; next(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> } {
  const lines: string[] = [];
  const waiters = new Set<(line: string) => void>();
  readline.createInterface({ input: child.stderr! }).on('line', (line) => {
    lines.push(line);
    for (const waiter of [...waiters]) waiter(line);
  });
  return {
    lines,
    next: (pattern, timeoutMs) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`no stderr line matching ${pattern} within ${timeoutMs} ms; got:\n${lines.join('\n')}`));
        }, timeoutMs);
        const waiter = (line: string): void => {
          const match = line.match(pattern);
          if (!match) return;
          clearTimeout(timer);
          waiters.delete(waiter);
          resolve(match);
        };
        waiters.add(waiter);
        child.once('exit', (code) => waiter(`(dsi up exited ${code})`));
      }),
  };
}

describe('dsi up supervises what it starts', () => {
  it('exits 1 within 5 s when one of its ports is taken, naming the port and leaving no process behind', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const takenPort = (holder.address() as net.AddressInfo).port;
    // target-1 listens on --base-port + 11.
    const basePort = takenPort - 11;
    const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-up-logs-'));
    try {
      const startedAt = Date.now();
      const up = spawn(process.execPath, [bin, 'up', '--once', '--backend', 'synthetic', '--targets', '2', '--base-port', String(basePort), '--log-dir', logDir], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const { lines } = stderrLines(up);
      const code = await new Promise<number | null>((resolve) => up.once('exit', resolve));
      expect(code).toBe(1);
      expect(Date.now() - startedAt).toBeLessThan(5000);
      expect(lines.join('\n')).toContain(`port ${takenPort} for target-1 is already in use`);
      expect(servicesOnPorts([basePort, basePort + 2, basePort + 4, basePort + 10, basePort + 11])).toEqual([]);
    } finally {
      await new Promise((resolve) => holder.close(resolve));
      fs.rmSync(logDir, { recursive: true, force: true });
    }
  });

  it('reports a service killed with SIGKILL within 2 s and, with --restart, brings it back on its address', async () => {
    const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-up-logs-'));
    const up = spawn(process.execPath, [bin, 'up', '--backend', 'synthetic', '--targets', '1', '--target-ms', '1', '--max-new-tokens', '4', '--base-port', '0', '--restart', '--log-dir', logDir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const stderr = stderrLines(up);
    const exited = new Promise<number | null>((resolve) => up.once('exit', resolve));
    try {
      const drafterRow = stderr.next(/^drafter +(\S+) +pid (\d+) +log (\S+)/, 60_000);
      await stderr.next(/^serving \(logs in/, 60_000);
      // Every service's row: NAME ADDRESS pid PID log FILE.
      const pids = stderr.lines.flatMap((line) => line.match(/^\S+ +\S+:\d+ +pid (\d+) +log /)?.slice(1) ?? []).map(Number);
      expect(pids).toHaveLength(4);
      expect(pids.every(alive)).toBe(true);
      const [, address, pidText, logFile] = await drafterRow;
      const pid = Number(pidText);
      expect(logFile).toBe(path.join(logDir, 'drafter.log'));
      expect(fs.readFileSync(logFile, 'utf8')).toContain(`drafter serving on ${address}`);

      const killedAt = Date.now();
      const died = stderr.next(/^dsi up: drafter \(.*\) died: killed by SIGKILL/, 2000);
      process.kill(pid, 'SIGKILL');
      await died;
      expect(Date.now() - killedAt).toBeLessThan(2000);
      expect(stderr.lines.join('\n')).toContain('  | drafter serving on');

      const [, newPid] = await stderr.next(new RegExp(`^dsi up: drafter is back on ${address.replace(/\./g, '\\.')} \\(pid (\\d+)\\)`), 45_000);
      expect(Number(newPid)).not.toBe(pid);
      expect(alive(Number(newPid))).toBe(true);

      up.kill('SIGINT');
      expect(await exited).toBe(0);
      expect([...pids, Number(newPid)].filter(alive)).toEqual([]);
    } finally {
      up.kill('SIGKILL');
      fs.rmSync(logDir, { recursive: true, force: true });
    }
  });
});
