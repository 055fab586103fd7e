// TLS, mutual TLS, certificate rotation and bearer tokens on real servers over loopback, with real
// handshakes: certificates are made here (a CA, another CA, good, expired and wrong-name leaves).
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import {
  HeatmapRequest,
  type HeatmapResponse,
  type SimulateRequest,
  type SimulateResponse,
  SimulatorServiceClient,
  SimulatorServiceService,
} from '@dsi/proto';
import { createCertificateAuthority, ensureLocalCertificates, issueCertificate, type PemPair } from './certs';
import { callUnary, checkHealth, createChannelOptions } from './client';
import { DsiError } from './errors';
import { DsiServer, type ServerOptions, serverStream, unary } from './server';
import { configureTls, createClientCredentials, explainConnectionFailure } from './tls';
import { loadTlsMaterial, probeTls, TlsConfigError, type TlsSettings } from './tls-files';

jest.setTimeout(30_000);

let dir: string;
let ca: PemPair;
const files: Record<string, { cert: string; key: string; serial: string }> = {};
let caFile: string;
let otherCaFile: string;

/** Writes a pair as DIR/NAME.pem and DIR/NAME-key.pem. */
function save(name: string, pair: PemPair & { serialNumber?: string }): void {
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}-key.pem`);
  fs.writeFileSync(cert, pair.cert);
  fs.writeFileSync(key, pair.key);
  files[name] = { cert, key, serial: pair.serialNumber ?? '' };
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-tls-'));
  ca = await createCertificateAuthority({ commonName: 'test CA' });
  const otherCa = await createCertificateAuthority({ commonName: 'another CA' });
  caFile = path.join(dir, 'ca.pem');
  otherCaFile = path.join(dir, 'other-ca.pem');
  fs.writeFileSync(caFile, ca.cert);
  fs.writeFileSync(otherCaFile, otherCa.cert);
  const day = 86_400_000;
  const issued = await Promise.all([
    issueCertificate(ca, { commonName: 'server' }),
    issueCertificate(ca, { commonName: 'expired', notBefore: new Date(Date.now() - 10 * day), notAfter: new Date(Date.now() - day) }),
    issueCertificate(ca, { commonName: 'elsewhere', dnsNames: ['elsewhere.example'], ipAddresses: ['192.0.2.7'] }),
    issueCertificate(ca, { commonName: 'client', use: 'client' }),
    issueCertificate(otherCa, { commonName: 'stranger', use: 'client' }),
    issueCertificate(ca, { commonName: 'server-rotated' }),
  ]);
  ['server', 'expired', 'wrongname', 'client', 'stranger', 'rotated'].forEach((name, i) => save(name, issued[i]));
});

afterAll(() => {
  configureTls(undefined);
  fs.rmSync(dir, { recursive: true, force: true });
});

const servers: DsiServer[] = [];
const clients: grpc.Client[] = [];

afterEach(async () => {
  for (const client of clients.splice(0)) client.close();
  await Promise.all(servers.splice(0).map((s) => s.shutdown()));
});

/** A simulator service whose Heatmap streams one message per `release()` until told it is the last. */
function simulator() {
  const gates: Array<() => void> = [];
  let waiting: (() => void) | undefined;
  const release = (): void => {
    const gate = gates.shift();
    if (gate) gate();
    else waiting = undefined;
  };
  return {
    release,
    registration: {
      name: 'dsi.v1.SimulatorService',
      definition: SimulatorServiceService,
      implementation: {
        simulate: unary<SimulateRequest, SimulateResponse>(async () => ({ config: undefined, nonsi: { cost: 1, costs: [], iterations: [] }, si: undefined, dsi: undefined, speedup: undefined })),
        heatmap: serverStream<HeatmapRequest, HeatmapResponse>(async (request, context) => {
          for (let done = 1; done <= request.ndim; done++) {
            await new Promise<void>((resolve) => gates.push(resolve));
            await context.send({ cell: undefined, done, total: request.ndim });
          }
        }),
      },
    },
    get waiting() {
      return waiting;
    },
  };
}

async function startServer(options: ServerOptions = {}): Promise<{ server: DsiServer; release: () => void }> {
  const service = simulator();
  const server = new DsiServer([service.registration], { drainGraceMs: 200, ...options });
  servers.push(server);
  await server.start();
  server.markServing();
  return { server, release: service.release };
}

function client(address: string, credentials: grpc.ChannelCredentials): SimulatorServiceClient {
  const made = new SimulatorServiceClient(address, credentials, createChannelOptions());
  clients.push(made);
  return made;
}

const serverTls = (name = 'server', extra: Partial<TlsSettings> = {}): TlsSettings => ({ certFile: files[name].cert, keyFile: files[name].key, ...extra });
const clientTls = (extra: Partial<TlsSettings> = {}): TlsSettings => ({ caFile, ...extra });

/** The failure of one Simulate call, as a DsiError. */
async function failure(call: Promise<unknown>): Promise<DsiError> {
  try {
    await call;
  } catch (error) {
    return DsiError.from(error);
  }
  throw new Error('the call succeeded');
}

describe('TLS', () => {
  it('serves a TLS client, health included, and shows the server certificate to it', async () => {
    const { server } = await startServer({ tls: serverTls() });
    const simulatorClient = client(server.address, createClientCredentials(clientTls()));
    await callUnary(simulatorClient, 'simulate', {}, { deadlineMs: 5000 });
    const probe = await probeTls(server.address, { settings: clientTls() });
    expect(probe.speaksTls).toBe(true);
    expect(probe.failure).toBeUndefined();
    expect(probe.peer?.serialNumber.toLowerCase()).toBe(files.server.serial);
    // The process-wide credentials serve the health probe helpers.
    configureTls(clientTls());
    try {
      await expect(checkHealth(server.address, '', { deadlineMs: 5000 })).resolves.toBe('SERVING');
    } finally {
      configureTls(undefined);
    }
  });

  it('refuses a plaintext client with UNAVAILABLE saying the server speaks TLS', async () => {
    const { server } = await startServer({ tls: serverTls() });
    const error = await failure(callUnary(client(server.address, grpc.credentials.createInsecure()), 'simulate', {}, { deadlineMs: 5000 }));
    expect(error.code).toBe(grpc.status.UNAVAILABLE);
    expect(error.rawMessage).toMatch(/the server speaks TLS and this client connected in plaintext; pass --tls-ca/);
  });

  it.each([
    ['a wrong CA', 'server', { caFile: '' }, /not signed by a CA this client trusts: it does not chain to the CA in .*other-ca\.pem \(issuer CN=test CA\)/],
    ['an expired certificate', 'expired', {}, /the server's certificate has expired \(expired \d{4}-/],
    ['a certificate for another name', 'wrongname', {}, /the server's certificate is not valid for the name '127\.0\.0\.1' \(it is for DNS:elsewhere\.example, IP Address:192\.0\.2\.7\)/],
  ])('refuses %s with UNAVAILABLE naming the cause', async (_case, serverName, extra, expected) => {
    const { server } = await startServer({ tls: serverTls(serverName) });
    const settings = clientTls(extra.caFile === '' ? { caFile: otherCaFile } : {});
    const error = await failure(callUnary(client(server.address, createClientCredentials(settings)), 'simulate', {}, { deadlineMs: 5000 }));
    expect(error.code).toBe(grpc.status.UNAVAILABLE);
    expect(error.rawMessage).toMatch(new RegExp(`^cannot connect to ${server.address}: TLS handshake failed: `));
    expect(error.rawMessage).toMatch(expected);
  });

  it('checks the certificate against --tls-server-name instead of the dialed address when set', async () => {
    const { server } = await startServer({ tls: serverTls('wrongname') });
    const credentials = createClientCredentials(clientTls({ serverName: 'elsewhere.example' }));
    await expect(callUnary(client(server.address, credentials), 'simulate', {}, { deadlineMs: 5000 })).resolves.toBeDefined();
  });

  it('refuses a TLS client at a plaintext server with UNAVAILABLE saying it does not speak TLS', async () => {
    const { server } = await startServer();
    const error = await failure(callUnary(client(server.address, createClientCredentials(clientTls())), 'simulate', {}, { deadlineMs: 5000 }));
    expect(error.code).toBe(grpc.status.UNAVAILABLE);
    expect(error.rawMessage).toMatch(/TLS handshake failed: the server does not speak TLS/);
  });
});

describe('mutual TLS', () => {
  const mutual = () => serverTls('server', { caFile, clientAuth: 'require' });

  it('refuses a client without a certificate, naming mutual TLS', async () => {
    const { server } = await startServer({ tls: mutual() });
    const error = await failure(callUnary(client(server.address, createClientCredentials(clientTls())), 'simulate', {}, { deadlineMs: 5000 }));
    expect(error.code).toBe(grpc.status.UNAVAILABLE);
    expect(error.rawMessage).toMatch(/the server requires a client certificate \(mutual TLS\) and this client presented none: pass --tls-cert FILE and --tls-key FILE/);
  });

  it('refuses a client certificate from another CA, naming it', async () => {
    const { server } = await startServer({ tls: mutual() });
    const settings = clientTls({ certFile: files.stranger.cert, keyFile: files.stranger.key });
    const error = await failure(callUnary(client(server.address, createClientCredentials(settings)), 'simulate', {}, { deadlineMs: 5000 }));
    expect(error.code).toBe(grpc.status.UNAVAILABLE);
    expect(error.rawMessage).toMatch(/the server refused this client's certificate \(.*stranger\.pem\): it is not signed by a CA the server trusts \(it was issued by CN=another CA\)/);
  });

  it('accepts a client certificate signed by its CA', async () => {
    const { server } = await startServer({ tls: mutual() });
    const settings = clientTls({ certFile: files.client.cert, keyFile: files.client.key });
    await expect(callUnary(client(server.address, createClientCredentials(settings)), 'simulate', {}, { deadlineMs: 5000 })).resolves.toBeDefined();
  });
});

describe('certificate rotation', () => {
  it('keeps an in-flight stream across a rotation while new connections get the new certificate', async () => {
    // A Kubernetes Secret volume: NAME -> ..data/NAME, ..data -> a timestamped folder, swapped atomically.
    const volume = fs.mkdtempSync(path.join(dir, 'secret-'));
    const publish = (version: string, name: string): void => {
      const folder = path.join(volume, version);
      fs.mkdirSync(folder);
      fs.copyFileSync(files[name].cert, path.join(folder, 'tls.crt'));
      fs.copyFileSync(files[name].key, path.join(folder, 'tls.key'));
      fs.symlinkSync(version, path.join(volume, '..data_tmp'));
      fs.renameSync(path.join(volume, '..data_tmp'), path.join(volume, '..data'));
    };
    publish('v1', 'server');
    for (const file of ['tls.crt', 'tls.key']) fs.symlinkSync(path.join('..data', file), path.join(volume, file));
    const logs: string[] = [];
    const { server, release } = await startServer({
      tls: { certFile: path.join(volume, 'tls.crt'), keyFile: path.join(volume, 'tls.key'), reloadIntervalMs: 50 },
      log: (line) => logs.push(line),
    });
    const settings = clientTls();

    const streaming = client(server.address, createClientCredentials(settings));
    const stream = streaming.heatmap(HeatmapRequest.fromPartial({ ndim: 4 }));
    const received: number[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      stream.on('data', (message: HeatmapResponse) => received.push(message.done));
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    const receivedCount = async (n: number) => {
      while (received.length < n) {
        release();
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    await receivedCount(2);
    const servedBy = (stream.getAuthContext?.() ?? null)?.sslPeerCertificate?.serialNumber;
    expect(servedBy?.toLowerCase()).toBe(files.server.serial);

    publish('v2', 'rotated');
    // New connections see the new certificate once the watcher has reloaded it.
    const deadline = Date.now() + 5000;
    let serial = '';
    while (Date.now() < deadline) {
      serial = ((await probeTls(server.address, { settings })).peer?.serialNumber ?? '').toLowerCase();
      if (serial === files.rotated.serial) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(serial).toBe(files.rotated.serial);
    expect(logs.some((line) => line.includes(`certificate serial ${files.rotated.serial.toUpperCase()}`) || line.includes(`certificate serial ${files.rotated.serial}`))).toBe(true);

    // A new channel's call sees the new certificate too.
    const fresh = client(server.address, createClientCredentials(settings));
    const call = new Promise<string | undefined>((resolve, reject) => {
      const unaryCall = fresh.simulate({ config: undefined }, (error) => (error ? reject(error) : resolve(unaryCall.getAuthContext?.()?.sslPeerCertificate?.serialNumber)));
    });
    expect((await call)?.toLowerCase()).toBe(files.rotated.serial);

    // The stream that began before the rotation goes on to its end on its connection.
    await receivedCount(4);
    await ended;
    expect(received).toEqual([1, 2, 3, 4]);
  });

  it('keeps the previous certificate while the files do not match (certificate replaced before its key)', async () => {
    const certFile = path.join(dir, 'partial.pem');
    const keyFile = path.join(dir, 'partial-key.pem');
    fs.copyFileSync(files.server.cert, certFile);
    fs.copyFileSync(files.server.key, keyFile);
    const logs: string[] = [];
    const { server } = await startServer({ tls: { certFile, keyFile, reloadIntervalMs: 50 }, log: (line) => logs.push(line) });
    fs.copyFileSync(files.rotated.cert, certFile);
    await new Promise((r) => setTimeout(r, 200));
    expect(logs.some((line) => /changed but cannot be used yet .*is not the private key/.test(line))).toBe(true);
    expect(((await probeTls(server.address, { settings: clientTls() })).peer?.serialNumber ?? '').toLowerCase()).toBe(files.server.serial);
    fs.copyFileSync(files.rotated.key, keyFile);
    const deadline = Date.now() + 5000;
    let serial = '';
    while (Date.now() < deadline && serial !== files.rotated.serial) {
      await new Promise((r) => setTimeout(r, 50));
      serial = ((await probeTls(server.address, { settings: clientTls() })).peer?.serialNumber ?? '').toLowerCase();
    }
    expect(serial).toBe(files.rotated.serial);
  });
});

describe('client rotation', () => {
  it('connects with the CA file as it is now: a channel made after the CA was replaced trusts the new one', async () => {
    const { server } = await startServer({ tls: serverTls() });
    const trusted = path.join(dir, 'rotating-ca.pem');
    fs.copyFileSync(otherCaFile, trusted);
    const credentials = createClientCredentials({ caFile: trusted, reloadIntervalMs: 50 });
    // Own subchannels: a shared one would still be backing off from the failure.
    const fresh = () => {
      const made = new SimulatorServiceClient(server.address, credentials, { ...createChannelOptions(), 'grpc.use_local_subchannel_pool': 1 });
      clients.push(made);
      return made;
    };
    const before = await failure(callUnary(fresh(), 'simulate', {}, { deadlineMs: 5000 }));
    expect(before.rawMessage).toMatch(/not signed by a CA this client trusts/);
    fs.copyFileSync(caFile, trusted);
    await new Promise((r) => setTimeout(r, 300));
    await expect(callUnary(fresh(), 'simulate', {}, { deadlineMs: 5000 })).resolves.toBeDefined();
  });
});

describe('TLS settings', () => {
  it('name the setting at fault: a missing file, a certificate without its key, a key of another certificate, mTLS without a CA', () => {
    const attempt = (settings: TlsSettings) => {
      try {
        loadTlsMaterial(settings);
      } catch (error) {
        expect(error).toBeInstanceOf(TlsConfigError);
        return `${(error as TlsConfigError).setting}: ${(error as TlsConfigError).reason}`;
      }
      return 'ok';
    };
    expect(attempt({ certFile: path.join(dir, 'nope.pem'), keyFile: files.server.key })).toMatch(/^certFile: cannot read .*nope\.pem \(no such file\)$/);
    expect(attempt({ certFile: files.server.cert })).toMatch(/^keyFile: the certificate .* needs its private key$/);
    expect(attempt({ keyFile: files.server.key })).toMatch(/^certFile: the private key .* needs its certificate$/);
    expect(attempt({ certFile: files.server.cert, keyFile: files.client.key })).toMatch(/^keyFile: .*client-key\.pem is not the private key of the certificate in .*server\.pem$/);
    expect(attempt({ ...serverTls(), clientAuth: 'require' })).toMatch(/^caFile: requiring client certificates needs the CA/);
    expect(attempt({ caFile: files.server.key })).toMatch(/^caFile: .* holds no PEM certificate$/);
    expect(attempt({ ...serverTls(), caFile })).toBe('ok');
  });

  it('explains a refused connection only when TLS is the cause', async () => {
    const refused = new DsiError(grpc.status.UNAVAILABLE, 'No connection established. Last error: connect ECONNREFUSED 127.0.0.1:1. Resolution note: ');
    expect(await explainConnectionFailure('127.0.0.1:1', refused)).toBe(refused);
  });
});

describe('local certificates (dsi up --tls)', () => {
  it('writes a CA and per-name certificates with loopback names once, then reuses them', async () => {
    const local = path.join(dir, 'local');
    const first = await ensureLocalCertificates(local, ['orchestrator', 'client']);
    expect(first.written.map((f) => path.basename(f)).sort()).toEqual(['ca-key.pem', 'ca.pem', 'client-key.pem', 'client.pem', 'orchestrator-key.pem', 'orchestrator.pem']);
    expect(fs.statSync(first.files.client.keyFile).mode & 0o777).toBe(0o600);
    const material = loadTlsMaterial({ certFile: first.files.orchestrator.certFile, keyFile: first.files.orchestrator.keyFile, caFile: first.caFile });
    expect(material.certificate?.subjectAltName).toBe('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    const again = await ensureLocalCertificates(local, ['orchestrator', 'client', 'target']);
    expect(again.written.map((f) => path.basename(f)).sort()).toEqual(['target-key.pem', 'target.pem']);
    // A certificate that no longer verifies against the CA (another CA's) is replaced.
    fs.copyFileSync(files.stranger.cert, first.files.client.certFile);
    fs.copyFileSync(files.stranger.key, first.files.client.keyFile);
    expect((await ensureLocalCertificates(local, ['client'])).written.map((f) => path.basename(f)).sort()).toEqual(['client-key.pem', 'client.pem']);
  });
});

// Reflection over any credentials, with metadata: the first exchange of ServerReflectionInfo.
const reflectionPackage = protoLoader.loadSync(['grpc/reflection/v1/reflection.proto'], {
  keepCase: true,
  oneofs: true,
  includeDirs: [path.join(path.dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto')],
});

async function listServices(address: string, credentials: grpc.ChannelCredentials, metadata = new grpc.Metadata()): Promise<string[]> {
  const method = (reflectionPackage['grpc.reflection.v1.ServerReflection'] as protoLoader.ServiceDefinition).ServerReflectionInfo;
  const reflectionClient = new grpc.Client(address, credentials);
  clients.push(reflectionClient);
  const call = reflectionClient.makeBidiStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, metadata);
  return new Promise<string[]>((resolve, reject) => {
    call.once('data', (reply: { list_services_response?: { service: { name: string }[] } }) => {
      resolve((reply.list_services_response?.service ?? []).map((s) => s.name));
      call.end();
    });
    call.once('error', reject);
    call.write({ list_services: '' });
  });
}

describe('bearer tokens', () => {
  let tokenFile: string;
  const bearer = (token: string) => {
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${token}`);
    return metadata;
  };

  beforeEach(() => {
    tokenFile = path.join(dir, `tokens-${Date.now()}`);
    fs.writeFileSync(tokenFile, '# callers of the public API\n\nfirst-token-123\n  second-token-456  \n');
  });

  it('answers UNAUTHENTICATED without a token or with a wrong one, and serves the right one; health stays open', async () => {
    const { server } = await startServer({ authTokenFile: tokenFile, authReloadIntervalMs: 50 });
    const simulatorClient = client(server.address, grpc.credentials.createInsecure());
    const missing = await failure(callUnary(simulatorClient, 'simulate', {}, { deadlineMs: 5000 }));
    expect({ code: missing.code, message: missing.rawMessage }).toEqual({
      code: grpc.status.UNAUTHENTICATED,
      message: "this server requires a bearer token: send 'authorization: Bearer <token>' metadata (dsi generate --auth-token-file FILE, or DSI_AUTH_TOKEN)",
    });
    const wrong = await failure(callUnary(simulatorClient, 'simulate', {}, { deadlineMs: 5000, metadata: bearer('first-token-12') }));
    expect({ code: wrong.code, message: wrong.rawMessage }).toEqual({ code: grpc.status.UNAUTHENTICATED, message: 'the bearer token is not accepted by this server (not in its token file)' });
    const malformed = new grpc.Metadata();
    malformed.set('authorization', 'Basic Zm9vOmJhcg==');
    expect((await failure(callUnary(simulatorClient, 'simulate', {}, { deadlineMs: 5000, metadata: malformed }))).rawMessage).toMatch(/is not 'Bearer <token>'/);
    await callUnary(simulatorClient, 'simulate', {}, { deadlineMs: 5000, metadata: bearer('first-token-123') });
    await callUnary(simulatorClient, 'simulate', {}, { deadlineMs: 5000, metadata: bearer('second-token-456') });
    // A streaming call is checked too.
    const stream = simulatorClient.heatmap(HeatmapRequest.fromPartial({ ndim: 1 }));
    const streamError = await new Promise<grpc.ServiceError>((resolve) => stream.on('error', resolve));
    expect(streamError.code).toBe(grpc.status.UNAUTHENTICATED);
    await expect(checkHealth(server.address, 'dsi.v1.SimulatorService', { deadlineMs: 5000 })).resolves.toBe('SERVING');
    // Reflection is behind the token as well.
    await expect(listServices(server.address, grpc.credentials.createInsecure())).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    await expect(listServices(server.address, grpc.credentials.createInsecure(), bearer('first-token-123'))).resolves.toContain('dsi.v1.SimulatorService');
  });

  it('re-reads the token file when it changes', async () => {
    const { server } = await startServer({ authTokenFile: tokenFile, authReloadIntervalMs: 50 });
    const simulatorClient = client(server.address, grpc.credentials.createInsecure());
    fs.writeFileSync(tokenFile, 'rotated-token\n');
    const deadline = Date.now() + 5000;
    let accepted = false;
    while (!accepted && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      accepted = await callUnary(simulatorClient, 'simulate', {}, { deadlineMs: 5000, metadata: bearer('rotated-token') }).then(
        () => true,
        () => false,
      );
    }
    expect(accepted).toBe(true);
    expect((await failure(callUnary(simulatorClient, 'simulate', {}, { deadlineMs: 5000, metadata: bearer('first-token-123') }))).code).toBe(grpc.status.UNAUTHENTICATED);
    // An emptied file keeps the previous tokens.
    fs.writeFileSync(tokenFile, '# nothing\n');
    await new Promise((r) => setTimeout(r, 200));
    await callUnary(simulatorClient, 'simulate', {}, { deadlineMs: 5000, metadata: bearer('rotated-token') });
  });

  it('refuses to start with a token file that is missing or holds no token', () => {
    const service = simulator();
    expect(() => new DsiServer([service.registration], { authTokenFile: path.join(dir, 'none') })).toThrow(/cannot read .*none \(no such file\)/);
    fs.writeFileSync(tokenFile, '# only comments\n\n');
    expect(() => new DsiServer([service.registration], { authTokenFile: tokenFile })).toThrow(/holds no token/);
  });

  it('with reflection off, answers reflection UNIMPLEMENTED; with it on (default), lists the services', async () => {
    const off = await startServer({ reflection: false });
    await expect(listServices(off.server.address, grpc.credentials.createInsecure())).rejects.toMatchObject({ code: grpc.status.UNIMPLEMENTED });
    await expect(checkHealth(off.server.address, '', { deadlineMs: 5000 })).resolves.toBe('SERVING');
    const on = await startServer();
    await expect(listServices(on.server.address, grpc.credentials.createInsecure())).resolves.toContain('grpc.health.v1.Health');
  });
});

