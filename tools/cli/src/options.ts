import fs from 'node:fs';
import path from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
// The gRPC-free entry: TLS and token files are checked here, before anything (telemetry, gRPC) loads.
import { AuthConfigError, loadTlsMaterial, parseTokens, readTokenFile, TlsConfigError, type TlsSetting, type TlsSettings, tlsEnabled } from '@dsi/rpc/lifecycle';
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

/** Where a flag's value came from, as commander's `Command.getOptionValueSource` tells (`cli`, `env`, `default`). */
export interface ValueSources {
  getOptionValueSource(key: string): string | undefined;
}

/** The TLS flags' values as commander parses them (`--tls-cert` is `tlsCert`). */
export interface TlsFlagValues {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  tlsClientAuth?: 'none' | 'require';
  tlsServerName?: string;
}

/** Per TLS setting: its flag, its key in the parsed flags, its environment variable. */
const TLS_FLAGS: Record<TlsSetting | 'serverName', readonly [flag: string, key: keyof TlsFlagValues, env: string]> = {
  certFile: ['--tls-cert', 'tlsCert', 'DSI_TLS_CERT'],
  keyFile: ['--tls-key', 'tlsKey', 'DSI_TLS_KEY'],
  caFile: ['--tls-ca', 'tlsCa', 'DSI_TLS_CA'],
  clientAuth: ['--tls-client-auth', 'tlsClientAuth', 'DSI_TLS_CLIENT_AUTH'],
  serverName: ['--tls-server-name', 'tlsServerName', 'DSI_TLS_SERVER_NAME'],
};

/**
 * The TLS flags of `dsi serve`: the certificate it serves (and presents to the services it calls), the
 * CA it checks peers against, whether its server demands client certificates, the server name.
 */
export function tlsServerOptions(): Option[] {
  return [
    textOption('--tls-cert <file>', 'serve TLS with this PEM certificate (chain); also the client certificate of this process\'s channels to other services', 'DSI_TLS_CERT'),
    textOption('--tls-key <file>', 'the PEM private key of --tls-cert', 'DSI_TLS_KEY'),
    textOption('--tls-ca <file>', 'PEM CA bundle: the services this process calls must have certificates from it (default: the system\'s roots), and so must callers with --tls-client-auth require', 'DSI_TLS_CA'),
    choiceOption('--tls-client-auth <mode>', 'require: callers must present a certificate signed by --tls-ca (mutual TLS)', ['none', 'require'], 'DSI_TLS_CLIENT_AUTH'),
    textOption('--tls-server-name <name>', 'check the certificates of the services this process calls against this name instead of the address dialed (replicas found by IP)', 'DSI_TLS_SERVER_NAME'),
  ];
}

/** The TLS flags of a command that calls services: the CA to trust, a client certificate for mutual TLS. */
export function tlsClientOptions(): Option[] {
  return [
    textOption('--tls-ca <file>', 'connect with TLS and trust this PEM CA bundle (the one that signed the servers\' certificates)', 'DSI_TLS_CA'),
    textOption('--tls-cert <file>', 'connect with TLS and present this PEM client certificate (servers with --tls-client-auth require)', 'DSI_TLS_CERT'),
    textOption('--tls-key <file>', 'the PEM private key of --tls-cert', 'DSI_TLS_KEY'),
    textOption('--tls-server-name <name>', 'check the server\'s certificate against this name instead of the address dialed', 'DSI_TLS_SERVER_NAME'),
  ];
}

/**
 * Checks the TLS flags before anything starts (the files readable, PEM, the key matching the
 * certificate, a CA for client authentication) and returns the settings, or undefined when TLS is
 * off. A problem is a UsageError (exit 2) naming the flag, or the DSI_TLS_* variable it came from.
 */
export function tlsSettingsFromFlags(flags: TlsFlagValues, sources?: ValueSources): TlsSettings | undefined {
  const settings: TlsSettings = {
    certFile: flags.tlsCert,
    keyFile: flags.tlsKey,
    caFile: flags.tlsCa,
    clientAuth: flags.tlsClientAuth,
    serverName: flags.tlsServerName,
  };
  if (!tlsEnabled(settings).client && settings.clientAuth !== 'require') {
    if (settings.serverName !== undefined) {
      throw new UsageError(`${TLS_FLAGS.serverName[0]} applies only to TLS connections: add --tls-ca FILE (the CA that signed the servers' certificates)`);
    }
    return undefined;
  }
  try {
    loadTlsMaterial(settings);
  } catch (error) {
    if (!(error instanceof TlsConfigError)) throw error;
    const [flag, key, env] = TLS_FLAGS[error.setting];
    const value = flags[key];
    if (value === undefined) throw new UsageError(`${flag} is required: ${error.reason}`);
    const fromEnv = sources?.getOptionValueSource(key) === 'env' ? env : undefined;
    throw new UsageError(invalidValueMessage(flag, value, error.reason, fromEnv));
  }
  return settings;
}

