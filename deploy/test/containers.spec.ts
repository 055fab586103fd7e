// The image built for real and the `local` overlay run as containers (podman: no Kubernetes cluster
// runs on this machine kind), so the manifests' commands, env, ports, users, probes, read-only root
// filesystems, volumes and grace periods are exercised, not only parsed (manifests.spec.ts parses).
//
//   npm run test:containers          # needs root: installs podman, runc and mmdebstrap when missing (tools/containers/setup-host.sh)
//
// Each pod of the rendered overlay (a StatefulSet with N replicas: N pods named <name>-0..N-1) becomes
// a podman pod with its container on one user-defined podman network. Every target listens on the
// same port (50051), so they cannot share one network namespace; on a network of their own each pod
// has its own IP, and a Service's name is a --network-alias on every pod it selects: podman's DNS
// (aardvark-dns) then answers the headless Service's name with every target's IP, as cluster DNS
// does. Probes run from the host against the pod IPs, as the kubelet's do. Tools and details:
// tools/containers/README.md.
import { execFile, execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parseAllDocuments } from 'yaml';
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { IStatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import type { IProbe } from 'kubernetes-models/v1/Probe';
import type { IService } from 'kubernetes-models/v1/Service';

const run = promisify(execFile);
const deployDir = path.resolve(__dirname, '..');
const repoRoot = path.resolve(deployDir, '..');
const OVERLAY = 'kubernetes/overlays/local';
const BASE_IMAGE = process.env.DSI_NODE_IMAGE ?? 'localhost/dsi-node:20-bookworm';
const IMAGE = process.env.DSI_TEST_IMAGE ?? 'localhost/dsi:containers-test';
/** The image name the manifests use for DSI workloads (the overlay retags it; the name stays). */
const DSI_IMAGE_NAME = 'dsi';
const RUNTIME = process.env.DSI_OCI_RUNTIME ?? 'runc';
const NETWORK = 'dsi-containers-test';
const LABEL = 'dsi.test=containers';
const NAMESPACE = 'default';
/** Workloads whose images come from a registry this machine cannot reach: not run (see below). */
const NOT_RUNNABLE = new Set(['jaeger', 'otel-collector']);
/** What stands in for otel-collector: an OTLP/gRPC sink (tools/containers/otlp-sink.cjs) on its Service name. */
const SINK = 'otel-collector';
const PROMPT = 'The quick brown fox';
const MAX_NEW_TOKENS = 48;

const INSTALL_HINT =
  'podman is needed to build and run the containers: as root, `apt-get install -y podman runc mmdebstrap` ' +
  '(Debian bookworm), plus `default_ulimits = []` under [containers] and `runtime = "runc"` under [engine] in ' +
  'containers.conf on hybrid-cgroup hosts; .ci/run does all of this (tools/containers/setup-host.sh).';

async function podman(...args: string[]): Promise<string> {
  const { stdout } = await run('podman', ['--runtime', RUNTIME, ...args], { maxBuffer: 64 << 20 });
  return stdout.trim();
}

/** A container's output, stdout and stderr (the services log to stderr), or '' when it cannot be had. */
async function logs(container: string, tail?: number): Promise<string> {
  const result = await run('podman', ['logs', ...(tail ? ['--tail', String(tail)] : []), container], { maxBuffer: 64 << 20 }).catch(() => ({ stdout: '', stderr: '' }));
  return `${result.stdout}${result.stderr}`.replace(/^failed to connect to syslog.*\n?/gm, '');
}

/** podman, tolerating failure (teardown). */
async function podmanQuiet(...args: string[]): Promise<string> {
  return podman(...args).catch(() => '');
}

/** A long step (a script) with its output streamed to this test's output, rejecting on failure. */
function runStep(command: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    // Niced: npm test runs other projects' (timing-sensitive) tests beside this build.
    const child = spawn('nice', ['-n', '10', command, ...args], { cwd: repoRoot, stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${command} ${args.join(' ')} exited with ${code}`))));
  });
}

type Workload = IDeployment | IStatefulSet;
type KubeObject = Workload | IService | IConfigMap;

/** One pod of a workload, as it will run: a podman pod holding the workload's one container. */
interface PodPlan {
  workload: string;
  kind: 'Deployment' | 'StatefulSet';
  pod: string;
  container: IContainer;
  spec: IPodSpec;
  labels: Record<string, string>;
  env: [string, string][];
  aliases: string[];
  grpcPort: number;
  grace: number;
}

function render(): KubeObject[] {
  const text = execFileSync('kubectl', ['kustomize', path.join(deployDir, OVERLAY)], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return parseAllDocuments(text).map((d) => d.toJSON() as KubeObject).filter(Boolean);
}

/** Kubernetes' $(VAR) expansion of env values: from variables defined before; $$ escapes; unknown stays. */
function expand(value: string, vars: Map<string, string>): string {
  return value.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (match, name?: string) => {
    if (match === '$$') return '$';
    return name !== undefined && vars.has(name) ? vars.get(name)! : match;
  });
}

/** The environment the kubelet would give `container` in pod `pod`: envFrom, then env (downward API resolved). */
function resolveEnv(container: IContainer, pod: string, configMaps: Map<string, Record<string, string>>): [string, string][] {
  const vars = new Map<string, string>();
  for (const source of container.envFrom ?? []) {
    const name = source.configMapRef?.name;
    if (!name || source.secretRef || source.prefix) throw new Error(`${pod}: envFrom ${JSON.stringify(source)} is not supported here`);
    const data = configMaps.get(name);
    if (!data) throw new Error(`${pod}: ConfigMap ${name} is not in the rendering`);
    for (const [key, value] of Object.entries(data)) vars.set(key, value);
  }
  for (const entry of container.env ?? []) {
    if (entry.valueFrom) {
      const field = entry.valueFrom.fieldRef?.fieldPath;
      const fields: Record<string, string> = { 'metadata.name': pod, 'metadata.namespace': NAMESPACE, 'spec.nodeName': os.hostname() };
      if (!field || !(field in fields)) throw new Error(`${pod}: env ${entry.name} valueFrom ${JSON.stringify(entry.valueFrom)} is not supported here`);
      vars.delete(entry.name);
      vars.set(entry.name, fields[field]);
    } else {
      const value = expand(entry.value ?? '', vars);
      vars.delete(entry.name);
      vars.set(entry.name, value);
    }
  }
  return [...vars];
}

/** Kubernetes quantities as bytes (sizeLimit, memory). */
function bytes(quantity: string | number): number {
  const m = /^(\d+(?:\.\d+)?)([KMGT]i?|)$/.exec(String(quantity));
  if (!m) throw new Error(`quantity ${quantity}`);
  const unit: Record<string, number> = { '': 1, K: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 };
  return Math.round(Number(m[1]) * unit[m[2]]);
}

/** CPU quantities as cores ("500m" -> 0.5). */
function cores(quantity: string | number): number {
  const text = String(quantity);
  return text.endsWith('m') ? Number(text.slice(0, -1)) / 1000 : Number(text);
}

function plan(objects: KubeObject[]): { pods: PodPlan[]; skipped: string[] } {
  const configMaps = new Map<string, Record<string, string>>();
  for (const o of objects) if (o.kind === 'ConfigMap') configMaps.set(o.metadata!.name!, (o as IConfigMap).data ?? {});
  const services = objects.filter((o): o is IService => o.kind === 'Service');
  const pods: PodPlan[] = [];
  const skipped: string[] = [];
  for (const o of objects) {
    if (o.kind !== 'Deployment' && o.kind !== 'StatefulSet') continue;
    const workload = o as Workload;
    const name = workload.metadata!.name!;
    const spec = workload.spec!.template.spec!;
    const labels = (workload.spec!.template.metadata?.labels ?? {}) as Record<string, string>;
    const containers = spec.containers;
    const image = containers[0].image ?? '';
    if (containers.length !== 1 || spec.initContainers?.length) throw new Error(`${name}: one container per pod is all this runs`);
    if (image.replace(/[:@].*$/, '') !== DSI_IMAGE_NAME) {
      if (!NOT_RUNNABLE.has(name)) throw new Error(`${name}: image ${image} cannot be pulled here (no registry)`);
      skipped.push(`${name} (${image})`);
      continue;
    }
    const container = containers[0];
    const replicas = workload.spec!.replicas ?? 1;
    // Pod names: a StatefulSet's are <name>-<ordinal>; a Deployment's <name>-<template hash>-<suffix>.
    const hash = crypto.createHash('sha256').update(JSON.stringify(workload.spec!.template)).digest('hex').slice(0, 10);
    for (let i = 0; i < replicas; i++) {
      const pod = o.kind === 'StatefulSet' ? `${name}-${i}` : `${name}-${hash}-${i}`;
      const aliases = services
        .filter((s) => {
          const selector = (s.spec?.selector ?? {}) as Record<string, string>;
          return Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);
        })
        .map((s) => {
          // A network alias keeps the port: the Service must expose each container port as itself.
          for (const port of s.spec!.ports ?? []) {
            const target = container.ports?.find((p) => p.name === port.targetPort || p.containerPort === port.targetPort);
            if (target?.containerPort !== port.port) throw new Error(`${s.metadata!.name}: port ${port.port} -> ${port.targetPort} is not the container's own port`);
          }
          return s.metadata!.name!;
        });
      const grpcPort = container.startupProbe?.grpc?.port ?? container.readinessProbe?.grpc?.port;
      if (!grpcPort) throw new Error(`${name}: no gRPC probe`);
      pods.push({
        workload: name,
        kind: o.kind,
        pod,
        container,
        spec,
        labels,
        env: resolveEnv(container, pod, configMaps),
        aliases,
        grpcPort,
        grace: spec.terminationGracePeriodSeconds ?? 30,
      });
    }
  }
  return { pods, skipped };
}

