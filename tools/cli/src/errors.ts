/**
 * Thrown for a mistake in the command line or its input (a parameter out of range, a malformed number);
 * the command prints its one-line message and exits with code 2, as usage errors do.
 */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Exit codes of the `dsi` command. */
export const ExitCode = { OK: 0, FAILURE: 1, USAGE: 2, INTERRUPTED: 130 } as const;
