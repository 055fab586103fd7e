import { context, SpanStatusCode, trace, type Context, type Span, type Tracer } from '@opentelemetry/api';
import type { GenerateConfig, GenerationResult, SchedulerEvents } from '@dsi/core';
import { DsiAttributes as A, DsiEvents, DsiSpans, GenAiAttributes as G, recordSpanError, type GenerationInstruments } from '@dsi/telemetry';

/** The attribute of `dsi.replica_time` that says what the time bought (libs/telemetry's metrics). */
const REPLICA_TIME_USE = 'dsi.replica_time.use';

/**
 * The spans and metrics of one generation: `dsi.generate` around it, a `dsi.draft` per drafter call and a
 * `dsi.verify` per verification (each the parent of its gRPC client span, so the drafter's and the
 * targets' server spans join the same trace), preemptions and commits as events. The scheduler's
 * events open and close the spans (a verification's outcome is known only when its block commits or
 * is cancelled); the orchestrator's shared ports run each gRPC call through {@link verifyCall} or
 * {@link draftCall}, which make the open span current. Metrics: every verification by outcome; for
 * committing ones (committed or rejected) each accepted draft by its position in the block; the
 * drafts judged and accepted from every commit (so they sum to the request's metrics); the replica time of every verification by what it bought (lane,
 * speculative_used, wasted); per request the totals and latencies.
 */
export class GenerationTrace {
  readonly span: Span;
  private readonly context: Context;
  /** Open dsi.verify spans by block (a block's outcome may come after its replica moved on). */
  private readonly verifySpans = new Map<number, Span>();
  /** The verification each replica is running now (the scheduler calls the port right after verifyStart). */
  private readonly runningOn = new Map<string, { span: Span; block: number }>();
  /** When each block's current verification started, and when its replica call ended (if it has). */
  private readonly verifyStartedAt = new Map<number, number>();
  private readonly verifyCallEndedAt = new Map<number, number>();
  private draftSpan?: Span;
  private readonly blockSizes = new Map<number, number>();
  private readonly modeAttributes: { 'dsi.mode': string };

  /**
   * `parent` is the trace context the request came with (its server call's `traceContext`); the
   * generation's spans and replica calls join it.
   */
  constructor(
    private readonly tracer: Tracer,
    config: GenerateConfig,
    private readonly instruments?: GenerationInstruments,
    parent: Context = context.active(),
  ) {
    this.modeAttributes = { [A.MODE]: config.mode };
    this.span = tracer.startSpan(DsiSpans.GENERATE, {
      attributes: {
        [A.REQUEST_ID]: config.requestId,
        [A.MODE]: config.mode,
        [A.LOOKAHEAD]: config.mode === 'nonsi' ? 0 : config.lookahead,
        [G.OPERATION_NAME]: 'text_completion',
        [G.REQUEST_MAX_TOKENS]: config.maxNewTokens,
        [G.USAGE_INPUT_TOKENS]: config.prompt.length,
        'dsi.rule': config.sampling.rule,
        ...(config.sampling.rule !== 'greedy' ? { [G.REQUEST_TEMPERATURE]: config.sampling.temperature } : {}),
        ...(config.sampling.seed !== undefined ? { [G.REQUEST_SEED]: config.sampling.seed } : {}),
      },
    }, parent);
    this.context = trace.setSpan(parent, this.span);
  }

  /** Runs `fn` with dsi.generate as the active span. */
  within<T>(fn: () => T): T {
    return context.with(this.context, fn);
  }

  /** Runs one drafter call of this generation under its dsi.draft span. */
  draftCall<T>(call: () => Promise<T>): Promise<T> {
    return context.with(trace.setSpan(this.context, this.draftSpan ?? this.span), call);
  }

  /**
   * Runs one Verify call of this generation on `replica` under its dsi.verify span, noting when the
   * replica's work ended (a block may commit long after, once the blocks before it have).
   */
  verifyCall<T>(replica: string, call: () => Promise<T>): Promise<T> {
    const running = this.runningOn.get(replica);
    const ended = () => {
      if (running) this.verifyCallEndedAt.set(running.block, performance.now());
    };
    const result = context.with(trace.setSpan(this.context, running?.span ?? this.span), call);
    result.then(ended, ended);
    return result;
  }

