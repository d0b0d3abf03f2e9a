/**
 * Proves that PodRoleLabeler keeps `replichat.io/role` on the replica's own pod following the role it is
 * told, through the real @kubernetes/client-node over HTTPS against the stand-in API server of
 * test/support/fake-kubernetes-api.ts (which applies JSON merge patches to the pod it holds):
 * - the label follows role changes, the patch is a merge patch of the labels only, and the latest role
 *   wins when roles change faster than the API server answers;
 * - a failing (500) or hanging API server never blocks or throws in `setRole`; each failed attempt is
 *   reported through `onLabelUpdateFailed` (the metrics counter), and the label converges once the API
 *   server recovers.
 * The stand-in does not prove RBAC (the pod's service account must be allowed to patch pods) or that a
 * real API server accepts exactly this patch; see NOTEBOOK.md §12.
 */
import { createKubernetesClient, type KubernetesClient } from '../src/kube/kubernetes-client.js';
import { PodRoleLabeler, ROLE_LABEL, type ReplicaRole } from '../src/kube/pod-labels.js';
import { startFakeKubernetesApi, type FakeKubernetesApi } from './support/fake-kubernetes-api.js';

const namespace = 'replichat-labels';
let api: FakeKubernetesApi;
let client: KubernetesClient;
let podCounter = 0;
const labelers: PodRoleLabeler[] = [];

beforeAll(async () => {
  api = await startFakeKubernetesApi();
  client = createKubernetesClient({ server: { url: api.url, token: api.token, caPem: api.caPem }, namespace });
});
afterEach(async () => {
  await Promise.all(labelers.splice(0).map((labeler) => labeler.close()));
});
afterAll(async () => {
  await api?.close();
});

interface Harness {
  readonly podName: string;
  readonly labeler: PodRoleLabeler;
  readonly updated: ReplicaRole[];
  readonly failures: unknown[];
  label(): string | undefined;
}

function makeLabeler(timeoutMs = 2000): Harness {
  podCounter += 1;
  const podName = `chat-${podCounter}`;
  api.addPod(namespace, podName, { app: 'replichat' });
  const updated: ReplicaRole[] = [];
  const failures: unknown[] = [];
  const labeler = new PodRoleLabeler({
    client,
    podName,
    timeoutMs,
    initialRetryDelayMs: 20,
    maxRetryDelayMs: 100,
    onLabelUpdated: (role) => updated.push(role),
    onLabelUpdateFailed: (error) => failures.push(error),
  });
  labelers.push(labeler);
  const label = () => (api.pod(namespace, podName)?.metadata.labels as Record<string, string> | undefined)?.[ROLE_LABEL];
  return { podName, labeler, updated, failures, label };
}

async function waitFor(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The pod carries `role` and the labeler has heard the API server accept it (two separate moments). */
function waitForRole(pod: Harness, role: ReplicaRole, what: string): Promise<void> {
  return waitFor(what, () => pod.label() === role && pod.labeler.appliedRole === role);
}

function patchesOf(podName: string) {
  return api.requests.filter((request) => request.method === 'PATCH' && request.path.startsWith(`/api/v1/namespaces/${namespace}/pods/${podName}`));
}

test('the label follows role changes, by a merge patch that keeps the other labels', async () => {
  const pod = makeLabeler();
  pod.labeler.setRole('follower');
  await waitForRole(pod, 'follower', 'the follower label');
  pod.labeler.setRole('leader');
  await waitForRole(pod, 'leader', 'the leader label');
  expect(pod.updated).toEqual(['follower', 'leader']);
  expect(pod.labeler.appliedRole).toBe('leader');
  expect(pod.failures).toEqual([]);
  expect((api.pod(namespace, pod.podName)!.metadata.labels as Record<string, string>).app).toBe('replichat');
  const patches = patchesOf(pod.podName);
  expect(patches.map((request) => request.contentType)).toEqual(['application/merge-patch+json', 'application/merge-patch+json']);
  expect(patches[1]!.body).toEqual({ metadata: { labels: { [ROLE_LABEL]: 'leader' } } });
  // Asking again for the role the label already has sends nothing.
  pod.labeler.setRole('leader');
  await pod.labeler.close();
  expect(patchesOf(pod.podName)).toHaveLength(2);
});

test('the latest role wins when roles change faster than the API server answers', async () => {
  const pod = makeLabeler();
  for (const role of ['leader', 'follower', 'leader', 'follower'] as const) pod.labeler.setRole(role);
  await waitForRole(pod, 'follower', 'the last role asked for');
  // One patch in flight at a time: the first, then straight to the latest.
  expect(patchesOf(pod.podName).map((request) => (request.body as { metadata: { labels: Record<string, string> } }).metadata.labels[ROLE_LABEL])).toEqual([
    'leader',
    'follower',
  ]);
});

test('a failing API server neither blocks nor throws; failures are counted and the label converges', async () => {
  const pod = makeLabeler();
  api.failNext(3, 500);
  const startedMs = Date.now();
  expect(() => pod.labeler.setRole('leader')).not.toThrow();
  // setRole returned before any request could have been answered: it does not wait for the API server.
  expect(pod.failures).toHaveLength(0);
  expect(pod.label()).toBeUndefined();
  await waitForRole(pod, 'leader', 'the leader label after the failures');
  expect(pod.failures).toHaveLength(3);
  expect(pod.updated).toEqual(['leader']);
  expect(patchesOf(pod.podName).map((request) => request.status)).toEqual([500, 500, 500, 200]);
  expect(Date.now() - startedMs).toBeGreaterThanOrEqual(20 + 40 + 80); // it backed off between attempts
});

test('a hanging API server neither blocks nor throws; timed-out attempts are counted and the label converges', async () => {
  const pod = makeLabeler(200);
  pod.labeler.setRole('leader');
  await waitForRole(pod, 'leader', 'the leader label');
  api.hang();
  try {
    pod.labeler.setRole('follower');
    await waitFor('two timed-out attempts', () => pod.failures.length >= 2);
    expect(pod.label()).toBe('leader');
  } finally {
    api.release();
  }
  await waitForRole(pod, 'follower', 'the follower label after the API server came back');
  expect(pod.updated).toEqual(['leader', 'follower']);
});

test('a callback that throws does not stop the reconciliation', async () => {
  podCounter += 1;
  const podName = `chat-${podCounter}`;
  api.addPod(namespace, podName);
  let failures = 0;
  const labeler = new PodRoleLabeler({
    client,
    podName,
    initialRetryDelayMs: 10,
    onLabelUpdateFailed: () => {
      failures += 1;
      throw new Error('a broken metrics counter');
    },
  });
  labelers.push(labeler);
  api.failNext(2, 503);
  labeler.setRole('leader');
  await waitFor('the leader label', () => labeler.appliedRole === 'leader');
  expect(failures).toBe(2);
  expect((api.pod(namespace, podName)!.metadata.labels as Record<string, string>)[ROLE_LABEL]).toBe('leader');
});
