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
} as const;

/**
 * Names of the spans DSI code starts itself (gRPC spans are named by the instrumentation). Use them
 * with `withSpan` so traces from every process and the docs agree.
 */
export const DsiSpans = {
  SIMULATE: 'dsi.simulate',
  HEATMAP: 'dsi.heatmap',
  HEATMAP_CELL: 'dsi.heatmap.cell',
} as const;

/** Any `dsi.*` attribute name; narrows attribute keys in helpers that accept only ours. */
export type DsiAttributeName = (typeof DsiAttributes)[keyof typeof DsiAttributes];
