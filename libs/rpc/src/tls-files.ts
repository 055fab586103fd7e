/**
 * TLS files of a process without gRPC: reading and checking them (so a command can reject a bad flag
 * before anything starts), watching them for a rotation, and naming why a TLS connection failed.
 * Loads only Node built-ins, so `@dsi/rpc/lifecycle` can offer it before telemetry starts.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

/** TLS files of this process (flags `--tls-cert`, `--tls-key`, `--tls-ca`, `--tls-client-auth`, `--tls-server-name`; `DSI_TLS_*`). */
export interface TlsSettings {
  /** PEM certificate chain this process presents (as a server, and as a client for mutual TLS). */
  certFile?: string;
  /** PEM private key of `certFile`. */
  keyFile?: string;
  /** PEM CA bundle that peers' certificates must chain to (default for servers' certificates: the system's roots). */
  caFile?: string;
  /** Whether this process's servers demand a certificate from callers, signed by `caFile` (mutual TLS). */
  clientAuth?: 'none' | 'require';
  /**
   * The name servers' certificates are checked against instead of the host dialed: for replicas
   * addressed by IP (a headless Service's DNS answer) whose certificates name the Service.
   */
  serverName?: string;
  /** How often the files are checked for a change (a rotated Secret). Default 1000 ms. */
  reloadIntervalMs?: number;
}

/** Which setting of {@link TlsSettings} a {@link TlsConfigError} is about. */
export type TlsSetting = 'certFile' | 'keyFile' | 'caFile' | 'clientAuth';

/** TLS settings that cannot work (a missing file, a key without its certificate...), naming the setting. */
export class TlsConfigError extends Error {
  override readonly name = 'TlsConfigError';
  constructor(
    /** The setting at fault. */
    readonly setting: TlsSetting,
    /** What is wrong, without the setting's name. */
    readonly reason: string,
  ) {
    super(`TLS ${setting}: ${reason}`);
  }
}

/** What one certificate says about itself, for logs and error messages. */
export interface CertificateSummary {
  subject: string;
  issuer: string;
  serialNumber: string;
  validFrom: Date;
  validTo: Date;
  /** Subject alternative names, e.g. `DNS:localhost, IP Address:127.0.0.1`. */
  subjectAltName: string;
}

/** The TLS files' contents, checked: a certificate with its matching key and/or a CA bundle. */
export interface TlsMaterial {
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
  /** The leaf certificate of `cert`. */
  certificate?: CertificateSummary;
  /** Things that work but will not for long (an expired certificate). */
  warnings: string[];
}

/** Whether the settings turn TLS on for servers (a certificate) or channels (a certificate or a CA). */
export function tlsEnabled(settings: TlsSettings | undefined): { server: boolean; client: boolean } {
  const server = settings?.certFile !== undefined;
  return { server, client: server || settings?.caFile !== undefined };
}

/**
 * Reads and checks the files of `settings` at once, throwing a {@link TlsConfigError} naming the
 * setting at fault: a file missing or unreadable, not PEM, a certificate without its key (or the
 * reverse), a key that does not match the certificate, client authentication without a CA.
 */
export function loadTlsMaterial(settings: TlsSettings): TlsMaterial {
  return checkTlsMaterial(settings, {
    cert: settings.certFile === undefined ? undefined : readSetting('certFile', settings.certFile),
    key: settings.keyFile === undefined ? undefined : readSetting('keyFile', settings.keyFile),
    ca: settings.caFile === undefined ? undefined : readSetting('caFile', settings.caFile),
  });
}

function readSetting(setting: TlsSetting, file: string): Buffer {
  try {
    const content = fs.readFileSync(file);
    if (content.length === 0) throw new TlsConfigError(setting, `${file} is empty`);
    return content;
  } catch (error) {
    if (error instanceof TlsConfigError) throw error;
    const { code } = error as NodeJS.ErrnoException;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a folder' : (error as Error).message;
    throw new TlsConfigError(setting, `cannot read ${file} (${why})`);
  }
}

