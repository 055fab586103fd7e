/**
 * Transport security of this process's gRPC channels and servers. Plaintext until TLS is configured
 * (see {@link configureTls}); every DSI server binds with {@link serverCredentials} and every channel to
 * another DSI service is made with {@link clientCredentials}, so one setting covers the process.
 *
 * The files are watched (see {@link TlsFileWatcher}): after a rotation a server hands the new
 * certificate to new connections (grpc-js swaps the listener's secure context; open connections and
 * their calls go on), and a channel presents and checks against the new files on its next connection.
 * A failed handshake names its cause (expired, wrong CA, wrong name, plaintext, client certificate).
 */
import net from 'node:net';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { DsiError, unavailable } from './errors';
import {
  connectTls,
  describeTlsFailure,
  probeTls,
  type ProbeResult,
  type TlsMaterial,
  type TlsSettings,
  TlsFileWatcher,
  tlsEnabled,
  verificationError,
} from './tls-files';

export type { TlsSettings } from './tls-files';

interface Configured {
  settings: TlsSettings;
  watcher: TlsFileWatcher;
  client?: grpc.ChannelCredentials;
  server?: grpc.ServerCredentials;
}

let current: Configured | undefined;

/** Options of {@link configureTls}. */
export interface ConfigureTlsOptions {
  /** Where reloads and rejected rotations are reported. Default: silent. */
  log?: (line: string) => void;
}

/**
 * Sets (or, with undefined, clears) this process's TLS settings; call before creating servers or
 * channels. Reads and checks the files at once: throws a `TlsConfigError` naming the setting when
 * they cannot work. Settings without a certificate or a CA leave the process plaintext.
 */
export function configureTls(settings: TlsSettings | undefined, options: ConfigureTlsOptions = {}): void {
  const watcher = settings && tlsEnabled(settings).client ? new TlsFileWatcher(settings, options.log) : undefined;
  current?.watcher.stop();
  current = settings && watcher ? { settings, watcher } : undefined;
}

/** This process's TLS settings, if TLS is configured. */
export function tlsSettings(): TlsSettings | undefined {
  return current?.settings;
}

/** Credentials for a channel to another DSI service (plaintext until TLS is configured). */
export function clientCredentials(): grpc.ChannelCredentials {
  if (!current) return grpc.credentials.createInsecure();
  current.client ??= new WatchedChannelCredentials(current.watcher);
  return current.client;
}

/** Credentials a DSI server binds with (plaintext until a certificate is configured). */
export function serverCredentials(): grpc.ServerCredentials {
  if (!current || !tlsEnabled(current.settings).server) return grpc.ServerCredentials.createInsecure();
  current.server ??= new WatchedServerCredentials(current.watcher, current.settings.clientAuth === 'require');
  return current.server;
}

/**
 * Channel credentials from `settings` rather than the process's (tests, tools talking to several
 * deployments): TLS with the CA (or the system's roots) and the client certificate when given.
 * The files are watched while a channel uses them; `log` hears about reloads.
 */
export function createClientCredentials(settings: TlsSettings, log?: (line: string) => void): grpc.ChannelCredentials {
  return new WatchedChannelCredentials(new TlsFileWatcher({ ...settings, clientAuth: 'none' }, log));
}

/** Server credentials from `settings` rather than the process's: needs a certificate and its key. */
export function createServerCredentials(settings: TlsSettings, log?: (line: string) => void): grpc.ServerCredentials {
  if (!tlsEnabled(settings).server) throw new Error('server credentials need a certificate (certFile) and its key (keyFile)');
  return new WatchedServerCredentials(new TlsFileWatcher(settings, log), settings.clientAuth === 'require');
}

function contextOptions(material: TlsMaterial): tls.SecureContextOptions {
  return { cert: material.cert, key: material.key, ca: material.ca };
}

/**
 * Server credentials whose certificate follows the files: grpc-js calls `setSecureContext` on the
 * listener with each update, which new handshakes use while open connections keep theirs.
 */
class WatchedServerCredentials extends grpc.ServerCredentials {
  private unsubscribe?: () => void;
  private material: TlsMaterial;

