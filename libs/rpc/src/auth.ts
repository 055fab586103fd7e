/**
 * Bearer tokens a server accepts (`--auth-token-file`): one per line, blank lines and `#` comments
 * ignored; compared in constant time; the file re-read when it changes. Loads only Node built-ins.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';

/** A token file that cannot be used, with what is wrong. */
export class AuthConfigError extends Error {
  override readonly name = 'AuthConfigError';
}

/** The verdict on a call's `authorization` metadata. */
export type TokenVerdict = 'ok' | 'missing' | 'malformed' | 'wrong';

/** Parses a token file's text: the tokens, in order; throws an {@link AuthConfigError} for a line that cannot be a token. */
export function parseTokens(text: string, file = 'the token file'): string[] {
  const tokens: string[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    if (/\s/.test(line)) throw new AuthConfigError(`${file} line ${index + 1}: a token cannot contain whitespace`);
    tokens.push(line);
  });
  return tokens;
}

/** Reads a token file: its tokens, at least one; throws an {@link AuthConfigError} naming the file otherwise. */
export function readTokenFile(file: string): string[] {
  return loadTokenFile(file).tokens;
}

function loadTokenFile(file: string): { text: string; tokens: string[] } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    const { code } = error as NodeJS.ErrnoException;
    throw new AuthConfigError(`cannot read ${file} (${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (error as Error).message})`);
  }
  const tokens = parseTokens(text, file);
  if (tokens.length === 0) throw new AuthConfigError(`${file} holds no token (one per line; blank lines and # comments are ignored)`);
  return { text, tokens };
}

function digest(token: string): Buffer {
  return crypto.createHash('sha256').update(token, 'utf8').digest();
}

/** Options of {@link BearerTokens}. */
export interface BearerTokensOptions {
  /** How often the file is checked for a change. Default 1000 ms. */
  reloadIntervalMs?: number;
  /** Where reloads and unusable changes are reported. */
  log?: (line: string) => void;
}

/**
 * The tokens of a token file, checked against a call's `authorization: Bearer <token>` metadata.
 * Only SHA-256 digests are kept; a presented token is hashed and compared with every digest with
 * `crypto.timingSafeEqual` (equal lengths by construction), so neither the comparison nor which
 * token matched shows in the timing. {@link watch} re-reads the file when it changes; a change that
 * leaves no token (or is unreadable) is reported and the previous tokens are kept.
 */
export class BearerTokens {
  private digests: Buffer[];
  private text: string;
  private timer?: NodeJS.Timeout;
  private lastProblem?: string;

  constructor(
    readonly file: string,
    private readonly options: BearerTokensOptions = {},
  ) {
    const { text, tokens } = loadTokenFile(file);
    this.digests = tokens.map(digest);
    this.text = text;
  }

  /** How many tokens are accepted now. */
  get size(): number {
    return this.digests.length;
  }

  /** The verdict on the values of a call's `authorization` metadata. */
  check(values: readonly unknown[]): TokenVerdict {
    if (values.length === 0) return 'missing';
    if (values.length > 1 || typeof values[0] !== 'string') return 'malformed';
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(values[0]);
    if (!match) return 'malformed';
    const presented = digest(match[1]);
    let ok = false;
    // Every digest is compared, whatever the outcome of the others.
    for (const known of this.digests) ok = crypto.timingSafeEqual(presented, known) || ok;
    return ok ? 'ok' : 'wrong';
  }

  /** Checks the file for a change every `reloadIntervalMs` (the timer does not keep the process alive). */
  watch(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.reload(), this.options.reloadIntervalMs ?? 1000);
    this.timer.unref();
  }

  /** Stops watching. */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Reads the file once now; resolves with whether the tokens changed. */
  async reload(): Promise<boolean> {
    let text: string;
    try {
      text = await fs.promises.readFile(this.file, 'utf8');
    } catch (error) {
      this.report(`cannot read ${this.file} (${(error as NodeJS.ErrnoException).code ?? String(error)}); keeping the previous tokens`);
      return false;
    }
    if (text === this.text) return false;
    let tokens: string[];
    try {
      tokens = parseTokens(text, this.file);
    } catch (error) {
      this.report(`${(error as Error).message}; keeping the previous tokens`);
      return false;
    }
    if (tokens.length === 0) {
      this.report(`${this.file} holds no token now; keeping the previous tokens`);
      return false;
    }
    this.text = text;
    this.digests = tokens.map(digest);
    this.lastProblem = undefined;
    this.options.log?.(`auth tokens reloaded from ${this.file}: ${tokens.length} token(s)`);
    return true;
  }

  private report(problem: string): void {
    if (problem === this.lastProblem) return;
    this.lastProblem = problem;
    this.options.log?.(problem);
  }
}

/** The UNAUTHENTICATED message for a verdict other than ok. */
export function unauthenticatedMessage(verdict: Exclude<TokenVerdict, 'ok'>): string {
  switch (verdict) {
    case 'missing':
      return "this server requires a bearer token: send 'authorization: Bearer <token>' metadata (dsi generate --auth-token-file FILE, or DSI_AUTH_TOKEN)";
    case 'malformed':
      return "the authorization metadata is not 'Bearer <token>' (one value, the word Bearer, a space, the token)";
    case 'wrong':
      return 'the bearer token is not accepted by this server (not in its token file)';
  }
}
