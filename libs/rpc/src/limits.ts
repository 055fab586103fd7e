/** Largest request a DSI server accepts by default (4 MiB, the gRPC default): a prompt plus drafts. */
export const DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024;

/** Largest response a DSI server sends by default (16 MiB): room for per-position probabilities. */
export const DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/** Concurrent calls per client connection a DSI server allows by default. */
export const DEFAULT_MAX_CONCURRENT_STREAMS = 100;

/** How long a DSI server waits for in-flight calls on shutdown before cancelling them, by default. */
export const DEFAULT_DRAIN_GRACE_MS = 10_000;