/** The PEM certificates of a bundle, in order. */
function pemCertificates(pem: Buffer): string[] {
  return pem.toString('utf8').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

function summarize(cert: crypto.X509Certificate): CertificateSummary {
  return {
    subject: cert.subject.replace(/\n/g, ', '),
    issuer: cert.issuer.replace(/\n/g, ', '),
    serialNumber: cert.serialNumber,
    validFrom: new Date(cert.validFrom),
    validTo: new Date(cert.validTo),
    subjectAltName: cert.subjectAltName ?? '',
  };
}

function checkTlsMaterial(settings: TlsSettings, files: { cert?: Buffer; key?: Buffer; ca?: Buffer }): TlsMaterial {
  const { certFile, keyFile, caFile, clientAuth = 'none' } = settings;
  if (certFile !== undefined && keyFile === undefined) throw new TlsConfigError('keyFile', `the certificate ${certFile} needs its private key`);
  if (keyFile !== undefined && certFile === undefined) throw new TlsConfigError('certFile', `the private key ${keyFile} needs its certificate`);
  if (clientAuth !== 'none' && clientAuth !== 'require') throw new TlsConfigError('clientAuth', `expected none or require, got ${String(clientAuth)}`);
  if (clientAuth === 'require' && caFile === undefined) {
    throw new TlsConfigError('caFile', 'requiring client certificates needs the CA they must be signed by');
  }
  if (clientAuth === 'require' && certFile === undefined) {
    throw new TlsConfigError('certFile', 'requiring client certificates needs a server certificate (TLS)');
  }
  const warnings: string[] = [];
  const material: TlsMaterial = { ...files, warnings };
  if (files.cert && files.key) {
    const chain = pemCertificates(files.cert);
    if (chain.length === 0) throw new TlsConfigError('certFile', `${certFile} holds no PEM certificate`);
    let leaf: crypto.X509Certificate;
    try {
      leaf = new crypto.X509Certificate(chain[0]);
    } catch (error) {
      throw new TlsConfigError('certFile', `${certFile} is not a valid certificate (${(error as Error).message})`);
    }
    let key: crypto.KeyObject;
    try {
      key = crypto.createPrivateKey(files.key);
    } catch (error) {
      throw new TlsConfigError('keyFile', `${keyFile} is not a PEM private key (${(error as Error).message})`);
    }
    if (!leaf.checkPrivateKey(key)) throw new TlsConfigError('keyFile', `${keyFile} is not the private key of the certificate in ${certFile}`);
    material.certificate = summarize(leaf);
    if (material.certificate.validTo.getTime() < Date.now()) {
      warnings.push(`the certificate in ${certFile} expired on ${material.certificate.validTo.toISOString()}: peers will refuse it`);
    } else if (material.certificate.validFrom.getTime() > Date.now()) {
      warnings.push(`the certificate in ${certFile} is not valid before ${material.certificate.validFrom.toISOString()}: peers will refuse it`);
    }
  }
  if (files.ca) {
    const bundle = pemCertificates(files.ca);
    if (bundle.length === 0) throw new TlsConfigError('caFile', `${caFile} holds no PEM certificate`);
    for (const pem of bundle) {
      try {
        new crypto.X509Certificate(pem);
      } catch (error) {
        throw new TlsConfigError('caFile', `${caFile} holds an invalid certificate (${(error as Error).message})`);
      }
    }
  }
  try {
    tls.createSecureContext({ cert: files.cert, key: files.key, ca: files.ca });
  } catch (error) {
    throw new TlsConfigError(files.cert ? 'certFile' : 'caFile', `Node cannot use these files (${(error as Error).message})`);
  }
  return material;
}

/** Default pause between two checks of the TLS files for a change. */
export const DEFAULT_TLS_RELOAD_INTERVAL_MS = 1000;

/**
 * The TLS files of a process, watched: checked every `reloadIntervalMs` while someone listens (a
 * server bound with them, a channel that connects with them). A change (files replaced, or a
 * Kubernetes Secret's symlink swapped) that passes {@link loadTlsMaterial}'s checks becomes the
 * current material and is announced; one that does not (a certificate rotated before its key) is
 * logged once and the previous material kept until the files are consistent again.
 */
export class TlsFileWatcher {
  private material: TlsMaterial;
  private version = 0;
  private context?: { version: number; value: tls.SecureContext };
  private readonly listeners = new Set<(material: TlsMaterial) => void>();
  private timer?: NodeJS.Timeout;
  private polling = false;
  private lastProblem?: string;

  constructor(
    readonly settings: TlsSettings,
    private readonly log: (line: string) => void = () => undefined,
  ) {
    this.material = loadTlsMaterial(settings);
    for (const warning of this.material.warnings) log(`TLS: ${warning}`);
  }

  /** The files' current contents. */
  get current(): TlsMaterial {
    return this.material;
  }

  /** A client secure context of the current files (the CA, or the system's roots; the certificate as client certificate). */
  clientContext(): tls.SecureContext {
    if (this.context?.version !== this.version) {
      const { cert, key, ca } = this.material;
      this.context = { version: this.version, value: tls.createSecureContext({ cert, key, ca }) };
    }
    return this.context.value;
  }

  /** Calls `listener` with the new material after each rotation; returns how to stop. Watching runs while anyone listens. */
  subscribe(listener: (material: TlsMaterial) => void): () => void {
    this.listeners.add(listener);
    if (!this.timer) {
      this.timer = setInterval(() => void this.poll(), this.settings.reloadIntervalMs ?? DEFAULT_TLS_RELOAD_INTERVAL_MS);
      this.timer.unref();
    }
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.stop();
    };
  }

  /** Stops watching (listeners are dropped). */
  stop(): void {
    this.listeners.clear();
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Checks the files once now; resolves with whether they changed (and were taken). */
  async poll(): Promise<boolean> {
    if (this.polling) return false;
    this.polling = true;
    try {
      const { certFile, keyFile, caFile } = this.settings;
      const read = (file: string | undefined) => (file === undefined ? Promise.resolve(undefined) : fs.promises.readFile(file).catch(() => null));
      const [cert, key, ca] = await Promise.all([read(certFile), read(keyFile), read(caFile)]);
      const same = (a: Buffer | undefined | null, b: Buffer | undefined) => (a == null ? b === undefined || a === null : b !== undefined && a.equals(b));
      if (same(cert, this.material.cert) && same(key, this.material.key) && same(ca, this.material.ca)) return false;
      if (cert === null || key === null || ca === null) {
        this.report('some TLS files cannot be read right now (being replaced?); keeping the previous ones');
        return false;
      }
      let next: TlsMaterial;
      try {
        next = checkTlsMaterial(this.settings, { cert, key, ca });
      } catch (error) {
        this.report(`the TLS files changed but cannot be used yet (${(error as Error).message}); keeping the previous ones`);
        return false;
      }
      this.material = next;
      this.version += 1;
      this.lastProblem = undefined;
      const about = next.certificate ? `: certificate serial ${next.certificate.serialNumber}, valid until ${next.certificate.validTo.toISOString()}` : '';
      this.log(`TLS files reloaded${about}; new connections use them, open ones keep theirs`);
      for (const warning of next.warnings) this.log(`TLS: ${warning}`);
      for (const listener of this.listeners) listener(next);
      return true;
    } finally {
      this.polling = false;
    }
  }

  private report(problem: string): void {
    if (problem === this.lastProblem) return;
    this.lastProblem = problem;
    this.log(problem);
  }
}

/** `host` of a `host:port` address (brackets of an IPv6 host removed). */
export function hostOf(address: string): string {
  const at = address.lastIndexOf(':');
  const host = at > 0 && /^\d+$/.test(address.slice(at + 1)) ? address.slice(0, at) : address;
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

/** Verification of a server's certificate against `expected` (the dialed host, or the configured server name). */
export function checkServerName(expected: string, cert: tls.PeerCertificate): Error | undefined {
  return tls.checkServerIdentity(expected, cert);
}

/** OpenSSL and Node codes of a certificate not chaining to a trusted CA. */
const UNTRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
]);