  /** Scheduler hooks that open, annotate and close the spans. */
  events(): SchedulerEvents {
    return {
      draftStart: (e) => {
        this.draftSpan = this.tracer.startSpan(
          DsiSpans.DRAFT,
          { attributes: { [A.EPOCH]: e.epoch, [A.PREFIX_LENGTH]: e.prefixLength, 'dsi.draft.max_tokens': e.maxTokens } },
          this.context,
        );
      },
      draftEnd: (e) => {
        this.instruments?.drafts.add(1, this.modeAttributes);
        this.instruments?.draftedTokens.add(e.tokens, this.modeAttributes);
        const span = this.draftSpan;
        this.draftSpan = undefined;
        if (!span) return;
        span.setAttributes({ [A.TOKENS]: e.tokens, [A.OUTCOME]: e.outcome });
        if (e.outcome === 'failed') recordSpanError(span, e.error);
        span.end();
      },
      verifyStart: (e) => {
        this.verifySpans.get(e.block)?.end(); // a re-dispatch after a failure: the failed attempt is over
        const span = this.tracer.startSpan(
          DsiSpans.VERIFY,
          { attributes: { [A.REPLICA]: e.replica, [A.BLOCK_INDEX]: e.block, [A.EPOCH]: e.epoch, [A.BLOCK_START]: e.start, [A.BLOCK_SIZE]: e.size, [A.LOOKAHEAD]: e.lookahead } },
          this.context,
        );
        this.verifySpans.set(e.block, span);
        this.runningOn.set(e.replica, { span, block: e.block });
        this.verifyStartedAt.set(e.block, performance.now());
        this.verifyCallEndedAt.delete(e.block);
        this.blockSizes.set(e.block, e.size);
      },
      verifyEnd: (e) => {
        // The scheduler's "committed" covers a block with a rejected draft too (its accepted prefix and
        // the target's token were committed): the trace calls that "rejected".
        const size = this.blockSizes.get(e.block) ?? e.accepted;
        const outcome = e.outcome === 'committed' && e.accepted < size ? 'rejected' : e.outcome;
        this.countVerification(e.accepted, outcome);
        this.countReplicaTime(e.block, e.outcome === 'committed' ? (e.class === 'lane' ? 'lane' : 'speculative_used') : 'wasted');
        const span = this.verifySpans.get(e.block);
        if (!span) return;
        span.setAttributes({ [A.ACCEPTED]: e.accepted, [A.OUTCOME]: outcome });
        if (e.outcome === 'failed') recordSpanError(span, e.error);
        span.end();
        this.verifySpans.delete(e.block);
      },
      preempt: (e) => {
        this.instruments?.preemptions.add(1, this.modeAttributes);
        this.span.addEvent(DsiEvents.PREEMPTION, { [A.EPOCH]: e.epoch, [A.POSITION]: e.position });
      },
      commit: (e) => {
        // The drafts judged and accepted come from the commits (the scheduler's own definition), so
        // the counters sum to the request's metrics: accepted / judged is its acceptance rate.
        if (this.instruments && e.judged > 0) {
          this.instruments.verifiedDrafts.add(e.judged, this.modeAttributes);
          this.instruments.acceptedTokens.add(e.accepted, this.modeAttributes);
        }
        this.span.addEvent(DsiEvents.COMMIT, { [A.TOKENS]: e.tokens.length, [A.VERIFIED_LENGTH]: e.verifiedLength });
      },
    };
  }

  /** Adds the replica time of a block's verification (start to the end of its replica call) by what it bought. */
  private countReplicaTime(block: number, use: 'lane' | 'speculative_used' | 'wasted'): void {
    const startedAt = this.verifyStartedAt.get(block);
    if (startedAt === undefined) return;
    const endedAt = this.verifyCallEndedAt.get(block) ?? performance.now();
    this.verifyStartedAt.delete(block);
    this.verifyCallEndedAt.delete(block);
    this.instruments?.replicaTime.add(Math.max(0, endedAt - startedAt), { ...this.modeAttributes, [REPLICA_TIME_USE]: use });
  }

  private countVerification(accepted: number, outcome: string): void {
    const instruments = this.instruments;
    if (!instruments) return;
    instruments.verifications.add(1, { ...this.modeAttributes, [A.OUTCOME]: outcome });
    if (outcome !== 'committed' && outcome !== 'rejected') return;
    for (let position = 0; position < accepted; position++) instruments.acceptedByPosition.add(1, { ...this.modeAttributes, [A.POSITION]: position });
  }

  /** Ends dsi.generate with the result's figures. */
  finish(result: GenerationResult): void {
    const m = result.metrics;
    if (this.instruments) {
      const attributes = { ...this.modeAttributes, [A.FINISH_REASON]: result.finishReason };
      this.instruments.requests.add(1, attributes);
      this.instruments.targetForwards.add(m.targetForwards, this.modeAttributes);
      this.instruments.generatedTokens.add(result.tokens.length, this.modeAttributes);
      this.instruments.ttft.record(m.ttftMs, this.modeAttributes);
      if (result.tokens.length > 1) this.instruments.tpot.record(m.tpotMs, this.modeAttributes);
      this.instruments.duration.record(m.wallMs, this.modeAttributes);
    }
    this.span.setAttributes({
      [A.TOKENS]: result.tokens.length,
      [A.FINISH_REASON]: result.finishReason,
      [G.USAGE_OUTPUT_TOKENS]: result.tokens.length,
      [G.RESPONSE_FINISH_REASONS]: [result.finishReason],
      [A.DRAFTED]: m.drafted,
      [A.ACCEPTED_TOTAL]: m.accepted,
      [A.ACCEPTANCE_RATE]: m.acceptanceRate,
      [A.TARGET_FORWARDS]: m.targetForwards,
      [A.PREEMPTIONS]: m.preemptions,
    });
    this.close();
  }

  /** Ends every span still open (a failed or cancelled generation). */
  fail(error: unknown): void {
    recordSpanError(this.span, error);
    this.close();
  }

  private close(): void {
    this.draftSpan?.setAttribute(A.OUTCOME, 'cancelled');
    this.draftSpan?.end();
    for (const span of this.verifySpans.values()) {
      span.setAttribute(A.OUTCOME, 'cancelled');
      span.end();
    }
    this.verifySpans.clear();
    if (this.span.isRecording()) this.span.setStatus({ code: SpanStatusCode.UNSET });
    this.span.end();
  }
}
