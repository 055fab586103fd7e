/*
 * Reading span records: attribute values of a loose type (a JSON-lines file is written by several
 * processes) and Unix-nanosecond times as exact integers.
 */
import type { SpanRecord } from '@dsi/telemetry';
import { TraceInputError } from './errors';

type Attributes = SpanRecord['attributes'];
type AttributeValue = Attributes[string];

function attr(attributes: Attributes | undefined, key: string): AttributeValue | undefined {
  return attributes ? attributes[key] : undefined;
}

/** A finite number attribute (also from a numeric string, as some exporters write them), else undefined. */
export function numberAttribute(attributes: Attributes | undefined, key: string): number | undefined {
  const value = attr(attributes, key);
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value))) return Number(value);
  return undefined;
}

/** An attribute as text, else undefined (null and absent alike). */
export function stringAttribute(attributes: Attributes | undefined, key: string): string | undefined {
  const value = attr(attributes, key);
  if (value === undefined || value === null) return undefined;
  return String(value);
}

/** A time of a span or event as exact Unix nanoseconds; throws {@link TraceInputError} if malformed. */
export function unixNanos(value: string, what: string): bigint {
  try {
    return BigInt(value);
  } catch {
    throw new TraceInputError(`${what} has a malformed time ${JSON.stringify(value)} (expected decimal Unix nanoseconds)`);
  }
}
