import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import {
  heatmapCsv,
  HEATMAP_PANELS,
  heatmapSvg,
  resolveHeatmapSpec,
  runHeatmap,
  SimulationConfigError,
  summarizeHeatmap,
  type HeatmapRow,
  type HeatmapSpec,
} from '@dsi/sim';
import { UsageError } from '../errors';
import { addClientSecurityOptions, addressListOption, checkWritableDir, choiceOption, fixed, integerOption, MAX_THREADS, numberOption, textOption } from '../options';
import { progressBar } from '../progress';

interface HeatmapFlags {
  ndim?: number;
  servers?: number;
  method?: HeatmapSpec['method'];
  t?: number;
  tokens?: number;
  repeats?: number;
  seed?: number;
  out: string;
  threads?: number;
  simulator?: string[];
  progress: boolean;
  json?: boolean;
}

/** What `dsi heatmap` reports when done. */
export interface HeatmapReport {
  spec: HeatmapSpec;
  cells: number;
  seconds: number;
  cells_per_second: number;
  files: string[];
}

/** Computes a heatmap (locally on worker threads, or streamed from a simulator service) and writes its files. */
export async function writeHeatmap(flags: HeatmapFlags, signal?: AbortSignal): Promise<HeatmapReport> {
  let spec: HeatmapSpec;
  try {
    spec = resolveHeatmapSpec({
      ndim: flags.ndim,
      servers: flags.servers,
      method: flags.method,
      t: flags.t,
      tokens: flags.tokens,
      repeats: flags.repeats,
      seed: flags.seed,
    });
  } catch (error) {
    if (error instanceof SimulationConfigError) throw new UsageError(error.message);
    throw error;
  }
  checkWritableDir(flags.out, '--out');
  const progress = progressBar(`heatmap ndim=${spec.ndim} ${spec.method}`, flags.progress);
  const started = performance.now();
  let rows: HeatmapRow[];
  try {
    const onRow = (_row: HeatmapRow, done: number, total: number) => progress.update(done, total);
    if (flags.simulator) {
      const { heatmapRemote } = await import('../remote');
      rows = await heatmapRemote(flags.simulator, spec, onRow, signal);
    } else {
      rows = await runHeatmap(spec, { threads: flags.threads, onRow, signal });
    }
  } finally {
    progress.stop();
  }
  const seconds = (performance.now() - started) / 1000;
  const summary = summarizeHeatmap(rows);
  fs.mkdirSync(flags.out, { recursive: true });
  const files: string[] = [];
  const write = (name: string, content: string) => {
    const file = path.join(flags.out, name);
    fs.writeFileSync(file, content);
    files.push(file);
  };
  write('heatmap.csv', heatmapCsv(summary));
  write('heatmap.json', JSON.stringify({ spec, cells: summary.length, rows: summary }) + '\n');
  const subtitle = `${spec.method} method, ndim=${spec.ndim}, ${spec.servers} servers, S=${spec.tokens}; `;
  for (const panel of HEATMAP_PANELS) write(`heatmap-${panel.name}.svg`, heatmapSvg(summary, panel, subtitle));
  return { spec, cells: summary.length, seconds, cells_per_second: summary.length / seconds, files };
}

/** `dsi heatmap`: the paper's Figure 1 sweep. */
export function heatmapCommand(): Command {
  const command = new Command('heatmap')
    .description('sweep the study grid of (c, a, k) and write heatmap.csv, heatmap.json and four SVG panels')
    .addOption(numberOption('--ndim <n>', 'grid resolution: c and a on linspace(0, 1, ndim+1), k in 1..ndim (default 20)'))
    .addOption(numberOption('--servers <n>', 'target servers; cells needing more are skipped (default 7)'))
    .addOption(choiceOption('--method <method>', 'seed or exact (default seed)', ['seed', 'exact']))
    .addOption(numberOption('--t <latency>', 'target forward latency (default 1)'))
    .addOption(numberOption('--tokens <n>', 'tokens per run (default 1000)'))
    .addOption(numberOption('--repeats <n>', 'repeats per cell, seed method (default 5)'))
    .addOption(numberOption('--seed <n>', 'seed (default 42)'))
    .addOption(integerOption('--threads <n>', `worker threads, at most ${MAX_THREADS} (default: all cores)`, { min: 1, max: MAX_THREADS }, 'DSI_THREADS'))
    .addOption(textOption('--out <dir>', 'output folder (checked writable before the sweep)').default('heatmap'))
    .addOption(addressListOption('--simulator <addresses>', 'stream the cells from simulator services (host:port, comma-separated: the sweep is sharded across them)'))
    .option('--no-progress', 'no progress bar on stderr')
    .option('--json', 'print one JSON document on stdout');
  // --tls-ca, --tls-cert, --tls-key, --tls-server-name and --auth-token-file, for --simulator.
  return addClientSecurityOptions(command).action(async (flags: HeatmapFlags) => {
    const report = await writeHeatmap(flags);
    if (flags.json) {
      process.stdout.write(JSON.stringify(report) + '\n');
      return;
    }
    process.stdout.write(
      `${report.cells} cells in ${fixed(report.seconds, 3)} s (${Math.round(report.cells_per_second)} cells/s)\n` + report.files.map((f) => `  wrote ${f}\n`).join(''),
    );
  });
}
