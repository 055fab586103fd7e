// The Kubernetes manifests and the image, checked offline: each overlay is rendered with
// `kubectl kustomize`, every object is validated against the Kubernetes schema (kubernetes-models),
// and the properties an operator relies on are asserted on what would actually be applied.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { parse, parseAllDocuments } from 'yaml';
import { Deployment, type IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet, type IStatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { ConfigMap, type IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { PersistentVolumeClaim, type IPersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { Service, type IService } from 'kubernetes-models/v1/Service';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import { Certificate, type ICertificate } from '@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate';
import { Issuer, type IIssuer } from '@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer';

const deployDir = path.resolve(__dirname, '..');
const repoRoot = path.resolve(deployDir, '..');

/** The services and default ports `dsi serve` knows (tools/cli/src/commands/serve.ts). */
function cliServices(): Record<string, number> {
  const source = fs.readFileSync(path.join(repoRoot, 'tools/cli/src/commands/serve.ts'), 'utf8');
  const body = /export const SERVICES = \{([^}]*)\}/.exec(source)?.[1];
  if (!body) throw new Error('SERVICES not found in serve.ts');
  return Object.fromEntries([...body.matchAll(/(\w+):\s*(\d+)/g)].map((m) => [m[1], Number(m[2])]));
}
const SERVICES = cliServices();

/** Fully qualified gRPC service names declared in proto/dsi/v1. */
function protoServices(): Set<string> {
  const dir = path.join(repoRoot, 'proto/dsi/v1');
  const names = new Set<string>();
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.proto'))) {
    const text = fs.readFileSync(path.join(dir, file), 'utf8');
    const pkg = /^package\s+([\w.]+);/m.exec(text)?.[1];
    for (const m of text.matchAll(/^service\s+(\w+)/gm)) names.add(`${pkg}.${m[1]}`);
  }
  return names;
}

type KubeObject = IDeployment | IStatefulSet | IService | IConfigMap | IPersistentVolumeClaim | ICertificate | IIssuer;
type Workload = IDeployment | IStatefulSet;

/** Schema validation per apiVersion/kind; a kind missing here fails the test rather than passing unchecked. */
const VALIDATORS: Record<string, (object: unknown) => void> = {
  'apps/v1/Deployment': (o) => new Deployment(o as IDeployment).validate(),
  'apps/v1/StatefulSet': (o) => new StatefulSet(o as IStatefulSet).validate(),
  'v1/Service': (o) => new Service(o as IService).validate(),
  'v1/ConfigMap': (o) => new ConfigMap(o as IConfigMap).validate(),
  'v1/PersistentVolumeClaim': (o) => new PersistentVolumeClaim(o as IPersistentVolumeClaim).validate(),
  // The tls component's example issuance (cert-manager's CRDs).
  'cert-manager.io/v1/Certificate': (o) => new Certificate(o as ICertificate).validate(),
  'cert-manager.io/v1/Issuer': (o) => new Issuer(o as IIssuer).validate(),
};

/**
 * Renderings that no folder holds: an overlay built here, in a temporary folder, from folders under
 * deploy/ (an overlay as a resource, components on top), as a user's own overlay would.
 */
const COMPOSED: Record<string, { resources: string[]; components: string[] }> = {
  'kubernetes/overlays/local + components/tls': { resources: ['kubernetes/overlays/local'], components: ['kubernetes/components/tls'] },
};

function render(dir: string): KubeObject[] {
  let root = path.join(deployDir, dir);
  const composed = COMPOSED[dir];
  if (composed) {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'dsi-kustomize-'));
    // kustomize takes only relative paths to other kustomizations.
    const relative = (folder: string) => path.relative(root, path.join(deployDir, folder));
    const lines = [
      'apiVersion: kustomize.config.k8s.io/v1beta1',
      'kind: Kustomization',
      'resources:',
      ...composed.resources.map((folder) => `  - ${relative(folder)}`),
      'components:',
      ...composed.components.map((folder) => `  - ${relative(folder)}`),
    ];
    fs.writeFileSync(path.join(root, 'kustomization.yaml'), lines.join('\n') + '\n');
  }
  let text: string;
  try {
    text = execFileSync('kubectl', ['kustomize', root], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } finally {
    if (composed) fs.rmSync(root, { recursive: true, force: true });
  }
  return parseAllDocuments(text).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${dir}: ${doc.errors[0].message}`);
    return doc.toJS() as KubeObject;
  });
}

interface Expectation {
  observability: boolean;
  /** The tls component: DSI_TLS_* from the Secret dsi-tls, probes on the plaintext health port. */
  tls: boolean;
  backend: 'onnx' | 'synthetic';
  targets: number;
  gpu: boolean;
}
const RENDERINGS: Record<string, Expectation> = {
  'kubernetes/base': { observability: false, tls: false, backend: 'onnx', targets: 4, gpu: false },
  'kubernetes/overlays/local': { observability: true, tls: false, backend: 'synthetic', targets: 4, gpu: false },
  'kubernetes/overlays/gpu': { observability: true, tls: false, backend: 'onnx', targets: 7, gpu: true },
  'kubernetes/overlays/local + components/tls': { observability: true, tls: true, backend: 'synthetic', targets: 4, gpu: false },
};
const rendered = Object.fromEntries(Object.keys(RENDERINGS).map((dir) => [dir, render(dir)]));

const name = (o: KubeObject) => `${o.kind}/${o.metadata?.name}`;
const isWorkload = (o: KubeObject): o is Workload => o.kind === 'Deployment' || o.kind === 'StatefulSet';
const dsiWorkloads = (objects: KubeObject[]) =>
  objects.filter(isWorkload).filter((o) => o.metadata?.labels?.['app.kubernetes.io/part-of'] === 'dsi');
const component = (w: Workload) => w.spec!.template.metadata!.labels!['app.kubernetes.io/component'];
const podSpec = (w: Workload): IPodSpec => w.spec!.template.spec!;
const server = (w: Workload): IContainer => {
  const container = podSpec(w).containers.find((c) => c.name === 'server');
  if (!container) throw new Error(`${name(w)} has no container named server`);
  return container;
};
const workload = (objects: KubeObject[], role: string): Workload => {
  const found = dsiWorkloads(objects).find((w) => component(w) === role);
  if (!found) throw new Error(`no ${role} workload`);
  return found;
};
const services = (objects: KubeObject[]) => objects.filter((o): o is IService => o.kind === 'Service');
const service = (objects: KubeObject[], serviceName: string): IService => {
  const found = services(objects).find((s) => s.metadata?.name === serviceName);
  if (!found) throw new Error(`no Service ${serviceName}`);
  return found;
};
const selects = (selector: Record<string, string> | undefined, labels: Record<string, string> | undefined) =>
  !!selector && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

/**
 * The environment the container would see: its ConfigMaps (envFrom, which must exist in the
 * rendering) overridden by `env`. A `valueFrom` entry maps to undefined.
 */
function effectiveEnv(objects: KubeObject[], container: IContainer): Map<string, string | undefined> {
  const env = new Map<string, string | undefined>();
  for (const source of container.envFrom ?? []) {
    const ref = source.configMapRef?.name;
    const map = objects.find((o): o is IConfigMap => o.kind === 'ConfigMap' && o.metadata?.name === ref);
    if (!map) throw new Error(`envFrom names a missing ConfigMap ${ref}`);
    for (const [key, value] of Object.entries(map.data ?? {})) env.set(key, value);
  }
  for (const entry of container.env ?? []) env.set(entry.name, entry.value);
  return env;
}

const grpcPort = (c: IContainer) => c.ports?.find((p) => p.name === 'grpc')?.containerPort;

/** A Kubernetes quantity as a number (cpu in cores, memory in bytes). */
function quantity(value: string | number | undefined): number {
  if (value === undefined) return NaN;
  const m = /^(\d+(?:\.\d+)?)(m|k|Ki|Mi|Gi|Ti|M|G|T)?$/.exec(String(value));
  if (!m) return NaN;
  const factor: Record<string, number> = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };
  return Number(m[1]) * (m[2] ? factor[m[2]] : 1);
}

/** The volume behind the mount that holds `file`, and that mount (the longest matching mountPath). */
function mountFor(w: Workload, container: IContainer, file: string) {
  const mount = (container.volumeMounts ?? [])
    .filter((m) => file === m.mountPath || file.startsWith(`${m.mountPath.replace(/\/$/, '')}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  const volume = mount && podSpec(w).volumes?.find((v) => v.name === mount.name);
  return { mount, volume };
}

