// TLS and caller authentication through the built `dsi` command: `dsi up --tls DIR` (the
// demonstration over TLS, then buf curl and dsi generate against the serving stack), `dsi serve` with
// a certificate, bearer tokens, reflection off and the plaintext health port, and the exit-2 checks
// of the TLS flags. Real processes, real handshakes.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { checkHealth, createCertificateAuthority, issueCertificate } from '@dsi/rpc';

jest.setTimeout(90_000);

const bin = path.resolve(__dirname, '../bin/dsi.js');
const buf = path.resolve(__dirname, '../../../node_modules/.bin/buf');

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 60_000): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(file, args, { encoding: 'utf8', env, timeout: timeoutMs, killSignal: 'SIGKILL' }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : null) : 0, stdout, stderr });
    });
  });
}

const dsi = (args: string[], env?: NodeJS.ProcessEnv, timeoutMs?: number) => run(process.execPath, [bin, ...args], env, timeoutMs);

/** A child's stderr lines, with a bounded wait for the next one matching a pattern. */
function watchStderr(child: ChildProcess): { lines: string[]; next(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray> } {
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
        const found = lines.map((line) => line.match(pattern)).find(Boolean);
        if (found) {
          resolve(found);
          return;
        }
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
        child.once('exit', (code) => waiter(`(exited ${code})`));
      }),
  };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

let scratch: string;
let certs: string;
/** The plaintext demonstration's greedy tokens: what every TLS run must give too. */
let plaintextTokens: number[];
const UP = ['--backend', 'synthetic', '--targets', '1', '--target-ms', '2', '--max-new-tokens', '12', '--base-port', '0'];
const children: ChildProcess[] = [];

beforeAll(() => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-cli-tls-'));
  certs = path.join(scratch, 'tls');
});

afterAll(async () => {
  await Promise.all(children.map(stop));
  fs.rmSync(scratch, { recursive: true, force: true });
});

