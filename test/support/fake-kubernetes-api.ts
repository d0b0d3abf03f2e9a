/**
 * A minimal stand-in for the Kubernetes API server, enough for src/kube: Leases
 * (`/apis/coordination.k8s.io/v1/namespaces/NS/leases[/NAME]`: GET, POST, PUT) and pods
 * (`/api/v1/namespaces/NS/pods/NAME`: GET, PATCH with a JSON merge patch). It speaks HTTPS with a throwaway
 * self-signed certificate made by openssl (the client is given it as its CA, as a pod is given the cluster
 * CA), and refuses any request without `Authorization: Bearer <token>` with 401.
 *
 * Semantics kept from the real API server: every write gets a new resourceVersion from one counter, never
 * reused; a PUT whose metadata.resourceVersion is stale answers 409 Conflict, one without it 422; a POST of
 * an existing name answers 409 AlreadyExists; absent objects answer 404; errors are `Status` objects.
 *
 * What it does NOT prove (see NOTEBOOK.md §12): RBAC (every valid token may do everything), admission,
 * field validation and defaulting, the real API server's linearizability under concurrent writers from
 * several processes (here one event loop serialises everything), its watch cache, etcd behind it, HTTP/2,
 * and the real server's exact Status bodies.
 *
 * Faults for tests: `failNext(count, status)` answers the next requests with an error; `hang()` holds
 * every request unanswered until `release()`, which resets their connections (as if they were lost).
 * Every request is recorded in `requests`.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly contentType: string | undefined;
  readonly body: unknown;
  /** The status answered, or undefined when the request was held by `hang()`. */
  status: number | undefined;
}

type KubeObject = Record<string, unknown> & { metadata: Record<string, unknown> };

export interface FakeKubernetesApi {
  readonly url: string;
  readonly token: string;
  /** PEM of the server's self-signed certificate, to give the client as its CA. */
  readonly caPem: string;
  readonly requests: RecordedRequest[];
  /** Makes a pod exist (the labeler only patches pods, it never creates them). */
  addPod(namespace: string, name: string, labels?: Record<string, string>): void;
  pod(namespace: string, name: string): KubeObject | undefined;
  lease(namespace: string, name: string): KubeObject | undefined;
  /** Writes a Lease directly, bypassing every check, with a new resourceVersion (for corruption tests). */
  putLeaseDirectly(namespace: string, name: string, lease: Record<string, unknown>): void;
  failNext(count: number, status?: number): void;
  hang(): void;
  release(): void;
  close(): Promise<void>;
}

