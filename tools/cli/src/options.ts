import fs from 'node:fs';
import path from 'node:path';
import { InvalidArgumentError, Option } from 'commander';
import { UsageError } from './errors';

// Every flag value is checked here, at the edge, by one of these parsers, so a mistake exits 2 with one
// line naming the flag before any work starts, and every command words its mistakes alike. A parser
// throws commander's InvalidArgumentError; commander prefixes the flag (or the DSI_* variable it came
// from) and main.ts prints the line.

/** Inclusive bounds of a numeric flag. */
export interface Range {
  min: number;
  max: number;
}

/** Bounds of a real-valued flag; `minExclusive` makes the lower bound open, as in (0, 1]. */
export interface RealRange {
  min?: number;
  max?: number;
  minExclusive?: boolean;
}

/** The largest value of a protobuf int32 field, and of gRPC's message size settings. */
export const MAX_INT32 = 2_147_483_647;

/** The most threads a command accepts: worker threads or onnxruntime threads beyond this only cost memory. */
export const MAX_THREADS = 256;

/** Seeds are integers in [0, 2^53), as the sampling rules require. */
export const SEED_RANGE: Range = { min: 0, max: Number.MAX_SAFE_INTEGER };

/** A port to connect to; a port to listen on may also be 0 (any free port). */
export const PORT_RANGE: Range = { min: 1, max: 65_535 };

function toNumber(value: string): number | undefined {
  const parsed = Number(value);
  return value.trim() === '' || !Number.isFinite(parsed) ? undefined : parsed;
}

/** Parses an integer in `range` (both ends included); anything else is a usage error. */
export function parseInteger(value: string, range: Range): number {
  const parsed = toNumber(value);
  if (parsed === undefined || !Number.isSafeInteger(parsed) || parsed < range.min || parsed > range.max) {
    throw new InvalidArgumentError(`expected an integer in [${range.min}, ${range.max}]`);
  }
  return parsed;
}

/** Parses a lookahead: `auto`, or an integer in [1, max]. */
export function parseLookahead(value: string, max: number): number | 'auto' {
  if (value.trim().toLowerCase() === 'auto') return 'auto';
  const parsed = toNumber(value);
  if (parsed === undefined || !Number.isSafeInteger(parsed) || parsed < 1 || parsed > max) throw new InvalidArgumentError(`expected auto or an integer in [1, ${max}]`);
  return parsed;
}

/** Parses a finite number within `range` (unbounded sides allowed). */
export function parseReal(value: string, range: RealRange = {}): number {
  const parsed = toNumber(value);
  const { min, max, minExclusive } = range;
  const belowMin = min !== undefined && (minExclusive ? !(parsed! > min) : !(parsed! >= min));
  const aboveMax = max !== undefined && !(parsed! <= max);
  if (parsed === undefined || belowMin || aboveMax) {
    const bounds =
      min !== undefined && max !== undefined
        ? ` in ${minExclusive ? '(' : '['}${min}, ${max}]`
        : min !== undefined
          ? ` ${minExclusive ? '>' : '>='} ${min}`
          : max !== undefined
            ? ` <= ${max}`
            : '';
    throw new InvalidArgumentError(`expected a number${bounds}`);
  }
  return parsed;
}

/** Parses a non-empty string (a prompt, a folder, a host). */
export function parseText(value: string): string {
  if (value.trim() === '') throw new InvalidArgumentError('expected a non-empty value');
  return value;
}

const ADDRESS = /^(\[[0-9A-Fa-f:.]+\]|[^\s:/[\],]+):([0-9]+)$/;

/** Parses a `host:port` address (an IPv6 host in brackets); the port is required and in [1, 65535]. */
export function parseAddress(value: string): string {
  const match = ADDRESS.exec(value.trim());
  const port = match ? Number(match[2]) : NaN;
  if (!match || !(port >= PORT_RANGE.min && port <= PORT_RANGE.max)) {
    throw new InvalidArgumentError(`expected host:port with a port in [${PORT_RANGE.min}, ${PORT_RANGE.max}]`);
  }
  return `${match[1]}:${port}`;
}

/** Parses a comma-separated list of at least one `host:port` address. */
export function parseAddressList(value: string): string[] {
  const parts = value.split(',').map((part) => part.trim());
  if (parts.every((part) => part === '')) throw new InvalidArgumentError('expected at least one host:port, comma-separated');
  const bad = parts.find((part) => part === '' || !ADDRESS.test(part));
  if (bad !== undefined) {
    throw new InvalidArgumentError(`expected host:port,host:port,... (${bad === '' ? 'an empty entry' : `'${bad}'`} is not host:port)`);
  }
  return parts.map(parseAddress);
}

/**
 * The one line every command prints for a bad flag value, for the parsers' reasons (through commander)
 * and for the checks done after parsing alike; `env` names the DSI_* variable the value came from.
 */
