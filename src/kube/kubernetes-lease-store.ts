/**
 * The configuration store on Kubernetes: one `coordination.k8s.io/v1` Lease (default name
 * `<clusterName>-configuration`) in the pod's namespace. The record is normalised JSON in the Lease's
 * annotation `replichat.io/configuration`; spec.holderIdentity is set to `replica-<leader>` only so that
 * `kubectl get lease` shows who leads (nothing reads it back). The version is metadata.resourceVersion,
 * which the API server takes from etcd's revision and never reuses.
 *
 * A compare-and-swap is a replace (PUT) that carries metadata.resourceVersion = expected: the API server
 * refuses it with 409 Conflict when the Lease changed since, and then we read and return what is there.
 * Creation is a create (POST): 409 AlreadyExists means another replica created it first. replichat owns
 * the whole Lease: a replace writes every field we use and drops any other an operator added by hand.
 *
 * Reads are plain GETs without resourceVersion, which the API server serves from etcd with a quorum read
 * (not from its watch cache), so a read is never older than a swap that already returned.
 * Every call has a deadline (the HTTP request is aborted, and an outer timer answers the caller).
 */
import type { V1Lease } from '@kubernetes/client-node';
import type { ClusterRecord } from '../core/replication/cluster-record.js';
import type { CompareAndSwapOutcome, ConfigurationStore, VersionedRecord } from '../configuration/configuration-store.js';
import { ConfigurationStoreError, withTimeout } from '../configuration/configuration-store-error.js';
import { checkedRecord, decodeRecord } from '../configuration/record-codec.js';
import { httpStatusOf, requestOptions, type KubernetesClient } from './kubernetes-client.js';

/** The annotation that holds the record's JSON. */
export const RECORD_ANNOTATION = 'replichat.io/configuration';
export const DEFAULT_KUBERNETES_TIMEOUT_MS = 2000;

export interface KubernetesLeaseStoreOptions {
  readonly client: KubernetesClient;
  readonly clusterName: string;
  /** Default `<clusterName>-configuration`. */
  readonly leaseName?: string;
  readonly timeoutMs?: number;
}

export function defaultLeaseName(clusterName: string): string {
  return `${clusterName}-configuration`;
}

export class KubernetesLeaseStore implements ConfigurationStore {
  readonly description: string;
  readonly leaseName: string;
  readonly namespace: string;
  private readonly client: KubernetesClient;
  private readonly clusterName: string;
  private readonly timeoutMs: number;
  private closed = false;

