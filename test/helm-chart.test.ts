/**
 * Offline checks of the Helm chart helm/replichat and of k8s/, the plain manifests rendered from it.
 *
 * What it proves, with the real helm 4 and kubectl binaries that an npm package ships (scripts/helm-tools.sh)
 * and nothing fetched at run time:
 * - `helm lint --strict` passes, with default values and with every optional part switched on;
 * - every object `helm template` renders, in both of those cases, is valid against the Kubernetes API's
 *   schemas and has no field the API does not define (test/support/kubernetes-validation.ts);
 * - the objects have the properties the deployment relies on (the StatefulSet's probes and policies, the
 *   leader-only Service, the least-privilege Role …), read from the render rather than from the templates;
 * - the ServiceMonitor and PrometheusRule appear only when the cluster has their API;
 * - NOTES.txt says how to make the Secrets, chat, check the status and scale, for the namespace at hand;
 * - k8s/ is exactly what scripts/render-k8s.sh makes from the chart now, and `kubectl kustomize k8s/` builds
 *   the same objects, moved whole into another namespace when kustomization.yaml names one;
 * - values.schema.json refuses a misspelt key at any depth, so helm fails instead of ignoring it;
 * - every flag the StatefulSet passes to `replichat server` is one the server defines.
 * What it does not prove: that a real API server admits the objects (admission, defaults, quotas) or that
 * the pods run; the container test runs the image, and no cluster is reachable here.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { SERVER_FLAGS } from '../src/node/config.js';
import { type KubernetesObject, validateKubernetesObject } from './support/kubernetes-validation.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CHART = join(ROOT, 'helm/replichat');
const MONITORING_API = 'monitoring.coreos.com/v1';

let tools: string;
let temporaryDirectory: string;

beforeAll(() => {
  tools = execFileSync('bash', [join(ROOT, 'scripts/helm-tools.sh')], { encoding: 'utf8' }).trim();
  temporaryDirectory = mkdtempSync(join(tmpdir(), 'chart-test-'));
});

afterAll(() => {
  rmSync(temporaryDirectory, { recursive: true, force: true });
});

interface CommandResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function run(tool: 'helm' | 'kubectl', args: readonly string[]): CommandResult {
  const result = spawnSync(join(tools, tool), args, { encoding: 'utf8', cwd: ROOT, maxBuffer: 64 * 1024 * 1024 });
  if (result.error !== undefined) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Parses YAML as Kubernetes does (YAML 1.1: `defaultMode: 0440` is octal). */
function parseObjects(text: string): KubernetesObject[] {
  return parseAllDocuments(text, { version: '1.1' })
    .map((document) => document.toJS() as KubernetesObject | null)
    .filter((object): object is KubernetesObject => object !== null);
}

/** `helm template` of the chart; fails the test with helm's message if helm fails. */
function render(extraArgs: readonly string[] = []): KubernetesObject[] {
  const result = run('helm', ['template', 'replichat', CHART, '--namespace', 'default', ...extraArgs]);
  if (result.status !== 0) throw new Error(`helm template failed: ${result.stderr}`);
  return parseObjects(result.stdout);
}

function find(objects: readonly KubernetesObject[], kind: string, name: string): Record<string, any> {
  const object = objects.find((candidate) => candidate.kind === kind && candidate.metadata.name === name);
  if (object === undefined) throw new Error(`no ${kind}/${name} in the render`);
  return object as Record<string, any>;
}

const OPTIONS_ON = [
  '--set', 'certManager.enabled=true',
  '--set', 'probes.liveness.enabled=true',
  '--set', 'configurationStore.type=etcd',
  '--set', 'configurationStore.etcd.endpoints={http://etcd-0.etcd:2379,http://etcd-1.etcd:2379}',
];
const EVERYTHING_ON = ['--api-versions', MONITORING_API, ...OPTIONS_ON];