  constructor(
    private readonly watcher: TlsFileWatcher,
    requireClientCertificate: boolean,
  ) {
    // requestCert with rejectUnauthorized: a caller without a certificate signed by the CA is refused in the handshake.
    super({ requestCert: requireClientCertificate, rejectUnauthorized: requireClientCertificate }, contextOptions(watcher.current));
    this.material = watcher.current;
  }

  override _addWatcher(watcher: (options: tls.SecureContextOptions | null) => void): void {
    super._addWatcher(watcher);
    this.unsubscribe ??= this.watcher.subscribe((material) => this.update(material));
    // Files that changed between construction and bind.
    if (this.watcher.current !== this.material) this.update(this.watcher.current);
  }

  override _removeWatcher(watcher: (options: tls.SecureContextOptions | null) => void): void {
    super._removeWatcher(watcher);
    if (this.getWatcherCount() === 0) {
      this.unsubscribe?.();
      this.unsubscribe = undefined;
    }
  }

  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }

  private update(material: TlsMaterial): void {
    this.material = material;
    this.updateSecureContextOptions(contextOptions(material));
  }
}

/** Thrown into grpc-js by a failed handshake; its name and message make the call's "Last error". */
class TlsHandshakeError extends Error {
  override readonly name = 'TLS handshake failed';
}

type GrpcUri = grpc.experimental.GrpcUri;
type SecureConnector = grpc.experimental.SecureConnector;

/**
 * Channel credentials that connect with the current files of a {@link TlsFileWatcher}: each new
 * connection presents the current client certificate and checks the server against the current CA
 * (or the system's roots), so a rotation needs no new channel. The server's certificate is checked
 * against the dialed host, or the configured `serverName`; no SNI is sent for an IP address (RFC
 * 6066). A failed handshake rejects with a {@link TlsHandshakeError} naming the cause.
 */
class WatchedChannelCredentials extends grpc.ChannelCredentials {
  constructor(private readonly watcher: TlsFileWatcher) {
    super();
  }

  _isSecure(): boolean {
    return true;
  }

  _equals(other: grpc.ChannelCredentials): boolean {
    return other === this;
  }

  _createSecureConnector(target: GrpcUri, options: grpc.ChannelOptions, callCredentials?: grpc.CallCredentials): SecureConnector {
    const hostPort = grpc.experimental.splitHostPort(target.path);
    const override = options['grpc.ssl_target_name_override'] as string | undefined;
    const host = override ?? hostPort?.host ?? target.path;
    const address = hostPort?.port === undefined ? target.path : `${hostPort.host.includes(':') ? `[${hostPort.host}]` : hostPort.host}:${hostPort.port}`;
    const { settings } = this.watcher;
    const expected = settings.serverName ?? host;
    const calls = callCredentials ?? grpc.credentials.createEmpty();
    const watcher = this.watcher;
    // The files are watched while a connector (a subchannel) may connect with them.
    let unsubscribe: (() => void) | undefined = watcher.subscribe(() => undefined);
    return {
      connect(socket: net.Socket) {
        return new Promise((resolve, reject) => {
          let settled = false;
          const tlsSocket = connectTls({ socket, host, secureContext: watcher.clientContext(), expectedName: expected });
          const fail = (error: Error): void => {
            if (settled) return;
            settled = true;
            const peer = tlsSocket.getPeerCertificate();
            const cause = describeTlsFailure(error, { address, expectedName: settings.serverName, settings, peer }) ?? error.message;
            tlsSocket.destroy();
            reject(new TlsHandshakeError(cause, { cause: error }));
          };
          tlsSocket.once('secureConnect', () => {
            if (settled) return;
            if (!tlsSocket.authorized) {
              fail(verificationError(tlsSocket));
              return;
            }
            settled = true;
            tlsSocket.off('close', onClose);
            rememberHandshake(address, watcher);
            resolve({ socket: tlsSocket, secure: true });
          });
          // Stays attached: an error after the handshake, before the HTTP/2 session listens, must not go unhandled.
          tlsSocket.on('error', fail);
          const onClose = (): void => fail(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
          tlsSocket.once('close', onClose);
        });
      },
      waitForReady: () => Promise.resolve(),
      getCallCredentials: () => calls,
      destroy: () => {
        unsubscribe?.();
        unsubscribe = undefined;
      },
    };
  }
}

/**
 * Addresses this process completed a TLS handshake with, and with which files: a connection that
 * fails after its handshake (a server refusing the client certificate says so after it, in TLS 1.3)
 * is then probed with those files, not taken for a plaintext one.
 */
const recentHandshakes = new Map<string, { watcher: TlsFileWatcher; at: number }>();
/** How long a handshake counts as recent. */
const RECENT_HANDSHAKE_MS = 60_000;

function rememberHandshake(address: string, watcher: TlsFileWatcher): void {
  const now = Date.now();
  if (recentHandshakes.size >= 256) {
    for (const [key, entry] of recentHandshakes) if (now - entry.at > RECENT_HANDSHAKE_MS) recentHandshakes.delete(key);
  }
  recentHandshakes.set(address, { watcher, at: now });
}

/** Recent probes by address and settings: a burst of failed calls to one server probes it once. */
const recentProbes = new Map<string, { at: number; result: Promise<ProbeResult> }>();
const PROBE_REUSE_MS = 2_000;

function probeOnce(address: string, settings: TlsSettings | undefined, used: TlsFileWatcher | undefined): Promise<ProbeResult> {
  const key = `${address} ${settings ? JSON.stringify(settings) : 'plaintext'}`;
  const now = Date.now();
  for (const [k, entry] of recentProbes) if (now - entry.at > PROBE_REUSE_MS) recentProbes.delete(k);
  const cached = recentProbes.get(key);
  if (cached) return cached.result;
  const result = probeTls(address, { settings, context: used?.clientContext(), timeoutMs: 1000 });
  recentProbes.set(key, { at: now, result });
  return result;
}

/** The "Last error" of grpc-js's UNAVAILABLE "No connection established. Last error: ... Resolution note: ...". */
const NO_CONNECTION = /^No connection established\. Last error: ([\s\S]*?)(?: \(\d{4}-\d\d-\d\dT[^)]*\))?\.? Resolution note:[\s\S]*$/;