export async function startFakeKubernetesApi(options: { token?: string } = {}): Promise<FakeKubernetesApi> {
  const token = options.token ?? 'fake-service-account-token';
  const { keyPem, certPem } = makeCertificate();
  const leases = new Map<string, KubeObject>();
  const pods = new Map<string, KubeObject>();
  const requests: RecordedRequest[] = [];
  const held: ServerResponse[] = [];
  let lastResourceVersion = 100;
  let failuresLeft = 0;
  let failureStatus = 500;
  let hanging = false;

  const nextVersion = (): string => {
    lastResourceVersion += 1;
    return String(lastResourceVersion);
  };
  const stamp = (object: KubeObject, namespace: string, name: string): KubeObject => {
    const copy = structuredClone(object);
    copy.metadata = { ...copy.metadata, name, namespace, resourceVersion: nextVersion() };
    copy.metadata.uid ??= `uid-${lastResourceVersion}`;
    copy.metadata.creationTimestamp ??= new Date().toISOString();
    return copy;
  };

  const handle = (request: IncomingMessage, response: ServerResponse, body: unknown, recorded: RecordedRequest): void => {
    const answer = (status: number, payload: unknown): void => {
      recorded.status = status;
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(JSON.stringify(payload));
    };
    const fail = (status: number, reason: string, message: string): void => {
      answer(status, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code: status });
    };
    if (request.headers.authorization !== `Bearer ${token}`) return fail(401, 'Unauthorized', 'Unauthorized');
    if (hanging) {
      held.push(response);
      return;
    }
    if (failuresLeft > 0) {
      failuresLeft -= 1;
      return fail(failureStatus, 'InternalError', 'injected failure');
    }
    const url = new URL(request.url ?? '/', 'https://fake');
    const leasePath = /^\/apis\/coordination\.k8s\.io\/v1\/namespaces\/([^/]+)\/leases(?:\/([^/]+))?$/.exec(url.pathname);
    const podPath = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(url.pathname);
    if (leasePath !== null) {
      const namespace = leasePath[1] ?? '';
      const name = leasePath[2];
      if (name === undefined) {
        if (request.method !== 'POST') return fail(405, 'MethodNotAllowed', 'only POST on the collection');
        const object = body as KubeObject;
        const objectName = object?.metadata?.name;
        if (typeof objectName !== 'string') return fail(422, 'Invalid', 'metadata.name: Required value');
        if (object.metadata.resourceVersion !== undefined) {
          return fail(500, 'InternalError', 'resourceVersion should not be set on objects to be created');
        }
        const key = `${namespace}/${objectName}`;
        if (leases.has(key)) return fail(409, 'AlreadyExists', `leases.coordination.k8s.io "${objectName}" already exists`);
        const stored = stamp(object, namespace, objectName);
        leases.set(key, stored);
        return answer(201, stored);
      }
      const key = `${namespace}/${name}`;
      const existing = leases.get(key);
      if (request.method === 'GET') {
        if (existing === undefined) return fail(404, 'NotFound', `leases.coordination.k8s.io "${name}" not found`);
        return answer(200, existing);
      }
      if (request.method === 'PUT') {
        const object = body as KubeObject;
        if (object?.metadata?.name !== name) return fail(400, 'BadRequest', 'the name of the object does not match the URL');
        if (existing === undefined) return fail(404, 'NotFound', `leases.coordination.k8s.io "${name}" not found`);
        if (object.metadata.resourceVersion === undefined) {
          return fail(422, 'Invalid', 'metadata.resourceVersion: Invalid value: 0x0: must be specified for an update');
        }
        if (object.metadata.resourceVersion !== existing.metadata.resourceVersion) {
          return fail(
            409,
            'Conflict',
            `Operation cannot be fulfilled on leases.coordination.k8s.io "${name}": the object has been modified; please apply your changes to the latest version and try again`,
          );
        }
        const stored = stamp(
          { ...object, metadata: { ...object.metadata, uid: existing.metadata.uid, creationTimestamp: existing.metadata.creationTimestamp } },
          namespace,
          name,
        );
        leases.set(key, stored);
        return answer(200, stored);
      }
      return fail(405, 'MethodNotAllowed', `${request.method} is not served here`);
    }
    if (podPath !== null) {
      const key = `${podPath[1]}/${podPath[2]}`;
      const existing = pods.get(key);
      if (existing === undefined) return fail(404, 'NotFound', `pods "${podPath[2]}" not found`);
      if (request.method === 'GET') return answer(200, existing);
      if (request.method === 'PATCH') {
        if (recorded.contentType !== 'application/merge-patch+json') {
          return fail(415, 'UnsupportedMediaType', `this stand-in serves only merge patches, not ${recorded.contentType}`);
        }
        const patched = mergePatch(existing, body) as KubeObject;
        const stored = stamp(patched, podPath[1] ?? '', podPath[2] ?? '');
        pods.set(key, stored);
        return answer(200, stored);
      }
      return fail(405, 'MethodNotAllowed', `${request.method} is not served here`);
    }
    return fail(404, 'NotFound', `the server could not find the requested resource ${url.pathname}`);
  };

  const server: Server = createServer({ key: keyPem, cert: certPem }, (request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = text === '' ? undefined : JSON.parse(text);
      } catch {
        body = text;
      }
      const recorded: RecordedRequest = {
        method: request.method ?? '',
        path: request.url ?? '',
        contentType: request.headers['content-type']?.split(';')[0]?.trim(),
        body,
        status: undefined,
      };
      requests.push(recorded);
      handle(request, response, body, recorded);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the fake API server has no port');

  return {
    url: `https://127.0.0.1:${address.port}`,
    token,
    caPem: certPem,
    requests,
    addPod: (namespace, name, labels = {}) => {
      pods.set(
        `${namespace}/${name}`,
        stamp({ apiVersion: 'v1', kind: 'Pod', metadata: { labels }, spec: { containers: [] } }, namespace, name),
      );
    },
    pod: (namespace, name) => pods.get(`${namespace}/${name}`),
    lease: (namespace, name) => leases.get(`${namespace}/${name}`),
    putLeaseDirectly: (namespace, name, lease) => {
      leases.set(`${namespace}/${name}`, stamp({ metadata: {}, ...lease } as KubeObject, namespace, name));
    },
    failNext: (count, status = 500) => {
      failuresLeft = count;
      failureStatus = status;
    },
    hang: () => {
      hanging = true;
    },
    release: () => {
      hanging = false;
      for (const response of held.splice(0)) response.socket?.destroy();
    },
    close: async () => {
      for (const response of held.splice(0)) response.socket?.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** RFC 7386: objects merge recursively, null deletes, anything else replaces. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return structuredClone(patch);
  const result: Record<string, unknown> =
    typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [key, value] of Object.entries(patch as Record<string, unknown>)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

/** A throwaway self-signed certificate for 127.0.0.1, made with openssl in a temp dir that is then removed. */
function makeCertificate(): { keyPem: string; certPem: string } {
  const directory = mkdtempSync(join(tmpdir(), 'replichat-store-fake-kube-'));
  try {
    const keyFile = join(directory, 'key.pem');
    const certFile = join(directory, 'cert.pem');
    const result = spawnSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=fake-kubernetes-api',
        '-addext', 'subjectAltName=IP:127.0.0.1',
      ],
      { encoding: 'utf8' },
    );
    if (result.status !== 0) throw new Error(`openssl could not make a certificate: ${result.error?.message ?? result.stderr}`);
    return { keyPem: readFileSync(keyFile, 'utf8'), certPem: readFileSync(certFile, 'utf8') };
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}
