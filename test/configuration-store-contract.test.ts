/**
 * Proves that every configuration store backend keeps the contract of
 * src/configuration/configuration-store.ts, by running ONE suite (`contract` below) against each:
 * - memory (MemoryConfigurationStore, the simulation's store);
 * - etcd: a REAL single-member etcd 3.4 process (test/support/etcd-process.ts), several clients over gRPC;
 *   an outage is etcd frozen with SIGSTOP and thawed with SIGCONT; plus a TLS etcd that demands a client
 *   certificate;
 * - Kubernetes: KubernetesLeaseStore through the real @kubernetes/client-node over HTTPS against the
 *   stand-in API server of test/support/fake-kubernetes-api.ts; an outage is the stand-in holding every
 *   request unanswered.
 * Checked: an absent record reads as null; create-if-absent succeeds once and a second create loses with
 * the current record; a swap against the current version succeeds with a new version; a swap against a
 * replaced version loses with the current record; of N concurrent swaps on one version (N separate
 * clients) exactly one wins and every loser is told the winner's record; invalid records are refused both
 * when written and when read back; an unreachable store rejects within the timeout and works again after.
 *
 * What the Kubernetes part does NOT prove: the stand-in serialises all requests on one event loop and
 * checks resourceVersion itself, so it shows that our adapter sends the right PUT/POST and reads 409
 * correctly, not that a real API server (and the etcd behind it) is linearizable; nor RBAC (the Role the
 * chart must grant: get/create/update on leases, patch on pods), admission, defaulting, watch caches, or
 * the exact Status bodies of a real server. Those need a real cluster (NOTEBOOK.md §12).
 */
import { createServer, type AddressInfo } from 'node:net';
import { Etcd3 } from 'etcd3';
import type { ClusterRecord } from '../src/core/replication/cluster-record.js';
import type { ConfigurationStore, VersionedRecord } from '../src/configuration/configuration-store.js';
import { ConfigurationStoreError } from '../src/configuration/configuration-store-error.js';
import { EtcdConfigurationStore, etcdRecordKey } from '../src/configuration/etcd-configuration-store.js';
import { MemoryConfigurationStore } from '../src/configuration/memory-configuration-store.js';
import { openConfigurationStore } from '../src/configuration/open-configuration-store.js';
import { createKubernetesClient } from '../src/kube/kubernetes-client.js';
import { KubernetesLeaseStore, RECORD_ANNOTATION, defaultLeaseName } from '../src/kube/kubernetes-lease-store.js';
import { startEtcd, type EtcdProcess } from './support/etcd-process.js';
import { startFakeKubernetesApi, type FakeKubernetesApi } from './support/fake-kubernetes-api.js';

/** What the contract suite needs from a backend. */
interface Backend {
  /** A store for `clusterName`; every store of one name shares one record (for etcd and Kubernetes, each is its own client). */
  open(clusterName: string, timeoutMs?: number): ConfigurationStore;
  /** Puts raw text where the record of `clusterName` lives, bypassing the adapter (absent for memory, which stores objects). */
  writeRaw?(clusterName: string, text: string): Promise<void>;
  /** Makes the store unreachable for every client, and back. */
  beginOutage(): void | Promise<void>;
  endOutage(): void;
}

const OUTAGE_TIMEOUT_MS = 400;
/** Room for a loaded CI machine between the timeout firing and the test seeing the rejection. */
const SCHEDULING_SLACK_MS = 1500;
let clusterCounter = 0;

function freshClusterName(): string {
  clusterCounter += 1;
  return `contract-${process.pid}-${clusterCounter}`;
}

function record(epoch: number, leader: number, inSync: number[] = [0, 1, 2], clusterId = 'cluster-a'): ClusterRecord {
  return {
    epoch,
    leader,
    members: [0, 1, 2].map((ordinal) => ({ ordinal, address: `chat-${ordinal}.chat-peers:50052` })),
    inSync,
    removed: [],
    clusterId,
  };
}