/** What the TLS failure is about, for {@link describeTlsFailure}. */
export interface TlsFailureContext {
  /** `host:port` dialed. */
  address: string;
  /** The name the server's certificate was checked against. */
  expectedName?: string;
  /** The client's TLS settings (their files are named in the message). */
  settings?: TlsSettings;
  /** The server's certificate, when the handshake got that far. */
  peer?: tls.PeerCertificate;
}

function peerNames(peer: tls.PeerCertificate | undefined): string {
  if (!peer || Object.keys(peer).length === 0) return '';
  return peer.subjectaltname ? ` (it is for ${peer.subjectaltname})` : peer.subject?.CN ? ` (it is for CN=${peer.subject.CN})` : '';
}

function peerIssuer(peer: tls.PeerCertificate | undefined): string {
  const issuer = peer?.issuer;
  if (!issuer || Object.keys(peer ?? {}).length === 0) return '';
  const text = Object.entries(issuer)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(', ');
  return text ? ` (issuer ${text})` : '';
}

/**
 * One sentence naming why a TLS connection to a DSI server failed, from the error Node raised:
 * the server's certificate expired, is signed by a CA this client does not trust, is for another
 * name; the server does not speak TLS; it requires a client certificate, or refused this one.
 * Returns undefined for an error that is not about TLS.
 */
