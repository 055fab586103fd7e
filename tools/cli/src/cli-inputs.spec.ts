// Every flag is checked before any work starts: a bad value exits 2 with one line on stderr naming the
// flag. One table, one row per case of issue 14's "CLI inputs"; each row runs the built `bin/dsi.js`.
// Set DSI_CLI_BIN to another build's bin/dsi.js (say, the one before the fix) to run the table against it.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

const bin = process.env.DSI_CLI_BIN ?? path.resolve(__dirname, '../bin/dsi.js');
/** A case that started its work would run on; it is killed then, and fails. */
const KILL_AFTER_MS = 20_000;
/** Cases run this many at a time (the machine has two cores). */
const BATCH = 4;

/** What a row can ask for: a fresh path that must still not exist afterwards, or a port that counts connections. */
interface Context {
  /** A path under a fresh folder; the run must not create it. */
  untouched(name: string): string;
  /** `127.0.0.1:PORT` of a listener that must see no connection. */
  listener(): Promise<string>;
  /** An empty file the row needs (not checked). */
  file(name: string): string;
}

interface Case {
  /** What the row checks (the wording where it has one). */
  name: string;
  args(context: Context): string[] | Promise<string[]>;
  /** The flag the one line must name. */
  flag: string;
  env?: Record<string, string>;
}

// `dsi up` rows: checked by checkUpFlags (commands/up-flags.ts) before up's action starts any service.
// Each has --once, --base-port 0 (unless the port is the case) and DSI_MODELS_DIR at a path that must
// stay uncreated (up writes the built-in models first), so a run that went ahead would show.
const up = (...args: string[]) => () => ['up', '--once', ...args];

