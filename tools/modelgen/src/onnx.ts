/**
 * Just enough of the ONNX format to write inference graphs: the data model of the few messages we
 * need (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto and the
 * type/shape protos), their protobuf encoding (field numbers from onnx/onnx.proto), and a small
 * {@link GraphBuilder} that hands out unique tensor names so graphs read like code.
 */
import { ProtoWriter } from './protobuf';

/** TensorProto.DataType values used here. */
export const DataType = { FLOAT: 1, INT64: 7, BOOL: 9 } as const;
export type DataTypeCode = (typeof DataType)[keyof typeof DataType];

/** AttributeProto.AttributeType values used here. */
const AttrType = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

/** A constant tensor (initializer or attribute value); data is stored as little-endian raw_data. */
export interface TensorValue {
  name: string;
  dims: readonly number[];
  data: Float32Array | BigInt64Array | Uint8Array;
  dataType: DataTypeCode;
}

/** A typed node attribute. Build them with {@link attr}. */
export type Attribute =
  | { kind: 'float'; value: number }
  | { kind: 'int'; value: number }
  | { kind: 'string'; value: string }
  | { kind: 'tensor'; value: TensorValue }
  | { kind: 'floats'; value: readonly number[] }
  | { kind: 'ints'; value: readonly number[] };

/** Constructors for typed attributes (ONNX distinguishes INT from FLOAT, so JS numbers are ambiguous). */
export const attr = {
  float: (value: number): Attribute => ({ kind: 'float', value }),
  int: (value: number): Attribute => ({ kind: 'int', value }),
  string: (value: string): Attribute => ({ kind: 'string', value }),
  tensor: (value: TensorValue): Attribute => ({ kind: 'tensor', value }),
  floats: (value: readonly number[]): Attribute => ({ kind: 'floats', value }),
  ints: (value: readonly number[]): Attribute => ({ kind: 'ints', value }),
};

/** One graph node. */
export interface NodeDef {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name: string;
  attributes: Readonly<Record<string, Attribute>>;
  domain?: string;
}

/** A dimension: a fixed size, or a symbolic (dynamic) name such as `batch_size`. */
export type Dim = number | string;

/** A graph input/output declaration. */
export interface ValueInfo {
  name: string;
  elemType: DataTypeCode;
  shape: readonly Dim[];
}

/** A whole graph. */
export interface GraphDef {
  name: string;
  nodes: NodeDef[];
  initializers: TensorValue[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
}

/** Model-level metadata. */
export interface ModelOptions {
  irVersion?: number;
  opsetVersion?: number;
  producerName?: string;
  producerVersion?: string;
}

function rawBytes(data: Float32Array | BigInt64Array | Uint8Array): Uint8Array {
  // Typed arrays are in platform byte order; ONNX raw_data is little-endian. Every platform Node
  // supports in practice is little-endian, but write through DataView to be exact regardless.
  if (data instanceof Uint8Array) return data;
  const out = new Uint8Array(data.byteLength);
  const dv = new DataView(out.buffer);
  if (data instanceof Float32Array) {
    for (let i = 0; i < data.length; i++) dv.setFloat32(i * 4, data[i], true);
  } else {
    for (let i = 0; i < data.length; i++) dv.setBigInt64(i * 8, data[i], true);
  }
  return out;
}

/** Encodes a TensorProto{dims=1, data_type=2, name=8, raw_data=9}. */
export function encodeTensor(t: TensorValue): ProtoWriter {
  const expected = t.dims.reduce((a, b) => a * b, 1);
  if (t.data.length !== expected) {
    throw new Error(`tensor ${t.name}: ${t.data.length} values for dims [${t.dims.join(',')}]`);
  }
  const w = new ProtoWriter();
  for (const d of t.dims) w.varint(1, d);
  w.varint(2, t.dataType);
  w.string(8, t.name);
  w.bytes(9, rawBytes(t.data));
  return w;
}

/** Encodes an AttributeProto{name=1, f=2, i=3, s=4, t=5, floats=7, ints=8, type=20}. */
export function encodeAttribute(name: string, a: Attribute): ProtoWriter {
  const w = new ProtoWriter();
  w.string(1, name);
  switch (a.kind) {
    case 'float':
      w.float(2, a.value);
      w.varint(20, AttrType.FLOAT);
      break;
    case 'int':
      w.varint(3, a.value);
      w.varint(20, AttrType.INT);
      break;
    case 'string':
      w.string(4, a.value);
      w.varint(20, AttrType.STRING);
      break;
    case 'tensor':
      w.message(5, encodeTensor(a.value));
      w.varint(20, AttrType.TENSOR);
      break;
    case 'floats':
      for (const v of a.value) w.float(7, v);
      w.varint(20, AttrType.FLOATS);
      break;
    case 'ints':
      for (const v of a.value) w.varint(8, v);
      w.varint(20, AttrType.INTS);
      break;
  }
  return w;
}

/** Encodes a NodeProto{input=1, output=2, name=3, op_type=4, attribute=5, domain=7}. */
export function encodeNode(n: NodeDef): ProtoWriter {
  const w = new ProtoWriter();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name);
  w.string(4, n.opType);
  for (const key of Object.keys(n.attributes).sort()) w.message(5, encodeAttribute(key, n.attributes[key]));
  if (n.domain) w.string(7, n.domain);
  return w;
}

/**
 * Encodes a ValueInfoProto{name=1, type=2} with TypeProto{tensor_type=1},
 * TypeProto.Tensor{elem_type=1, shape=2}, TensorShapeProto{dim=1} and
 * Dimension{dim_value=1, dim_param=2}.
 */