async function eventually<T>(what: string, attempt: () => Promise<T>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      return await attempt();
    } catch (error) {
      lastError = error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  throw new Error(`${what} did not succeed within ${timeoutMs} ms: ${String(lastError)}`);
}

async function expectStoreError(promise: Promise<unknown>, codes: string[]): Promise<ConfigurationStoreError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(ConfigurationStoreError);
  expect(codes).toContain((error as ConfigurationStoreError).code);
  return error as ConfigurationStoreError;
}

/** The contract, run once per backend. */
function contract(backend: () => Backend, capabilities: { readonly storesText: boolean }): void {
  const opened: ConfigurationStore[] = [];
  const open = (clusterName: string, timeoutMs?: number): ConfigurationStore => {
    const store = backend().open(clusterName, timeoutMs);
    opened.push(store);
    return store;
  };
  afterAll(async () => {
    await Promise.all(opened.map((store) => store.close()));
  });

  test('a record never written reads as null', async () => {
    expect(await open(freshClusterName()).read()).toBeNull();
  });

  test('create-if-absent succeeds once; a second create loses and is told the current record', async () => {
    const clusterName = freshClusterName();
    const first = open(clusterName);
    const second = open(clusterName);
    const created = await first.compareAndSwap(null, record(1, 0));
    expect(created.swapped).toBe(true);
    expect(created.current?.record).toEqual(record(1, 0));
    const again = await second.compareAndSwap(null, record(1, 1, [1]));
    expect(again.swapped).toBe(false);
    expect(again.current).toEqual(created.current);
    expect(await second.read()).toEqual(created.current);
  });

  test('a swap against the current version succeeds and returns a new version, which reads back', async () => {
    const clusterName = freshClusterName();
    const store = open(clusterName);
    const created = await store.compareAndSwap(null, record(1, 0));
    const swapped = await store.compareAndSwap(created.current!.version, record(2, 1, [1, 2]));
    expect(swapped.swapped).toBe(true);
    expect(swapped.current!.version).not.toBe(created.current!.version);
    expect(swapped.current!.record).toEqual(record(2, 1, [1, 2]));
    // Another client sees it too: the read is not served from this client's memory.
    expect(await open(clusterName).read()).toEqual(swapped.current);
  });

  test('a swap against a replaced version fails and returns the current record; versions are never reused', async () => {
    const clusterName = freshClusterName();
    const store = open(clusterName);
    const versions: string[] = [];
    let current = (await store.compareAndSwap(null, record(1, 0))).current!;
    versions.push(current.version);
    for (let epoch = 2; epoch <= 4; epoch += 1) {
      const outcome = await store.compareAndSwap(current.version, record(epoch, epoch % 3));
      expect(outcome.swapped).toBe(true);
      current = outcome.current!;
      versions.push(current.version);
    }
    expect(new Set(versions).size).toBe(versions.length);
    for (const stale of versions.slice(0, -1)) {
      const outcome = await open(clusterName).compareAndSwap(stale, record(99, 0));
      expect(outcome.swapped).toBe(false);
      expect(outcome.current).toEqual(current);
    }
    expect(await store.read()).toEqual(current);
  });

  test('of N concurrent creates and of N concurrent swaps on one version, exactly one succeeds', async () => {
    const clusterName = freshClusterName();
    const contenders = 8;
    const stores = Array.from({ length: contenders }, () => open(clusterName));

    const creates = await Promise.all(stores.map((store, index) => store.compareAndSwap(null, record(1, index % 3, [0, 1, 2], `cluster-${index}`))));
    const created = creates.filter((outcome) => outcome.swapped);
    expect(created).toHaveLength(1);
    for (const outcome of creates) expect(outcome.current).toEqual(created[0]!.current);

    const base = created[0]!.current!.version;
    const swaps = await Promise.all(stores.map((store, index) => store.compareAndSwap(base, record(2 + index, index % 3))));
    const winners = swaps.filter((outcome) => outcome.swapped);
    expect(winners).toHaveLength(1);
    const winner = winners[0]!.current!;
    // No one wrote after the winner, so every loser must have been told exactly the winner's record.
    for (const outcome of swaps) expect(outcome.current).toEqual(winner);
    expect(await stores[0]!.read()).toEqual(winner);
  });

  test('a record that breaks the rules is refused and not written', async () => {
    const clusterName = freshClusterName();
    const store = open(clusterName);
    const invalid: ClusterRecord[] = [
      { ...record(1, 0), inSync: [1, 2] }, // the leader is not in sync
      { ...record(1, 5) }, // the leader is not a member
      { ...record(0, 0) }, // epoch not positive
      { ...record(1, 0), epoch: '1' } as unknown as ClusterRecord,
      { ...record(1, 0), members: [{ ordinal: 0, address: '' }] },
      { ...record(1, 0), clusterId: '' },
    ];
    for (const bad of invalid) await expectStoreError(store.compareAndSwap(null, bad), ['INVALID_RECORD']);
    expect(await store.read()).toBeNull();
    const created = await store.compareAndSwap(null, record(1, 0));
    await expectStoreError(store.compareAndSwap(created.current!.version, { ...record(2, 0), removed: [1] }), ['INVALID_RECORD']);
    expect(await store.read()).toEqual(created.current);
  });

  // The memory store holds checked objects, never text: nothing can put an invalid value in it, so this
  // check exists only for the backends that store text.
  if (capabilities.storesText) test('a stored value that is not a valid record is refused when read, and never taken for an absent one', async () => {
    const writeRaw = backend().writeRaw!;
    const cases = ['{not json', '[]', JSON.stringify({ ...record(2, 1), inSync: [0] }), JSON.stringify({ ...record(2, 1), members: 'all' })];
    for (const text of cases) {
      const clusterName = freshClusterName();
      await writeRaw(clusterName, text);
      const store = open(clusterName);
      const error = await expectStoreError(store.read(), ['INVALID_RECORD']);
      expect(error.message).toContain(store.description);
      // Creating over it must not succeed as if nothing were there.
      await expectStoreError(store.compareAndSwap(null, record(1, 0)), ['INVALID_RECORD']);
    }
  });

  test('an unreachable store rejects within the timeout, and works again once it is back', async () => {
    const clusterName = freshClusterName();
    const store = open(clusterName, OUTAGE_TIMEOUT_MS);
    const before = (await store.compareAndSwap(null, record(1, 0))).current!;
    await backend().beginOutage();
    try {
      let startedMs = Date.now();
      await expectStoreError(store.read(), ['TIMEOUT', 'UNAVAILABLE']);
      expect(Date.now() - startedMs).toBeLessThan(OUTAGE_TIMEOUT_MS + SCHEDULING_SLACK_MS);
      startedMs = Date.now();
      await expectStoreError(store.compareAndSwap(before.version, record(2, 1)), ['TIMEOUT', 'UNAVAILABLE']);
      expect(Date.now() - startedMs).toBeLessThan(OUTAGE_TIMEOUT_MS + SCHEDULING_SLACK_MS);
    } finally {
      backend().endOutage();
    }
    // A rejected swap may or may not have taken effect (the contract): the store holds one of the two.
    const after = await eventually('a read after the outage', () => store.read());
    expect([record(1, 0), record(2, 1)]).toContainEqual(after!.record);
    const next = await store.compareAndSwap(after!.version, record(3, 2));
    expect(next.swapped).toBe(true);
    expect(await open(clusterName).read()).toEqual(next.current);
  });
}