/** `podman run` arguments for the pod's container, from its manifest. */
function runArgs(p: PodPlan, image: string): string[] {
  const c = p.container;
  const security = { ...p.spec.securityContext, ...c.securityContext };
  const args = ['run', '--detach', '--pod', p.pod, '--name', `${p.pod}-${c.name}`, '--label', LABEL, '--stop-timeout', String(p.grace)];
  if (security.runAsUser !== undefined) args.push('--user', `${security.runAsUser}${security.runAsGroup !== undefined ? `:${security.runAsGroup}` : ''}`);
  if (p.spec.securityContext?.fsGroup !== undefined) args.push('--group-add', String(p.spec.securityContext.fsGroup));
  // Only the volumes are writable: no /tmp, /run, /var/tmp tmpfs of podman's own.
  if (c.securityContext?.readOnlyRootFilesystem) args.push('--read-only', '--read-only-tmpfs=false');
  for (const cap of c.securityContext?.capabilities?.drop ?? []) args.push('--cap-drop', cap);
  for (const cap of c.securityContext?.capabilities?.add ?? []) args.push('--cap-add', cap);
  if (c.securityContext?.allowPrivilegeEscalation === false) args.push('--security-opt', 'no-new-privileges');
  if (c.securityContext?.privileged) args.push('--privileged');
  const limits = c.resources?.limits ?? {};
  if (limits.cpu !== undefined) args.push('--cpus', String(cores(limits.cpu as string)));
  if (limits.memory !== undefined) args.push('--memory', String(bytes(limits.memory as string)));
  for (const mount of c.volumeMounts ?? []) {
    // An emptyDir: a podman volume of the pod's own (volumeName), disk-backed like the default medium.
    args.push('--mount', `type=volume,source=${volumeName(p, mount.name)},destination=${mount.mountPath}${mount.readOnly ? ',ro' : ''}`);
  }
  for (const [name, value] of p.env) args.push('--env', `${name}=${value}`);
  if (c.command) args.push('--entrypoint', JSON.stringify(c.command));
  if (c.workingDir) args.push('--workdir', c.workingDir);
  args.push(image, ...(c.args ?? []));
  return args;
}