describe.each(Object.entries(RENDERINGS))('%s', (dir, expected) => {
  const objects = rendered[dir];
  const workloads = dsiWorkloads(objects);

  it('validates every object against the Kubernetes schema', () => {
    const problems: string[] = [];
    for (const object of objects) {
      const validate = VALIDATORS[`${object.apiVersion}/${object.kind}`];
      if (!validate) {
        problems.push(`${object.apiVersion} ${name(object)}: no kubernetes-models validator listed`);
        continue;
      }
      try {
        validate(object);
      } catch (error) {
        problems.push(`${name(object)}: ${(error as Error).message}`);
      }
    }
    expect(problems).toEqual([]);
  });

  it('runs each service `dsi serve` knows, from the image entrypoint, on its default port named grpc', () => {
    expect(workloads.map(component).sort()).toEqual(Object.keys(SERVICES).sort());
    for (const w of workloads) {
      const container = server(w);
      const role = component(w);
      expect({ workload: name(w), command: container.command, args: container.args }).toEqual({ workload: name(w), command: undefined, args: ['serve', role] });
      expect({ workload: name(w), port: grpcPort(container), envPort: effectiveEnv(objects, container).get('DSI_PORT') }).toEqual({
        workload: name(w),
        port: SERVICES[role],
        envPort: String(SERVICES[role]),
      });
    }
  });

  it('puts every DSI workload behind a Service with a port named grpc', () => {
    for (const w of workloads) {
      const podLabels = w.spec!.template.metadata!.labels;
      const fronting = services(objects).filter((s) => selects(s.spec?.selector, podLabels));
      const grpc = fronting.flatMap((s) => s.spec?.ports ?? []).filter((p) => p.name === 'grpc');
      expect({ workload: name(w), grpcServicePorts: grpc.map((p) => [p.port, p.targetPort]) }).toEqual({
        workload: name(w),
        grpcServicePorts: [[grpcPort(server(w)), 'grpc']],
      });
    }
  });

  it(`makes every DSI container listen on 0.0.0.0 with gRPC startup, readiness and liveness probes${expected.tls ? ' on its plaintext health port' : ''}`, () => {
    const declared = protoServices();
    for (const w of workloads) {
      const container = server(w);
      const env = effectiveEnv(objects, container);
      // The kubelet's gRPC probes speak plaintext only: with TLS on, they go to DSI_HEALTH_PORT.
      const healthPort = env.get('DSI_HEALTH_PORT');
      expect({ workload: name(w), healthPort: healthPort !== undefined }).toEqual({ workload: name(w), healthPort: expected.tls });
      const port = healthPort === undefined ? grpcPort(container) : Number(healthPort);
      if (healthPort !== undefined) {
        expect(port).not.toBe(grpcPort(container));
        expect(container.ports?.find((p) => p.name === 'health')?.containerPort).toBe(port);
      }
      expect({ workload: name(w), host: env.get('DSI_HOST'), metricsHost: env.get('DSI_METRICS_HOST') }).toEqual({
        workload: name(w),
        host: '0.0.0.0',
        metricsHost: '0.0.0.0',
      });
      const readiness = container.readinessProbe?.grpc;
      const liveness = container.livenessProbe?.grpc;
      const startup = container.startupProbe;
      expect({ workload: name(w), readinessPort: readiness?.port, livenessPort: liveness?.port, startupPort: startup?.grpc?.port }).toEqual({
        workload: name(w),
        readinessPort: port,
        livenessPort: port,
        startupPort: port,
      });
      // Ready = this service is SERVING; alive = the server answers health at all ("").
      const serviceName = `dsi.v1.${component(w)[0].toUpperCase()}${component(w).slice(1)}Service`;
      expect(readiness?.service).toBe(serviceName);
      expect(declared.has(serviceName)).toBe(true);
      expect(liveness?.service ?? '').toBe('');
      // Liveness stays off until startup succeeds: give model loading at least a minute.
      expect((startup?.failureThreshold ?? 3) * (startup?.periodSeconds ?? 10)).toBeGreaterThanOrEqual(60);
    }
  });

  it('runs every DSI container as a non-root user on a read-only root filesystem', () => {
    for (const w of workloads) {
      const pod = podSpec(w);
      const container = server(w);
      const sc = container.securityContext ?? {};
      expect({
        workload: name(w),
        runAsNonRoot: sc.runAsNonRoot ?? pod.securityContext?.runAsNonRoot,
        uid: sc.runAsUser ?? pod.securityContext?.runAsUser,
        readOnlyRootFilesystem: sc.readOnlyRootFilesystem,
        allowPrivilegeEscalation: sc.allowPrivilegeEscalation,
        drop: sc.capabilities?.drop,
        serviceAccountToken: pod.automountServiceAccountToken,
        serviceLinks: pod.enableServiceLinks,
      }).toEqual({
        workload: name(w),
        runAsNonRoot: true,
        uid: 10001,
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        drop: ['ALL'],
        serviceAccountToken: false,
        // Service links would add DSI_*_PORT=tcp://... variables beside the configuration.
        serviceLinks: false,
      });
      // What the services write (the built-in model pair, temporary files) lands on volumes.
      const modelsDir = effectiveEnv(objects, container).get('DSI_MODELS_DIR');
      for (const writable of [modelsDir, '/tmp']) {
        const { mount, volume } = mountFor(w, container, writable ?? '(DSI_MODELS_DIR unset)');
        expect({ workload: name(w), path: writable, emptyDir: !!volume?.emptyDir, readOnly: !!mount?.readOnly }).toEqual({
          workload: name(w),
          path: writable,
          emptyDir: true,
          readOnly: false,
        });
      }
    }
  });

  it('gives every container cpu and memory requests no larger than its limits', () => {
    for (const w of objects.filter(isWorkload)) {
      for (const c of podSpec(w).containers) {
        const { requests = {}, limits = {} } = c.resources ?? {};
        for (const resource of ['cpu', 'memory']) {
          const request = quantity(requests[resource]);
          const limit = quantity(limits[resource]);
          expect({ container: `${name(w)}/${c.name}`, resource, request: request > 0, limit: limit > 0, fits: request <= limit }).toEqual({
            container: `${name(w)}/${c.name}`,
            resource,
            request: true,
            limit: true,
            fits: true,
          });
        }
      }
    }
  });

  it('lets a pod drain before it is killed (terminationGracePeriodSeconds > DSI_DRAIN_GRACE_MS)', () => {
    for (const w of workloads) {
      const drainMs = Number(effectiveEnv(objects, server(w)).get('DSI_DRAIN_GRACE_MS') ?? 10_000);
      expect(Number.isFinite(drainMs)).toBe(true);
      expect({ workload: name(w), longer: (podSpec(w).terminationGracePeriodSeconds ?? 30) > drainMs / 1000 }).toEqual({ workload: name(w), longer: true });
    }
  });

  it('points the orchestrator at the drafter Service and the headless target Service', () => {
    const env = effectiveEnv(objects, server(workload(objects, 'orchestrator')));
    expect(env.get('DSI_TARGETS')).toBeUndefined();

    const [drafterHost, drafterPort] = (env.get('DSI_DRAFTER') ?? '').split(':');
    const drafter = workload(objects, 'drafter');
    const drafterService = service(objects, drafterHost);
    expect(selects(drafterService.spec?.selector, drafter.spec!.template.metadata!.labels)).toBe(true);
    expect(drafterService.spec?.ports?.some((p) => p.port === Number(drafterPort) && p.targetPort === 'grpc')).toBe(true);

    const [targetsHost, targetsPort] = (env.get('DSI_TARGETS_DNS') ?? '').split(':');
    const target = workload(objects, 'target') as IStatefulSet;
    const headless = service(objects, targetsHost);
    expect(target.kind).toBe('StatefulSet');
    expect(target.spec?.serviceName).toBe(targetsHost);
    // Headless: DNS answers with one address per replica; only ready ones (publishNotReadyAddresses off).
    expect(headless.spec?.clusterIP).toBe('None');
    expect(headless.spec?.publishNotReadyAddresses ?? false).toBe(false);
    expect(selects(headless.spec?.selector, target.spec!.template.metadata!.labels)).toBe(true);
    // DNS gives addresses, not ports: the port in DSI_TARGETS_DNS must be the replicas' own.
    expect(Number(targetsPort)).toBe(grpcPort(server(target)));
  });

  it(`runs ${expected.targets} target replicas on the ${expected.backend} backend`, () => {
    const target = workload(objects, 'target');
    expect(target.spec?.replicas).toBe(expected.targets);
    const drafterEnv = effectiveEnv(objects, server(workload(objects, 'drafter')));
    const targetEnv = effectiveEnv(objects, server(target));
    expect([drafterEnv.get('DSI_BACKEND'), targetEnv.get('DSI_BACKEND')]).toEqual([expected.backend, expected.backend]);
    if (expected.backend === 'synthetic') {
      // One oracle: drafter and targets must agree on the seed and the acceptance rate.
      expect(drafterEnv.get('DSI_SYNTHETIC_SEED')).toBe(targetEnv.get('DSI_SYNTHETIC_SEED'));
      expect(drafterEnv.get('DSI_A')).toBe(targetEnv.get('DSI_A'));
      // The drafter is the fast one; otherwise speculation cannot pay off.
      expect(Number(drafterEnv.get('DSI_TPOT_MS'))).toBeLessThan(Number(targetEnv.get('DSI_TPOT_MS')));
      expect(Number(targetEnv.get('DSI_TPOT_MS'))).toBeGreaterThan(0);
    }
  });

  it('names every DSI process in traces by its pod (service.instance.id, k8s.pod.name, k8s.namespace.name, k8s.node.name)', () => {
    for (const w of objects.filter(isWorkload)) {
      for (const c of podSpec(w).containers.filter((container) => (container.env ?? []).some((e) => e.name === 'OTEL_RESOURCE_ATTRIBUTES'))) {
        const attributes = (c.env ?? []).find((e) => e.name === 'OTEL_RESOURCE_ATTRIBUTES')!.value ?? '';
        expect(attributes).toContain('service.instance.id=$(POD_NAME)');
        for (const key of ['k8s.pod.name', 'k8s.namespace.name', 'k8s.node.name']) expect(attributes).toContain(`${key}=`);
        const node = (c.env ?? []).find((e) => e.name === 'NODE_NAME');
        expect(node?.valueFrom?.fieldRef?.fieldPath).toBe('spec.nodeName');
      }
    }
  });

  it('defines every $(VAR) an env value refers to earlier in the same list', () => {
    for (const w of objects.filter(isWorkload)) {
      for (const c of podSpec(w).containers) {
        const defined = new Set<string>();
        for (const entry of c.env ?? []) {
          for (const ref of (entry.value ?? '').matchAll(/\$\((\w+)\)/g)) {
            expect({ container: `${name(w)}/${c.name}`, variable: entry.name, refersTo: ref[1], defined: defined.has(ref[1]) }).toEqual({
              container: `${name(w)}/${c.name}`,
              variable: entry.name,
              refersTo: ref[1],
              defined: true,
            });
          }
          defined.add(entry.name);
        }
      }
    }
  });

  it(`asks for GPUs only in limits${expected.gpu ? ', one per target replica' : ' (none here)'}`, () => {
    for (const w of objects.filter(isWorkload)) {
      for (const c of podSpec(w).containers) {
        const requests = Object.keys(c.resources?.requests ?? {});
        expect({ container: `${name(w)}/${c.name}`, gpuRequests: requests.filter((r) => r.includes('gpu')) }).toEqual({
          container: `${name(w)}/${c.name}`,
          gpuRequests: [],
        });
        const gpus = c.resources?.limits?.['nvidia.com/gpu'];
        const wanted = expected.gpu && c.name === 'server' && isWorkload(w) && component(w) === 'target' ? '1' : undefined;
        expect({ container: `${name(w)}/${c.name}`, gpus: gpus === undefined ? undefined : String(gpus) }).toEqual({ container: `${name(w)}/${c.name}`, gpus: wanted });
      }
    }
  });

  it(expected.observability ? 'sends every DSI workload\'s traces to the collector, and the collector to Jaeger' : 'leaves tracing off (the observability component is opt-in)', () => {
    for (const w of workloads) {
      const env = effectiveEnv(objects, server(w));
      const otlp = { workload: name(w), endpoint: env.get('OTEL_EXPORTER_OTLP_ENDPOINT'), protocol: env.get('OTEL_EXPORTER_OTLP_PROTOCOL') };
      expect(otlp).toEqual(
        expected.observability
          ? { workload: name(w), endpoint: 'http://otel-collector:4317', protocol: 'grpc' }
          : { workload: name(w), endpoint: undefined, protocol: undefined },
      );
    }
    if (!expected.observability) return;
    const collector = service(objects, 'otel-collector');
    expect(collector.spec?.ports?.some((p) => p.port === 4317)).toBe(true);
    const configMap = objects.find((o): o is IConfigMap => o.kind === 'ConfigMap' && !!o.metadata?.name?.startsWith('otel-collector-config'));
    const config = parse(configMap?.data?.['config.yaml'] ?? '') as {
      exporters: Record<string, { endpoint?: string }>;
      service: { pipelines: Record<string, { exporters: string[] }> };
      receivers: { prometheus?: { config: { scrape_configs: { static_configs?: { targets: string[] }[]; dns_sd_configs?: { names: string[]; port: number }[] }[] } } };
    };
    // The collector mounts the ConfigMap it is configured with.
    const collectorPod = podSpec(objects.filter(isWorkload).find((o) => o.metadata?.name === 'otel-collector')!);
    expect(collectorPod.volumes?.some((v) => v.configMap?.name === configMap?.metadata?.name)).toBe(true);
    // Each exporter of the traces pipeline reaches a Service port that exists here.
    for (const exporter of config.service.pipelines.traces.exporters) {
      const [host, port] = (config.exporters[exporter].endpoint ?? '').split(':');
      expect(service(objects, host).spec?.ports?.some((p) => p.port === Number(port))).toBe(true);
    }
    expect(service(objects, 'jaeger').spec?.ports?.some((p) => p.port === 16686)).toBe(true);
    // Every scrape target is a Service port that exists (dns_sd: a headless Service).
    for (const job of config.receivers.prometheus?.config.scrape_configs ?? []) {
      for (const address of job.static_configs?.flatMap((s) => s.targets) ?? []) {
        const [host, port] = address.split(':');
        expect(service(objects, host).spec?.ports?.some((p) => p.port === Number(port))).toBe(true);
      }
      for (const sd of job.dns_sd_configs ?? []) {
        for (const host of sd.names) {
          expect(service(objects, host).spec?.clusterIP).toBe('None');
          expect(service(objects, host).spec?.ports?.some((p) => p.port === sd.port)).toBe(true);
        }
      }
    }
  });
});

