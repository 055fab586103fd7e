/**
 * A small local certificate authority in pure JavaScript (node-forge for the X.509 encoding and the
 * signature, Node's crypto for the RSA keys): what `dsi up --tls DIR` writes, and what tests make
 * their certificates with. Not a production CA: keys are written unencrypted, with mode 0600. The
 * functions are async only because node-forge is loaded on first use.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type Forge from 'node-forge';

type ForgeModule = typeof Forge;

/** node-forge, loaded on first use: importing `@dsi/rpc` must not pay for it. */
async function loadForge(): Promise<ForgeModule> {
  const loaded = (await import('node-forge')) as ForgeModule & { default?: ForgeModule };
  return loaded.default ?? loaded;
}

/** A certificate and its private key, both PEM. */
export interface PemPair {
  /** The certificate, PEM. */
  cert: string;
  /** Its private key, PEM (PKCS#8). */
  key: string;
}

/** What a certificate is for: `server` (serverAuth), `client` (clientAuth) or both. */
export type CertificateUse = 'server' | 'client' | 'both';

/** Options of {@link createCertificateAuthority}. */
export interface CaOptions {
  /** Subject common name. Default `DSI local CA`. */
  commonName?: string;
  /** Start of validity. Default an hour ago (tolerates clock skew between hosts). */
  notBefore?: Date;
  /** End of validity. Default `validDays` after now. */
  notAfter?: Date;
  /** Days of validity when `notAfter` is not given. Default 3650. */
  validDays?: number;
  /** RSA modulus length. Default 2048. */
  keyBits?: number;
}

/** Options of {@link issueCertificate}. */
export interface IssueOptions {
  /** Subject common name, e.g. the service name. */
  commonName: string;
  /** DNS subject alternative names. Default `localhost`. */
  dnsNames?: readonly string[];
  /** IP subject alternative names. Default `127.0.0.1` and `::1`. */
  ipAddresses?: readonly string[];
  /** Extended key usage. Default `both` (a DSI process is a server and a client of its replicas). */
  use?: CertificateUse;
  /** Start of validity. Default an hour ago. */
  notBefore?: Date;
  /** End of validity. Default `validDays` after now. */
  notAfter?: Date;
  /** Days of validity when `notAfter` is not given. Default 825. */
  validDays?: number;
  /** Serial number in hex. Default 16 random bytes. */
  serialNumber?: string;
  /** RSA modulus length. Default 2048. */
  keyBits?: number;
}

const DAY_MS = 86_400_000;

/** The SANs every local certificate carries: loopback by name and by address. */
export const LOCAL_DNS_NAMES: readonly string[] = ['localhost'];
export const LOCAL_IP_ADDRESSES: readonly string[] = ['127.0.0.1', '::1'];

function rsaKeyPair(forge: ForgeModule, bits: number): { publicKey: Forge.pki.rsa.PublicKey; privateKey: Forge.pki.rsa.PrivateKey; keyPem: string } {
  // Native key generation (pure-JS RSA generation takes seconds); forge only encodes and signs.
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: bits });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const forgeKey = forge.pki.privateKeyFromPem(keyPem) as Forge.pki.rsa.PrivateKey;
  return { privateKey: forgeKey, publicKey: forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e), keyPem };
}

function randomSerial(): string {
  // Positive (high bit clear) and without a leading zero nibble, so every tool prints it alike.
  const bytes = crypto.randomBytes(16);
  bytes[0] = (bytes[0] & 0x7f) | 0x10;
  return bytes.toString('hex');
}

function validity(options: { notBefore?: Date; notAfter?: Date; validDays?: number }, defaultDays: number): { notBefore: Date; notAfter: Date } {
  const notBefore = options.notBefore ?? new Date(Date.now() - 3_600_000);
  const notAfter = options.notAfter ?? new Date(Date.now() + (options.validDays ?? defaultDays) * DAY_MS);
  return { notBefore, notAfter };
}

/** A new self-signed CA certificate and key. */
export async function createCertificateAuthority(options: CaOptions = {}): Promise<PemPair> {
  const forge = await loadForge();
  const keys = rsaKeyPair(forge, options.keyBits ?? 2048);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = randomSerial();
  Object.assign(cert.validity, validity(options, 3650));
  const subject = [{ name: 'commonName', value: options.commonName ?? 'DSI local CA' }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(keys.privateKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: keys.keyPem };
}

/** A new certificate and key for `options.commonName`, signed by `ca`. */
export async function issueCertificate(ca: PemPair, options: IssueOptions): Promise<PemPair & { serialNumber: string }> {
  const forge = await loadForge();
  const caCert = forge.pki.certificateFromPem(ca.cert);
  const caKey = forge.pki.privateKeyFromPem(ca.key) as Forge.pki.rsa.PrivateKey;
  const keys = rsaKeyPair(forge, options.keyBits ?? 2048);
  const cert = forge.pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = options.serialNumber ?? randomSerial();
  Object.assign(cert.validity, validity(options, 825));
  cert.setSubject([{ name: 'commonName', value: options.commonName }]);
  cert.setIssuer(caCert.subject.attributes);
  const use = options.use ?? 'both';
  const altNames = [
    ...(options.dnsNames ?? LOCAL_DNS_NAMES).map((value) => ({ type: 2, value })),
    ...(options.ipAddresses ?? LOCAL_IP_ADDRESSES).map((ip) => ({ type: 7, ip })),
  ];
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: use !== 'client', clientAuth: use !== 'server' },
    ...(altNames.length > 0 ? [{ name: 'subjectAltName', altNames }] : []),
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: keys.keyPem, serialNumber: cert.serialNumber };
}