export function describeTlsFailure(error: unknown, context: TlsFailureContext): string | undefined {
  const { code, message = '' } = (error ?? {}) as { code?: string; message?: string };
  const { address, settings, peer } = context;
  const expected = context.expectedName ?? hostOf(address);
  const trusted = settings?.caFile ? `the CA in ${settings.caFile}` : "this system's root CAs (pass --tls-ca FILE to trust a private CA)";
  const when = (field: 'valid_to' | 'valid_from') => (peer && peer[field] ? ` (${field === 'valid_to' ? 'expired' : 'valid from'} ${new Date(peer[field]).toISOString()})` : '');
  if (code === 'CERT_HAS_EXPIRED') return `the server's certificate has expired${when('valid_to')}`;
  if (code === 'CERT_NOT_YET_VALID') return `the server's certificate is not valid yet${when('valid_from')}`;
  if (code !== undefined && UNTRUSTED.has(code)) return `the server's certificate is not signed by a CA this client trusts: it does not chain to ${trusted}${peerIssuer(peer)}`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return `the server's certificate is not valid for the name '${expected}'${peerNames(peer)}${context.expectedName ? '' : '; dial a name it has, or set --tls-server-name'}`;
  }
  if (/wrong version number|packet length too long|unknown protocol|http request/i.test(message)) {
    return 'the server does not speak TLS (it answered in plaintext): call it without --tls-ca/--tls-cert, or start it with --tls-cert and --tls-key';
  }
  if (/alert certificate required/i.test(message) || code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED') {
    return 'the server requires a client certificate (mutual TLS) and this client presented none: pass --tls-cert FILE and --tls-key FILE';
  }
  const alert = /alert (unknown ca|bad certificate|certificate expired|certificate revoked|certificate unknown|unsupported certificate|access denied|decrypt error|handshake failure)/i.exec(message);
  if (alert) {
    const why: Record<string, string> = {
      'unknown ca': 'it is not signed by a CA the server trusts',
      'bad certificate': 'the server found it bad',
      'certificate expired': 'it has expired',
      'certificate revoked': 'it was revoked',
      'certificate unknown': 'the server does not accept it',
      'unsupported certificate': 'it is not meant for client authentication (extended key usage)',
      'access denied': 'access denied',
      'decrypt error': 'its signature does not verify',
      'handshake failure': 'no common parameters (or the certificate was refused)',
    };
    const mine = settings?.certFile ? ` (${settings.certFile})` : '';
    return `the server refused this client's certificate${mine}: ${why[alert[1].toLowerCase()]}`;
  }
  if (code === 'ECONNRESET' || /disconnected before secure TLS connection/i.test(message)) {
    return 'the server closed the connection during the TLS handshake (does it speak TLS, and does it accept this client?)';
  }
  return undefined;
}

/**
 * A TLS client connection as DSI makes them: ALPN h2, SNI only for a name (never an IP address,
 * RFC 6066), the server's certificate checked against `expectedName`. Verification failures do not
 * destroy the socket (`rejectUnauthorized: false`): the caller MUST check `authorized` on
 * 'secureConnect', and can still read the peer's certificate to explain a refusal.
 */
export function connectTls(options: { socket?: net.Socket; host: string; port?: number; secureContext?: tls.SecureContext; expectedName: string }): tls.TLSSocket {
  const { socket, host, port, secureContext, expectedName } = options;
  return tls.connect({
    ...(socket ? { socket } : { host, port }),
    ...(net.isIP(host) ? {} : { servername: host }),
    ALPNProtocols: ['h2'],
    secureContext,
    rejectUnauthorized: false,
    checkServerIdentity: (_name, cert) => checkServerName(expectedName, cert),
  });
}

/** Why a socket that completed its handshake is not authorized, as an error with Node's code. */
export function verificationError(socket: tls.TLSSocket): Error {
  const reason = socket.authorizationError as unknown;
  if (reason instanceof Error) return reason;
  const code = String(reason ?? 'UNAUTHORIZED');
  return Object.assign(new Error(code), { code });
}

/** Options of {@link probeTls}. */
export interface ProbeOptions {
  /** Give up after this long. Default 1000 ms. */
  timeoutMs?: number;
  /** The client's TLS settings; without them the probe only asks whether the server speaks TLS. */
  settings?: TlsSettings;
  /** The client's current TLS files (defaults to reading `settings`). */
  context?: tls.SecureContext;
}