const CASES: Case[] = [
  // generate: --orchestrator is a listener that fails the row if anything connects to it.
  { name: 'generate --lookahead 2.5', flag: '--lookahead', args: async (c) => ['generate', '--orchestrator', await c.listener(), '--prompt', 'Hi', '--lookahead', '2.5'] },
  { name: 'generate --seed -1', flag: '--seed', args: async (c) => ['generate', '--orchestrator', await c.listener(), '--prompt', 'Hi', '--rule', 'seeded', '--seed', '-1'] },
  { name: 'generate --seed 1e30', flag: '--seed', args: async (c) => ['generate', '--orchestrator', await c.listener(), '--prompt', 'Hi', '--rule', 'seeded', '--seed', '1e30'] },
  { name: 'generate --orchestrator 127.0.0.1:99999', flag: '--orchestrator', args: () => ['generate', '--orchestrator', '127.0.0.1:99999', '--prompt', 'Hi'] },
  { name: 'generate --orchestrator 127.0.0.1 (no port)', flag: '--orchestrator', args: () => ['generate', '--orchestrator', '127.0.0.1', '--prompt', 'Hi'] },
  { name: 'generate --mode nonsi --lookahead 1000', flag: '--lookahead', args: async (c) => ['generate', '--orchestrator', await c.listener(), '--prompt', 'Hi', '--mode', 'nonsi', '--lookahead', '1000'] },
  { name: 'generate --mode nonsi --lookahead 3 (ignored)', flag: '--lookahead', args: async (c) => ['generate', '--orchestrator', await c.listener(), '--prompt', 'Hi', '--mode', 'nonsi', '--lookahead', '3'] },
  { name: 'generate --deadline-ms 0', flag: '--deadline-ms', args: async (c) => ['generate', '--orchestrator', await c.listener(), '--prompt', 'Hi', '--deadline-ms', '0'] },
  { name: 'generate --prompt ""', flag: '--prompt', args: async (c) => ['generate', '--orchestrator', await c.listener(), '--prompt', ''] },
  { name: 'generate --lookahed 3 (a typo: commander parse error)', flag: '--lookahed', args: async (c) => ['generate', '--orchestrator', await c.listener(), '--prompt', 'Hi', '--lookahed', '3'] },
  // heatmap: --out must stay uncreated.
  { name: 'heatmap --simulator ,', flag: '--simulator', args: (c) => ['heatmap', '--ndim', '2', '--out', c.untouched('out'), '--simulator', ','] },
  { name: 'heatmap --threads 100000', flag: '--threads', args: (c) => ['heatmap', '--ndim', '2', '--out', c.untouched('out'), '--threads', '100000'] },
  { name: 'heatmap with DSI_THREADS=100000', flag: 'DSI_THREADS', env: { DSI_THREADS: '100000' }, args: (c) => ['heatmap', '--ndim', '2', '--out', c.untouched('out')] },
  {
    name: 'heatmap --out unwritable (its parent is a file)',
    flag: '--out',
    args: (c) => ['heatmap', '--ndim', '2', '--out', path.join(c.file('file'), 'out')],
  },
  { name: 'heatmap --out under /proc', flag: '--out', args: () => ['heatmap', '--ndim', '2', '--out', '/proc/dsi-cli-inputs/out'] },
  // serve: on a free port, so a run that went ahead would serve until killed.
  { name: 'serve --max-message-bytes -1', flag: '--max-message-bytes', args: () => ['serve', 'simulator', '--port', '0', '--max-message-bytes', '-1'] },
  { name: 'serve --max-message-bytes 1e12', flag: '--max-message-bytes', args: () => ['serve', 'simulator', '--port', '0', '--max-message-bytes', '1e12'] },
  { name: 'serve --max-tokens-per-call 0', flag: '--max-tokens-per-call', args: () => ['serve', 'target', '--port', '0', '--backend', 'synthetic', '--max-tokens-per-call', '0'] },
  { name: 'serve --synthetic-spin-ms -1', flag: '--synthetic-spin-ms', args: () => ['serve', 'drafter', '--port', '0', '--backend', 'synthetic', '--synthetic-spin-ms', '-1'] },
  { name: 'serve --max-batch-requests 0', flag: '--max-batch-requests', args: () => ['serve', 'target', '--port', '0', '--backend', 'synthetic', '--max-batch-requests', '0'] },
  { name: 'serve orchestrator --targets ,', flag: '--targets', args: async (c) => ['serve', 'orchestrator', '--port', '0', '--drafter', await c.listener(), '--targets', ','] },
  // up (see above).
  { name: 'up --a 1.5 with the onnx backend (synthetic only)', flag: '--a', args: up('--base-port', '0', '--backend', 'onnx', '--a', '1.5') },
  { name: 'up --base-port 70000', flag: '--base-port', args: up('--base-port', '70000', '--backend', 'synthetic') },
  { name: 'up --lookahead 1000', flag: '--lookahead', args: up('--base-port', '0', '--backend', 'synthetic', '--lookahead', '1000') },
  { name: 'up --lookahead 0', flag: '--lookahead', args: up('--base-port', '0', '--backend', 'synthetic', '--lookahead', '0') },
  { name: 'up --max-new-tokens 1e9', flag: '--max-new-tokens', args: up('--base-port', '0', '--backend', 'synthetic', '--max-new-tokens', '1e9') },
  { name: 'up --max-batch-requests 0', flag: '--max-batch-requests', args: up('--base-port', '0', '--backend', 'synthetic', '--max-batch-requests', '0') },
  { name: 'up --prompt ""', flag: '--prompt', args: up('--base-port', '0', '--backend', 'synthetic', '--prompt', '') },
  // models, estimate, bench: DSI_MODELS_DIR must stay uncreated (they write or load the built-in pair).
  { name: 'models init --bogus', flag: '--bogus', args: () => ['models', 'init', '--bogus'] },
  { name: 'estimate acceptance --tokens abc', flag: '--tokens', args: () => ['estimate', 'acceptance', '--tokens', 'abc'] },
  { name: 'estimate acceptance --prompt ""', flag: '--prompt', args: () => ['estimate', 'acceptance', '--prompt', ''] },
  { name: 'estimate latency --tokens 1', flag: '--tokens', args: () => ['estimate', 'latency', '--tokens', '1'] },
  { name: 'estimate latency --target without --drafter', flag: '--drafter', args: async (c) => ['estimate', 'latency', '--target', await c.listener()] },
  { name: 'estimate acceptance --target 127.0.0.1 (no port)', flag: '--target', args: async (c) => ['estimate', 'acceptance', '--target', '127.0.0.1', '--drafter', await c.listener()] },
  { name: 'estimate --target and --target-model', flag: '--target-model', args: async (c) => ['estimate', '--target', await c.listener(), '--target-model', os.tmpdir(), '--drafter', await c.listener()] },
  { name: 'estimate --out in a missing folder', flag: '--out', args: (c) => ['estimate', '--out', path.join(c.untouched('missing'), 'profile.json')] },
  { name: 'estimate --out under /proc', flag: '--out', args: () => ['estimate', '--out', '/proc/dsi-cli-inputs/profile.json'] },
  { name: 'bench --runs 0', flag: '--runs', args: () => ['bench', '--suite', 'sim', '--runs', '0'] },
  { name: 'bench --runs 1e9', flag: '--runs', args: () => ['bench', '--suite', 'sim', '--runs', '1e9'] },
  { name: 'bench --tokens -1', flag: '--tokens', args: () => ['bench', '--suite', 'online', '--tokens', '-1'] },
];

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Paths the row must not have created that exist after the run. */
  created: string[];
  /** Connections the row's listeners saw. */
  connections: number;
}

