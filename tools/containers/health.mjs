#!/usr/bin/env node
// grpc.health.v1.Health/Check from the host against running containers, as the kubelet's gRPC probes
// do: one channel per probe, checked every --interval-ms until it answers SERVING.
//
//   node tools/containers/health.mjs [--timeout-ms 180000] [--interval-ms 200] NAME=HOST:PORT[/SERVICE] ...
//
// Prints one JSON line per probe when it answers SERVING ({"name","address","service","status","at"},
// `at` in epoch milliseconds), and exits 0 once all have; on timeout prints each unfinished probe's
// last answer ({"name",...,"status":"UNAVAILABLE: ..."}) and exits 1. The empty SERVICE ('' or
// omitted) is the whole server, as in the manifests' startup and liveness probes.
import grpc from '@grpc/grpc-js';

const STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];
const args = process.argv.slice(2);
let timeoutMs = 180_000;
let intervalMs = 200;
const probes = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--timeout-ms') timeoutMs = Number(args[++i]);
  else if (args[i] === '--interval-ms') intervalMs = Number(args[++i]);
  else {
    const m = /^([^=]+)=([^/]+)(?:\/(.*))?$/.exec(args[i]);
    if (!m) {
      process.stderr.write(`health: expected NAME=HOST:PORT[/SERVICE], got ${args[i]}\n`);
      process.exit(2);
    }
    probes.push({ name: m[1], address: m[2], service: m[3] ?? '', status: 'UNCHECKED' });
  }
}

// HealthCheckRequest { string service = 1; } and HealthCheckResponse { ServingStatus status = 1; },
// encoded by hand: no .proto files needed.
const encode = (service) => {
  const bytes = Buffer.from(service, 'utf8');
  return bytes.length === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x0a, bytes.length]), bytes]);
};
const decode = (buffer) => (buffer.length >= 2 && buffer[0] === 0x08 ? buffer[1] : 0);

function check(probe) {
  return new Promise((resolve) => {
    probe.client ??= new grpc.Client(probe.address, grpc.credentials.createInsecure(), { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 500 });
    probe.client.makeUnaryRequest('/grpc.health.v1.Health/Check', (x) => x, (x) => x, encode(probe.service), { deadline: Date.now() + 1000 }, (error, response) => {
      if (error) {
        resolve(`${grpc.status[error.code] ?? error.code}: ${error.details}`);
        // A fresh channel next time rather than one waiting out its reconnect backoff.
        probe.client.close();
        probe.client = undefined;
      } else resolve(STATUS[decode(response)] ?? String(decode(response)));
    });
  });
}

const deadline = Date.now() + timeoutMs;
let pending = [...probes];
while (pending.length > 0 && Date.now() < deadline) {
  await Promise.all(
    pending.map(async (probe) => {
      probe.status = await check(probe);
      if (probe.status === 'SERVING') {
        process.stdout.write(JSON.stringify({ name: probe.name, address: probe.address, service: probe.service, status: probe.status, at: Date.now() }) + '\n');
        probe.client?.close();
      }
    }),
  );
  pending = pending.filter((p) => p.status !== 'SERVING');
  if (pending.length > 0) await new Promise((r) => setTimeout(r, intervalMs));
}
for (const probe of pending) {
  process.stdout.write(JSON.stringify({ name: probe.name, address: probe.address, service: probe.service, status: probe.status, at: Date.now() }) + '\n');
  probe.client?.close();
}
process.exit(pending.length === 0 ? 0 : 1);
