/**
 * Transport security of this process's gRPC channels and servers. Plaintext until TLS is configured
 * (see {@link configureTls}); every DSI server binds with {@link serverCredentials} and every channel to
 * another DSI service is made with {@link clientCredentials}, so one setting covers the process.
 */
import * as grpc from '@grpc/grpc-js';

/** TLS files of this process (flags `--tls-cert`, `--tls-key`, `--tls-ca`, `--tls-client-auth`; `DSI_TLS_*`). */
export interface TlsSettings {
  /** PEM certificate chain this process presents (as a server, and as a client for mutual TLS). */
  certFile?: string;
  /** PEM private key of `certFile`. */
  keyFile?: string;
  /** PEM CA bundle that peers' certificates must chain to. */
  caFile?: string;
  /** Whether this process's servers ask callers for a certificate. */
  clientAuth?: 'none' | 'require';
}

let current: TlsSettings | undefined;

/** Sets (or, with undefined, clears) this process's TLS settings; call before creating servers or channels. */
export function configureTls(settings: TlsSettings | undefined): void {
  current = settings;
}

/** This process's TLS settings, if any. */
export function tlsSettings(): TlsSettings | undefined {
  return current;
}

/** Credentials for a channel to another DSI service (plaintext until TLS is configured). */
export function clientCredentials(): grpc.ChannelCredentials {
  return grpc.credentials.createInsecure();
}

/** Credentials a DSI server binds with (plaintext until TLS is configured). */
export function serverCredentials(): grpc.ServerCredentials {
  return grpc.ServerCredentials.createInsecure();
}
