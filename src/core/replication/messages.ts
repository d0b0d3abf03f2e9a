/**
 * The messages replicas exchange. Every message carries the sender's ordinal and epoch. Delivery is
 * one-way and unreliable: a message may be delayed, dropped or duplicated, so every handler is idempotent.
 */
import type { Configuration, WireEntry } from './types.js';

/** Leader → follower: entries to append after (prevIndex, prevEpoch), plus lease and commit information. */
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
  /**
   * The follower's own clock reading from an acknowledgement the leader received, echoed back: the
   * follower's in-sync lease runs for leaseDurationMs from then. Null when the leader does not renew it.
   */
  readonly leaseEchoMs: number | null;
  /** The leader's clock when it sent this, echoed in the reply (the leader's own authority lease). */
  readonly sentAtMs: number;
  /** Set when the leader wants the follower's state digest at its last index (to re-enter the in-sync set). */
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
   * Which run of the follower process replied (the driver's wall clock at start). A reply from a newer run
   * with a shorter log means the follower lost its disk: what the leader believed it held is reset.
   */
  readonly incarnation: number;
  /** The follower's clock when it replied; the leader echoes it to renew the follower's lease. */
  readonly followerTimeMs: number;
  readonly echoSentAtMs: number;
  /** Whether the append answered carried entries (a heartbeat does not), for the leader's pipeline count. */
  readonly carriedEntries: boolean;
  /** The follower is fetching a snapshot: the leader sends it nothing else meanwhile. */
  readonly snapshotting: boolean;
  /** The follower's digest at `digestIndex`, filled in by the driver when requested. */
  readonly digest?: { readonly index: number; readonly value: string };
  /** Set by the leader's driver on receipt: whether `digest` equals the leader's own at that index. */
  readonly digestVerified?: boolean;
}

/** A replica's view of itself, exchanged while there is no leader (and answered on request). */
export interface StatusMessage {
  readonly type: 'status';
  readonly from: number;
  readonly epoch: number;
  readonly lastIndex: number;
  readonly lastEpoch: number;
  readonly configuration: Configuration | null;
  /** The sender's in-sync lease (or, for a leader, its authority) is valid. */
  readonly leaseValid: boolean;
  /** The leader the sender currently follows, if any. */
  readonly leaderOrdinal: number | null;
  /** The sender's peer address, so that a leader can answer a replica that is not a member yet. */
  readonly address: string | null;
  /** Whether the receiver should answer with its own status. */
  readonly replyWanted: boolean;
  /** The sender's clock when it sent this. */
  readonly sentAtMs: number;
  /**
   * In an answer, the asker's `sentAtMs`, echoed: the asker knows the answer describes the sender at some
   * moment after it asked, on the asker's own clock. Null in a question.
   */
  readonly askedAtMs: number | null;
}

/** A replica with an empty log → the leader: add me to the members (I will catch up, then be in sync). */
export interface JoinMessage {
  readonly type: 'join';
  readonly from: number;
  readonly epoch: number;
  /** The joiner's peer address. */
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

export type PeerMessage = AppendMessage | AppendReplyMessage | StatusMessage | InstallSnapshotMessage | JoinMessage;

/** A message to send and its destination ordinal. */
export interface Outgoing {
  readonly to: number;
  readonly message: PeerMessage;
}