describe('memory store', () => {
  const stores = new Map<string, MemoryConfigurationStore>();
  contract(() => ({
    open: (clusterName) => {
      // Stores of one cluster name share one instance: in memory, "another client" is the same object.
      let store = stores.get(clusterName);
      if (store === undefined) {
        store = new MemoryConfigurationStore({ description: `memory ${clusterName}` });
        stores.set(clusterName, store);
      }
      return store;
    },
    beginOutage: () => {
      for (const store of stores.values()) store.setReachable(false);
    },
    endOutage: () => {
      for (const store of stores.values()) store.setReachable(true);
    },
  }), { storesText: false });

  test('records it returns are deep-frozen copies of what was written', async () => {
    const store = new MemoryConfigurationStore();
    const written = { ...record(1, 0), inSync: [2, 0, 0] };
    const outcome = await store.compareAndSwap(null, written);
    written.inSync.push(1);
    const read = (await store.read())!;
    expect(read.record.inSync).toEqual([0, 2]);
    expect(Object.isFrozen(read.record.inSync)).toBe(true);
    expect(Object.isFrozen(read.record.members[0])).toBe(true);
    expect(outcome.current!.version).toBe('1');
    expect((await store.compareAndSwap('1', record(2, 1))).current!.version).toBe('2');
  });
});

