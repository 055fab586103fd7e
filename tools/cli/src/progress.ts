import { SingleBar } from 'cli-progress';

/** A progress display for long work: a bar on a terminal, a line every few seconds otherwise. */
export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

/**
 * A progress bar on stderr (never stdout, which carries results). cli-progress is silent when stderr is
 * not a terminal unless told otherwise, so then it prints a plain line every 2 s: logs and CI still see
 * long work advancing.
 */
export function progressBar(label: string, enabled = true, unit = 'cells'): Progress {
  if (!enabled) return { update: () => undefined, stop: () => undefined };
  const bar = new SingleBar({
    format: `${label} [{bar}] {percentage}% | {value}/{total} ${unit} | {eta_formatted} left`,
    stream: process.stderr,
    noTTYOutput: !process.stderr.isTTY,
    notTTYSchedule: 2000,
    hideCursor: true,
    clearOnComplete: false,
    etaBuffer: 200,
    fps: 10,
  });
  let started = false;
  return {
    update(done, total) {
      if (!started) {
        bar.start(total, 0);
        started = true;
      }
      bar.update(done);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