/**
 * The podman volume standing in for emptyDir `volume` of pod `p`, created empty before the pod starts.
 * Not a tmpfs: podman 4.3 mounts a tmpfs over a directory the image has (/models, /tmp) with that
 * directory's mode but root's ownership, so uid 10001 could not write to /models. A volume takes the
 * image directory's ownership (/models is 10001's, /tmp is 1777). sizeLimit is not enforced.
 */
function volumeName(p: PodPlan, volume: string): string {
  return `${p.pod}-${volume}`;
}

/** The probes of a container as health.mjs arguments (NAME=IP:PORT/SERVICE). */
function probeArgs(p: PodPlan, ip: string): string[] {
  const probes: [string, IProbe | undefined][] = [
    ['startup', p.container.startupProbe],
    ['readiness', p.container.readinessProbe],
    ['liveness', p.container.livenessProbe],
  ];
  return probes.filter(([, probe]) => probe?.grpc).map(([kind, probe]) => `${p.pod}/${kind}=${ip}:${probe!.grpc!.port}/${probe!.grpc!.service ?? ''}`);
}

interface Probed {
  name: string;
  status: string;
  at: number;
}

async function health(args: string[], timeoutMs: number): Promise<Probed[]> {
  const { stdout } = await run('node', [path.join(repoRoot, 'tools/containers/health.mjs'), '--timeout-ms', String(timeoutMs), ...args]).catch(
    (error: { stdout?: string; message: string }) => ({ stdout: error.stdout ?? '' }),
  );
  return stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Probed);
}

