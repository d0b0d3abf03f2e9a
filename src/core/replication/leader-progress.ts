/**
 * What a leader knows about each follower, and the commit rule. Pure data and pure functions.
 */

export interface FollowerProgress {
  matchIndex: number;
  nextIndex: number;
  inflightAppends: number;
  lastSentMs: number;
  /** Leader clock when an ok reply last arrived. */
  lastOkReplyMs: number;
  /** Leader clock when this follower was last caught up (within the pipeline window of the leader's end). */
  lastCaughtUpMs: number;
  /**
   * The newest `sentAtMs` (leader clock) of an append this follower accepted in this epoch. A read that
   * arrived before every in-sync follower accepted a later append is linearizable (ReplicaCore.readConfirmedAtMs).
   */
  lastAcceptedSentAtMs: number;
  /** Leader clock when the newest answer from this follower arrived. */
  lastAnsweredReceivedMs: number;
  lastProgressMs: number;
  lastDigestRequestMs: number;
  /** The newest index at which this follower's log-chain digest was verified equal to the leader's. */
  verifiedDigestIndex: number;
  /** Leader clock when that verification arrived: only a fresh one starts a re-admission. */
  verifiedDigestAtMs: number;
  snapshotRequestedAtMs: number | null;
  /** The follower run that last replied; see AppendReplyMessage.incarnation. */
  incarnation: number;
  /** The follower's database; see AppendReplyMessage.storageId. Null until it first replies. */
  storageId: string | null;
  /** Databases of this follower that were replaced (lost disks): their delayed replies are ignored. */
  readonly retiredStorageIds: Set<string>;
  /** The follower asked to leave the in-sync set (a graceful stop). */
  leaving: boolean;
}

export function newProgress(nowMs: number, lastIndex: number): FollowerProgress {
  return {
    matchIndex: 0,
    nextIndex: lastIndex + 1,
    inflightAppends: 0,
    lastSentMs: Number.NEGATIVE_INFINITY,
    lastOkReplyMs: Number.NEGATIVE_INFINITY,
    lastCaughtUpMs: nowMs,
    lastAcceptedSentAtMs: Number.NEGATIVE_INFINITY,
    lastAnsweredReceivedMs: nowMs,
    lastProgressMs: nowMs,
    lastDigestRequestMs: Number.NEGATIVE_INFINITY,
    verifiedDigestIndex: 0,
    verifiedDigestAtMs: Number.NEGATIVE_INFINITY,
    snapshotRequestedAtMs: null,
    incarnation: 0,
    storageId: null,
    retiredStorageIds: new Set(),
    leaving: false,
  };
}

/**
 * The highest index every member of `quorum` holds (the leader holds its whole log). It never moves below
 * `epochStartIndex`: a new leader commits nothing until its first entry is held by all, so that every
 * member of the quorum has adopted its epoch.
 */
export function commitIndexFor(
  leaderOrdinal: number,
  leaderLastIndex: number,
  quorum: Iterable<number>,
  progress: ReadonlyMap<number, FollowerProgress>,
  epochStartIndex: number,
  previousCommitIndex: number,
): number {
  let held = leaderLastIndex;
  for (const ordinal of quorum) {
    if (ordinal === leaderOrdinal) continue;
    held = Math.min(held, progress.get(ordinal)?.matchIndex ?? 0);
  }
  if (held < epochStartIndex) return previousCommitIndex;
  return Math.max(previousCommitIndex, held);
}
