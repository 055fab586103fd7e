// A stand-in for the OpenTelemetry Collector where its image cannot be pulled: an OTLP/gRPC receiver
// on :4317 that accepts every trace, metrics and logs export and keeps nothing. It runs in the DSI
// image (node and @grpc/grpc-js are there):
//   podman run -v tools/containers/otlp-sink.cjs:/sink.cjs:ro -e NODE_PATH=/app/node_modules \
//     --entrypoint node localhost/dsi:dev /sink.cjs
// For each export it logs one line: {"signal","bytes","instances"}, where instances are the
// service.instance.id values in the payload, so a test can see which processes exported spans.
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
      process.stdout.write(JSON.stringify({ signal, bytes: call.request.length, instances: instances(call.request) }) + '\n');
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
