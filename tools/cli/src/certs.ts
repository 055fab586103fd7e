/**
 * The certificates of the local stack (`dsi up --tls DIR`): a local CA and one certificate per
 * service, plus one for callers, made once in DIR and reused (see `ensureLocalCertificates` in
 * `@dsi/rpc`), and the flags each process of the stack gets from them.
 */
import path from 'node:path';
import type { LocalCertificates, TlsSettings } from '@dsi/rpc';

/** Certificates `dsi up --tls` keeps in its folder: one per service, and `client` for callers (dsi generate, buf curl). */
export const STACK_CERTIFICATES = ['orchestrator', 'drafter', 'target', 'simulator', 'client'] as const;

/** A service of the local stack that serves with its own certificate. */
export type StackServiceName = Exclude<(typeof STACK_CERTIFICATES)[number], 'client'>;

/** Makes sure DIR holds the stack's CA and certificates (valid ones are reused); resolves with their files. */
export async function stackCertificates(dir: string): Promise<LocalCertificates> {
  // Loaded here: @dsi/rpc loads gRPC, and the generator loads node-forge on first use.
  const { ensureLocalCertificates } = await import('@dsi/rpc');
  return ensureLocalCertificates(path.resolve(dir), STACK_CERTIFICATES);
}

/**
 * The `dsi serve` flags of one service of the stack: its certificate and key, the CA. Drafters and
 * targets demand client certificates (mutual TLS with the orchestrator, which presents its own);
 * the orchestrator's and the simulator's clients need none (said explicitly, over any DSI_TLS_CLIENT_AUTH).
 */
export function serveTlsArgs(certificates: LocalCertificates, name: StackServiceName): string[] {
  const { certFile, keyFile } = certificates.files[name];
  const clientAuth = name === 'drafter' || name === 'target' ? 'require' : 'none';
  return ['--tls-cert', certFile, '--tls-key', keyFile, '--tls-ca', certificates.caFile, '--tls-client-auth', clientAuth];
}

/** What a caller of the stack uses: the CA, and the client certificate. */
export function callerTls(certificates: LocalCertificates): TlsSettings {
  const { certFile, keyFile } = certificates.files.client;
  return { caFile: certificates.caFile, certFile, keyFile };
}

/** A path as a shell word (quoted when it needs to be). */
function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

/** The lines `dsi up --tls` prints to show how to call the orchestrator at `address` over TLS. */
export function tlsCallLines(certificates: LocalCertificates, address: string): string[] {
  const { caFile, certFile, keyFile } = callerTls(certificates) as Required<Pick<TlsSettings, 'caFile' | 'certFile' | 'keyFile'>>;
  const [ca, cert, key] = [caFile, certFile, keyFile].map(shellWord);
  const body = `'{"params":{"prompt":"Hello","mode":"MODE_DSI"}}'`;
  return [
    `  npx dsi generate --orchestrator ${address} --tls-ca ${ca} --tls-cert ${cert} --tls-key ${key} --mode dsi --prompt "Once upon a time"`,
    `  grpcurl -cacert ${ca} -cert ${cert} -key ${key} -d ${body} ${address} dsi.v1.OrchestratorService/Generate`,
    `  npx buf curl --protocol grpc --cacert ${ca} --cert ${cert} --key ${key} -d ${body} https://${address}/dsi.v1.OrchestratorService/Generate`,
  ];
}
