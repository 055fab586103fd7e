// A stand-in for the OpenTelemetry Collector where its image cannot be pulled: an OTLP/gRPC receiver
// on :4317 that accepts every trace, metrics and logs export and keeps nothing. It runs in the DSI
// image (node and @grpc/grpc-js are there):
//   podman run -v tools/containers/otlp-sink.cjs:/sink.cjs:ro -e NODE_PATH=/app/node_modules \
//     --entrypoint node localhost/dsi:dev /sink.cjs
// For each export it logs one line: {"signal","bytes","instances","traces"}, where instances are the
// service.instance.id values in the payload and, for traces, traces maps each trace id (hex) to the
// instances whose spans of that trace the export carries: a test can see which processes took part
// in one request.
const grpc = require('@grpc/grpc-js');

const port = Number(process.env.PORT ?? 4317);
const INSTANCE_KEY = Buffer.from('service.instance.id');

/** service.instance.id values in an encoded export: KeyValue{1: key, 2: AnyValue{1: string_value}}. */
function instances(buffer) {
  const found = new Set();
  for (let at = buffer.indexOf(INSTANCE_KEY); at >= 0; at = buffer.indexOf(INSTANCE_KEY, at + 1)) {
    const i = at + INSTANCE_KEY.length;
    if (buffer[i] === 0x12 && buffer[i + 2] === 0x0a) found.add(buffer.subarray(i + 4, i + 4 + buffer[i + 3]).toString('utf8'));
  }
  return [...found];
}

/** The fields of one protobuf message: [field number, wire type, value (a Buffer for LEN)]. */
function* fields(buffer) {
  let at = 0;
  const varint = () => {
    let value = 0;
    let shift = 0;
    for (;;) {
      const byte = buffer[at++];
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) return value;
      shift += 7;
    }
  };
  while (at < buffer.length) {
    const key = varint();
    const type = key & 7;
    const number = Math.floor(key / 8);
    if (type === 0) yield [number, type, varint()];
    else if (type === 1) (yield [number, type, buffer.subarray(at, at + 8)], (at += 8));
    else if (type === 5) (yield [number, type, buffer.subarray(at, at + 4)], (at += 4));
    else if (type === 2) {
      const length = varint();
      yield [number, type, buffer.subarray(at, at + length)];
      at += length;
    } else return; // groups: not in OTLP
  }
}

/** ExportTraceServiceRequest -> { traceIdHex: [service.instance.id, ...] }. */
function traces(buffer) {
  const byTrace = {};
  for (const [n1, , resourceSpans] of fields(buffer)) {
    if (n1 !== 1) continue;
    let instance = '';
    const spans = [];
    for (const [n2, , value] of fields(resourceSpans)) {
      if (n2 === 1) {
        for (const [n3, , keyValue] of fields(value)) {
          if (n3 !== 1) continue;
          let key = '';
          let text = '';
          for (const [n4, , part] of fields(keyValue)) {
            if (n4 === 1) key = part.toString('utf8');
            if (n4 === 2) for (const [n5, , v] of fields(part)) if (n5 === 1) text = v.toString('utf8');
          }
          if (key === 'service.instance.id') instance = text;
        }
      } else if (n2 === 2) {
        for (const [n3, , span] of fields(value)) if (n3 === 2) for (const [n4, , id] of fields(span)) if (n4 === 1) spans.push(id.toString('hex'));
      }
    }
    for (const id of spans) (byTrace[id] ??= new Set()).add(instance);
  }
  return Object.fromEntries(Object.entries(byTrace).map(([id, set]) => [id, [...set]]));
}

const server = new grpc.Server();
for (const signal of ['trace', 'metrics', 'logs']) {
  const service = `opentelemetry.proto.collector.${signal}.v1.${signal[0].toUpperCase()}${signal.slice(1)}Service`;
  const definition = {
    Export: {
      path: `/${service}/Export`,
      requestStream: false,
      responseStream: false,
      requestSerialize: (x) => x,
      requestDeserialize: (x) => x,
      // Export*ServiceResponse with no partial_success: the empty message.
      responseSerialize: () => Buffer.alloc(0),
      responseDeserialize: (x) => x,
    },
  };
  server.addService(definition, {
    Export: (call, callback) => {
      const line = { signal, bytes: call.request.length, instances: instances(call.request) };
      if (signal === 'trace') line.traces = traces(call.request);
      process.stdout.write(JSON.stringify(line) + '\n');
      callback(null, Buffer.alloc(0));
    },
  });
}
server.bindAsync(`0.0.0.0:${port}`, grpc.ServerCredentials.createInsecure(), (error) => {
  if (error) throw error;
  process.stdout.write(`otlp-sink: listening on 0.0.0.0:${port}\n`);
});
const stop = () => server.tryShutdown(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