/**
 * A failed call's error, with the cause named when the connection failed for a TLS reason: the
 * handshake's own failure (expired, wrong CA, wrong name, client certificate required), or, when
 * grpc-js saw only a dropped connection, what a TLS probe of `address` finds (a TLS server called in
 * plaintext, a client certificate the server refused after the handshake). Anything else comes back
 * as {@link DsiError.from} makes it. `settings` are the TLS settings the failed channel used
 * (default: the process's).
 */
export async function explainConnectionFailure(address: string, reason: unknown, settings: TlsSettings | undefined = tlsSettings()): Promise<DsiError> {
  const error = DsiError.from(reason);
  if (error.code !== grpc.status.UNAVAILABLE) return error;
  const match = NO_CONNECTION.exec(error.rawMessage);
  const last = (match?.[1] ?? error.rawMessage).trim();
  const handshake = /TLS handshake failed: ([\s\S]*)$/.exec(last);
  if (handshake) return unavailable(`cannot connect to ${address}: TLS handshake failed: ${handshake[1]}`, { cause: error });
  const recent = recentHandshakes.get(address);
  const used = recent && Date.now() - recent.at < RECENT_HANDSHAKE_MS ? recent.watcher : undefined;
  const usedSettings = used?.settings ?? settings;
  // An alert after the handshake (TLS 1.3) reaches grpc-js as OpenSSL's text.
  const alert = describeTlsFailure({ message: last }, { address, settings: usedSettings, expectedName: usedSettings?.serverName });
  if (alert) return unavailable(`cannot connect to ${address}: TLS handshake failed: ${alert}`, { cause: error });
  // grpc-js's word for a TCP connection whose HTTP/2 session never started: the one vague failure
  // TLS causes (a plaintext client at a TLS server, a client certificate refused after the
  // handshake). A refused or dropped connection is not probed: failover must not wait on it.
  if (!/^Failed to connect\b/.test(last)) return error;
  const secure = used !== undefined || (settings !== undefined && tlsEnabled(settings).client);
  const probe = await probeOnce(address, secure ? usedSettings : undefined, used);
  if (probe.failure) return unavailable(`cannot connect to ${address}: TLS handshake failed: ${probe.failure}`, { cause: error });
  if (!secure && probe.speaksTls) {
    return unavailable(
      `cannot connect to ${address}: the server speaks TLS and this client connected in plaintext; pass --tls-ca FILE (the CA that signed its certificate; DSI_TLS_CA)`,
      { cause: error },
    );
  }
  return error;
}
