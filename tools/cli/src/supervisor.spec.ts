import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { checkHealth } from '@dsi/rpc';
import { StackStartError } from './stack';
import { StackSupervisor, type SupervisorOptions } from './supervisor';

// Each case starts real `dsi serve` processes (built CLI): seconds on a busy machine.
jest.setTimeout(60_000);

const supervisors: StackSupervisor[] = [];
const logDirs: string[] = [];

afterEach(async () => {
  await Promise.all(supervisors.splice(0).map((s) => s.stopAll(1000)));
  for (const dir of logDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** Collects report lines and lets a test wait (bounded) for one that matches. */
function reports(): { lines: string[]; report: (line: string) => void; next(pattern: RegExp, timeoutMs: number): Promise<string> } {
  const lines: string[] = [];
  const waiters: Array<{ pattern: RegExp; resolve: (line: string) => void }> = [];
  return {
    lines,
    report: (line) => {
      lines.push(line);
      for (const waiter of waiters.filter((w) => w.pattern.test(line))) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    },
    next: (pattern, timeoutMs) =>
      new Promise<string>((resolve, reject) => {
        const seen = lines.find((line) => pattern.test(line));
        if (seen) return resolve(seen);
        const timer = setTimeout(() => reject(new Error(`no report matching ${pattern} within ${timeoutMs} ms; got:\n${lines.join('\n')}`)), timeoutMs);
        waiters.push({ pattern, resolve: (line) => (clearTimeout(timer), resolve(line)) });
      }),
  };
}

function supervisor(options: Partial<SupervisorOptions> & Pick<SupervisorOptions, 'report'>): StackSupervisor {
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-supervisor-'));
  logDirs.push(logDir);
  const created = new StackSupervisor({ logDir, startTimeoutMs: 45_000, ...options });
  supervisors.push(created);
  return created;
}

function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Resolves once `pid` has gone (the test kills it), polling the kernel once per millisecond tick. */
async function gone(pid: number): Promise<void> {
  while (alive(pid)) await new Promise((resolve) => setTimeout(resolve, 5));
}

async function takenPort(): Promise<{ port: number; release(): Promise<void> }> {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const { port } = holder.address() as net.AddressInfo;
  return { port, release: () => new Promise((resolve) => holder.close(() => resolve())) };
}

describe('StackSupervisor', () => {
  it('stops every child it spawned, ready or not, when one of them fails to start', async () => {
    const taken = await takenPort();
    try {
      const { report } = reports();
      const stack = supervisor({ report });
      const starting = [
        stack.start('simulator', ['--port', '0'], 'simulator-a'),
        stack.start('simulator', ['--port', String(taken.port)], 'simulator-taken'),
        stack.start('simulator', ['--port', '0'], 'simulator-b'),
      ];
      const failure = await Promise.all(starting).catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(StackStartError);
      expect(String(failure)).toContain('simulator-taken exited (code 1) before it was ready');
      expect(String(failure)).toContain('EADDRINUSE');
      const childPids = stack.pids();
      expect(childPids).toHaveLength(3);

      await stack.stopAll(2000);

      expect(childPids.filter(alive)).toEqual([]);
    } finally {
      await taken.release();
    }
  });

  it('reports a child killed with SIGKILL within 2 s, with its log path and last lines', async () => {
    const { report, next, lines } = reports();
    const stack = supervisor({ report });
    const simulator = await stack.start('simulator', ['--port', '0']);
    const killedAt = Date.now();
    process.kill(simulator.pid!, 'SIGKILL');

    const death = await next(/simulator .* died/, 2000);
    expect(Date.now() - killedAt).toBeLessThan(2000);
    expect(death).toContain(`simulator (${simulator.address}, pid ${simulator.pid}) died: killed by SIGKILL`);
    expect(death).toContain(simulator.logFile);
    expect(death).toContain('  | simulator serving on');
    await next(/goes on without simulator.*--restart/, 1000);
    expect(lines.filter((line) => line.includes('restarting'))).toEqual([]);
    // The log file is written through a stream: its last lines may reach the disk a moment later.
    const ready = `simulator serving on ${simulator.address}`;
    for (const until = Date.now() + 2000; !fs.readFileSync(simulator.logFile, 'utf8').includes(ready) && Date.now() < until; ) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(fs.readFileSync(simulator.logFile, 'utf8')).toContain(ready);
  });

  it('with restart, brings a killed child back on the same address', async () => {
    const { report, next } = reports();
    const stack = supervisor({ report, restart: true });
    const simulator = await stack.start('simulator', ['--port', '0']);
    const firstPid = simulator.pid!;
    process.kill(firstPid, 'SIGKILL');
    await gone(firstPid);

    await next(/simulator .* died/, 2000);
    const back = await next(/simulator is back on/, 45_000);
    expect(back).toContain(`simulator is back on ${simulator.address}`);
    expect(await checkHealth(simulator.address)).toBe('SERVING');
    const [again] = stack.services;
    expect(again).toMatchObject({ address: simulator.address, restarts: 1 });
    expect(again.pid).not.toBe(firstPid);
    expect(fs.readFileSync(simulator.logFile, 'utf8')).toContain('--- dsi up: restart 1 ---');

    await stack.stopAll(5000);
    expect(alive(again.pid)).toBe(false);
  });
});