/** What {@link probeTls} found. */
export interface ProbeResult {
  /** Whether a TLS handshake with the server completed (certificate checks aside). */
  speaksTls: boolean;
  /** Why the connection fails, when the probe found out (see {@link describeTlsFailure}). */
  failure?: string;
  /** The server's certificate, when the handshake got that far. */
  peer?: tls.PeerCertificate;
}

/**
 * Opens one TLS connection to `address` the way a DSI client would, to name what a vague
 * connection failure was: with `settings`, the handshake verifies the server and presents the
 * client certificate, then waits for the server's first HTTP/2 frame (a server refusing the client
 * certificate says so only after the handshake, in TLS 1.3); without, it only finds out whether the
 * server speaks TLS. Never throws.
 */
export function probeTls(address: string, options: ProbeOptions = {}): Promise<ProbeResult> {
  const { timeoutMs = 1000, settings } = options;
  const host = hostOf(address);
  const expectedName = settings?.serverName ?? host;
  return new Promise<ProbeResult>((resolve) => {
    let socket: tls.TLSSocket | undefined;
    let handshaken = false;
    let settled = false;
    const finish = (result: ProbeResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket?.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ speaksTls: handshaken }), timeoutMs);
    timer.unref();
    let context = options.context;
    if (settings && !context) {
      try {
        const material = loadTlsMaterial({ ...settings, clientAuth: 'none' });
        context = tls.createSecureContext({ cert: material.cert, key: material.key, ca: material.ca });
      } catch (error) {
        finish({ speaksTls: false, failure: (error as Error).message });
        return;
      }
    }
    const verify = settings !== undefined;
    try {
      socket = connectTls({ host, port: portOf(address), secureContext: context, expectedName });
    } catch (error) {
      finish({ speaksTls: false, failure: (error as Error).message });
      return;
    }
    socket.once('secureConnect', () => {
      handshaken = true;
      const peer = socket!.getPeerCertificate();
      if (!verify) {
        finish({ speaksTls: true, peer });
        return;
      }
      if (!socket!.authorized) {
        const failure = describeTlsFailure(verificationError(socket!), { address, expectedName: settings?.serverName, settings, peer });
        finish({ speaksTls: true, peer, failure });
        return;
      }
      // The HTTP/2 preface and an empty SETTINGS frame: a server that took the client certificate answers with its SETTINGS.
      socket!.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
      socket!.once('data', () => finish({ speaksTls: true, peer: socket!.getPeerCertificate() }));
    });
    socket.once('error', (error) => {
      const peer = socket?.getPeerCertificate();
      // A certificate check failed only once the server had sent one: it speaks TLS.
      const code = (error as NodeJS.ErrnoException).code ?? '';
      const checked = UNTRUSTED.has(code) || ['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'ERR_TLS_CERT_ALTNAME_INVALID'].includes(code);
      finish({ speaksTls: handshaken || checked, peer, failure: describeTlsFailure(error, { address, expectedName: settings?.serverName, settings, peer }) });
    });
    socket.once('close', () => {
      // Verified, then closed without a frame: the server refused this client (in TLS 1.3 it checks
      // the client certificate after the client's handshake is done, and Node shows no alert).
      finish({ speaksTls: handshaken, failure: handshaken && verify ? refusedAfterHandshake(settings) : undefined });
    });
  });
}

/** Why a server closed a verified connection before its first frame, from what this client presented. */
function refusedAfterHandshake(settings: TlsSettings): string {
  if (!settings.certFile) return 'the server closed the connection right after the TLS handshake (does it require a client certificate?)';
  let mine: crypto.X509Certificate | undefined;
  try {
    mine = new crypto.X509Certificate(pemCertificates(fs.readFileSync(settings.certFile))[0] ?? '');
  } catch {
    mine = undefined;
  }
  const prefix = `the server refused this client's certificate (${settings.certFile})`;
  if (mine && Date.parse(mine.validTo) < Date.now()) return `${prefix}: it has expired (${new Date(mine.validTo).toISOString()})`;
  if (mine && Date.parse(mine.validFrom) > Date.now()) return `${prefix}: it is not valid yet`;
  if (mine?.keyUsage && mine.keyUsage.length > 0 && !mine.keyUsage.includes('1.3.6.1.5.5.7.3.2')) {
    return `${prefix}: it is not meant for client authentication (its extended key usage lacks clientAuth)`;
  }
  return `${prefix}: it is not signed by a CA the server trusts (it was issued by ${mine ? mine.issuer.replace(/\n/g, ', ') : 'an unknown issuer'})`;
}
