/**
 * Thrown when the spans cannot give the timeline asked for: no `dsi.generate` span, none matching the
 * selection (the message names a few that are there), an ambiguous trace id prefix, or a malformed time.
 * It is a mistake in the input, not a bug: a command shows the message and exits as on a usage error.
 */
export class TraceInputError extends Error {
  override readonly name = 'TraceInputError';
}
