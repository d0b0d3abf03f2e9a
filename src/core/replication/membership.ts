/**
 * Changes to the configuration record, as pure functions. Each one is proposed by the leader as a
 * compare-and-swap on the configuration store (one at a time), and takes effect only once the store
 * accepted it. The rules that make each safe are in NOTEBOOK.md §8.
 */
import { type ClusterRecord, normalizeRecord } from './cluster-record.js';
import type { Member } from './types.js';

/** The record with `ordinals` out of the in-sync set (they stay members). Removing is always safe. */
export function withoutInSync(record: ClusterRecord, ordinals: readonly number[]): ClusterRecord {
  return normalizeRecord({ ...record, inSync: record.inSync.filter((ordinal) => !ordinals.includes(ordinal)) });
}

/**
 * The record with `ordinal` back in the in-sync set. Safe only if the leader counted it for commits before
 * asking, while it held every committed entry (see ReplicaCore.maybeReadmit).
 */
export function withInSync(record: ClusterRecord, ordinal: number): ClusterRecord {
  return normalizeRecord({ ...record, inSync: [...record.inSync, ordinal] });
}

/** The record with a new member, not in sync: it catches up first. */
export function withMember(record: ClusterRecord, member: Member): ClusterRecord {
  return normalizeRecord({
    ...record,
    members: [...record.members.filter((existing) => existing.ordinal !== member.ordinal), member],
    removed: record.removed.filter((ordinal) => ordinal !== member.ordinal),
  });
}

/** The record after an operator removed `ordinal`: it is recorded, so the replica knows why it is out. */
export function withoutMember(record: ClusterRecord, ordinal: number): ClusterRecord {
  return normalizeRecord({
    ...record,
    members: record.members.filter((member) => member.ordinal !== ordinal),
    inSync: record.inSync.filter((member) => member !== ordinal),
    removed: [...record.removed, ordinal],
  });
}

/**
 * The record naming `leader` for the next epoch, with the in-sync set cut down to `keepInSync` (always
 * including the new leader). Dropping members from the in-sync set never loses an acknowledged write: each
 * remaining member, the new leader included, already holds them all.
 */
export function takeoverRecord(record: ClusterRecord, leader: number, keepInSync: readonly number[]): ClusterRecord {
  return normalizeRecord({
    ...record,
    epoch: record.epoch + 1,
    leader,
    inSync: record.inSync.filter((ordinal) => ordinal === leader || keepInSync.includes(ordinal)),
  });
}

export function isMember(record: ClusterRecord, ordinal: number): boolean {
  return record.members.some((member) => member.ordinal === ordinal);
}
