/**
 * Which replica should try to take over when the leader went silent: a pure choice among the statuses a
 * replica gathered. It only decides who *tries first*; the configuration store decides who wins, so a
 * wrong choice here costs time, never safety.
 */
import type { ClusterRecord } from './cluster-record.js';
import { compareLogPositions } from './types.js';

export interface CandidateStatus {
  readonly ordinal: number;
  readonly lastIndex: number;
  readonly lastEpoch: number;
  /** The leader this replica still follows, if any. */
  readonly leaderOrdinal: number | null;
  readonly epoch: number;
}

export type TakeoverChoice =
  | { readonly kind: 'try'; readonly keepInSync: readonly number[] }
  | { readonly kind: 'wait'; readonly reason: string };

/**
 * `self` is this replica's own status; `others` the fresh answers to its status questions.
 * `patient` is true once this replica has waited long enough for a better candidate to act.
 */
export function chooseTakeover(
  record: ClusterRecord,
  self: CandidateStatus,
  others: readonly CandidateStatus[],
  patient: boolean,
): TakeoverChoice {
  if (!record.inSync.includes(self.ordinal)) {
    return {
      kind: 'wait',
      reason:
        `replica ${self.ordinal} is not in the in-sync set {${record.inSync.join(', ')}}, so it may lack ` +
        'acknowledged writes: waiting for one of those to lead',
    };
  }
  // A replica that still hears the recorded leader means the leader is alive and only this replica lost
  // it (a one-way or partial partition): taking over would only disrupt. The leader drops this replica
  // from the in-sync set if it stays unreachable.
  // The same goes for the recorded leader answering that it still leads.
  const stillFollowing = others.find((status) => status.leaderOrdinal === record.leader && status.epoch >= record.epoch);
  if (stillFollowing !== undefined) {
    return {
      kind: 'wait',
      reason:
        stillFollowing.ordinal === record.leader
          ? `leader ${record.leader} still answers that it leads epoch ${record.epoch}`
          : `replica ${stillFollowing.ordinal} still follows leader ${record.leader}`,
    };
  }
  const eligible = [self, ...others].filter(
    (status) => record.inSync.includes(status.ordinal) && status.ordinal !== record.leader,
  );
  let best = self;
  for (const candidate of eligible) {
    const order = compareLogPositions(candidate, best);
    if (order > 0 || (order === 0 && candidate.ordinal < best.ordinal)) best = candidate;
  }
  if (best.ordinal !== self.ordinal && !patient) {
    return { kind: 'wait', reason: `waiting for replica ${best.ordinal}, the most up-to-date, to take over` };
  }
  // Keep in the in-sync set those that answered (they are alive and will catch up at once); drop the
  // silent ones, the deposed leader among them, so that the new epoch can commit without them.
  const keepInSync = others.map((status) => status.ordinal).filter((ordinal) => ordinal !== record.leader);
  return { kind: 'try', keepInSync };
}