describe('dsi up --tls', () => {
  it('runs its demonstration over TLS with the tokens of a plaintext run, writing the certificates once', async () => {
    const logDir = path.join(scratch, 'logs-plain');
    const plain = await dsi(['up', '--once', '--json', ...UP, '--log-dir', logDir]);
    expect(plain.code).toBe(0);
    plaintextTokens = (JSON.parse(plain.stdout) as { modes: { dsi: { tokens: number[] } } }).modes.dsi.tokens;
    expect(plaintextTokens).toHaveLength(12);

    const tlsLogs = path.join(scratch, 'logs-tls');
    const secure = await dsi(['up', '--once', '--json', ...UP, '--tls', certs, '--log-dir', tlsLogs]);
    expect({ code: secure.code, stderr: secure.code === 0 ? '' : secure.stderr }).toEqual({ code: 0, stderr: '' });
    const report = JSON.parse(secure.stdout) as { identical: boolean; modes: Record<string, { tokens: number[] }>; tls: Record<string, string> };
    expect(report.identical).toBe(true);
    expect(report.modes.dsi.tokens).toEqual(plaintextTokens);
    expect(report.tls).toEqual({ dir: certs, ca: path.join(certs, 'ca.pem'), client_cert: path.join(certs, 'client.pem'), client_key: path.join(certs, 'client-key.pem') });
    const names = ['ca', 'orchestrator', 'drafter', 'target', 'simulator', 'client'];
    expect(fs.readdirSync(certs).sort()).toEqual(names.flatMap((n) => [`${n}-key.pem`, `${n}.pem`]).sort());
    // Replicas demanded the orchestrator's certificate; the orchestrator's own clients need none.
    const listening = (name: string) => fs.readFileSync(path.join(tlsLogs, `${name}.log`), 'utf8').match(/listening on \S+ \(([^;]*);/)?.[1];
    expect(listening('target-0')).toBe('TLS, client certificates required');
    expect(listening('drafter')).toBe('TLS, client certificates required');
    expect(listening('orchestrator')).toBe('TLS');
    expect(listening('simulator')).toBe('TLS');
  });

  it('while it serves: buf curl over TLS reaches the orchestrator, plaintext is refused, dsi generate with the client flags gives the plaintext tokens', async () => {
    expect(plaintextTokens).toBeDefined();
    const up = spawn(process.execPath, [bin, 'up', ...UP, '--tls', certs, '--log-dir', path.join(scratch, 'logs-serving')], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(up);
    const stdout: string[] = [];
    readline.createInterface({ input: up.stdout! }).on('line', (line) => stdout.push(line));
    const stderr = watchStderr(up);
    try {
      expect((await stderr.next(/^tls +(\S+) \(reused\)/, 60_000))[1]).toBe(certs);
      const [, address] = await stderr.next(/^orchestrator +(\S+) +pid /, 60_000);
      await stderr.next(/^serving \(logs in/, 60_000);
      // It prints how to call it over TLS.
      const ca = path.join(certs, 'ca.pem');
      const cert = path.join(certs, 'client.pem');
      const key = path.join(certs, 'client-key.pem');
      expect(stdout).toContain(`  npx dsi generate --orchestrator ${address} --tls-ca ${ca} --tls-cert ${cert} --tls-key ${key} --mode dsi --prompt "Once upon a time"`);
      expect(stdout.some((line) => line.startsWith(`  npx buf curl --protocol grpc --cacert ${ca} --cert ${cert} --key ${key} -d `) && line.endsWith(`https://${address}/dsi.v1.OrchestratorService/Generate`))).toBe(true);

      const listed = await run(buf, ['curl', '--protocol', 'grpc', '--cacert', ca, '--cert', cert, '--key', key, '--list-services', `https://${address}`]);
      expect({ code: listed.code, stderr: listed.stderr }).toEqual({ code: 0, stderr: '' });
      expect(listed.stdout.split('\n')).toContain('dsi.v1.OrchestratorService');
      const plaintext = await run(buf, ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', '--list-services', `http://${address}`]);
      expect(plaintext.code).not.toBe(0);
      expect(plaintext.stdout).toBe('');

      const generate = ['generate', '--orchestrator', address, '--prompt', 'Once upon a time', '--max-new-tokens', '12', '--json'];
      const secure = await dsi([...generate, '--tls-ca', ca, '--tls-cert', cert, '--tls-key', key]);
      expect({ code: secure.code, stderr: secure.stderr }).toEqual({ code: 0, stderr: '' });
      expect((JSON.parse(secure.stdout) as { tokens: number[] }).tokens).toEqual(plaintextTokens);
      // The same through DSI_TLS_* (the CA alone: the orchestrator asks for no client certificate).
      const fromEnv = await dsi(generate, { ...process.env, DSI_TLS_CA: ca });
      expect((JSON.parse(fromEnv.stdout) as { tokens: number[] }).tokens).toEqual(plaintextTokens);

      // Without TLS, or trusting another CA: exit 1, one line naming the cause.
      const bare = await dsi(generate);
      expect(bare.code).toBe(1);
      expect(bare.stderr).toMatch(new RegExp(`^dsi: orchestrator at ${address}: \\[unavailable\\] the server speaks TLS and this client connected in plaintext; pass --tls-ca FILE .*\\n$`));
      const otherCa = path.join(scratch, 'other-ca.pem');
      fs.writeFileSync(otherCa, (await createCertificateAuthority({ commonName: 'another CA' })).cert);
      const wrongCa = await dsi([...generate, '--tls-ca', otherCa]);
      expect(wrongCa.code).toBe(1);
      expect(wrongCa.stderr).toMatch(/^dsi: orchestrator at \S+: \[unavailable\] TLS handshake failed: the server's certificate is not signed by a CA this client trusts: it does not chain to the CA in .*other-ca\.pem \(issuer CN=DSI local CA\)\n$/);
    } finally {
      await stop(up);
    }
    // A signal once the stack serves is the normal way to stop it.
    expect(up.exitCode).toBe(0);
  });
});

describe('dsi serve with TLS, bearer tokens, reflection off and a plaintext health port', () => {
  it('serves TLS callers with a token, refuses the others naming why, and answers health in plaintext on --health-port', async () => {
    const dir = path.join(scratch, 'serve');
    fs.mkdirSync(dir);
    const ca = await createCertificateAuthority();
    const server = await issueCertificate(ca, { commonName: 'simulator' });
    const expired = await issueCertificate(ca, { commonName: 'old', notBefore: new Date(Date.now() - 2 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
    const file = (name: string, text: string) => {
      fs.writeFileSync(path.join(dir, name), text);
      return path.join(dir, name);
    };
    const caFile = file('ca.pem', ca.cert);
    const tokens = file('tokens', '# simulator callers\nsecret-token-1\n');
    const serve = spawn(
      process.execPath,
      [bin, 'serve', 'simulator', '--port', '0', '--tls-cert', file('s.pem', server.cert), '--tls-key', file('s-key.pem', server.key), '--auth-token-file', tokens, '--reflection', 'off', '--health-port', '0'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(serve);
    const stderr = watchStderr(serve);
    try {
      const [, address, healthAddress] = await stderr.next(/listening on (\S+) \(TLS, bearer tokens from \S+, plaintext health on (\S+);/, 30_000);
      const simulate = ['simulate', '--simulator', address, '--tokens', '20', '--json'];
      const withToken = await dsi([...simulate, '--tls-ca', caFile], { ...process.env, DSI_AUTH_TOKEN: 'secret-token-1' });
      expect({ code: withToken.code, stderr: withToken.stderr }).toEqual({ code: 0, stderr: '' });
      const tokenFile = file('my-token', 'secret-token-1\n');
      expect((await dsi([...simulate, '--tls-ca', caFile, '--auth-token-file', tokenFile])).code).toBe(0);

      const noToken = await dsi([...simulate, '--tls-ca', caFile]);
      expect(noToken).toMatchObject({ code: 1, stderr: `dsi: simulator at ${address}: [unauthenticated] this server requires a bearer token: send 'authorization: Bearer <token>' metadata (dsi generate --auth-token-file FILE, or DSI_AUTH_TOKEN)\n` });
      const wrongToken = await dsi([...simulate, '--tls-ca', caFile], { ...process.env, DSI_AUTH_TOKEN: 'guess' });
      expect(wrongToken.stderr).toBe(`dsi: simulator at ${address}: [unauthenticated] the bearer token is not accepted by this server (not in its token file)\n`);

      // Reflection is off; health answers in plaintext on its own port, and over TLS without a token.
      const reflection = await run(buf, ['curl', '--protocol', 'grpc', '--cacert', caFile, '-H', 'authorization: Bearer secret-token-1', '--list-services', `https://${address}`]);
      expect(reflection.code).not.toBe(0);
      expect(reflection.stderr).toMatch(/unimplemented/i);
      await expect(checkHealth(healthAddress, 'dsi.v1.SimulatorService', { deadlineMs: 5000 })).resolves.toBe('SERVING');
      await expect(checkHealth(address, '', { deadlineMs: 5000 })).rejects.toThrow(/the server speaks TLS and this client connected in plaintext/);

      // A certificate that expired: the client names it.
      const old = spawn(process.execPath, [bin, 'serve', 'simulator', '--port', '0', '--tls-cert', file('old.pem', expired.cert), '--tls-key', file('old-key.pem', expired.key)], { stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(old);
      const oldStderr = watchStderr(old);
      const [, oldAddress] = await oldStderr.next(/listening on (\S+) \(TLS;/, 30_000);
      expect(oldStderr.lines.join('\n')).toMatch(/TLS: the certificate in \S+old\.pem expired on /);
      const refused = await dsi(['simulate', '--simulator', oldAddress, '--tokens', '20', '--tls-ca', caFile]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(new RegExp(`^dsi: simulator at ${oldAddress}: \\[unavailable\\] TLS handshake failed: the server's certificate has expired \\(expired \\d{4}-[^)]*\\)\\n$`));
      await stop(old);
    } finally {
      await stop(serve);
    }
  });
});

describe('TLS and token flags are checked before anything starts', () => {
  it.each([
    ['a missing certificate file', ['serve', 'simulator', '--port', '0', '--tls-cert', '/nonexistent/cert.pem', '--tls-key', '/nonexistent/key.pem'], {}, /^dsi: --tls-cert '\/nonexistent\/cert\.pem' is invalid: cannot read \/nonexistent\/cert\.pem \(no such file\)/],
    ['a certificate without its key', ['serve', 'simulator', '--port', '0', '--tls-cert', 'CERT'], {}, /^dsi: --tls-key is required: the certificate \S+ needs its private key/],
    ['client authentication without a CA', ['serve', 'target', '--port', '0', '--backend', 'synthetic', '--tls-cert', 'CERT', '--tls-key', 'KEY', '--tls-client-auth', 'require'], {}, /^dsi: --tls-ca is required: requiring client certificates needs the CA/],
    ['a key of another certificate, from DSI_TLS_KEY', ['serve', 'simulator', '--port', '0', '--tls-cert', 'CERT'], { DSI_TLS_KEY: 'CA_KEY' }, /^dsi: --tls-key '\S+' \(from DSI_TLS_KEY\) is invalid: \S+ is not the private key of the certificate in /],
    ['a CA file that holds no certificate', ['generate', '--prompt', 'Hi', '--tls-ca', 'KEY'], {}, /^dsi: --tls-ca '\S+' is invalid: \S+ holds no PEM certificate/],
    ['a token file that is missing', ['serve', 'orchestrator', '--port', '0', '--drafter', '127.0.0.1:9', '--targets', '127.0.0.1:9', '--auth-token-file', '/nonexistent/tokens'], {}, /^dsi: --auth-token-file '\/nonexistent\/tokens' is invalid: cannot read/],
    ['a client token file with no token', ['generate', '--prompt', 'Hi', '--auth-token-file', 'EMPTY'], {}, /^dsi: --auth-token-file '\S+' is invalid: \S+ holds no token/],
    ['up --tls under /proc (not writable)', ['up', '--once', '--backend', 'synthetic', '--base-port', '0', '--tls', '/proc/dsi-tls-test/certs'], {}, /^dsi: --tls '\/proc\/dsi-tls-test\/certs' is invalid: cannot write in \/proc/],
    ['DSI_TLS_CA unreadable for a command without TLS flags (plan --simulator)', ['plan', '--simulator', '127.0.0.1:9', '--a', '0.8', '--target-ms', '10', '--drafter-ms', '1'], { DSI_TLS_CA: '/nonexistent/ca.pem' }, /--tls-ca '\/nonexistent\/ca\.pem' \(from DSI_TLS_CA\) is invalid: cannot read/],
  ] as const)('%s: exit 2, one line naming the flag', async (_name, args, env, expected) => {
    const dir = path.join(scratch, 'flags');
    if (!fs.existsSync(dir)) {
      fs.mkdirSync(dir);
      const ca = await createCertificateAuthority();
      const leaf = await issueCertificate(ca, { commonName: 'leaf' });
      fs.writeFileSync(path.join(dir, 'cert.pem'), leaf.cert);
      fs.writeFileSync(path.join(dir, 'key.pem'), leaf.key);
      fs.writeFileSync(path.join(dir, 'ca-key.pem'), ca.key);
      fs.writeFileSync(path.join(dir, 'empty'), '# nothing\n');
    }
    const substitute = (value: string) =>
      ({ CERT: path.join(dir, 'cert.pem'), KEY: path.join(dir, 'key.pem'), CA_KEY: path.join(dir, 'ca-key.pem'), EMPTY: path.join(dir, 'empty') })[value] ?? value;
    const outcome = await dsi(
      args.map(substitute),
      { ...process.env, DSI_MODELS_DIR: path.join(dir, 'models'), ...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, substitute(v)])) },
      20_000,
    );
    expect({ code: outcome.code, lines: outcome.stderr.split('\n').length - 1, stdout: outcome.stdout }).toEqual({ code: 2, lines: 1, stdout: '' });
    expect(outcome.stderr).toMatch(expected);
  });
});