export function invalidValueMessage(flag: string, value: string, reason: string, env?: string): string {
  return `${flag} '${value}'${env ? ` (from ${env})` : ''} is invalid: ${reason}`;
}

function checked<T>(flag: string, value: unknown, parse: (value: string) => T): T {
  try {
    return parse(String(value));
  } catch (error) {
    throw new UsageError(invalidValueMessage(flag, String(value), (error as Error).message));
  }
}

/** Checks an already parsed flag value is an integer in `range`, in the parsers' words (a UsageError naming `flag`). */
export function checkInteger(flag: string, value: number, range: Range): number {
  return checked(flag, value, (text) => parseInteger(text, range));
}

/** Checks an already parsed flag value is a number in `range`, in the parsers' words. */
export function checkReal(flag: string, value: number, range: RealRange): number {
  return checked(flag, value, (text) => parseReal(text, range));
}

/** Checks an already parsed flag value is a non-empty string, in the parsers' words. */
export function checkText(flag: string, value: string): string {
  return checked(flag, value, parseText);
}

function option<T>(flags: string, description: string, parse: (value: string, previous: T) => T, env?: string): Option {
  const built = new Option(flags, description).argParser(parse);
  return env ? built.env(env) : built;
}

/** A numeric option: `--name <number>`, also read from `env`; anything but a finite number is a usage error. */
export function numberOption(flags: string, description: string, env?: string): Option {
  return option(flags, description, (value: string) => parseReal(value), env);
}

/** A real-valued option within `range`, e.g. an acceptance rate in [0, 1] or a latency >= 0. */
export function realOption(flags: string, description: string, range: RealRange, env?: string): Option {
  return option(flags, description, (value: string) => parseReal(value, range), env);
}

/** A lookahead option: `auto` or an integer k in [1, max]. */
export function lookaheadOption(flags: string, description: string, max: number, env?: string): Option {
  return option(flags, description, (value: string) => parseLookahead(value, max), env);
}

/** An integer option within `range`: counts, limits, milliseconds, seeds. */
export function integerOption(flags: string, description: string, range: Range, env?: string): Option {
  return option(flags, description, (value: string) => parseInteger(value, range), env);
}

/** A port option: [1, 65535], or also 0 (pick a free port) with `allowZero`. */
export function portOption(flags: string, description: string, allowZero: boolean, env?: string): Option {
  return integerOption(flags, description, { min: allowZero ? 0 : PORT_RANGE.min, max: PORT_RANGE.max }, env);
}

/** An address option: `host:port` of a service to call. */
export function addressOption(flags: string, description: string, env?: string): Option {
  return option(flags, description, parseAddress, env);
}

/** A list of addresses: `host:port,host:port,...`, at least one; the value is a `string[]`. */
export function addressListOption(flags: string, description: string, env?: string): Option {
  return option(flags, description, parseAddressList, env);
}

/** A non-empty string option; with `<value...>` in `flags` each value must be non-empty and the value is a `string[]`. */
export function textOption(flags: string, description: string, env?: string): Option {
  if (flags.includes('...')) {
    return option(flags, description, (value: string, previous: string[] | undefined) => [...(previous ?? []), parseText(value)], env);
  }
  return option(flags, description, parseText, env);
}

/** A choice option: `--name <value>` restricted to `choices`. */
export function choiceOption(flags: string, description: string, choices: string[], env?: string): Option {
  const built = new Option(flags, description).choices(choices);
  return env ? built.env(env) : built;
}

/**
 * Checks, before any work, that `dir` is a folder the command can create and write into, naming `flag`
 * when not. Probes the nearest existing ancestor without creating anything under it but a temporary
 * folder it removes at once (a recursive mkdir under /proc hangs on Node, and root passes every
 * access() check, so creating is the only honest probe).
 */
export function checkWritableDir(dir: string, flag: string): void {
  const fail = (why: string) => new UsageError(invalidValueMessage(flag, dir, why));
  let existing = path.resolve(dir);
  for (;;) {
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(existing, { throwIfNoEntry: false });
    } catch {
      stat = undefined; // ENOTDIR or EACCES: look further up; the probe below reports the cause
    }
    if (stat) {
      if (!stat.isDirectory()) throw fail(`${existing} is not a folder`);
      break;
    }
    const parent = path.dirname(existing);
    if (parent === existing) throw fail('no existing parent folder');
    existing = parent;
  }
  try {
    fs.rmdirSync(fs.mkdtempSync(path.join(existing, '.dsi-probe-')));
  } catch (error) {
    throw fail(`cannot write in ${existing} (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
}

/** Formats a number for humans: fixed decimals, no trailing noise. */
export function fixed(value: number, digits = 2): string {
  return Number.isFinite(value) ? value.toFixed(digits) : String(value);
}
