/**
 * A minimal protocol-buffers writer: just enough wire format (varints, 32-bit floats,
 * length-delimited bytes and nested messages) to serialise the handful of ONNX messages this
 * package emits. Hand-written on purpose, so that model generation does not depend on a
 * transitive copy of protobufjs and the output bytes are fully under our control.
 *
 * Fields are written in the order the caller writes them; repeated scalars are written unpacked
 * (the proto2 default that onnx.proto uses; every parser accepts it).
 */

/** Protobuf wire types used here. */
const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

const textEncoder = new TextEncoder();

/**
 * Accumulates one protobuf message. Nested messages are built with their own writer and embedded
 * with {@link ProtoWriter.message}, which prefixes their byte length.
 */
export class ProtoWriter {
  private readonly chunks: Uint8Array[] = [];
  private size = 0;

  /** Total number of bytes written so far. */
  get length(): number {
    return this.size;
  }

  private push(chunk: Uint8Array): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
  }

  private tag(field: number, wire: number): void {
    this.push(encodeVarint(BigInt(field) * 8n + BigInt(wire)));
  }

  /**
   * Writes a varint field (int32, int64, uint64, enum, bool). Negative numbers are written as
   * 64-bit two's complement (10 bytes), as protobuf requires for int32/int64.
   */
  varint(field: number, value: number | bigint | boolean): this {
    const v = typeof value === 'boolean' ? (value ? 1n : 0n) : BigInt(value);
    this.tag(field, WIRE_VARINT);
    this.push(encodeVarint(v));
    return this;
  }

  /** Writes a `float` field (fixed32, little-endian IEEE-754 single). */
  float(field: number, value: number): this {
    this.tag(field, WIRE_FIXED32);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.push(b);
    return this;
  }

  /** Writes a `bytes` field. */
  bytes(field: number, value: Uint8Array): this {
    this.tag(field, WIRE_LEN);
    this.push(encodeVarint(BigInt(value.length)));
    this.push(value);
    return this;
  }

  /** Writes a `string` field (UTF-8). */
  string(field: number, value: string): this {
    return this.bytes(field, textEncoder.encode(value));
  }

  /** Embeds a nested message (another writer, or already-encoded bytes). */
  message(field: number, value: ProtoWriter | Uint8Array): this {
    if (value instanceof Uint8Array) return this.bytes(field, value);
    this.tag(field, WIRE_LEN);
    this.push(encodeVarint(BigInt(value.size)));
    for (const c of value.chunks) this.push(c);
    return this;
  }

  /** Concatenates everything written into one buffer. */
  finish(): Uint8Array {
    const out = new Uint8Array(this.size);
    let off = 0;
    for (const c of this.chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }
}

/** Encodes an unsigned (or, as two's complement, negative) 64-bit integer as a base-128 varint. */
export function encodeVarint(value: bigint): Uint8Array {
  let v = BigInt.asUintN(64, value);
  const out: number[] = [];
  do {
    let byte = Number(v & 0x7fn);
    v >>= 7n;
    if (v !== 0n) byte |= 0x80;
    out.push(byte);
  } while (v !== 0n);
  return Uint8Array.from(out);
}