describe('helm lint and template', () => {
  test('helm lint --strict passes with default values and with every optional part on', () => {
    // helm lint has no --api-versions, so the monitoring objects are linted by helm template below.
    for (const args of [[], OPTIONS_ON]) {
      const result = run('helm', ['lint', '--strict', CHART, ...args]);
      expect({ status: result.status, output: result.stdout + result.stderr }).toMatchObject({ status: 0 });
      expect(result.stdout).toContain('0 chart(s) failed');
    }
  });

  test.each([
    ['default values', []],
    ['every optional part on', EVERYTHING_ON],
  ])('every rendered object is valid against the Kubernetes schemas (%s)', async (_name, args) => {
    const objects = render(args);
    expect(objects.length).toBeGreaterThanOrEqual(11);
    // One at a time: jest's module loader fails on parallel first imports of one module.
    const problems: string[] = [];
    for (const object of objects) problems.push(...(await validateKubernetesObject(object)));
    expect(problems).toEqual([]);
  });

  test('the validation catches a misspelt field and a wrong type, so its passing means something', async () => {
    const statefulSet = structuredClone(find(render(), 'StatefulSet', 'chat'));
    const container = statefulSet.spec.template.spec.containers[0];
    container.readinesProbe = container.readinessProbe;
    expect(await validateKubernetesObject(statefulSet as KubernetesObject)).toEqual([
      'StatefulSet/chat: unknown field V1StatefulSet.spec.template.spec.containers[0].readinesProbe',
    ]);
    delete container.readinesProbe;
    container.readinessProbe.grpc.port = 'health';
    const problems = await validateKubernetesObject(statefulSet as KubernetesObject);
    expect(problems.join('\n')).toMatch(/readinessProbe\/grpc\/port must be integer/);
  });
});