async function ipOf(container: string): Promise<string> {
  return podman('inspect', container, '--format', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}');
}

async function removeAll(): Promise<void> {
  const pods = (await podmanQuiet('pod', 'ls', '--filter', `label=${LABEL}`, '--format', '{{.Name}}')).split('\n').filter(Boolean);
  if (pods.length > 0) await podmanQuiet('pod', 'rm', '--force', '--time', '0', ...pods);
  const containers = (await podmanQuiet('ps', '--all', '--filter', `label=${LABEL}`, '--format', '{{.Names}}')).split('\n').filter(Boolean);
  if (containers.length > 0) await podmanQuiet('rm', '--force', '--time', '0', ...containers);
  const volumes = (await podmanQuiet('volume', 'ls', '--filter', `label=${LABEL}`, '--format', '{{.Name}}')).split('\n').filter(Boolean);
  if (volumes.length > 0) await podmanQuiet('volume', 'rm', '--force', ...volumes);
  await podmanQuiet('network', 'rm', '--force', NETWORK);
}

interface Started {
  plan: PodPlan;
  name: string;
  ip: string;
  startedAt: number;
}

function generate(orchestrator: string, mode: string, maxNewTokens = MAX_NEW_TOKENS): Promise<{ stdout: string }> {
  return run('node', [path.join(repoRoot, 'tools/cli/bin/dsi.js'), 'generate', '--orchestrator', orchestrator, '--mode', mode, '--prompt', PROMPT, '--max-new-tokens', String(maxNewTokens), '--json'], {
    cwd: repoRoot,
  });
}

/** A streamed generation: `started` when its first text arrives, `done` with its summary line once it completes. */
function generateStreaming(orchestrator: string, mode: string, maxNewTokens: number): { started: Promise<void>; done: Promise<string> } {
  const child = spawn('node', [path.join(repoRoot, 'tools/cli/bin/dsi.js'), 'generate', '--orchestrator', orchestrator, '--mode', mode, '--prompt', PROMPT, '--max-new-tokens', String(maxNewTokens)], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const started = new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', () => reject(new Error(`generate ended before any output: ${stderr}`)));
  });
  const done = new Promise<string>((resolve, reject) =>
    child.once('exit', (code) => (code === 0 ? resolve(stderr.trim()) : reject(new Error(`generate exited with ${code}: ${stderr}`)))),
  );
  return { started, done };
}