describe('etcd store (a real etcd process)', () => {
  const prefix = '/replichat-contract/';
  let etcd: EtcdProcess;
  let raw: Etcd3;
  beforeAll(async () => {
    etcd = await startEtcd({ directoryPrefix: 'replichat-store-etcd-' });
    raw = new Etcd3({ hosts: [etcd.endpoint] });
  });
  afterAll(async () => {
    raw?.close();
    await etcd?.stop();
  });

  contract(() => ({
    open: (clusterName, timeoutMs) =>
      new EtcdConfigurationStore({ endpoints: [etcd.endpoint], prefix, clusterName, ...(timeoutMs === undefined ? {} : { timeoutMs }) }),
    writeRaw: async (clusterName, text) => {
      await raw.put(etcdRecordKey(prefix, clusterName)).value(text);
    },
    beginOutage: () => etcd.pause(),
    endOutage: () => etcd.resume(),
  }), { storesText: true });

  test('the record is JSON at <prefix><cluster>/configuration, versioned by its mod_revision', async () => {
    const clusterName = freshClusterName();
    const store = await openConfigurationStore({ kind: 'etcd', clusterName, etcd: { endpoints: [etcd.endpoint], prefix } });
    try {
      const outcome = await store.compareAndSwap(null, record(1, 2, [2, 0]));
      const stored = (await raw.get(`${prefix}${clusterName}/configuration`).exec()).kvs[0]!;
      expect(stored.mod_revision).toBe(outcome.current!.version);
      expect(JSON.parse(stored.value.toString('utf8'))).toEqual(record(1, 2, [0, 2]));
      expect(store.description).toContain(`${prefix}${clusterName}/configuration`);
    } finally {
      await store.close();
    }
  });

  test('a store pointed at nothing rejects within its timeout', async () => {
    // A port that was just bound and released: nobody listens there, so connections are refused.
    const port = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const address = server.address() as AddressInfo;
        server.close(() => resolve(address.port));
      });
    });
    const store = new EtcdConfigurationStore({ endpoints: [`http://127.0.0.1:${port}`], prefix, clusterName: 'nowhere', timeoutMs: OUTAGE_TIMEOUT_MS });
    try {
      const startedMs = Date.now();
      await expectStoreError(store.read(), ['TIMEOUT', 'UNAVAILABLE']);
      expect(Date.now() - startedMs).toBeLessThan(OUTAGE_TIMEOUT_MS + SCHEDULING_SLACK_MS);
    } finally {
      await store.close();
    }
  });
});

describe('etcd store over TLS with client certificates (a real etcd process)', () => {
  let etcd: EtcdProcess;
  beforeAll(async () => {
    etcd = await startEtcd({ directoryPrefix: 'replichat-store-etcd-tls-', tls: true });
  });
  afterAll(async () => {
    await etcd?.stop();
  });

  test('a store with the CA and a client certificate swaps and reads; one without the certificate is refused', async () => {
    const clusterName = freshClusterName();
    const tls = etcd.tls!;
    const store = await openConfigurationStore({ kind: 'etcd', clusterName, etcd: { endpoints: [etcd.endpoint], prefix: '/tls/', tls } });
    const anonymous = new EtcdConfigurationStore({
      endpoints: [etcd.endpoint],
      prefix: '/tls/',
      clusterName,
      timeoutMs: OUTAGE_TIMEOUT_MS,
      tls: { caFile: tls.caFile },
    });
    try {
      expect(etcd.endpoint.startsWith('https://')).toBe(true);
      const created = await store.compareAndSwap(null, record(1, 0));
      expect(created.swapped).toBe(true);
      expect(await store.read()).toEqual(created.current);
      await expectStoreError(anonymous.read(), ['UNAVAILABLE', 'TIMEOUT']);
    } finally {
      await Promise.all([store.close(), anonymous.close()]);
    }
  });
});