/** The TLS flags as they would be from the DSI_TLS_* variables alone (for a command that has no TLS flags). */
function tlsFlagsFromEnv(env: NodeJS.ProcessEnv): { flags: TlsFlagValues; sources: ValueSources } {
  const flags: TlsFlagValues = {};
  for (const [, key, variable] of Object.values(TLS_FLAGS)) {
    const value = env[variable];
    if (value !== undefined && value !== '') (flags as Record<string, string>)[key] = value;
  }
  if (flags.tlsClientAuth !== undefined && flags.tlsClientAuth !== 'none' && flags.tlsClientAuth !== 'require') {
    throw new UsageError(invalidValueMessage('--tls-client-auth', flags.tlsClientAuth, 'expected none or require', 'DSI_TLS_CLIENT_AUTH'));
  }
  return { flags, sources: { getOptionValueSource: () => 'env' } };
}

/** What a command that calls services sends: TLS settings and a bearer token. */
export interface ClientSecurity {
  tls?: TlsSettings;
  /** Sent as `authorization: Bearer <token>`. */
  token?: string;
}

/** The flags of {@link addClientSecurityOptions}, as commander parses them. */
export interface ClientSecurityFlags extends TlsFlagValues {
  authTokenFile?: string;
}

let chosenClientSecurity: ClientSecurity | undefined;

/**
 * The bearer token a client sends: the first token of `--auth-token-file`, else `DSI_AUTH_TOKEN`.
 * A problem is a UsageError naming the flag or the variable.
 */
export function clientToken(file: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (file !== undefined) {
    try {
      return readTokenFile(file)[0];
    } catch (error) {
      if (error instanceof AuthConfigError) throw new UsageError(invalidValueMessage('--auth-token-file', file, error.message));
      throw error;
    }
  }
  const value = env.DSI_AUTH_TOKEN;
  if (value === undefined || value.trim() === '') return undefined;
  let tokens: string[];
  try {
    tokens = parseTokens(value, 'DSI_AUTH_TOKEN');
  } catch (error) {
    throw new UsageError(`DSI_AUTH_TOKEN is invalid: ${(error as Error).message.replace(/^DSI_AUTH_TOKEN line 1: /, '')}`);
  }
  return tokens[0];
}

/**
 * Adds the flags of a command that calls services (TLS: --tls-ca, --tls-cert, --tls-key,
 * --tls-server-name; --auth-token-file), checked before the action starts (exit 2 naming the flag);
 * {@link clientSecurity} then returns what they say.
 */
export function addClientSecurityOptions(command: Command): Command {
  for (const option of tlsClientOptions()) command.addOption(option);
  command.addOption(textOption('--auth-token-file <file>', 'send the first token of this file as `authorization: Bearer <token>` (or set DSI_AUTH_TOKEN)'));
  // With globals: on a parent (dsi estimate), the flags apply to its subcommands' actions too.
  return command.hook('preAction', (_command, action) => {
    const flags = action.optsWithGlobals<ClientSecurityFlags>();
    const sources: ValueSources = { getOptionValueSource: (key) => action.getOptionValueSourceWithGlobals(key) };
    chosenClientSecurity = { tls: tlsSettingsFromFlags(flags, sources), token: clientToken(flags.authTokenFile) };
  });
}

/**
 * The TLS settings and bearer token of this command's calls: from its flags (see
 * {@link addClientSecurityOptions}), or, for a command without them, from DSI_TLS_* and
 * DSI_AUTH_TOKEN (checked alike, naming the variable).
 */
export function clientSecurity(env: NodeJS.ProcessEnv = process.env): ClientSecurity {
  if (chosenClientSecurity === undefined) {
    const { flags, sources } = tlsFlagsFromEnv(env);
    chosenClientSecurity = { tls: tlsSettingsFromFlags({ ...flags, tlsClientAuth: undefined }, sources), token: clientToken(undefined, env) };
  }
  return chosenClientSecurity;
}

/** Sets what {@link clientSecurity} returns (`dsi up` calls its stack with its own client certificate). */
export function setClientSecurity(security: ClientSecurity | undefined): void {
  chosenClientSecurity = security;
}

/** Checks `--auth-token-file` of a server (readable, at least one token), naming the flag or DSI_AUTH_TOKEN_FILE. */
export function checkServerTokenFile(file: string | undefined, sources?: ValueSources): string | undefined {
  if (file === undefined) return undefined;
  try {
    readTokenFile(file);
  } catch (error) {
    if (!(error instanceof AuthConfigError)) throw error;
    const fromEnv = sources?.getOptionValueSource('authTokenFile') === 'env' ? 'DSI_AUTH_TOKEN_FILE' : undefined;
    throw new UsageError(invalidValueMessage('--auth-token-file', file, error.message, fromEnv));
  }
  return file;
}
