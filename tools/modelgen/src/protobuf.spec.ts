import { encodeVarint, ProtoWriter } from './protobuf';
import { attr, DataType, encodeAttribute, encodeModel, encodeTensor, floatTensor, GraphBuilder, int64Tensor } from './onnx';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** A minimal wire-format reader, independent of the writer, to check what the writer emits. */
function readFields(buf: Uint8Array): { field: number; wire: number; value: bigint | Uint8Array | number }[] {
  const out: { field: number; wire: number; value: bigint | Uint8Array | number }[] = [];
  let i = 0;
  const varint = (): bigint => {
    let shift = 0n;
    let v = 0n;
    for (;;) {
      const byte = buf[i++];
      v |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return v;
      shift += 7n;
    }
  };
  while (i < buf.length) {
    const key = Number(varint());
    const field = key >> 3;
    const wire = key & 7;
    if (wire === 0) out.push({ field, wire, value: varint() });
    else if (wire === 2) {
      const len = Number(varint());
      out.push({ field, wire, value: buf.subarray(i, i + len) });
      i += len;
    } else if (wire === 5) {
      out.push({ field, wire, value: new DataView(buf.buffer, buf.byteOffset + i, 4).getFloat32(0, true) });
      i += 4;
    } else throw new Error(`unexpected wire type ${wire}`);
  }
  return out;
}

describe('protobuf writer', () => {
  it('encodes varints like the protobuf spec (including negative int64 as 10 bytes)', () => {
    expect(hex(encodeVarint(0n))).toBe('00');
    expect(hex(encodeVarint(1n))).toBe('01');
    expect(hex(encodeVarint(127n))).toBe('7f');
    expect(hex(encodeVarint(128n))).toBe('8001');
    expect(hex(encodeVarint(300n))).toBe('ac02');
    expect(hex(encodeVarint(-1n))).toBe('ffffffffffffffffff01');
    expect(hex(encodeVarint(-2n))).toBe('feffffffffffffffff01');
  });

  it('writes tags, strings, floats and nested messages with length prefixes', () => {
    const inner = new ProtoWriter().varint(1, 150);
    const w = new ProtoWriter().string(2, 'testing').message(3, inner).float(4, 1.5).varint(5, true);
    // Known encodings from the protobuf documentation: field 1 = 150 -> 08 96 01; field 2 = "testing" -> 12 07 ...
    expect(hex(w.finish())).toBe('1207' + Buffer.from('testing').toString('hex') + '1a03089601' + '250000c03f' + '2801');
    expect(w.length).toBe(w.finish().length);
  });
});

describe('ONNX messages', () => {
  it('encodes TensorProto as dims(1), data_type(2), name(8), little-endian raw_data(9)', () => {
    const t = readFields(encodeTensor(floatTensor('w', [2], [1, -2])).finish());
    expect(t.map((f) => f.field)).toEqual([1, 2, 8, 9]);
    expect(t[0].value).toBe(2n);
    expect(t[1].value).toBe(BigInt(DataType.FLOAT));
    expect(Buffer.from(t[2].value as Uint8Array).toString()).toBe('w');
    expect(hex(t[3].value as Uint8Array)).toBe('0000803f000000c0');
    const i = readFields(encodeTensor(int64Tensor('i', [], [-1])).finish());
    expect(i.map((f) => f.field)).toEqual([2, 8, 9]); // a scalar has no dims
    expect(hex(i[2].value as Uint8Array)).toBe('ffffffffffffffff');
  });

  it('rejects a tensor whose data does not match its dims', () => {
    expect(() => encodeTensor(floatTensor('w', [3], [1, 2]))).toThrow(/2 values/);
  });

  it('encodes attributes with their type discriminator (field 20)', () => {
    const ints = readFields(encodeAttribute('perm', attr.ints([0, -1])).finish());
    expect(ints.map((f) => [f.field, f.value instanceof Uint8Array ? 'bytes' : f.value])).toEqual([
      [1, 'bytes'],
      [8, 0n],
      [8, 18446744073709551615n],
      [20, 7n],
    ]);
    const f = readFields(encodeAttribute('epsilon', attr.float(0.5)).finish());
    expect(f.slice(1).map((x) => [x.field, x.value])).toEqual([
      [2, 0.5],
      [20, 1n],
    ]);
  });

  it('writes ModelProto with ir_version 8, producer, graph and opset 17 for the default domain', () => {
    const b = new GraphBuilder('g');
    const x = b.input('x', DataType.FLOAT, ['n']);
    b.op('Relu', [x], {}, 'y');
    b.output('y', DataType.FLOAT, ['n']);
    const fields = readFields(encodeModel(b.graph));
    expect(fields.map((f) => f.field)).toEqual([1, 2, 3, 7, 8]);
    expect(fields[0].value).toBe(8n);
    const opset = readFields(fields[4].value as Uint8Array);
    expect(opset.map((f) => [f.field, f.value instanceof Uint8Array ? Buffer.from(f.value).toString() : f.value])).toEqual([
      [1, ''],
      [2, 17n],
    ]);
    const graph = readFields(fields[3].value as Uint8Array);
    expect(graph.map((f) => f.field)).toEqual([1, 2, 11, 12]);
  });

  it('hands out unique, deterministic names and shares equal constants', () => {
    const b = new GraphBuilder('g');
    const c1 = b.constInt64([0, 0, 4]);
    const c2 = b.constInt64([0, 0, 4]);
    expect(c1).toBe(c2);
    const a = b.scope('s', () => b.op('Relu', ['x']));
    const a2 = b.scope('s', () => b.op('Relu', ['x']));
    expect(a).not.toBe(a2);
    expect(a.startsWith('/s/')).toBe(true);
    expect(() => b.input(a, DataType.FLOAT, [1])).toThrow(/duplicate/);
  });
});
