import { InvalidArgumentError, Option } from 'commander';

/** A numeric option: `--name <number>`, also read from `DSI_<NAME>`; a malformed value is a usage error. */
export function numberOption(flags: string, description: string, env?: string): Option {
  const option = new Option(flags, description).argParser((value: string) => {
    const parsed = Number(value);
    if (value.trim() === '' || Number.isNaN(parsed)) {
      throw new InvalidArgumentError(`${value} is not a number`);
    }
    return parsed;
  });
  return env ? option.env(env) : option;
}

/** A choice option: `--name <value>` restricted to `choices`. */
export function choiceOption(flags: string, description: string, choices: string[], env?: string): Option {
  const option = new Option(flags, description).choices(choices);
  return env ? option.env(env) : option;
}

/** Formats a number for humans: fixed decimals, no trailing noise. */
export function fixed(value: number, digits = 2): string {
  return Number.isFinite(value) ? value.toFixed(digits) : String(value);
}

/** The median of a non-empty list (the upper one of the middle pair). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Runs `fn` `runs` times in a row and returns each run's wall time in milliseconds. */
export async function timeEach(runs: number, fn: (i: number) => Promise<unknown> | unknown): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await fn(i);
    times.push(performance.now() - started);
  }
  return times;
}
