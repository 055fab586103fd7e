import { Command } from 'commander';
import { LIMITS, simulate, simulateEvent, SimulationConfigError, type SimulationConfig, type SimulationResult } from '@dsi/sim';
import { UsageError } from '../errors';
import { addClientSecurityOptions, addressOption, type ClientSecurityFlags, choiceOption, fixed, integerOption, lookaheadOption, numberOption, realOption } from '../options';

/** The flags: the simulation's own fields (commander keys them by the same names), and where to print. */
type SimulateFlags = Partial<SimulationConfig> &
  ClientSecurityFlags & {
    json?: boolean;
    simulator?: string;
  };

/** Runs a simulation locally, or through a simulator service when `--simulator` names one. */
async function run(flags: SimulateFlags): Promise<SimulationResult> {
  // The TLS and token flags are for --simulator (see addClientSecurityOptions), not simulation fields.
  const { json: _json, simulator, tlsCa: _ca, tlsCert: _cert, tlsKey: _key, tlsClientAuth: _auth, tlsServerName: _name, authTokenFile: _token, ...partial } = flags;
  if (simulator) {
    const { simulateRemote } = await import('../remote');
    return simulateRemote(simulator, partial);
  }
  try {
    return partial.method === 'event' ? await simulateEvent(partial) : simulate(partial);
  } catch (error) {
    if (error instanceof SimulationConfigError) throw new UsageError(error.message);
    throw error;
  }
}

/** A load simulation's figures per mode, as a table for a terminal. */
function formatLoad(result: SimulationResult): string {
  const { config, load } = result;
  const how = config.concurrency !== undefined ? `closed loop, concurrency ${config.concurrency}` : `Poisson arrivals, ${config.arrivalRate} requests per unit`;
  const lines = [
    `DSI simulation under load (event method: the serving scheduler on a virtual clock; ${how}, ${config.requests} requests per mode, ${config.drafters ?? 1} drafter${config.drafters === 1 ? '' : 's'})`,
    `  a=${config.a}  c=${config.c}  k=${config.k}  t=${config.t}  S=${config.tokens}  servers=${config.servers}`,
    '',
    `  ${'mode'.padEnd(7)} ${'tokens/t'.padStart(9)} ${'p50'.padStart(9)} ${'p99'.padStart(9)} ${'ttft p50'.padStart(9)} ${'util'.padStart(6)} ${'preempt'.padStart(8)}`,
  ];
  for (const [name, figures] of [['non-SI', load!.nonsi], ['SI', load!.si], ['DSI', load!.dsi]] as const) {
    lines.push(
      `  ${name.padEnd(7)} ${fixed(figures.throughput, 3).padStart(9)} ${fixed(figures.latencyP50).padStart(9)} ${fixed(figures.latencyP99).padStart(9)} ${fixed(figures.ttftP50).padStart(9)} ${fixed(figures.targetUtilisation).padStart(6)} ${String(figures.preemptions).padStart(8)}`,
    );
  }
  return lines.join('\n');
}

/** The study's result as a short table for a terminal. */
export function formatSimulation(result: SimulationResult): string {
  if (result.load) return formatLoad(result);
  const { config } = result;
  const perRepeat = (values: number[], digits: number) => values.map((v) => fixed(v, digits)).join(' ');
  const exact = config.method === 'exact';
  const title = {
    exact: 'DSI simulation (exact expectations)',
    seed: `DSI simulation (seed method: ${config.repeats} repeat${config.repeats === 1 ? '' : 's'}, seed ${config.seed})`,
    event: `DSI simulation (event method: the scheduler on a virtual clock, ${config.repeats} repeat${config.repeats === 1 ? '' : 's'}; iterations = target forwards)`,
  }[config.method];
  const lines = [
    title,
    `  a=${config.a}  c=${config.c}  k=${config.k}  t=${config.t}  S=${config.tokens}  servers=${config.servers}`,
    '',
    `  ${'algorithm'.padEnd(9)} ${'cost'.padStart(9)}   ${exact ? 'expected iterations' : 'per repeat: cost | iterations'}`,
    `  ${'non-SI'.padEnd(9)} ${fixed(result.nonsi.cost).padStart(9)}`,
  ];
  for (const [name, algo] of [['SI', result.si], ['DSI', result.dsi]] as const) {
    lines.push(
      `  ${name.padEnd(9)} ${fixed(algo.cost).padStart(9)}   ` +
        (exact ? fixed(algo.iterations[0], 3) : `${perRepeat(algo.costs, 1)} | ${perRepeat(algo.iterations, 0)}`),
    );
  }
  const s = result.speedup;
  lines.push('', `  speedup  SI/non-SI ${fixed(s.si_vs_nonsi, 3)}x   DSI/SI ${fixed(s.dsi_vs_si, 3)}x   DSI/non-SI ${fixed(s.dsi_vs_nonsi, 3)}x`);
  return lines.join('\n');
}