function run(args: string[], env: NodeJS.ProcessEnv): Promise<Pick<Outcome, 'code' | 'stdout' | 'stderr'>> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { encoding: 'utf8', env, timeout: KILL_AFTER_MS, killSignal: 'SIGKILL' }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function runCase(row: Case, scratch: string): Promise<Outcome> {
  const folder = fs.mkdtempSync(path.join(scratch, 'case-'));
  const untouched: string[] = [];
  const listeners: net.Server[] = [];
  let connections = 0;
  const context: Context = {
    untouched(name) {
      const file = path.join(folder, name);
      untouched.push(file);
      return file;
    },
    file(name) {
      const file = path.join(folder, name);
      fs.writeFileSync(file, '');
      return file;
    },
    async listener() {
      const server = net.createServer((socket) => {
        connections++;
        socket.destroy();
      });
      listeners.push(server);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    },
  };
  try {
    const args = await row.args(context);
    const modelsDir = context.untouched('models');
    const outcome = await run(args, { ...process.env, DSI_MODELS_DIR: modelsDir, ...row.env });
    return { ...outcome, created: untouched.filter((file) => fs.existsSync(file)), connections };
  } finally {
    await Promise.all(listeners.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}

describe('every CLI input is checked before any work starts', () => {
  const outcomes = new Map<string, Outcome>();
  let scratch: string;

  beforeAll(async () => {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-cli-inputs-'));
    for (let i = 0; i < CASES.length; i += BATCH) {
      const batch = CASES.slice(i, i + BATCH);
      const results = await Promise.all(batch.map((row) => runCase(row, scratch)));
      batch.forEach((row, j) => outcomes.set(row.name, results[j]));
    }
  }, 300_000);

  afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

  it.each(CASES.map((row) => [row.name, row] as const))('%s: exits 2, one line naming the flag, nothing started', (_name, row) => {
    const outcome = outcomes.get(row.name)!;
    expect({ code: outcome.code, stderr: outcome.stderr }).toEqual({ code: 2, stderr: expect.stringMatching(/^dsi: [^\n]+\n$/) });
    expect(outcome.stderr).toContain(row.flag);
    expect(outcome.stdout).toBe('');
    expect(outcome.created).toEqual([]);
    expect(outcome.connections).toBe(0);
  });
});

describe('dsi generate --deadline-ms', () => {
  it('gives up on an orchestrator that never answers, naming the flag', async () => {
    // Accepts the connection and never speaks: without a deadline the call would wait forever.
    const sockets: net.Socket[] = [];
    const silent = net.createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const address = `127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
      const outcome = await run(['generate', '--orchestrator', address, '--prompt', 'Hi', '--deadline-ms', '300'], process.env);
      expect(outcome.code).toBe(1);
      expect(outcome.stderr).toBe(`dsi: orchestrator at ${address}: no complete answer within --deadline-ms 300\n`);
      expect(sockets.length).toBeGreaterThan(0);
    } finally {
      sockets.forEach((socket) => socket.destroy());
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});