describe(`the image and the ${OVERLAY} overlay as podman containers`, () => {
  const started: Started[] = [];
  const report: Record<string, unknown> = {};
  let podmanError: Error | undefined;
  let skipped: string[] = [];
  let sinkName = '';

  beforeAll(async () => {
    // What the run needs from the host, as .ci/run does first: podman, runc, mmdebstrap and the podman
    // settings this machine kind needs (idempotent; installs as root from Debian's packages), so that
    // `npm ci && npm test` on a fresh machine of this kind runs this test too.
    try {
      await run(path.join(repoRoot, 'tools/containers/setup-host.sh'), [], { maxBuffer: 16 << 20 });
      await run('podman', ['--version']);
    } catch (error) {
      podmanError = new Error(`${INSTALL_HINT}\n${(error as { stderr?: string }).stderr ?? String(error)}`);
      throw podmanError;
    }
    await removeAll();
    // The base (cached by tag) and the image (cached by layers) for real, as a user would.
    await runStep(path.join(repoRoot, 'tools/containers/build-base.sh'), [BASE_IMAGE]);
    let t = Date.now();
    await runStep(path.join(repoRoot, 'tools/containers/build-image.sh'), [IMAGE]);
    report.imageBuildSeconds = (Date.now() - t) / 1000;
    report.imageBytes = Number(await podman('image', 'inspect', IMAGE, '--format', '{{.Size}}'));

    const planned = plan(render());
    skipped = planned.skipped;
    await podman('network', 'create', '--label', LABEL, NETWORK);

    // otel-collector's stand-in first: the services export spans to it and flush on SIGTERM.
    sinkName = `${SINK}-sink`;
    await podman('pod', 'create', '--name', sinkName, '--hostname', sinkName, '--label', LABEL, '--network', NETWORK, '--network-alias', SINK);
    await podman(
      'run', '--detach', '--pod', sinkName, '--name', `${sinkName}-server`, '--label', LABEL, '--user', '10001:10001', '--read-only',
      '--volume', `${path.join(repoRoot, 'tools/containers/otlp-sink.cjs')}:/sink.cjs:ro,Z`, '--env', 'NODE_PATH=/app/node_modules', '--entrypoint', 'node', IMAGE, '/sink.cjs',
    );

    // Every pod as the scheduler would: all at once (the StatefulSet is podManagementPolicy Parallel).
    t = Date.now();
    await Promise.all(
      planned.pods.map(async (p) => {
        const pod = ['pod', 'create', '--name', p.pod, '--hostname', p.pod, '--label', LABEL, '--network', NETWORK];
        for (const alias of p.aliases) pod.push('--network-alias', alias);
        const startedAt = Date.now();
        await podman(...pod);
        const name = `${p.pod}-${p.container.name}`;
        for (const volume of p.spec.volumes ?? []) {
          if (!volume.emptyDir) throw new Error(`${p.pod}: volume ${volume.name} is not an emptyDir`);
          await podman('volume', 'create', '--label', LABEL, volumeName(p, volume.name));
        }
        await podman(...runArgs(p, IMAGE));
        started.push({ plan: p, name, ip: await ipOf(name), startedAt });
      }),
    );
    started.sort((a, b) => (a.plan.pod < b.plan.pod ? -1 : 1));
    report.podsStartedSeconds = (Date.now() - t) / 1000;
  }, 20 * 60_000);

  afterAll(async () => {
    if (podmanError) return;
    if (process.env.DSI_KEEP_CONTAINERS !== '1') await removeAll();
    process.stdout.write(`containers report: ${JSON.stringify(report, null, 2)}\n`);
  }, 5 * 60_000);

  it('builds the image from deploy/Dockerfile on the stand-in base', () => {
    expect(podmanError).toBeUndefined();
    expect(report.imageBytes).toBeGreaterThan(0);
    // What is not run: workloads whose images only a registry has.
    expect(skipped.map((s) => s.replace(/ .*/, '')).sort()).toEqual([...NOT_RUNNABLE].sort());
  });

  it("runs every pod of the overlay and each answers SERVING on its manifest's gRPC probes", async () => {
    expect(started.map((s) => s.plan.pod)).toEqual(expect.arrayContaining(['dsi-target-0', 'dsi-target-1', 'dsi-target-2', 'dsi-target-3']));
    const probed = await health(started.flatMap((s) => probeArgs(s.plan, s.ip)), 180_000);
    const failed = probed.filter((p) => p.status !== 'SERVING');
    if (failed.length > 0) {
      const tails = await Promise.all(started.map(async (s) => `--- ${s.name}\n${await logs(s.name, 20)}`));
      throw new Error(`not SERVING: ${JSON.stringify(failed)}\n${tails.join('\n')}`);
    }
    const serving: Record<string, number> = {};
    for (const s of started) {
      // SERVING = the startup and readiness probes both pass (the pod is Ready).
      const at = Math.max(...probed.filter((p) => p.name.startsWith(`${s.plan.pod}/`)).map((p) => p.at));
      serving[s.plan.pod] = (at - s.startedAt) / 1000;
    }
    report.secondsToServing = serving;
    expect(Object.keys(serving)).toHaveLength(started.length);
  }, 4 * 60_000);

  it('runs every process as uid/gid 10001 with the manifest env, in its own pod IP', async () => {
    const ips = new Set(started.map((s) => s.ip));
    expect(ips.size).toBe(started.length);
    for (const s of started) {
      // podman's own descriptors (the image has no ps): the user and group names of uid/gid 10001 ...
      const top = await podman('top', s.name, 'user', 'group', 'args');
      const rows = top.split('\n').slice(1).filter(Boolean);
      expect(rows.length).toBeGreaterThan(0);
      for (const row of rows) expect(row.trim().split(/\s+/).slice(0, 2)).toEqual(['dsi', 'dsi']);
      // ... and the numbers from the host's /proc (rootful podman: no user namespace, the same ids).
      const pid = await podman('inspect', s.name, '--format', '{{.State.Pid}}');
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      expect(/^Uid:\s+(.*)$/m.exec(status)![1].split(/\s+/)).toEqual(['10001', '10001', '10001', '10001']);
      expect(/^Gid:\s+(.*)$/m.exec(status)![1].split(/\s+/)).toEqual(['10001', '10001', '10001', '10001']);
      const env = JSON.parse(await podman('inspect', s.name, '--format', '{{json .Config.Env}}')) as string[];
      expect(env).toContain(`POD_NAME=${s.plan.pod}`);
      expect(env).toContain(
        `OTEL_RESOURCE_ATTRIBUTES=service.instance.id=${s.plan.pod},k8s.pod.name=${s.plan.pod},k8s.namespace.name=${NAMESPACE},k8s.node.name=${os.hostname()}`,
      );
    }
  });

  it('generates the same tokens in NON_SI, SI and DSI through the orchestrator, which found the targets by the headless Service', async () => {
    const orchestrator = started.find((s) => s.plan.workload === 'dsi-orchestrator')!;
    const address = `${orchestrator.ip}:${orchestrator.plan.grpcPort}`;
    const outputs: Record<string, { tokens: number[]; text: string }> = {};
    for (const mode of ['nonsi', 'si', 'dsi']) {
      const response = JSON.parse((await generate(address, mode)).stdout) as { tokens: number[]; text: string };
      outputs[mode] = { tokens: response.tokens, text: response.text };
    }
    report.generate = outputs;
    expect(outputs.nonsi.tokens.length).toBeGreaterThan(0);
    expect(outputs.si.tokens).toEqual(outputs.nonsi.tokens);
    expect(outputs.dsi.tokens).toEqual(outputs.nonsi.tokens);
    // Its replica pool: every target's pod IP, from resolving dsi-target-headless.
    const log = await logs(orchestrator.name);
    const targets = started.filter((s) => s.plan.workload === 'dsi-target');
    for (const t of targets) expect(log).toContain(`${t.ip}:${t.plan.grpcPort} is SERVING`);
    // One longer DSI request, whose trace the last test looks for: long enough to use every replica.
    await generate(address, 'dsi', 256);
  }, 3 * 60_000);

  it('writes nothing outside its volumes (read-only root filesystem)', async () => {
    // Podman's own: /etc/hosts, /etc/hostname, /etc/resolv.conf and /run/.containerenv are mounted
    // over files it creates at start, and the volumes' mount points.
    const allowed = new Set(['/etc', '/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/run', '/run/.containerenv']);
    const diffs: Record<string, string[]> = {};
    for (const s of started) {
      const mounts = new Set((s.plan.container.volumeMounts ?? []).flatMap((m) => [m.mountPath, ...parents(m.mountPath)]));
      const changed = (await podman('diff', '--format', 'json', s.name)) || '{}';
      const parsed = JSON.parse(changed) as { changed?: string[]; added?: string[]; deleted?: string[] };
      const paths = [...(parsed.changed ?? []), ...(parsed.added ?? []), ...(parsed.deleted ?? [])];
      diffs[s.plan.pod] = paths;
      expect(paths.filter((p) => !allowed.has(p) && !mounts.has(p))).toEqual([]);
    }
    report.diff = diffs;
    // And a write to the image's files is refused.
    const target = started.find((s) => s.plan.workload === 'dsi-target')!;
    await expect(podman('exec', target.name, 'touch', '/app/written')).rejects.toThrow(/Read-only file system/);
  });

  it('drains on podman stop (SIGTERM) within terminationGracePeriodSeconds, finishing a generation in flight, and exits 0', async () => {
    const orchestrator = started.find((s) => s.plan.workload === 'dsi-orchestrator')!;
    // A generation in flight when the orchestrator is told to stop: it must finish, not fail. Streamed
    // (no --json), so its first tokens tell that it is in flight.
    const inFlight = generateStreaming(`${orchestrator.ip}:${orchestrator.plan.grpcPort}`, 'nonsi', 64);
    await inFlight.started;
    const stop = async (s: Started) => {
      const t = Date.now();
      await podman('stop', s.name);
      const state = JSON.parse(await podman('inspect', s.name, '--format', '{{json .State}}')) as { ExitCode: number; OOMKilled: boolean };
      return { pod: s.plan.pod, seconds: (Date.now() - t) / 1000, exitCode: state.ExitCode, grace: s.plan.grace };
    };
    const stopped = [await stop(orchestrator)];
    const summary = await inFlight.done;
    report.inFlightDuringStop = summary;
    expect(summary).toMatch(/^\[nonsi\] 64 tokens in /);
    stopped.push(...(await Promise.all(started.filter((s) => s !== orchestrator).map(stop))));
    report.stop = stopped;
    const tails = Object.fromEntries(await Promise.all(started.map(async (s) => [s.plan.pod, await logs(s.name, 5)])));
    for (const s of stopped) {
      expect({ pod: s.pod, exitCode: s.exitCode, logs: s.exitCode === 0 ? '' : tails[s.pod] }).toEqual({ pod: s.pod, exitCode: 0, logs: '' });
      expect(s.seconds).toBeLessThan(s.grace);
    }
    for (const s of started) expect(tails[s.plan.pod]).toContain('SIGTERM received');
    // Spans reached the collector's stand-in from the services that served the generations.
    const exports = (await logs(`${sinkName}-server`))
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { instances: string[]; traces?: Record<string, string[]> });
    const exported = exports.flatMap((e) => e.instances);
    report.exportedInstances = [...new Set(exported)].sort();
    // One instance per process, named by its pod: the orchestrator, the drafter and every target replica.
    const served = started.filter((s) => s.plan.workload !== 'dsi-simulator').map((s) => s.plan.pod);
    expect(served.filter((pod) => !exported.includes(pod))).toEqual([]);
    expect(started.filter((s) => s.plan.workload === 'dsi-target').length).toBeGreaterThan(1);
    // And one request's trace arrived whole: spans from the orchestrator, the drafter and every target,
    // each process with its own service.instance.id.
    const byTrace = new Map<string, Set<string>>();
    for (const e of exports) for (const [id, instances] of Object.entries(e.traces ?? {})) for (const i of instances) byTrace.set(id, (byTrace.get(id) ?? new Set()).add(i));
    const widest = [...byTrace.values()].sort((x, y) => y.size - x.size)[0] ?? new Set<string>();
    report.widestTrace = [...widest].sort();
    expect(served.filter((pod) => !widest.has(pod))).toEqual([]);
  }, 3 * 60_000);
});

/** /a/b/c -> ['/a', '/a/b'] */
function parents(mountPath: string): string[] {
  const parts = mountPath.split('/').filter(Boolean);
  return parts.slice(0, -1).map((_, i) => '/' + parts.slice(0, i + 1).join('/'));
}