describe('TLS cost', () => {
  it('measures the handshake and a call on an open channel, plaintext, TLS and mutual TLS, back to back', async () => {
    const plain = await startServer();
    const secure = await startServer({ tls: serverTls() });
    const mutual = await startServer({ tls: serverTls('server', { caFile, clientAuth: 'require' }) });
    const mtlsClient = clientTls({ certFile: files.client.cert, keyFile: files.client.key });
    const material = loadTlsMaterial(mtlsClient);
    const contexts = { tls: tls.createSecureContext({ ca: material.ca }), mtls: tls.createSecureContext({ ca: material.ca, cert: material.cert, key: material.key }) };
    const connect = (port: number, context?: tls.SecureContext): Promise<number> =>
      new Promise<number>((resolve, reject) => {
        const started = performance.now();
        const done = (): void => {
          socket.destroy();
          resolve(performance.now() - started);
        };
        const socket = context ? tls.connect({ host: '127.0.0.1', port, secureContext: context, ALPNProtocols: ['h2'] }, done) : net.connect({ host: '127.0.0.1', port }, done);
        socket.once('error', reject);
      });
    const handshakes = { tcp: [] as number[], tls: [] as number[], mtls: [] as number[] };
    for (let i = 0; i < 30; i++) {
      handshakes.tcp.push(await connect(plain.server.port));
      handshakes.tls.push(await connect(secure.server.port, contexts.tls));
      handshakes.mtls.push(await connect(mutual.server.port, contexts.mtls));
    }
    const callers = {
      tcp: client(plain.server.address, grpc.credentials.createInsecure()),
      tls: client(secure.server.address, createClientCredentials(clientTls())),
      mtls: client(mutual.server.address, createClientCredentials(mtlsClient)),
    };
    const calls = { tcp: [] as number[], tls: [] as number[], mtls: [] as number[] };
    for (const kind of ['tcp', 'tls', 'mtls'] as const) await callUnary(callers[kind], 'simulate', {}, { deadlineMs: 5000 }); // connect
    for (let round = 0; round < 3; round++) {
      for (const kind of ['tcp', 'tls', 'mtls'] as const) {
        for (let i = 0; i < 100; i++) {
          const started = performance.now();
          await callUnary(callers[kind], 'simulate', {}, { deadlineMs: 5000 });
          calls[kind].push(performance.now() - started);
        }
      }
    }
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)].toFixed(3);
    process.stderr.write(
      `TLS cost on loopback (medians, ms): connect+handshake plaintext ${median(handshakes.tcp)}, TLS ${median(handshakes.tls)}, mTLS ${median(handshakes.mtls)}; ` +
        `unary call on an open channel plaintext ${median(calls.tcp)}, TLS ${median(calls.tls)}, mTLS ${median(calls.mtls)}\n`,
    );
    expect(calls.mtls).toHaveLength(300);
  });
});