/** The files of a local PKI written by {@link ensureLocalCertificates}. */
export interface LocalCertificates {
  /** The folder. */
  dir: string;
  /** `DIR/ca.pem`: what every process trusts (`--tls-ca`). */
  caFile: string;
  /** `DIR/ca-key.pem`: the CA's key (needed only to issue more certificates). */
  caKeyFile: string;
  /** Per name: `DIR/NAME.pem` and `DIR/NAME-key.pem` (`--tls-cert`, `--tls-key`). */
  files: Record<string, { certFile: string; keyFile: string }>;
  /** Which files were written now (the others were valid and reused). */
  written: string[];
}

/** Options of {@link ensureLocalCertificates}. */
export interface EnsureOptions {
  /** A certificate that expires within this long is replaced. Default a day. */
  minRemainingMs?: number;
  /** Extended key usage per name. Default `both`; `client` for the name `client`. */
  use?: (name: string) => CertificateUse;
}

/**
 * Makes sure `dir` holds a local CA (`ca.pem`, `ca-key.pem`) and, per name, `NAME.pem` and
 * `NAME-key.pem` signed by it with the SANs localhost, 127.0.0.1 and ::1. Valid files are reused:
 * a certificate is replaced only when missing, unreadable, not signed by the CA, not matching its
 * key, without the loopback SANs or expiring within `minRemainingMs`; a new CA replaces every
 * certificate. Keys are written with mode 0600.
 */
export async function ensureLocalCertificates(dir: string, names: readonly string[], options: EnsureOptions = {}): Promise<LocalCertificates> {
  const minRemainingMs = options.minRemainingMs ?? DAY_MS;
  const useOf = options.use ?? ((name: string) => (name === 'client' ? 'client' : 'both'));
  fs.mkdirSync(dir, { recursive: true });
  const caFile = path.join(dir, 'ca.pem');
  const caKeyFile = path.join(dir, 'ca-key.pem');
  const written: string[] = [];
  const write = (file: string, text: string, mode: number): void => {
    // Write then rename, so a process reading the file never sees half of it.
    const temporary = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(temporary, text, { mode });
    fs.renameSync(temporary, file);
    written.push(file);
  };

  let ca = readPair(caFile, caKeyFile);
  const caCert = ca && usableCertificate(ca, minRemainingMs);
  if (!ca || !caCert || !caCert.ca) {
    ca = await createCertificateAuthority();
    write(caKeyFile, ca.key, 0o600);
    write(caFile, ca.cert, 0o644);
  }
  const caX509 = new crypto.X509Certificate(ca.cert);
  const files: LocalCertificates['files'] = {};
  for (const name of names) {
    const certFile = path.join(dir, `${name}.pem`);
    const keyFile = path.join(dir, `${name}-key.pem`);
    files[name] = { certFile, keyFile };
    const existing = readPair(certFile, keyFile);
    const cert = existing && usableCertificate(existing, minRemainingMs);
    const fresh = written.includes(caFile);
    if (!fresh && cert && cert.verify(caX509.publicKey) && hasLoopbackNames(cert)) continue;
    const issued = await issueCertificate(ca, { commonName: name, use: useOf(name) });
    write(keyFile, issued.key, 0o600);
    write(certFile, issued.cert, 0o644);
  }
  return { dir, caFile, caKeyFile, files, written };
}

function readPair(certFile: string, keyFile: string): PemPair | undefined {
  try {
    return { cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8') };
  } catch {
    return undefined;
  }
}

/** The certificate when it parses, matches its key and stays valid for `minRemainingMs`. */
function usableCertificate(pair: PemPair, minRemainingMs: number): crypto.X509Certificate | undefined {
  try {
    const cert = new crypto.X509Certificate(pair.cert);
    if (!cert.checkPrivateKey(crypto.createPrivateKey(pair.key))) return undefined;
    const now = Date.now();
    if (Date.parse(cert.validFrom) > now || Date.parse(cert.validTo) < now + minRemainingMs) return undefined;
    return cert;
  } catch {
    return undefined;
  }
}

function hasLoopbackNames(cert: crypto.X509Certificate): boolean {
  const names = (cert.subjectAltName ?? '').split(',').map((part) => part.trim());
  return (
    LOCAL_DNS_NAMES.every((name) => names.includes(`DNS:${name}`)) &&
    names.includes('IP Address:127.0.0.1') &&
    names.some((n) => /^IP Address:(::1|0:0:0:0:0:0:0:1)$/i.test(n))
  );
}
