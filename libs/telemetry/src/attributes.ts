/*
 * Span and attribute names shared by every DSI process, so a trace reads the same whichever service
 * wrote it and a test can assert on a constant instead of a string literal.
 *
 * docs:begin span-attributes
 * | Attribute              | Type   | Set on                             | Meaning                                        |
 * | ---------------------- | ------ | ---------------------------------- | ---------------------------------------------- |
 * | `rpc.system`           | string | gRPC client and server spans       | always `grpc`                                  |
 * | `rpc.service`          | string | gRPC client and server spans       | full service name, e.g. `dsi.v1.TargetService` |
 * | `rpc.method`           | string | gRPC client and server spans       | method name, e.g. `Verify`                     |
 * | `rpc.grpc.status_code` | int    | gRPC client and server spans       | numeric gRPC status of the call (0 = OK)       |
 * | `error.type`           | string | any span that failed               | gRPC status name (`INVALID_ARGUMENT`) or class |
 * | `dsi.sim.a`            | double | `dsi.simulate`, `dsi.heatmap.cell` | acceptance rate, in [0, 1]                     |
 * | `dsi.sim.c`            | double | `dsi.simulate`, `dsi.heatmap.cell` | drafter forward latency / target's             |
 * | `dsi.sim.k`            | int    | `dsi.simulate`, `dsi.heatmap.cell` | lookahead: drafts per verification             |
 * | `dsi.sim.t`            | double | `dsi.simulate`, `dsi.heatmap`      | target forward latency, the unit of time       |
 * | `dsi.sim.tokens`       | int    | `dsi.simulate`, `dsi.heatmap`      | tokens to generate per run                     |
 * | `dsi.sim.servers`      | int    | `dsi.simulate`, `dsi.heatmap`      | target servers (speculation parallelism)       |
 * | `dsi.sim.repeats`      | int    | `dsi.simulate`, `dsi.heatmap`      | independent repeats (seed method)              |
 * | `dsi.sim.seed`         | int    | `dsi.simulate`, `dsi.heatmap`      | seed of the random stream (seed method)        |
 * | `dsi.sim.method`       | string | `dsi.simulate`, `dsi.heatmap`      | how costs are computed: `seed` or `exact`      |
 * | `dsi.heatmap.ndim`     | int    | `dsi.heatmap`                      | grid resolution                                |
 * | `dsi.heatmap.cells`    | int    | `dsi.heatmap`                      | valid cells computed by this sweep (or shard)  |
 *
 * | Span name          | Kind     | Written by | Covers                                 |
 * | ------------------ | -------- | ---------- | -------------------------------------- |
 * | `dsi.simulate`     | INTERNAL | simulator  | one simulation of one configuration    |
 * | `dsi.heatmap`      | INTERNAL | simulator  | one heatmap sweep, parent of its cells |
 * | `dsi.heatmap.cell` | INTERNAL | simulator  | one cell of a heatmap sweep            |
 *
 * gRPC client and server spans themselves (named `grpc.<package>.<Service>/<Method>`) come from the
 * gRPC instrumentation that `startTelemetry` enables; services only add the `dsi.*` attributes.
 * docs:end span-attributes
 */

/**
 * OpenTelemetry RPC semantic-convention attribute names, as written by `@opentelemetry/instrumentation-grpc`.
 * Use them to read or assert on gRPC spans without repeating string literals.
 */
export const RpcAttributes = {
  SYSTEM: 'rpc.system',
  SERVICE: 'rpc.service',
  METHOD: 'rpc.method',
  GRPC_STATUS_CODE: 'rpc.grpc.status_code',
} as const;

/**
 * Attribute names for DSI's own spans: the simulator's configuration (`dsi.sim.*`) and heatmap sweeps
 * (`dsi.heatmap.*`). Set them when starting a span so a trace shows which configuration ran.
 */
