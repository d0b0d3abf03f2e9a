/**
 * The configuration store in memory: for the deterministic simulation and for unit tests. It keeps the
 * whole contract of src/configuration/configuration-store.ts (it runs the same contract tests as etcd and
 * the Kubernetes Lease), with versions that are increasing integers written as strings. Records are
 * normalised, deep-frozen copies, so a caller can never change what the store holds by mutating what it
 * passed in or got back.
 */
import type { ClusterRecord } from '../core/replication/cluster-record.js';
import type { CompareAndSwapOutcome, ConfigurationStore, VersionedRecord } from './configuration-store.js';
import { ConfigurationStoreError } from './configuration-store-error.js';
import { checkedRecord } from './record-codec.js';

export interface MemoryConfigurationStoreOptions {
  /** Shown in logs and status; defaults to "memory". */
  readonly description?: string;
}

/** One record, one counter; every call settles in a microtask. */
export class MemoryConfigurationStore implements ConfigurationStore {
  readonly description: string;
  private current: VersionedRecord | null = null;
  private lastVersion = 0;
  private reachable = true;
  private closed = false;

  constructor(options: MemoryConfigurationStoreOptions = {}) {
    this.description = options.description ?? 'memory';
  }

  async read(): Promise<VersionedRecord | null> {
    this.checkCallable();
    return this.current;
  }

  async compareAndSwap(expectedVersion: string | null, record: ClusterRecord): Promise<CompareAndSwapOutcome> {
    this.checkCallable();
    const checked = checkedRecord(record, this.description);
    const holds = this.current === null ? null : this.current.version;
    if (holds !== expectedVersion) return { swapped: false, current: this.current };
    this.lastVersion += 1;
    this.current = Object.freeze({ record: checked, version: String(this.lastVersion) });
    return { swapped: true, current: this.current };
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /**
   * What the store holds now, without a promise: for a simulation's invariant checks between steps.
   * Works even while the store is unreachable or closed, because the checker is not a replica.
   */
  peek(): VersionedRecord | null {
    return this.current;
  }

  /**
   * While unreachable, every call rejects with UNAVAILABLE (at once: the simulation decides with its own
   * clock when a caller would have given up), so tests can show that callers survive a store outage.
   */
  setReachable(reachable: boolean): void {
    this.reachable = reachable;
  }

  private checkCallable(): void {
    if (this.closed) throw new ConfigurationStoreError('CLOSED', `${this.description} is closed`);
    if (!this.reachable) throw new ConfigurationStoreError('UNAVAILABLE', `${this.description} is unreachable`);
  }
}
