/**
 * gRPC plumbing shared by every DSI service: one error type with status codes, the server
 * bootstrap (health, reflection, limits, graceful shutdown), handler adapters with cancellation,
 * the slot a service loads into while NOT_SERVING, and client helpers. The process lifecycle
 * (`runService`) has its own entry, `@dsi/rpc/lifecycle`, which loads nothing before telemetry starts.
 */
export {
  DsiError,
  type DsiErrorOptions,
  statusCodeName,
  toServiceError,
  INTERNAL_ERROR_DETAILS,
  invalidArgument,
  notFound,
  unavailable,
  failedPrecondition,
  resourceExhausted,
  cancelled,
  deadlineExceeded,
  internal,
} from './errors';
export {
  DsiServer,
  type ServerState,
  type ServiceRegistration,
  type ServerOptions,
  type CallContext,
  type ServerStreamContext,
  unary,
  serverStream,
} from './server';
export {
  createChannelOptions,
  type ChannelLimits,
  type CallOptions,
  callUnary,
  channelAddress,
  type UnaryMethodName,
  type UnaryRequest,
  type UnaryResponse,
  checkHealth,
  HealthProbe,
  HealthWatch,
  type HealthWatchOptions,
  type HealthStatus,
  waitForServing,
  type WaitForServingOptions,
} from './client';
export {
  DEFAULT_MAX_REQUEST_BYTES,
  DEFAULT_MAX_RESPONSE_BYTES,
  DEFAULT_MAX_CONCURRENT_STREAMS,
  DEFAULT_DRAIN_GRACE_MS,
} from './limits';
export { LoadingSlot } from './slot';
export type { ServiceContext, ServiceProcessConfig, ServiceStartup } from './lifecycle';
export {
  type ConfigureTlsOptions,
  configureTls,
  tlsSettings,
  clientCredentials,
  serverCredentials,
  createClientCredentials,
  createServerCredentials,
  explainConnectionFailure,
} from './tls';
export {
  type TlsSettings,
  type TlsSetting,
  type TlsMaterial,
  type CertificateSummary,
  type ProbeOptions,
  type ProbeResult,
  TlsConfigError,
  TlsFileWatcher,
  DEFAULT_TLS_RELOAD_INTERVAL_MS,
  loadTlsMaterial,
  tlsEnabled,
  describeTlsFailure,
  probeTls,
} from './tls-files';
export { AuthConfigError, BearerTokens, type TokenVerdict, parseTokens, readTokenFile, unauthenticatedMessage } from './auth';
export {
  type PemPair,
  type CertificateUse,
  type CaOptions,
  type IssueOptions,
  type LocalCertificates,
  type EnsureOptions,
  createCertificateAuthority,
  issueCertificate,
  ensureLocalCertificates,
  LOCAL_DNS_NAMES,
  LOCAL_IP_ADDRESSES,
} from './certs';
export { rejectingUndecodableRequests, type BeforeDecode } from './request-decoding';
export { DEFAULT_MAX_REQUEST_ID_LENGTH, MAX_REQUEST_ID_LENGTH_ENV, limitFromEnv, requireRequestIdLength, requestIdLimited } from './request-id';
