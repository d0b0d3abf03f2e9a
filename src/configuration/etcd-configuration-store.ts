/**
 * The configuration store on etcd v3 (npm `etcd3`). The record is normalised JSON at one key,
 * `<prefix><clusterName>/configuration`; its version is the key's mod_revision as a decimal string, which
 * etcd never reuses. A compare-and-swap is one transaction: "if mod_revision == expected (or, to create,
 * create_revision == 0, i.e. the key is absent) then put, else get", so a lost race returns what won in the
 * same round trip, read at the same revision the comparison saw. Reads are etcd's default linearizable
 * reads (a quorum read through the leader), never serializable ones, so a read is never older than a swap
 * that already returned.
 *
 * Every call has a deadline (gRPC deadline plus an outer timer) and rejects when it passes. The client's
 * own retries and circuit breaker are turned off: a retry inside a call would blur the timeout, and an open
 * breaker would refuse calls for seconds after etcd is back. The caller (the replica's driver) already asks
 * again on its own schedule.
 */
import { readFileSync } from 'node:fs';
import { noop } from 'cockatiel';
import { Etcd3, type IKeyValue } from 'etcd3';
import type { ClusterRecord } from '../core/replication/cluster-record.js';
import type { CompareAndSwapOutcome, ConfigurationStore, VersionedRecord } from './configuration-store.js';
import { ConfigurationStoreError, withTimeout } from './configuration-store-error.js';
import { checkedRecord, decodeRecord } from './record-codec.js';

/** How long a call may take before it rejects, unless the options say otherwise. */
export const DEFAULT_ETCD_TIMEOUT_MS = 2000;

export interface EtcdTlsFiles {
  /** The CA that signed etcd's server certificate. */
  readonly caFile: string;
  /** A client certificate and its key, when etcd asks for one (--client-cert-auth). */
  readonly certFile?: string;
  readonly keyFile?: string;
}

export interface EtcdConfigurationStoreOptions {
  /** Client URLs of the etcd members, e.g. `http://127.0.0.1:2379` (https:// with `tls`). */
  readonly endpoints: readonly string[];
  /** Prepended to every key, e.g. `/replichat/`. */
  readonly prefix: string;
  readonly clusterName: string;
  readonly timeoutMs?: number;
  readonly tls?: EtcdTlsFiles;
}

/** The key that holds a cluster's record. */
export function etcdRecordKey(prefix: string, clusterName: string): string {
  return `${prefix}${clusterName}/configuration`;
}

export class EtcdConfigurationStore implements ConfigurationStore {
  readonly description: string;
  readonly key: string;
  private readonly timeoutMs: number;
  private readonly client: Etcd3;
  private closed = false;

  constructor(options: EtcdConfigurationStoreOptions) {
    if (options.endpoints.length === 0) throw new Error('the etcd store needs at least one endpoint');
    if (options.clusterName === '' || options.clusterName.includes('/')) {
      throw new Error(`cluster name ${JSON.stringify(options.clusterName)} must be non-empty and contain no "/"`);
    }
    this.timeoutMs = options.timeoutMs ?? DEFAULT_ETCD_TIMEOUT_MS;
    if (!Number.isSafeInteger(this.timeoutMs) || this.timeoutMs <= 0) {
      throw new Error(`etcd timeout ${this.timeoutMs} ms is not a positive integer`);
    }
    this.key = etcdRecordKey(options.prefix, options.clusterName);
    // Endpoints may carry credentials in the URL in theory; the description shows only their origins.
    const origins = options.endpoints.map((endpoint) => safeOrigin(endpoint)).join(',');
    this.description = `etcd ${origins} key ${this.key}`;
    const credentials =
      options.tls === undefined
        ? undefined
        : {
            rootCertificate: readFileSync(options.tls.caFile),
            ...(options.tls.certFile === undefined ? {} : { certChain: readFileSync(options.tls.certFile) }),
            ...(options.tls.keyFile === undefined ? {} : { privateKey: readFileSync(options.tls.keyFile) }),
          };
    this.client = new Etcd3({
      hosts: [...options.endpoints],
      dialTimeout: this.timeoutMs,
      ...(credentials === undefined ? {} : { credentials }),
      defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + this.timeoutMs }),
      faultHandling: { host: () => noop, global: noop },
    });
  }

  read(): Promise<VersionedRecord | null> {
    return this.call('read', async () => {
      const response = await this.client.get(this.key).exec();
      return this.versioned(response.kvs[0]);
    });
  }

  compareAndSwap(expectedVersion: string | null, record: ClusterRecord): Promise<CompareAndSwapOutcome> {
    if (expectedVersion !== null && !/^[1-9][0-9]*$/.test(expectedVersion)) {
      // A programmer error (a version from another backend), not an outage: not wrapped as one.
      return Promise.reject(new Error(`${JSON.stringify(expectedVersion)} is not an etcd version (a mod_revision)`));
    }
    return this.call('compare-and-swap', async () => {
      const checked = checkedRecord(record, `record for ${this.description}`);
      const transaction =
        expectedVersion === null
          ? this.client.if(this.key, 'Create', '==', 0)
          : this.client.if(this.key, 'Mod', '==', expectedVersion);
      const response = await transaction
        .then(this.client.put(this.key).value(JSON.stringify(checked)))
        .else(this.client.get(this.key))
        .commit();
      if (response.succeeded) {
        // The transaction wrote exactly one key, so the store's revision after it is that key's mod_revision.
        return { swapped: true, current: Object.freeze({ record: checked, version: response.header.revision }) };
      }
      return { swapped: false, current: this.versioned(response.responses[0]?.response_range?.kvs[0]) };
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }

  private versioned(keyValue: IKeyValue | undefined): VersionedRecord | null {
    if (keyValue === undefined) return null;
    const record = decodeRecord(keyValue.value.toString('utf8'), `${this.description} (mod_revision ${keyValue.mod_revision})`);
    return Object.freeze({ record, version: keyValue.mod_revision });
  }

  /** Runs one call under the timeout, and turns the client's errors into ConfigurationStoreErrors. */
  private async call<T>(what: string, body: () => Promise<T>): Promise<T> {
    if (this.closed) throw new ConfigurationStoreError('CLOSED', `${this.description} is closed`);
    try {
      return await withTimeout(body(), this.timeoutMs, `${what} on ${this.description}`);
    } catch (error) {
      if (error instanceof ConfigurationStoreError) throw error;
      const message = error instanceof Error ? error.message : String(error);
      const code = /deadline/i.test(message) ? 'TIMEOUT' : 'UNAVAILABLE';
      throw new ConfigurationStoreError(code, `${what} on ${this.description} failed: ${message}`, { cause: error });
    }
  }
}

function safeOrigin(endpoint: string): string {
  try {
    return new URL(endpoint).origin;
  } catch {
    throw new Error(`etcd endpoint ${JSON.stringify(endpoint)} is not a URL`);
  }
}