describe('what the rendered objects promise', () => {
  test('the StatefulSet: parallel start, volumes, spread, non-root, probes, preStop, and the server flags', () => {
    const objects = render();
    const statefulSet = find(objects, 'StatefulSet', 'chat');
    const pod = statefulSet.spec.template.spec;
    const container = pod.containers[0];
    expect(statefulSet.spec.podManagementPolicy).toBe('Parallel');
    expect(statefulSet.spec.serviceName).toBe('chat-peers');
    expect(statefulSet.spec.volumeClaimTemplates[0].metadata.name).toBe('data');
    expect(pod.topologySpreadConstraints[0]).toMatchObject({ maxSkew: 1, topologyKey: 'kubernetes.io/hostname' });
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true });
    expect(container.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    expect(container.resources.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(0);
    const startupAllowanceSeconds = container.startupProbe.periodSeconds * container.startupProbe.failureThreshold;
    expect(startupAllowanceSeconds).toBeGreaterThanOrEqual(15 * 60);
    const healthPort = container.ports.find((port: { name: string }) => port.name === 'health').containerPort;
    expect(container.readinessProbe.grpc).toEqual({ port: healthPort, service: 'replichat.v1.ChatService' });
    expect(container.livenessProbe).toBeUndefined();
    expect(container.lifecycle.preStop.exec.command[0]).toBe('sleep');
    // The preStop wait and the shutdown grace must fit in the termination grace period.
    const preStopSeconds = Number(container.lifecycle.preStop.exec.command[1]);
    const args: string[] = container.args;
    const shutdownGraceSeconds = Number(args[args.indexOf('--shutdown-grace-ms') + 1]) / 1000;
    expect(preStopSeconds + shutdownGraceSeconds).toBeLessThan(pod.terminationGracePeriodSeconds);
    expect(args[0]).toBe('server');
    expect(args[args.indexOf('--peer-template') + 1]).toBe('chat-{ordinal}.chat-peers.$(POD_NAMESPACE).svc.cluster.local:50052');
    expect(args[args.indexOf('--replicas') + 1]).toBe(String(statefulSet.spec.replicas));
    expect(args[args.indexOf('--configuration-store') + 1]).toBe('kubernetes');
    // The ordinal comes from the host name (chat-2 is 2), so no --ordinal is passed.
    expect(args).not.toContain('--ordinal');
    // $(POD_NAMESPACE) and $(POD_NAME) are expanded by the kubelet only if the container defines them.
    const environment = new Set(container.env.map((variable: { name: string }) => variable.name));
    for (const reference of args.join(' ').matchAll(/\$\(([A-Z_]+)\)/g)) expect(environment).toContain(reference[1]);
  });

  test('every flag the StatefulSet passes is one `replichat server` defines', () => {
    // Each missing flag is named, so that the message says which part of the server is not there yet.
    const args: string[] = find(render(EVERYTHING_ON), 'StatefulSet', 'chat').spec.template.spec.containers[0].args;
    const defaultArgs: string[] = find(render(), 'StatefulSet', 'chat').spec.template.spec.containers[0].args;
    const flags = [...new Set([...args, ...defaultArgs].filter((arg) => arg.startsWith('--')).map((arg) => arg.slice(2)))];
    expect(flags.length).toBeGreaterThan(10);
    expect(flags.filter((flag) => !(flag in SERVER_FLAGS))).toEqual([]);
  });

  test('the Services: headless peers with not-ready addresses, the leader only, every ready replica', () => {
    const objects = render();
    const selector = find(objects, 'StatefulSet', 'chat').spec.selector.matchLabels;
    const peers = find(objects, 'Service', 'chat-peers');
    expect(peers.spec).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: true, selector });
    expect(find(objects, 'Service', 'chat').spec.selector).toEqual({ ...selector, 'replichat.io/role': 'leader' });
    const replicas = find(objects, 'Service', 'chat-replicas');
    expect(replicas.spec.selector).toEqual(selector);
    expect(replicas.spec.publishNotReadyAddresses).toBeUndefined();
  });

  test('a disruption budget of one, and a NetworkPolicy that fences the peer and metrics ports', () => {
    const objects = render(['--set', 'networkPolicy.metricsNamespace=observability']);
    const selector = find(objects, 'StatefulSet', 'chat').spec.selector.matchLabels;
    expect(find(objects, 'PodDisruptionBudget', 'chat').spec).toEqual({ maxUnavailable: 1, selector: { matchLabels: selector } });
    const policy = find(objects, 'NetworkPolicy', 'chat');
    expect(policy.spec.podSelector.matchLabels).toEqual(selector);
    const ruleFor = (port: string): any[] =>
      policy.spec.ingress.filter((rule: any) => rule.ports.some((candidate: any) => candidate.port === port));
    expect(ruleFor('peer')).toEqual([expect.objectContaining({ from: [{ podSelector: { matchLabels: selector } }] })]);
    expect(ruleFor('metrics')).toEqual([
      expect.objectContaining({
        from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'observability' } } }],
      }),
    ]);
    expect(ruleFor('client')[0].from).toBeUndefined();
  });

  test('the Role grants only the pods of the StatefulSet and the one configuration Lease', () => {
    const objects = render(['--set', 'rbac.maxReplicas=4', '--set', 'configurationStore.kubernetes.leaseName=chat-config']);
    const rules: any[] = find(objects, 'Role', 'chat').rules;
    expect(rules).toEqual([
      { apiGroups: [''], resources: ['pods'], verbs: ['get', 'patch'], resourceNames: ['chat-0', 'chat-1', 'chat-2', 'chat-3'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'update'], resourceNames: ['chat-config'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
    ]);
    const args: string[] = find(objects, 'StatefulSet', 'chat').spec.template.spec.containers[0].args;
    expect(args[args.indexOf('--kubernetes-lease-name') + 1]).toBe('chat-config');
    const binding = find(objects, 'RoleBinding', 'chat');
    expect(binding.roleRef).toMatchObject({ kind: 'Role', name: 'chat' });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'chat', namespace: 'default' }]);
    expect(find(objects, 'StatefulSet', 'chat').spec.template.spec.serviceAccountName).toBe('chat');
    // More replicas than the Role names would leave a pod unable to label itself: the render refuses.
    const tooMany = run('helm', ['template', 'replichat', CHART, '--set', 'replicas=5', '--set', 'rbac.maxReplicas=4']);
    expect(tooMany.status).not.toBe(0);
    expect(tooMany.stderr).toContain('raise rbac.maxReplicas');
  });

  test('the CLI pod: the same image, the Services as its servers, and only the CA of the TLS Secret', () => {
    const objects = render();
    const cli = find(objects, 'Pod', 'chat-cli');
    const container = cli.spec.containers[0];
    expect(container.image).toBe(find(objects, 'StatefulSet', 'chat').spec.template.spec.containers[0].image);
    const environment = Object.fromEntries(container.env.map((variable: any) => [variable.name, variable.value]));
    expect(environment.REPLICHAT_SERVERS).toBe(
      'chat.$(POD_NAMESPACE).svc.cluster.local:50051,chat-replicas.$(POD_NAMESPACE).svc.cluster.local:50051',
    );
    const caVolume = cli.spec.volumes.find((volume: any) => volume.name === 'ca');
    expect(caVolume.secret.items).toEqual([{ key: 'ca.crt', path: 'ca.crt' }]);
    const caMount = container.volumeMounts.find((mount: any) => mount.name === 'ca').mountPath;
    expect(environment.REPLICHAT_CA_CERT).toBe(`${caMount}/ca.crt`);
    expect(container.securityContext.readOnlyRootFilesystem).toBe(true);
    // With a read-only root, the session file needs a writable XDG_CONFIG_HOME.
    const writable = container.volumeMounts.filter((mount: any) => mount.readOnly !== true).map((mount: any) => mount.mountPath);
    expect(writable).toContain(environment.XDG_CONFIG_HOME);
  });

  test('the ServiceMonitor and PrometheusRule exist only where their API does; the dashboard is labelled', () => {
    const kinds = (objects: KubernetesObject[]): string[] => objects.map((object) => object.kind);
    expect(kinds(render())).not.toContain('ServiceMonitor');
    expect(kinds(render())).not.toContain('PrometheusRule');
    const withOperator = render(['--api-versions', MONITORING_API]);
    const monitor = find(withOperator, 'ServiceMonitor', 'chat');
    // It scrapes through the headless Service, which lists not-ready replicas too.
    expect(find(withOperator, 'Service', 'chat-peers').metadata.labels).toMatchObject(monitor.spec.selector.matchLabels);
    expect(find(withOperator, 'Service', 'chat').metadata.labels).not.toMatchObject(monitor.spec.selector.matchLabels);
    const rule = find(withOperator, 'PrometheusRule', 'chat');
    const alertsFile = parseAllDocuments(readFileSync(join(CHART, 'alerts/replichat-alerts.yaml'), 'utf8'))[0]!.toJS();
    expect(rule.spec).toEqual(alertsFile);
    const dashboard = find(render(), 'ConfigMap', 'chat-dashboard');
    expect(dashboard.metadata.labels.grafana_dashboard).toBe('1');
    expect(JSON.parse(dashboard.data['replichat.json'])).toEqual(
      JSON.parse(readFileSync(join(CHART, 'dashboards/replichat.json'), 'utf8')),
    );
  });

  test('cert-manager issues the client certificate and one peer certificate per replica, projected by pod name', () => {
    const objects = render(['--set', 'certManager.enabled=true', '--set', 'replicas=4']);
    const peerCertificates = objects.filter((object) => object.kind === 'Certificate' && object.metadata.name.startsWith('chat-peer-tls-'));
    expect(peerCertificates.map((object) => (object as any).spec.uris)).toEqual(
      [0, 1, 2, 3].map((ordinal) => [`spiffe://replichat/replichat/replica/${ordinal}`]),
    );
    const pod = find(objects, 'StatefulSet', 'chat').spec.template.spec;
    const paths = pod.volumes
      .find((volume: any) => volume.name === 'peer-tls')
      .projected.sources.flatMap((source: any) => source.secret.items.map((item: any) => item.path));
    expect(paths.sort()).toEqual(['ca.crt', ...[0, 1, 2, 3].flatMap((n) => [`chat-${n}.crt`, `chat-${n}.key`])].sort());
    const args: string[] = pod.containers[0].args;
    expect(args[args.indexOf('--peer-cert') + 1]).toBe('/etc/replichat/peer-tls/$(POD_NAME).crt');
  });
});

