/**
 * The configuration store: the cluster's single point of serialisation for who leads and who is in sync
 * (PacificA's configuration manager, Kafka's controller, Patroni's DCS key). Its whole interface is a read
 * and a compare-and-swap against a version, so that every backend (an etcd transaction on mod_revision, a
 * Kubernetes Lease swapped on resourceVersion, the simulation's in-memory map) is a thin adapter that
 * passes the same contract tests. It holds configuration only, never messages.
 */
import type { ClusterRecord } from '../core/replication/cluster-record.js';

/** A record as stored, with the opaque version a compare-and-swap must name. */
export interface VersionedRecord {
  readonly record: ClusterRecord;
  /** Opaque to callers: etcd's mod_revision, a Kubernetes resourceVersion, a counter in memory. */
  readonly version: string;
}

/** The outcome of a compare-and-swap. A lost race carries what the store holds now (null: nothing). */
export type CompareAndSwapOutcome =
  | { readonly swapped: true; readonly current: VersionedRecord }
  | { readonly swapped: false; readonly current: VersionedRecord | null };

/**
 * The contract, checked by test/configuration-store-contract.test.ts against every backend:
 * - `read` returns the newest record (linearizable: never older than a swap that already returned), or null
 *   when none was ever written.
 * - `compareAndSwap(null, r)` creates the record only if none exists; `compareAndSwap(v, r)` replaces it
 *   only if its version is still `v`. Exactly one of any number of concurrent swaps against one version
 *   succeeds. A successful swap returns the new version; a failed one the current record.
 * - Either call may reject (store unreachable, timeout). A rejected swap may or may not have taken effect:
 *   callers find out by reading.
 * - Versions are never reused, so a swap naming a version that has been replaced can never succeed later.
 */
export interface ConfigurationStore {
  read(): Promise<VersionedRecord | null>;
  compareAndSwap(expectedVersion: string | null, record: ClusterRecord): Promise<CompareAndSwapOutcome>;
  /** Releases connections; pending calls may reject. */
  close(): Promise<void>;
  /** For logs and status: which backend and where, with no credentials. */
  readonly description: string;
}