/** Converts a result to the documented JSON document (`S` for the token count, as in the study). */
export function simulationJson(result: SimulationResult): unknown {
  const { tokens, ...rest } = result.config;
  return {
    config: {
      a: rest.a, c: rest.c, k: rest.k, t: rest.t, S: tokens, servers: rest.servers, repeats: rest.repeats, seed: rest.seed, method: rest.method,
      ...(result.load ? { concurrency: rest.concurrency, arrival_rate: rest.arrivalRate, requests: rest.requests, drafters: rest.drafters } : {}),
    },
    ...(result.load ? { load: result.load } : {}),
    nonsi: result.nonsi,
    si: result.si,
    dsi: result.dsi,
    speedup: result.speedup,
  };
}

/** `dsi simulate`: one configuration, the study's rules. */
export function simulateCommand(): Command {
  const command = new Command('simulate')
    .description('predict non-SI, SI and DSI costs (target-forward units) with the reference study rules')
    .addOption(numberOption('--a <rate>', 'acceptance rate in [0, 1] (default 0.9)'))
    .addOption(numberOption('--c <ratio>', 'drafter latency as a fraction of the target, in (0, t] (default 0.1)'))
    .addOption(lookaheadOption('--k <n>', 'lookahead: drafts per verification (default 5), or auto (event method: the scheduler chooses as it goes)', LIMITS.k))
    .addOption(numberOption('--t <latency>', 'target forward latency, the unit of time (default 1)'))
    .addOption(numberOption('--tokens <n>', 'tokens to generate, S (default 1000)'))
    .addOption(numberOption('--servers <n>', 'target servers; DSI needs >= ceil(t/(k*c)) (default 7)'))
    .addOption(numberOption('--repeats <n>', 'independent repeats, seed method (default 5)'))
    .addOption(numberOption('--seed <n>', 'MT19937 seed, seed method (default 42)'))
    .addOption(choiceOption('--method <method>', 'seed: the study Monte Carlo, bit for bit; exact: expectations; event: the orchestrator\'s scheduler on a virtual clock (default seed)', ['seed', 'exact', 'event']))
    .addOption(numberOption('--ttft <latency>', 'event: latency of the first target forward (default t)'))
    .addOption(numberOption('--verify-per-token <latency>', 'event: extra target latency per extra token verified (default 0)'))
    .addOption(numberOption('--rtt <latency>', 'event: network round trip per call (default 0)'))
    .addOption(integerOption('--concurrency <n>', 'event: many requests at once, closed loop: N clients sending back to back', { min: 1, max: 10_000 }))
    .addOption(realOption('--arrival-rate <r>', 'event: many requests at once, open loop: Poisson arrivals, requests per unit of time', { min: 0, minExclusive: true }))
    .addOption(integerOption('--requests <n>', 'event under load: requests per mode (default 8 per client, or 100 with --arrival-rate)', { min: 1, max: 100_000 }))
    .addOption(integerOption('--drafters <n>', 'event under load: drafter replicas shared by the requests (default 1)', { min: 1, max: 1024 }))
    .addOption(addressOption('--simulator <address>', 'ask a running simulator service (host:port) instead of computing locally'))
    .option('--json', 'print one JSON document on stdout');
  // --tls-ca, --tls-cert, --tls-key, --tls-server-name and --auth-token-file, for --simulator.
  return addClientSecurityOptions(command).action(async (flags: SimulateFlags) => {
    const result = await run(flags);
    process.stdout.write(flags.json ? JSON.stringify(simulationJson(result)) + '\n' : formatSimulation(result) + '\n');
  });
}