describe('tls component', () => {
  const objects = rendered['kubernetes/overlays/local + components/tls'];
  const workloads = dsiWorkloads(objects);
  const certificates = objects.filter((o): o is ICertificate => o.kind === 'Certificate');
  const issuers = objects.filter((o): o is IIssuer => o.kind === 'Issuer');

  it('gives every DSI container its certificate, key and CA from the Secret dsi-tls, mounted read-only', () => {
    for (const w of workloads) {
      const container = server(w);
      const env = effectiveEnv(objects, container);
      for (const variable of ['DSI_TLS_CERT', 'DSI_TLS_KEY', 'DSI_TLS_CA']) {
        const file = env.get(variable) ?? `(${variable} unset)`;
        const { mount, volume } = mountFor(w, container, file);
        expect({ workload: name(w), variable, secret: volume?.secret?.secretName, readOnly: mount?.readOnly, key: path.basename(file) }).toEqual({
          workload: name(w),
          variable,
          secret: 'dsi-tls',
          readOnly: true,
          // The keys cert-manager (and kubectl create secret tls) write.
          key: { DSI_TLS_CERT: 'tls.crt', DSI_TLS_KEY: 'tls.key', DSI_TLS_CA: 'ca.crt' }[variable],
        });
      }
    }
  });

  it('makes the drafter and the targets demand client certificates (mutual TLS), not the orchestrator and the simulator', () => {
    const clientAuth = Object.fromEntries(workloads.map((w) => [component(w), effectiveEnv(objects, server(w)).get('DSI_TLS_CLIENT_AUTH') ?? 'none']));
    expect(clientAuth).toEqual({ orchestrator: 'none', drafter: 'require', target: 'require', simulator: 'none' });
  });

  it('issues one certificate for every DSI Service, usable as server and client certificate, into dsi-tls, from an Issuer here', () => {
    const tls = certificates.find((c) => c.spec.secretName === 'dsi-tls');
    expect(tls).toBeDefined();
    const orchestratorEnv = effectiveEnv(objects, server(workload(objects, 'orchestrator')));
    const dialed = [orchestratorEnv.get('DSI_DRAFTER'), orchestratorEnv.get('DSI_TARGETS_DNS')].map((address) => (address ?? '').split(':')[0]);
    const names = [...new Set([...workloads.flatMap((w) => services(objects).filter((s) => selects(s.spec?.selector, w.spec!.template.metadata!.labels)).map((s) => s.metadata!.name!)), ...dialed])];
    for (const serviceName of names) expect({ serviceName, named: tls!.spec.dnsNames?.includes(serviceName) }).toEqual({ serviceName, named: true });
    // The orchestrator checks the replicas it dials by IP against a name the certificate has.
    expect(tls!.spec.dnsNames).toContain(orchestratorEnv.get('DSI_TLS_SERVER_NAME'));
    expect(tls!.spec.usages).toEqual(expect.arrayContaining(['server auth', 'client auth']));
    for (const certificate of certificates) {
      const issuer = issuers.find((i) => i.metadata?.name === certificate.spec.issuerRef.name);
      expect({ certificate: certificate.metadata?.name, issuer: issuer?.metadata?.name, kind: certificate.spec.issuerRef.kind }).toEqual({
        certificate: certificate.metadata?.name,
        issuer: certificate.spec.issuerRef.name,
        kind: 'Issuer',
      });
    }
    // The CA Issuer signs with the CA certificate's Secret.
    const caIssuer = issuers.find((i) => i.metadata?.name === tls!.spec.issuerRef.name);
    const caSecret = caIssuer?.spec.ca?.secretName;
    expect(certificates.find((c) => c.spec.secretName === caSecret)?.spec.isCA).toBe(true);
  });
});