describe('NOTES.txt', () => {
  /** The notes helm prints after an install, rendered offline by a client-side dry run. */
  function notes(args: readonly string[]): string {
    const result = run('helm', ['install', 'replichat', CHART, '--dry-run=client', '--namespace', 'chat-prod', ...args]);
    if (result.status !== 0) throw new Error(`helm install --dry-run failed: ${result.stderr}`);
    return result.stdout.slice(result.stdout.indexOf('NOTES:'));
  }

  test('say how to make the Secrets, chat, check the status and scale, for the namespace installed into', () => {
    const text = notes(['--set', 'replicas=4', '--set', 'rbac.maxReplicas=6']);
    expect(text).toContain('kubectl -n chat-prod exec -it chat-cli -- replichat chat');
    expect(text).toContain('kubectl -n chat-prod exec chat-0 -- replichat status');
    expect(text).toContain('--set replicas=5');
    // Scaling down removes the highest member first, then shrinks, then deletes its volume.
    const remove = text.indexOf('replichat member remove 3');
    const shrink = text.indexOf('--set replicas=3');
    const deleteClaim = text.indexOf('delete pvc data-chat-3');
    expect(remove).toBeGreaterThan(0);
    expect(shrink).toBeGreaterThan(remove);
    expect(deleteClaim).toBeGreaterThan(shrink);
    expect(text).toContain('PEER_DOMAIN=chat-peers.chat-prod.svc.cluster.local');
    expect(text).toContain('--from-file=chat-3.crt=certs/peer-3.pem');
    expect(text).toContain('create secret generic chat-admin-token');
  });

  test('leave out what cert-manager does, and say when the monitoring API is missing', () => {
    const text = notes(['--set', 'certManager.enabled=true', '--set', 'cli.enabled=false']);
    expect(text).not.toContain('make-dev-certs.sh');
    expect(text).toContain('no chat-cli pod');
    expect(text).toContain('no monitoring.coreos.com/v1 API');
  });
});