export const DsiAttributes = {
  SIM_A: 'dsi.sim.a',
  SIM_C: 'dsi.sim.c',
  SIM_K: 'dsi.sim.k',
  SIM_T: 'dsi.sim.t',
  SIM_TOKENS: 'dsi.sim.tokens',
  SIM_SERVERS: 'dsi.sim.servers',
  SIM_REPEATS: 'dsi.sim.repeats',
  SIM_SEED: 'dsi.sim.seed',
  SIM_METHOD: 'dsi.sim.method',
  HEATMAP_NDIM: 'dsi.heatmap.ndim',
  HEATMAP_CELLS: 'dsi.heatmap.cells',
  /** The generation's id (also the replicas' KV-cache key). */
  REQUEST_ID: 'dsi.request_id',
  /** nonsi | si | dsi. */
  MODE: 'dsi.mode',
  LOOKAHEAD: 'dsi.lookahead',
  /** Speculation epoch: bumped by every rejection that cancels in-flight work. */
  EPOCH: 'dsi.epoch',
  /** Target replica (its address) that ran a verification. */
  REPLICA: 'dsi.replica',
  /** Verification block index within the request (dispatch order). */
  BLOCK_INDEX: 'dsi.block.index',
  /** Absolute position of the block's first draft. */
  BLOCK_START: 'dsi.block.start',
  /** Drafts in the block (0: the non-SI lane's plain step). */
  BLOCK_SIZE: 'dsi.block.size',
  /** Drafts of the block the target accepted. */
  ACCEPTED: 'dsi.block.accepted',
  /** dsi.verify: committed | rejected | cancelled | failed; dsi.draft: used | stale | cancelled | failed. */
  OUTCOME: 'dsi.outcome',
  /** Tokens before the drafted ones (dsi.draft). */
  PREFIX_LENGTH: 'dsi.prefix_length',
  /** Tokens drafted (dsi.draft) or generated (dsi.generate). */
  TOKENS: 'dsi.tokens',
  /** length | eos | stop. */
  FINISH_REASON: 'dsi.finish_reason',
  /** Verified tokens after a commit (dsi.commit event). */
  VERIFIED_LENGTH: 'dsi.verified_length',
  /** Absolute position of a rejection (dsi.preemption event). */
  POSITION: 'dsi.position',
  /** Tokens run through the model in one forward (dsi.forward). */
  TOKENS_COMPUTED: 'dsi.tokens.computed',
  /** Tokens whose keys and values came from the KV cache (dsi.forward). */
  TOKENS_REUSED: 'dsi.tokens.reused',
  /** Per-request metrics on dsi.generate. */
  DRAFTED: 'dsi.metrics.drafted',
  ACCEPTED_TOTAL: 'dsi.metrics.accepted',
  ACCEPTANCE_RATE: 'dsi.metrics.acceptance_rate',
  TARGET_FORWARDS: 'dsi.metrics.target_forwards',
  PREEMPTIONS: 'dsi.metrics.preemptions',
} as const;

/** OpenTelemetry GenAI semantic-convention attributes we set where they fit. */
export const GenAiAttributes = {
  OPERATION_NAME: 'gen_ai.operation.name',
  REQUEST_MODEL: 'gen_ai.request.model',
  REQUEST_MAX_TOKENS: 'gen_ai.request.max_tokens',
  REQUEST_TEMPERATURE: 'gen_ai.request.temperature',
  REQUEST_SEED: 'gen_ai.request.seed',
  RESPONSE_FINISH_REASONS: 'gen_ai.response.finish_reasons',
  USAGE_INPUT_TOKENS: 'gen_ai.usage.input_tokens',
  USAGE_OUTPUT_TOKENS: 'gen_ai.usage.output_tokens',
} as const;

/**
 * Names of the spans DSI code starts itself (gRPC spans are named by the instrumentation). Use them
 * with `withSpan` so traces from every process and the docs agree.
 */
export const DsiSpans = {
  SIMULATE: 'dsi.simulate',
  HEATMAP: 'dsi.heatmap',
  HEATMAP_CELL: 'dsi.heatmap.cell',
  /** Orchestrator: one generation request (child of the gRPC server span). */
  GENERATE: 'dsi.generate',
  /** Orchestrator: one drafter call (parent of its gRPC client span). */
  DRAFT: 'dsi.draft',
  /** Orchestrator: one verification on one target replica (parent of its gRPC client span). */
  VERIFY: 'dsi.verify',
  /** Drafter and target: one model forward (child of the gRPC server span). */
  FORWARD: 'dsi.forward',
} as const;

/** Events DSI records on its spans. */
export const DsiEvents = {
  /** On dsi.generate: a rejection cancelled in-flight work (attributes dsi.epoch, dsi.position). */
  PREEMPTION: 'dsi.preemption',
  /** On dsi.generate: tokens joined the verified output (attributes dsi.tokens, dsi.verified_length). */
  COMMIT: 'dsi.commit',
} as const;

/** Any `dsi.*` attribute name; narrows attribute keys in helpers that accept only ours. */
export type DsiAttributeName = (typeof DsiAttributes)[keyof typeof DsiAttributes];