export function encodeValueInfo(v: ValueInfo): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of v.shape) {
    const dim = new ProtoWriter();
    if (typeof d === 'number') dim.varint(1, d);
    else dim.string(2, d);
    shape.message(1, dim);
  }
  const tensorType = new ProtoWriter().varint(1, v.elemType).message(2, shape);
  const type = new ProtoWriter().message(1, tensorType);
  return new ProtoWriter().string(1, v.name).message(2, type);
}

/** Encodes a GraphProto{node=1, name=2, initializer=5, input=11, output=12}. */
export function encodeGraph(g: GraphDef): ProtoWriter {
  const w = new ProtoWriter();
  for (const n of g.nodes) w.message(1, encodeNode(n));
  w.string(2, g.name);
  for (const t of g.initializers) w.message(5, encodeTensor(t));
  for (const i of g.inputs) w.message(11, encodeValueInfo(i));
  for (const o of g.outputs) w.message(12, encodeValueInfo(o));
  return w;
}

/**
 * Encodes a complete ModelProto{ir_version=1, producer_name=2, producer_version=3, graph=7,
 * opset_import=8} with one OperatorSetIdProto{domain=1, version=2} for the default domain.
 * Defaults: IR version 8, opset 17.
 */
export function encodeModel(g: GraphDef, opts: ModelOptions = {}): Uint8Array {
  const w = new ProtoWriter();
  w.varint(1, opts.irVersion ?? 8);
  w.string(2, opts.producerName ?? '@dsi/modelgen');
  w.string(3, opts.producerVersion ?? '0.1.0');
  w.message(7, encodeGraph(g));
  w.message(8, new ProtoWriter().string(1, '').varint(2, opts.opsetVersion ?? 17));
  return w.finish();
}

/** Makes a float32 tensor value. */
export function floatTensor(name: string, dims: readonly number[], data: Float32Array | readonly number[]): TensorValue {
  return { name, dims, data: data instanceof Float32Array ? data : Float32Array.from(data), dataType: DataType.FLOAT };
}

/** Makes an int64 tensor value. */
export function int64Tensor(name: string, dims: readonly number[], data: readonly (number | bigint)[]): TensorValue {
  return { name, dims, data: BigInt64Array.from(data.map((v) => BigInt(v))), dataType: DataType.INT64 };
}

/**
 * Builds a {@link GraphDef} imperatively. `op` returns the output name(s), so graphs read like
 * straight-line code: `const y = b.op('Add', [x, b.op('Relu', [z])])`. Names are unique and
 * deterministic (a prefix scope plus a counter), so the same program yields the same bytes.
 */
export class GraphBuilder {
  readonly graph: GraphDef;
  private readonly used = new Set<string>();
  private scopes: string[] = [];
  private readonly constCache = new Map<string, string>();

  constructor(name: string) {
    this.graph = { name, nodes: [], initializers: [], inputs: [], outputs: [] };
  }

  /** Runs `fn` with names prefixed by `/scope` (nests). */
  scope<T>(scope: string, fn: () => T): T {
    this.scopes.push(scope);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  /** A unique name under the current scope. */
  uniqueName(base: string): string {
    const prefix = this.scopes.length ? `/${this.scopes.join('/')}/` : '';
    let name = `${prefix}${base}`;
    for (let k = 1; this.used.has(name); k++) name = `${prefix}${base}_${k}`;
    this.used.add(name);
    return name;
  }

  private claim(name: string): string {
    if (this.used.has(name)) throw new Error(`duplicate tensor name ${name}`);
    this.used.add(name);
    return name;
  }

  /** Declares a graph input. */
  input(name: string, elemType: DataTypeCode, shape: readonly Dim[]): string {
    this.graph.inputs.push({ name: this.claim(name), elemType, shape });
    return name;
  }

  /** Declares a graph output (the tensor must be produced by a node, typically via `op(..., {name})`). */
  output(name: string, elemType: DataTypeCode, shape: readonly Dim[]): string {
    this.graph.outputs.push({ name, elemType, shape });
    return name;
  }

  /** Adds an initializer (weights); `name` is used verbatim. */
  initializer(t: TensorValue): string {
    this.graph.initializers.push({ ...t, name: this.claim(t.name) });
    return t.name;
  }

  /** An int64 constant initializer, shared between uses with the same value. */
  constInt64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const key = `i64:${dims.join(',')}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.claim(`const_i64_${dims.length ? '' : 's_'}${values.join('_').replace(/-/g, 'm')}`);
    this.graph.initializers.push(int64Tensor(name, dims, values));
    this.constCache.set(key, name);
    return name;
  }

  /** A float32 constant initializer, shared between uses with the same value. */
  constFloat(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const key = `f32:${dims.join(',')}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.uniqueName(`const_f32_${this.constCache.size}`);
    this.graph.initializers.push(floatTensor(name, dims, values));
    this.constCache.set(key, name);
    return name;
  }

  /**
   * Adds a node with one output and returns the output's name. Pass `name` to give the output a
   * fixed (graph output) name; otherwise a unique scoped name is derived from the op type.
   */
  op(opType: string, inputs: readonly string[], attributes: Record<string, Attribute> = {}, name?: string): string {
    return this.opN(opType, inputs, 1, attributes, name ? [name] : undefined)[0];
  }

  /** Adds a node with `nOutputs` outputs and returns their names. */
  opN(
    opType: string,
    inputs: readonly string[],
    nOutputs: number,
    attributes: Record<string, Attribute> = {},
    names?: readonly string[],
  ): string[] {
    const nodeName = this.uniqueName(opType);
    const outputs: string[] = [];
    for (let k = 0; k < nOutputs; k++) {
      outputs.push(names?.[k] !== undefined ? this.claim(names[k]) : this.uniqueName(`${opType}_output_${k}`));
    }
    this.graph.nodes.push({ opType, inputs, outputs, name: nodeName, attributes });
    return outputs;
  }
}
