/**
 * The messages replicas exchange. Every message carries the sender's ordinal and epoch. Delivery is
 * one-way and unreliable: a message may be delayed, dropped or duplicated, so every handler is idempotent.
 * No message decides who leads or who is in sync: only the configuration store does (cluster-record.ts).
 */
import type { WireEntry } from './types.js';

/** Leader → follower: entries to append after (prevIndex, prevEpoch), plus the commit index. */
export interface AppendMessage {
  readonly type: 'append';
  readonly from: number;
  readonly epoch: number;
  readonly prevIndex: number;
  readonly prevEpoch: number;
  /** Filled by the driver from `entryRange` when it sends; present when received. */
  readonly entries: readonly WireEntry[];
  /** The entries to attach, inclusive; undefined for a heartbeat. */
  readonly entryRange?: { readonly fromIndex: number; readonly toIndex: number };
  readonly commitIndex: number;
  /** The leader's clock when it sent this, echoed in the reply (read rounds and liveness). */
  readonly sentAtMs: number;
  /**
   * The leader's run counter, echoed in the reply: the clock restarts with the process, so an echoed
   * `sentAtMs` means something only to the run that sent it.
   */
  readonly leaderIncarnation: number;
  /** Set when the leader wants the follower's log-chain digest at its last index (to re-enter the in-sync set). */
  readonly requestDigest: boolean;
}

/** Follower → leader: the outcome of an append. */
export interface AppendReplyMessage {
  readonly type: 'appendReply';
  readonly from: number;
  readonly epoch: number;
  readonly ok: boolean;
  /** With ok: the follower's log matches the leader's up to here. */
  readonly matchIndex: number;
  readonly lastIndex: number;
  readonly lastEpoch: number;
  /**
   * Which run of the follower process replied: a counter persisted and raised at every start. A reply from
   * a newer run with a shorter log means the follower lost its disk: what the leader believed it held is reset.
   */
  readonly incarnation: number;
  /**
   * A random identifier made when the follower's database was first created. A different one means a new
   * disk (the run counter starts again there): what the leader believed it held is reset, and replies
   * from the lost disk, delayed in the network, are ignored from then on.
   */
  readonly storageId: string;
  /** The `sentAtMs` of the append answered. */
  readonly echoSentAtMs: number;
  /** The `leaderIncarnation` of the append answered (0 when the reply answers no append). */
  readonly echoLeaderIncarnation: number;
  /** Whether the append answered carried entries (a heartbeat does not), for the leader's pipeline count. */
  readonly carriedEntries: boolean;
  /** The follower is fetching a snapshot: the leader sends it nothing else meanwhile. */
  readonly snapshotting: boolean;
  /** The follower's log-chain digest at `index` (its last index), filled in by the driver when requested. */
  readonly digest?: { readonly index: number; readonly value: string };
  /** Set by the leader's driver on receipt: whether `digest` equals the leader's own at that index. */
  readonly digestVerified?: boolean;
}

/** A replica's view of itself, exchanged while it has no leader (and answered on request). */
export interface StatusMessage {
  readonly type: 'status';
  readonly from: number;
  readonly epoch: number;
  readonly lastIndex: number;
  readonly lastEpoch: number;
  /** The leader the sender currently follows (or itself), if any. */
  readonly leaderOrdinal: number | null;
  /** Whether the receiver should answer with its own status. */
  readonly replyWanted: boolean;
  /** The sender's clock when it sent this. */
  readonly sentAtMs: number;
  /** In an answer, the asker's `sentAtMs`, echoed, so that the asker knows the answer is fresh. Null in a question. */
  readonly askedAtMs: number | null;
}

/** A replica that is not a member → the leader: add me to the members (I will catch up, then be in sync). */
export interface JoinMessage {
  readonly type: 'join';
  readonly from: number;
  readonly epoch: number;
  /** The joiner's peer address, host:port. */
  readonly address: string;
  /** Whether the joiner's log is empty (a removed replica may join again only once wiped). */
  readonly emptyLog: boolean;
}

/** Leader → follower: your log cannot be repaired entry by entry; fetch my snapshot. */
export interface InstallSnapshotMessage {
  readonly type: 'installSnapshot';
  readonly from: number;
  readonly epoch: number;
  /**
   * The leader's last index when it asked. A follower that has since installed a snapshot reaching this
   * index ignores the request: it is a reminder that crossed the install.
   */
  readonly leaderLastIndex: number;
}

/** Follower → leader, on a graceful stop: take me out of the in-sync set now, rather than after a timeout. */
export interface LeaveMessage {
  readonly type: 'leave';
  readonly from: number;
  readonly epoch: number;
}

/** Leader → its successor, after the store names the successor: read the store, you lead now. */
export interface HandoverMessage {
  readonly type: 'handover';
  readonly from: number;
  readonly epoch: number;
}

export type PeerMessage =
  | AppendMessage
  | AppendReplyMessage
  | StatusMessage
  | InstallSnapshotMessage
  | JoinMessage
  | LeaveMessage
  | HandoverMessage;

/** A message to send and its destination ordinal. */
export interface Outgoing {
  readonly to: number;
  readonly message: PeerMessage;
}
