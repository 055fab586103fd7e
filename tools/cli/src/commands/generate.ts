import { Command, Option } from 'commander';
import { UsageError } from '../errors';
import { choiceOption, fixed, numberOption } from '../options';

interface GenerateFlags {
  orchestrator: string;
  prompt: string;
  mode: 'nonsi' | 'si' | 'dsi';
  lookahead?: number;
  maxNewTokens?: number;
  rule: 'greedy' | 'seeded' | 'rejection';
  temperature?: number;
  seed?: number;
  stop?: string[];
  json?: boolean;
}

/**
 * `dsi generate`: one request to an orchestrator. Streams the text to stdout as it is verified (never a
 * draft that could still be rejected), then a metrics line on stderr; `--json` prints the full response.
 */
export function generateCommand(): Command {
  return new Command('generate')
    .description('generate text through an orchestrator, streaming verified tokens')
    .addOption(new Option('--orchestrator <address>', 'orchestrator host:port').env('DSI_ORCHESTRATOR').default('127.0.0.1:50050'))
    .requiredOption('--prompt <text>', 'the prompt')
    .addOption(choiceOption('--mode <mode>', 'decoding algorithm', ['nonsi', 'si', 'dsi']).default('dsi'))
    .addOption(numberOption('--lookahead <k>', 'drafts per verification (default 5)'))
    .addOption(numberOption('--max-new-tokens <n>', 'tokens to generate at most (default 64)'))
    .addOption(choiceOption('--rule <rule>', 'verification rule', ['greedy', 'seeded', 'rejection']).default('greedy'))
    .addOption(numberOption('--temperature <t>', 'sampling temperature (seeded, rejection; default 1)'))
    .addOption(numberOption('--seed <n>', 'sampling seed (required by seeded and rejection)'))
    .option('--stop <text...>', 'stop sequences')
    .option('--json', 'print the full response with metrics as one JSON document')
    .action(async (flags: GenerateFlags) => {
      const { credentials } = await import('@grpc/grpc-js');
      const { GenerateStreamRequest, GenerationMetrics, GenerateResponse, OrchestratorServiceClient } = await import('@dsi/proto');
      const { createChannelOptions } = await import('@dsi/rpc');
      const { modeToWire, ruleToWire } = await import('@dsi/wire');
      const { explainService } = await import('../remote');
      if (flags.prompt.length === 0) throw new UsageError('prompt is empty');
      const params = {
        prompt: flags.prompt,
        mode: modeToWire(flags.mode),
        lookahead: flags.lookahead,
        maxNewTokens: flags.maxNewTokens,
        sampling: { rule: ruleToWire(flags.rule), temperature: flags.temperature, seed: flags.seed },
        stop: flags.stop ?? [],
      };
      const client = new OrchestratorServiceClient(flags.orchestrator, credentials.createInsecure(), createChannelOptions());
      const stream = client.generateStream(GenerateStreamRequest.fromPartial({ params }));
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
                  `target forwards ${m.targetForwards}, preemptions ${m.preemptions}\n`,
              );
            }
          }
        }
      } catch (error) {
        throw explainService('orchestrator', flags.orchestrator, error);
      } finally {
        process.off('SIGINT', onSignal);
        client.close();
      }
    });
}