describe('k8s/ and the values schema', () => {
  test('k8s/ is exactly the chart rendered with default values', () => {
    const fresh = join(temporaryDirectory, 'k8s');
    execFileSync('bash', [join(ROOT, 'scripts/render-k8s.sh'), fresh], { cwd: ROOT, encoding: 'utf8' });
    const committed = join(ROOT, 'k8s');
    expect(readdirSync(committed).sort()).toEqual(readdirSync(fresh).sort());
    for (const file of readdirSync(fresh)) {
      // A failure here means the chart changed without `bash scripts/render-k8s.sh`.
      expect({ file, text: readFileSync(join(committed, file), 'utf8') }).toEqual({
        file,
        text: readFileSync(join(fresh, file), 'utf8'),
      });
    }
  });

  test('kubectl kustomize builds k8s/ into the render, and moves it whole into another namespace', () => {
    const built = run('kubectl', ['kustomize', join(ROOT, 'k8s')]);
    expect(built.status).toBe(0);
    // Kustomize only adds the namespace (and sets the image the render already has): apart from that, its
    // objects are the render's, field for field.
    const identity = (object: KubernetesObject): string => `${object.kind}/${object.metadata.name}`;
    const withoutNamespace = (objects: KubernetesObject[]): KubernetesObject[] =>
      objects
        .map((object) => {
          const copy = structuredClone(object) as any;
          expect(copy.metadata.namespace).toBe('default');
          delete copy.metadata.namespace;
          return copy as KubernetesObject;
        })
        .sort((a, b) => identity(a).localeCompare(identity(b)));
    const rendered = render().sort((a, b) => identity(a).localeCompare(identity(b)));
    expect(withoutNamespace(parseObjects(built.stdout))).toEqual(rendered);

    const moved = join(temporaryDirectory, 'k8s-moved');
    execFileSync('bash', [join(ROOT, 'scripts/render-k8s.sh'), moved], { cwd: ROOT });
    const kustomization = join(moved, 'kustomization.yaml');
    writeFileSync(kustomization, readFileSync(kustomization, 'utf8').replace(/^namespace: default$/m, 'namespace: chat-prod'));
    const objects = parseObjects(run('kubectl', ['kustomize', moved]).stdout);
    expect(new Set(objects.map((object) => object.metadata.namespace))).toEqual(new Set(['chat-prod']));
    expect(find(objects, 'RoleBinding', 'chat').subjects[0].namespace).toBe('chat-prod');
  });

  test.each([
    ['a misspelt top-level key', ['--set', 'replica=3'], "at '': additional properties 'replica' not allowed"],
    ['a misspelt nested key', ['--set', 'image.tagg=1.0'], "at '/image': additional properties 'tagg' not allowed"],
    [
      'a misspelt key three levels down',
      ['--set', 'monitoring.dashboard.enabeld=false'],
      "at '/monitoring/dashboard': additional properties 'enabeld' not allowed",
    ],
    ['a wrong type', ['--set-string', 'replicas=three'], "at '/replicas'"],
    ['a value outside its enum', ['--set', 'configurationStore.type=zookeeper'], "at '/configurationStore/type'"],
  ])('values.schema.json makes helm template fail on %s', (_name, args, complaint) => {
    const result = run('helm', ['template', 'replichat', CHART, ...args]);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain("values don't meet the specifications of the schema");
    expect(result.stderr).toContain(complaint);
  });

  test('every object of values.schema.json refuses unknown keys', () => {
    const schema = JSON.parse(readFileSync(join(CHART, 'values.schema.json'), 'utf8'));
    const open: string[] = [];
    const visit = (node: any, path: string): void => {
      if (node === null || typeof node !== 'object') return;
      if (node.type === 'object' && node.properties !== undefined && node.additionalProperties !== false) open.push(path);
      for (const [key, child] of Object.entries(node.properties ?? {})) visit(child, `${path}.${key}`);
      if (node.items !== undefined) visit(node.items, `${path}[]`);
    };
    visit(schema, 'values');
    expect(open).toEqual([]);
  });
});