  constructor(options: KubernetesLeaseStoreOptions) {
    this.client = options.client;
    this.clusterName = options.clusterName;
    this.leaseName = options.leaseName ?? defaultLeaseName(options.clusterName);
    this.namespace = options.client.namespace;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_KUBERNETES_TIMEOUT_MS;
    if (!Number.isSafeInteger(this.timeoutMs) || this.timeoutMs <= 0) {
      throw new Error(`Kubernetes timeout ${this.timeoutMs} ms is not a positive integer`);
    }
    // DNS-1123 subdomain, as the API server demands of object names; checked here to fail at start.
    if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(this.leaseName)) {
      throw new Error(`Lease name ${JSON.stringify(this.leaseName)} is not a valid Kubernetes object name`);
    }
    this.description = `kubernetes ${options.client.serverUrl} lease ${this.namespace}/${this.leaseName}`;
  }

  read(): Promise<VersionedRecord | null> {
    return this.call('read', () => this.readLease());
  }

  compareAndSwap(expectedVersion: string | null, record: ClusterRecord): Promise<CompareAndSwapOutcome> {
    return this.call('compare-and-swap', async () => {
      const checked = checkedRecord(record, `record for ${this.description}`);
      const body = this.leaseFor(checked, expectedVersion);
      const options = requestOptions(this.timeoutMs);
      try {
        const written =
          expectedVersion === null
            ? await this.client.coordination.createNamespacedLease({ namespace: this.namespace, body }, options)
            : await this.client.coordination.replaceNamespacedLease(
                { name: this.leaseName, namespace: this.namespace, body },
                options,
              );
        const version = written.metadata?.resourceVersion;
        if (version === undefined || version === '') {
          throw new ConfigurationStoreError('UNAVAILABLE', `${this.description}: the API server returned no resourceVersion`);
        }
        return { swapped: true, current: Object.freeze({ record: checked, version }) };
      } catch (error) {
        // 409: Conflict (stale resourceVersion) or AlreadyExists; 404: replaced a Lease that was deleted.
        const status = httpStatusOf(error);
        if (status === 409 || (status === 404 && expectedVersion !== null)) {
          return { swapped: false, current: await this.readLease() };
        }
        throw error;
      }
    });
  }

  async close(): Promise<void> {
    // Requests open no lasting connections (the client makes an agent per request); nothing to release.
    this.closed = true;
  }

  private async readLease(): Promise<VersionedRecord | null> {
    let lease: V1Lease;
    try {
      lease = await this.client.coordination.readNamespacedLease(
        { name: this.leaseName, namespace: this.namespace },
        requestOptions(this.timeoutMs),
      );
    } catch (error) {
      if (httpStatusOf(error) === 404) return null;
      throw error;
    }
    const version = lease.metadata?.resourceVersion;
    const text = lease.metadata?.annotations?.[RECORD_ANNOTATION];
    if (version === undefined || version === '') {
      throw new ConfigurationStoreError('UNAVAILABLE', `${this.description}: the Lease has no resourceVersion`);
    }
    if (text === undefined) {
      // Somebody else's Lease by that name, or one edited by hand: never guess, never overwrite it.
      throw new ConfigurationStoreError(
        'INVALID_RECORD',
        `${this.description} exists but has no ${RECORD_ANNOTATION} annotation; delete it or choose another --kubernetes-lease-name`,
      );
    }
    return Object.freeze({ record: decodeRecord(text, `${this.description} (resourceVersion ${version})`), version });
  }

  private leaseFor(record: ClusterRecord, expectedVersion: string | null): V1Lease {
    return {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name: this.leaseName,
        namespace: this.namespace,
        ...(expectedVersion === null ? {} : { resourceVersion: expectedVersion }),
        labels: { 'app.kubernetes.io/managed-by': 'replichat', 'replichat.io/cluster': this.clusterName },
        annotations: { [RECORD_ANNOTATION]: JSON.stringify(record) },
      },
      spec: { holderIdentity: `replica-${record.leader}` },
    };
  }

  /** Runs one call under the timeout, and turns the client's errors into ConfigurationStoreErrors. */
  private async call<T>(what: string, body: () => Promise<T>): Promise<T> {
    if (this.closed) throw new ConfigurationStoreError('CLOSED', `${this.description} is closed`);
    try {
      return await withTimeout(body(), this.timeoutMs, `${what} on ${this.description}`);
    } catch (error) {
      if (error instanceof ConfigurationStoreError) throw error;
      const status = httpStatusOf(error);
      const isAbort = error instanceof Error && error.name === 'AbortError';
      const detail = status === undefined ? (error instanceof Error ? error.message : String(error)) : `HTTP ${status}${reasonOf(error)}`;
      throw new ConfigurationStoreError(isAbort ? 'TIMEOUT' : 'UNAVAILABLE', `${what} on ${this.description} failed: ${detail}`, {
        cause: error,
      });
    }
  }
}

/** The `reason` and `message` of a Kubernetes Status body, for the error message. */
function reasonOf(error: unknown): string {
  const body = (error as { body?: unknown }).body;
  let status: unknown = body;
  if (typeof body === 'string') {
    try {
      status = JSON.parse(body);
    } catch {
      return '';
    }
  }
  if (typeof status !== 'object' || status === null) return '';
  const { reason, message } = status as { reason?: unknown; message?: unknown };
  return `${typeof reason === 'string' ? ` ${reason}` : ''}${typeof message === 'string' ? `: ${message}` : ''}`;
}
