import { Command } from 'commander';
import { MAX_LOOKAHEAD } from '@dsi/core';
import { UsageError } from '../errors';
import { addClientSecurityOptions, addressOption, choiceOption, fixed, integerOption, lookaheadOption, MAX_INT32, realOption, SEED_RANGE, textOption } from '../options';

interface GenerateFlags {
  orchestrator: string;
  prompt: string;
  mode: 'nonsi' | 'si' | 'dsi';
  lookahead?: number | 'auto';
  maxNewTokens?: number;
  rule: 'greedy' | 'seeded' | 'rejection';
  temperature?: number;
  seed?: number;
  stop?: string[];
  json?: boolean;
  deadlineMs: number;
}

/** How long `dsi generate` waits for the whole generation unless `--deadline-ms` says otherwise (10 minutes). */
export const DEFAULT_GENERATE_DEADLINE_MS = 600_000;

/** The longest `--deadline-ms` accepted (a day). */
export const MAX_GENERATE_DEADLINE_MS = 86_400_000;

/** Rejects flags that contradict each other or would be ignored, naming them, before any call. */
function checkGenerateFlags(flags: GenerateFlags): void {
  if (flags.mode === 'nonsi' && flags.lookahead !== undefined) throw new UsageError('--lookahead does not apply to --mode nonsi (no drafts); drop it or pick --mode si or dsi');
  if (flags.rule === 'greedy' && flags.temperature !== undefined) throw new UsageError('--temperature does not apply to --rule greedy; drop it or pick --rule seeded or rejection');
  if (flags.rule !== 'greedy' && flags.seed === undefined) throw new UsageError(`--rule ${flags.rule} needs --seed`);
}

/**
 * `dsi generate`: one request to an orchestrator. Streams the text to stdout as it is verified (never a
 * draft that could still be rejected), then a metrics line on stderr; `--json` prints the full response.
 */
export function generateCommand(): Command {
  const command = new Command('generate')
    .description('generate text through an orchestrator, streaming verified tokens')
    .addOption(addressOption('--orchestrator <address>', 'orchestrator host:port', 'DSI_ORCHESTRATOR').default('127.0.0.1:50050'))
    .addOption(textOption('--prompt <text>', 'the prompt').makeOptionMandatory())
    .addOption(choiceOption('--mode <mode>', 'decoding algorithm', ['nonsi', 'si', 'dsi']).default('dsi'))
    .addOption(lookaheadOption('--lookahead <k>', `drafts per verification, si and dsi: auto (the default: chosen as it goes from the measured acceptance, costs and load) or at most ${MAX_LOOKAHEAD}`, MAX_LOOKAHEAD))
    .addOption(integerOption('--max-new-tokens <n>', 'tokens to generate at most; the orchestrator has a limit (default 64)', { min: 1, max: MAX_INT32 }))
    .addOption(choiceOption('--rule <rule>', 'verification rule', ['greedy', 'seeded', 'rejection']).default('greedy'))
    .addOption(realOption('--temperature <t>', 'sampling temperature, > 0 (seeded, rejection; default 1)', { min: 0, minExclusive: true }))
    .addOption(integerOption('--seed <n>', 'sampling seed in [0, 2^53) (required by seeded and rejection)', SEED_RANGE))
    .addOption(textOption('--stop <text...>', 'stop sequences'))
    .addOption(integerOption('--deadline-ms <ms>', 'give up when the generation has not finished within this long', { min: 1, max: MAX_GENERATE_DEADLINE_MS }, 'DSI_DEADLINE_MS').default(DEFAULT_GENERATE_DEADLINE_MS))
    .option('--json', 'print the full response with metrics as one JSON document');
  // TLS (--tls-ca, --tls-cert, --tls-key) and --auth-token-file, checked before the action.
  return addClientSecurityOptions(command).action(async (flags: GenerateFlags) => {
    checkGenerateFlags(flags);
    const { status } = await import('@grpc/grpc-js');
    const { GenerateStreamRequest, GenerationMetrics, GenerateResponse, OrchestratorServiceClient } = await import('@dsi/proto');
    const { createChannelOptions } = await import('@dsi/rpc');
    const { modeToWire, ruleToWire } = await import('@dsi/wire');
    const { callMetadata, channelCredentials, explainRemote } = await import('../remote');
    const params = {
      prompt: flags.prompt,
      mode: modeToWire(flags.mode),
      lookahead: flags.lookahead === 'auto' ? 0 : flags.lookahead,
      maxNewTokens: flags.maxNewTokens,
      sampling: { rule: ruleToWire(flags.rule), temperature: flags.temperature, seed: flags.seed },
      stop: flags.stop ?? [],
    };
    const client = new OrchestratorServiceClient(flags.orchestrator, channelCredentials(), createChannelOptions());
    const stream = client.generateStream(GenerateStreamRequest.fromPartial({ params }), callMetadata(), { deadline: Date.now() + flags.deadlineMs });
    const onSignal = () => stream.cancel();
    process.once('SIGINT', onSignal);
    try {
      for await (const message of stream) {
        if (message.delta && !flags.json) process.stdout.write(message.delta.text);
        if (message.done) {
          const done = message.done;
          if (flags.json) {
            process.stdout.write(JSON.stringify(GenerateResponse.toJSON(done)) + '\n');
          } else {
            const m = GenerationMetrics.fromPartial(done.metrics ?? {});
            process.stdout.write('\n');
            process.stderr.write(
              `[${flags.mode}] ${done.tokens.length} tokens in ${fixed(m.wallMs, 1)} ms (${fixed((done.tokens.length * 1000) / m.wallMs, 1)} tokens/s), ` +
                `ttft ${fixed(m.ttftMs, 1)} ms, tpot ${fixed(m.tpotMs, 2)} ms, acceptance ${fixed(m.acceptanceRate, 2)}, ` +
                `target forwards ${m.targetForwards}, preemptions ${m.preemptions}, mean k ${fixed(m.meanLookahead, 1)}, blocks per commit ${fixed(m.blocksPerCommit, 2)}\n`,
            );
          }
        }
      }
    } catch (error) {
      if ((error as { code?: unknown }).code === status.DEADLINE_EXCEEDED) {
        throw new Error(`orchestrator at ${flags.orchestrator}: no complete answer within --deadline-ms ${flags.deadlineMs}`, { cause: error });
      }
      throw await explainRemote('orchestrator', flags.orchestrator, error);
    } finally {
      process.off('SIGINT', onSignal);
      client.close();
    }
  });
}
