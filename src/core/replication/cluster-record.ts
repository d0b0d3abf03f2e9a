/**
 * The record the configuration store holds: the epoch and its leader, the members and the in-sync set.
 * It changes only by a compare-and-swap (src/configuration/configuration-store.ts), which is what makes a
 * takeover and a leader's change of the in-sync set impossible to both succeed. Pure data and pure checks.
 */
import type { Member } from './types.js';

export interface ClusterRecord {
  /** Increases by one at every change of leader; the store gives every epoch exactly one leader. */
  readonly epoch: number;
  /** The ordinal that leads `epoch`. */
  readonly leader: number;
  /** Every replica of the cluster, with its peer address. */
  readonly members: readonly Member[];
  /**
   * The in-sync set: each of them holds every acknowledged write durably. Only they may be named leader.
   * The leader is always one of them.
   */
  readonly inSync: readonly number[];
  /** Ordinals an operator removed: they wait to be wiped before they may join again. */
  readonly removed: readonly number[];
  /**
   * A random identifier made when the cluster was first created; it becomes the cluster id of the log's
   * initialize entry, so that logs and the record can be matched by eye. Replicas do not check it yet:
   * --cluster-name and the peer certificates keep clusters apart.
   */
  readonly clusterId: string;
}

/** Sorted and de-duplicated, so that equal records serialise equally. */
export function normalizeRecord(record: ClusterRecord): ClusterRecord {
  return {
    epoch: record.epoch,
    leader: record.leader,
    members: [...record.members].sort((a, b) => a.ordinal - b.ordinal),
    inSync: [...new Set(record.inSync)].sort((a, b) => a - b),
    removed: [...new Set(record.removed)].sort((a, b) => a - b),
    clusterId: record.clusterId,
  };
}

/** Why a record breaks the structural rules, or undefined when it keeps them. */
export function recordProblem(record: ClusterRecord): string | undefined {
  const ordinals = new Set(record.members.map((member) => member.ordinal));
  if (!Number.isSafeInteger(record.epoch) || record.epoch < 1) return `epoch ${record.epoch} is not a positive integer`;
  if (ordinals.size !== record.members.length) return 'a member is listed twice';
  if (!ordinals.has(record.leader)) return `leader ${record.leader} is not a member`;
  if (!record.inSync.includes(record.leader)) return `leader ${record.leader} is not in the in-sync set`;
  for (const ordinal of record.inSync) if (!ordinals.has(ordinal)) return `in-sync replica ${ordinal} is not a member`;
  for (const ordinal of record.removed) if (ordinals.has(ordinal)) return `removed replica ${ordinal} is still a member`;
  return undefined;
}