describe('Kubernetes Lease store (the stand-in API server)', () => {
  const namespace = 'replichat-contract';
  let api: FakeKubernetesApi;
  beforeAll(async () => {
    api = await startFakeKubernetesApi();
  });
  afterAll(async () => {
    await api?.close();
  });
  const client = () => createKubernetesClient({ server: { url: api.url, token: api.token, caPem: api.caPem }, namespace });

  contract(() => ({
    open: (clusterName, timeoutMs) =>
      new KubernetesLeaseStore({ client: client(), clusterName, ...(timeoutMs === undefined ? {} : { timeoutMs }) }),
    writeRaw: async (clusterName, text) => {
      api.putLeaseDirectly(namespace, defaultLeaseName(clusterName), { metadata: { annotations: { [RECORD_ANNOTATION]: text } }, spec: {} });
    },
    beginOutage: () => api.hang(),
    endOutage: () => api.release(),
  }), { storesText: true });

  test('the record is an annotation of the Lease, swapped by a PUT naming the resourceVersion', async () => {
    const clusterName = freshClusterName();
    const leaseName = 'custom-lease-name';
    const store = await openConfigurationStore({
      kind: 'kubernetes',
      clusterName,
      kubernetes: { leaseName, namespace, server: { url: api.url, token: api.token, caPem: api.caPem } },
    });
    try {
      const created = await store.compareAndSwap(null, record(1, 0));
      const swapped = await store.compareAndSwap(created.current!.version, record(2, 1, [1, 2]));
      const lease = api.lease(namespace, leaseName)!;
      expect(lease.metadata.resourceVersion).toBe(swapped.current!.version);
      expect(JSON.parse((lease.metadata.annotations as Record<string, string>)[RECORD_ANNOTATION]!)).toEqual(record(2, 1, [1, 2]));
      expect((lease.spec as { holderIdentity?: string }).holderIdentity).toBe('replica-1');
      const put = api.requests.filter((request) => request.method === 'PUT' && request.path.endsWith(`/leases/${leaseName}`));
      expect(put).toHaveLength(1);
      expect((put[0]!.body as { metadata: { resourceVersion?: string } }).metadata.resourceVersion).toBe(created.current!.version);
    } finally {
      await store.close();
    }
  });

  test('a Lease without our annotation is refused, not overwritten', async () => {
    const clusterName = freshClusterName();
    api.putLeaseDirectly(namespace, defaultLeaseName(clusterName), { metadata: {}, spec: { holderIdentity: 'someone-else' } });
    const store = new KubernetesLeaseStore({ client: client(), clusterName });
    await expectStoreError(store.read(), ['INVALID_RECORD']);
    await expectStoreError(store.compareAndSwap(null, record(1, 0)), ['INVALID_RECORD']);
    expect((api.lease(namespace, defaultLeaseName(clusterName))!.spec as { holderIdentity?: string }).holderIdentity).toBe('someone-else');
  });

  test('an API server error rejects as UNAVAILABLE; a wrong token is refused', async () => {
    const store = new KubernetesLeaseStore({ client: client(), clusterName: freshClusterName() });
    api.failNext(1, 500);
    const error = await expectStoreError(store.read(), ['UNAVAILABLE']);
    expect(error.message).toContain('HTTP 500');
    expect(await store.read()).toBeNull();
    const intruder = new KubernetesLeaseStore({
      client: createKubernetesClient({ server: { url: api.url, token: 'wrong', caPem: api.caPem }, namespace }),
      clusterName: freshClusterName(),
    });
    expect((await expectStoreError(intruder.read(), ['UNAVAILABLE'])).message).toContain('HTTP 401');
  });
});