describe('gpu overlay', () => {
  const objects = rendered['kubernetes/overlays/gpu'];

  it('schedules targets onto GPU nodes and tolerates their taint', () => {
    const pod = podSpec(workload(objects, 'target'));
    expect(pod.nodeSelector).toEqual({ 'nvidia.com/gpu.present': 'true' });
    expect(pod.tolerations).toContainEqual({ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' });
  });

  it('loads the drafter and target models, and the tokenizer, from the read-only dsi-models volume', () => {
    const claim = objects.find((o) => o.kind === 'PersistentVolumeClaim' && o.metadata?.name === 'dsi-models');
    expect(claim).toBeDefined();
    for (const [role, variable] of [['target', 'DSI_MODEL'], ['drafter', 'DSI_MODEL'], ['orchestrator', 'DSI_TOKENIZER']]) {
      const w = workload(objects, role);
      const container = server(w);
      const folder = effectiveEnv(objects, container).get(variable);
      const { mount, volume } = mountFor(w, container, folder ?? `(${variable} unset)`);
      expect({ role, variable, claim: volume?.persistentVolumeClaim?.claimName, readOnly: mount?.readOnly }).toEqual({ role, variable, claim: 'dsi-models', readOnly: true });
    }
  });

  it('gives target replicas at least ten minutes to load a large model before liveness applies', () => {
    const startup = server(workload(objects, 'target')).startupProbe;
    expect((startup?.failureThreshold ?? 3) * (startup?.periodSeconds ?? 10)).toBeGreaterThanOrEqual(600);
  });

  it('runs one pinned image, from a registry, in every DSI workload', () => {
    const images = new Set(dsiWorkloads(objects).map((w) => server(w).image));
    expect(images.size).toBe(1);
    const [image] = [...images];
    expect(image).toMatch(/^[\w.-]+\.[\w.-]+(:\d+)?\/.+:[\w.-]+$/);
    expect(image).not.toMatch(/:latest$/);
  });
});

describe('Dockerfile', () => {
  const dockerfile = fs.readFileSync(path.join(deployDir, 'Dockerfile'), 'utf8');
  // Instructions with continuation lines joined and comments dropped.
  const instructions = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'));
  const stages = instructions.reduce<string[][]>((all, line) => (line.startsWith('FROM ') ? [...all, [line]] : (all.at(-1)?.push(line), all)), []);
  const final = stages.at(-1) ?? [];

  it('builds in one stage and runs the pruned app in a second, as the non-root user 10001', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(stages[0].some((l) => /ONNXRUNTIME_NODE_INSTALL=skip/.test(l))).toBe(true);
    expect(stages[0].some((l) => /npm run build/.test(l) && /npm prune --omit=dev/.test(l))).toBe(true);
    expect(final.some((l) => /^RUN .*npm (ci|install)/.test(l))).toBe(false);
    const users = final.filter((l) => l.startsWith('USER '));
    expect(users.at(-1)).toBe('USER 10001:10001');
  });

  it('starts the dsi command, serving the simulator unless told otherwise, on every service port', () => {
    expect(final.filter((l) => l.startsWith('ENTRYPOINT '))).toEqual(['ENTRYPOINT ["node", "tools/cli/bin/dsi.js"]']);
    expect(final.filter((l) => l.startsWith('CMD '))).toEqual(['CMD ["serve", "simulator"]']);
    expect(fs.existsSync(path.join(repoRoot, 'tools/cli/bin/dsi.js'))).toBe(true);
    const exposed = final
      .filter((l) => l.startsWith('EXPOSE '))
      .flatMap((l) => l.slice(7).split(/\s+/))
      .flatMap((spec) => {
        const [from, to = from] = spec.split('/')[0].split('-').map(Number);
        return Array.from({ length: to - from + 1 }, (_, i) => from + i);
      });
    for (const port of Object.values(SERVICES)) expect(exposed).toContain(port);
  });

  it('copies every workspace manifest in the lockfile before npm ci (or the install fails)', () => {
    const lock = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package-lock.json'), 'utf8')) as { packages: Record<string, unknown> };
    const workspaces = Object.keys(lock.packages).filter((key) => key !== '' && !key.includes('node_modules'));
    const install = stages[0].findIndex((l) => /npm ci/.test(l));
    const copied = stages[0].slice(0, install).filter((l) => l.startsWith('COPY ')).join('\n');
    expect(install).toBeGreaterThan(0);
    expect(workspaces.filter((dir) => !copied.includes(`${dir}/package.json`))).toEqual([]);
  });

  it('keeps host node_modules and build output out of the build context, but not deploy/package.json', () => {
    const ignore = fs.readFileSync(path.join(deployDir, 'Dockerfile.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    expect(ignore).toEqual(expect.arrayContaining(['**/node_modules', '**/dist', '**/*.tsbuildinfo', '!deploy/package.json']));
  });
});
