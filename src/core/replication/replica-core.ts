/**
 * The replication protocol of one replica, as a pure state machine: no I/O, no clock reads, no randomness.
 * The driver feeds it ticks (with the current time), peer messages and client appends; after each call it
 * takes the output and carries it out in order: persist the epoch, persist the entries, then send the
 * messages, then acknowledge writes up to the commit index. NOTEBOOK.md §8 states the protocol and why it
 * keeps each invariant; the comments here say which rule a branch implements.
 */
import { assert } from '../assert.js';
import { type EpochStart, EpochHistory } from './epoch-history.js';
import type {
  AppendMessage,
  AppendReplyMessage,
  InstallSnapshotMessage,
  JoinMessage,
  Outgoing,
  PeerMessage,
  StatusMessage,
} from './messages.js';
import {
  compareLogPositions,
  type Configuration,
  type EntryMeta,
  epochLeaderOrdinal,
  type Member,
  nextEpoch,
  normalizeConfiguration,
  type WireEntry,
} from './types.js';

/** Timing and batching settings; validated by the config so that lease > election timeout > heartbeat. */
export interface ReplicationTimings {
  readonly heartbeatIntervalMs: number;
  /** A follower that hears nothing from its leader for this long starts an election. */
  readonly electionTimeoutMs: number;
  /** How long a follower counts itself in sync after the leader last confirmed hearing from it. */
  readonly leaseDurationMs: number;
  /** The most two clocks' rates may differ, as a fraction (0.05 is 5%). */
  readonly clockDriftRatio: number;
  readonly maxEntriesPerAppend: number;
  readonly maxInflightAppends: number;
  /** A follower further behind than this many entries is sent a snapshot instead of entries. */
  readonly snapshotLagEntries: number;
}

export const DEFAULT_REPLICATION_TIMINGS: ReplicationTimings = Object.freeze({
  heartbeatIntervalMs: 50,
  electionTimeoutMs: 250,
  leaseDurationMs: 500,
  clockDriftRatio: 0.05,
  maxEntriesPerAppend: 512,
  maxInflightAppends: 8,
  snapshotLagEntries: 10_000,
});

/** What a replica keeps on disk that the protocol needs back after a restart. */
export interface PersistedProtocolState {
  readonly currentEpoch: number;
  readonly epochStarts: readonly EpochStart[];
  readonly lastIndex: number;
  /** The latest configuration entry in the log, committed or not, and its index. */
  readonly configuration: Configuration | null;
  readonly configurationIndex: number;
}

export type Role = 'follower' | 'leader';

/** What the driver must do after a call, in this order. */
export interface CoreOutput {
  /** Persist this epoch before anything else (it was raised). */
  persistEpoch: number | undefined;
  /** Append and apply these entries, in order (a follower's appends, or a leader's own entries). */
  entriesToPersist: WireEntry[];
  messages: Outgoing[];
  /** Writes at or below this index may be acknowledged (leader only). */
  commitIndex: number;
  /** The replica stopped leading: fail every pending write so that clients retry elsewhere. */
  steppedDown: boolean;
  becameLeader: boolean;
  /** Fetch a snapshot from this ordinal, then call snapshotInstalled or snapshotFailed. */
  fetchSnapshotFrom: number | undefined;
}

interface FollowerProgress {
  matchIndex: number;
  nextIndex: number;
  inflightAppends: number;
  lastSentMs: number;
  /** Leader clock when an ok reply last arrived; a silent follower is removed counting from here. */
  lastOkReplyMs: number;
  /** Leader clock when it sent the newest message this follower answered in this epoch. */
  lastAnsweredSentAtMs: number;
  /** Leader clock when the newest answer from this follower arrived. */
  lastAnsweredReceivedMs: number;
  /** The follower's own clock reading in its newest ok reply, echoed back to renew its lease. */
  lastFollowerTimeMs: number | null;
  lastProgressMs: number;
  digestRequestedAtIndex: number | null;
  digestRequestedAtMs: number;
  snapshotRequestedAtMs: number | null;
  /** The follower run that last replied; see AppendReplyMessage.incarnation. */
  incarnation: number;
  /** Set while an operator's removal waits for the member's lease to run out (its lease is no longer renewed). */
  evictionRequestedAtMs: number | null;
}

/** A peer's answer to this replica's status question, and when (on this replica's clock) it asked. */
interface ReceivedStatus {
  readonly status: StatusMessage;
  readonly askedAtMs: number;
}

/** A plain description of the replica's protocol state, for `replichat status`, metrics and tests. */
export interface ProtocolStatus {
  readonly ordinal: number;
  readonly role: Role;
  readonly epoch: number;
  readonly leaderOrdinal: number | null;
  readonly lastIndex: number;
  readonly lastEpoch: number;
  readonly commitIndex: number;
  readonly configuration: Configuration | null;
  readonly leaseValid: boolean;
  readonly snapshotting: boolean;
  /** Why no leader is being elected, while there is none. */
  readonly waitingReason: string | null;
  readonly followers: readonly { ordinal: number; matchIndex: number; lagEntries: number; inSync: boolean }[];
}

const BOOTSTRAP_ORDINAL = 0;

export class ReplicaCore {
  private role: Role = 'follower';
  private currentEpoch: number;
  private readonly history: EpochHistory;
  private configuration: Configuration | null;
  private configurationIndex: number;
  private leaderOrdinal: number | null = null;
  private nowMs = 0;
  private started = false;

  // Follower and election state.
  private lastLeaderContactMs = 0;
  private leaseExpiresAtMs = Number.NEGATIVE_INFINITY;
  private knownCommitIndex = 0;
  private snapshotting = false;
  /** The last index of the snapshot installed last, to recognise reminders that crossed the install. */
  private installedSnapshotLastIndex = 0;
  private leaderLostAtMs: number | null = null;
  private lastStatusBroadcastMs = Number.NEGATIVE_INFINITY;
  private readonly statuses = new Map<number, ReceivedStatus>();
  private waitingReason: string | null = null;

  // Leader state.
  private readonly progress = new Map<number, FollowerProgress>();
  private epochStartedAtMs = 0;
  private wokeAtMs = 0;
  private lastTickMs = 0;
  private commitIndex = 0;
  /** Set when this leader removed itself: it steps down once the removal is committed. */
  private leavingAtIndex: number | null = null;

  /** Addresses of replicas that are not members yet (joiners), learned from their own messages. */
  private readonly learnedAddresses = new Map<number, string>();

  private output: CoreOutput = ReplicaCore.emptyOutput(0);

  constructor(
    readonly ordinal: number,
    /** The static peer list (every replica, this one included), used before a configuration exists. */
    private readonly peers: readonly Member[],
    private readonly timings: ReplicationTimings,
    persisted: PersistedProtocolState,
    /** Which run of this replica process this is (the driver's wall clock at start); see AppendReplyMessage. */
    private readonly incarnation = 0,
  ) {
    assert(timings.leaseDurationMs > timings.electionTimeoutMs, 'the lease must outlast the election timeout');
    assert(timings.electionTimeoutMs > timings.heartbeatIntervalMs, 'the election timeout must exceed the heartbeat');
    this.currentEpoch = persisted.currentEpoch;
    this.history = new EpochHistory(persisted.epochStarts, persisted.lastIndex);
    this.configuration = persisted.configuration;
    this.configurationIndex = persisted.configurationIndex;
  }

  private static emptyOutput(commitIndex: number): CoreOutput {
    return {
      persistEpoch: undefined,
      entriesToPersist: [],
      messages: [],
      commitIndex,
      steppedDown: false,
      becameLeader: false,
      fetchSnapshotFrom: undefined,
    };
  }

  /** Returns and clears what the driver must do. */
  takeOutput(): CoreOutput {
    const output = this.output;
    this.output = ReplicaCore.emptyOutput(this.commitIndex);
    return output;
  }

  // ---------------------------------------------------------------------------------------------------
  // Queries.

  get isLeader(): boolean {
    return this.role === 'leader';
  }

  get epoch(): number {
    return this.currentEpoch;
  }

  get lastIndex(): number {
    return this.history.lastIndex;
  }

  get currentLeader(): number | null {
    return this.leaderOrdinal;
  }

  /** The commit index this replica knows (its own as leader); cheap, for the write path. */
  get knownCommit(): number {
    return this.role === 'leader' ? this.commitIndex : this.knownCommitIndex;
  }

  /** Whether this replica's in-sync lease (a leader: its authority) holds now; cheap, for the read path. */
  get holdsLease(): boolean {
    return this.leaseValid();
  }

  /** The address of a member, from the configuration or the static peer list. */
  memberAddress(ordinal: number): string | undefined {
    return (
      this.configuration?.members.find((member) => member.ordinal === ordinal)?.address ??
      this.peers.find((member) => member.ordinal === ordinal)?.address ??
      this.learnedAddresses.get(ordinal)
    );
  }

  status(): ProtocolStatus {
    const inSync = this.configuration?.inSync ?? [];
    return {
      ordinal: this.ordinal,
      role: this.role,
      epoch: this.currentEpoch,
      leaderOrdinal: this.leaderOrdinal,
      lastIndex: this.history.lastIndex,
      lastEpoch: this.history.lastEpoch,
      commitIndex: this.role === 'leader' ? this.commitIndex : this.knownCommitIndex,
      configuration: this.configuration,
      leaseValid: this.leaseValid(),
      snapshotting: this.snapshotting,
      waitingReason: this.role === 'leader' || this.leaderOrdinal !== null ? null : this.waitingReason,
      followers: [...this.progress.entries()].map(([ordinal, progress]) => ({
        ordinal,
        matchIndex: progress.matchIndex,
        lagEntries: this.history.lastIndex - progress.matchIndex,
        inSync: inSync.includes(ordinal),
      })),
    };
  }

  // ---------------------------------------------------------------------------------------------------
  // Inputs.

  /** Advances time. The driver calls it every few milliseconds. */
  tick(nowMs: number): void {
    this.observeTime(nowMs);
    if (this.role === 'leader') this.leaderTick();
    else this.followerTick();
  }

  receive(message: PeerMessage, nowMs: number): void {
    this.observeTime(nowMs);
    switch (message.type) {
      case 'append':
        return this.onAppend(message);
      case 'appendReply':
        return this.onAppendReply(message);
      case 'status':
        return this.onStatus(message);
      case 'installSnapshot':
        return this.onInstallSnapshot(message);
      case 'join':
        return this.onJoin(message);
    }
  }

  /**
   * An operator asks the leader to remove a member. Another member leaves only after its in-sync lease has
   * certainly run out (the leader stops renewing it at once), so that it can never lead with writes it
   * missed. A leader that removes itself hands over: once its removal is committed it steps down, and the
   * most up-to-date remaining member is elected. Returns why the request is refused, or undefined.
   */
  requestRemoval(ordinal: number, nowMs: number): string | undefined {
    this.observeTime(nowMs);
    if (this.role !== 'leader') return 'only the leader removes members';
    const configuration = this.configuration!;
    if (!configuration.members.some((member) => member.ordinal === ordinal)) return `replica ${ordinal} is not a member`;
    if (configuration.members.length === 1) return 'the last member cannot be removed';
    if (this.configurationIndex > this.commitIndex) return 'another configuration change is in progress; retry shortly';
    if (ordinal === this.ordinal) {
      if (!configuration.inSync.some((member) => member !== this.ordinal) || !this.authorityValid()) {
        return 'the leader can hand over only while another in-sync member answers: retry once one does';
      }
      this.appendOwnEntry({ configuration: withoutMember(configuration, ordinal) });
      this.leavingAtIndex = this.history.lastIndex;
      this.sendAppends();
      this.advanceCommit();
      return undefined;
    }
    const progress = this.progress.get(ordinal);
    if (progress !== undefined && progress.evictionRequestedAtMs === null) progress.evictionRequestedAtMs = this.nowMs;
    return undefined;
  }

  /** The position a client write would take; undefined unless this replica leads. */
  nextClientPosition(): { index: number; epoch: number } | undefined {
    if (this.role !== 'leader') return undefined;
    return { index: this.history.lastIndex + 1, epoch: this.currentEpoch };
  }

  /** The driver appended and applied a client write at `index`; it is sent at the next flush. */
  clientEntryAppended(index: number, nowMs: number): void {
    this.observeTime(nowMs);
    assert(this.role === 'leader', 'only a leader appends client entries');
    this.history.append(index, this.currentEpoch);
  }

  /** Sends what is ready and advances the commit index; the driver calls it once per batch of writes. */
  flush(nowMs: number): void {
    this.observeTime(nowMs);
    if (this.role !== 'leader') return;
    this.sendAppends();
    this.advanceCommit();
  }

  /** The snapshot the driver fetched is installed: the log now ends where the snapshot does. */
  snapshotInstalled(state: PersistedProtocolState, nowMs: number): void {
    this.observeTime(nowMs);
    this.history.reset(state.epochStarts, state.lastIndex);
    this.configuration = state.configuration;
    this.configurationIndex = state.configurationIndex;
    this.snapshotting = false;
    this.installedSnapshotLastIndex = state.lastIndex;
    // A replaced log proves nothing about acknowledged writes until the leader confirms it again.
    this.leaseExpiresAtMs = Number.NEGATIVE_INFINITY;
    if (this.leaderOrdinal !== null) this.send(this.leaderOrdinal, this.appendReply(false, 0, 0, undefined));
  }

  /** The driver deleted log entries before `firstIndex` (they are kept in the state; snapshots carry them). */
  logTruncated(firstIndex: number): void {
    this.history.truncateBefore(firstIndex);
  }

  get firstIndex(): number {
    return this.history.firstIndex;
  }

  snapshotFailed(nowMs: number): void {
    this.observeTime(nowMs);
    this.snapshotting = false;
  }

  // ---------------------------------------------------------------------------------------------------
  // Follower side.

  private observeTime(nowMs: number): void {
    if (!this.started) {
      // A replica that just started gives an existing leader a full election timeout to reach it.
      this.started = true;
      this.lastLeaderContactMs = nowMs;
      this.lastTickMs = nowMs;
      this.leaderLostAtMs = nowMs;
    }
    this.nowMs = Math.max(this.nowMs, nowMs);
  }

  private leaseValid(): boolean {
    if (this.role === 'leader') return this.authorityValid();
    return !this.snapshotting && this.nowMs < this.leaseExpiresAtMs;
  }

  private followerTick(): void {
    if (this.leaderOrdinal !== null && this.nowMs - this.lastLeaderContactMs > this.timings.electionTimeoutMs) {
      this.leaderOrdinal = null;
      this.leaderLostAtMs = this.nowMs;
    }
    if (this.leaderOrdinal !== null || this.snapshotting) return;
    if (this.nowMs - this.lastStatusBroadcastMs >= this.timings.heartbeatIntervalMs) {
      this.lastStatusBroadcastMs = this.nowMs;
      for (const ordinal of this.statusTargets()) this.send(ordinal, this.myStatus(true, null));
      this.askToJoin();
    }
    this.tryElection();
  }

  /**
   * A replica with an empty log that sees a leader which does not contact it asks to join. Only an empty
   * replica asks: a removed replica keeps its log, and joins again only once its data directory is wiped.
   */
  private askToJoin(): void {
    const address = this.memberAddress(this.ordinal);
    if (address === undefined) return;
    const emptyLog = this.configuration === null && this.history.lastIndex === 0;
    for (const received of this.statuses.values()) {
      const { leaderOrdinal, configuration } = received.status;
      if (leaderOrdinal === null || this.nowMs - received.askedAtMs > this.timings.electionTimeoutMs) continue;
      // A replica that is already a member waits for the leader; one that was removed waits to be wiped.
      if (configuration !== null && configuration.members.some((member) => member.ordinal === this.ordinal)) continue;
      if (!emptyLog && (configuration === null || (configuration.removed ?? []).includes(this.ordinal))) continue;
      this.send(leaderOrdinal, { type: 'join', from: this.ordinal, epoch: this.currentEpoch, address, emptyLog });
    }
  }

  private myStatus(replyWanted: boolean, askedAtMs: number | null): StatusMessage {
    return {
      type: 'status',
      from: this.ordinal,
      epoch: this.currentEpoch,
      lastIndex: this.history.lastIndex,
      lastEpoch: this.history.lastEpoch,
      configuration: this.configuration,
      leaseValid: this.leaseValid(),
      leaderOrdinal: this.role === 'leader' ? this.ordinal : this.leaderOrdinal,
      address: this.memberAddress(this.ordinal) ?? null,
      replyWanted,
      sentAtMs: this.nowMs,
      askedAtMs,
    };
  }

  /** Whom the leader replicates to: the configuration's members, or the static peers before there is one. */
  private otherMembers(): number[] {
    const members = this.configuration?.members ?? this.peers;
    return members.map((member) => member.ordinal).filter((ordinal) => ordinal !== this.ordinal);
  }

  /** Whom a replica without a leader asks for status: every member and every static peer. */
  private statusTargets(): number[] {
    const ordinals = new Set<number>(this.peers.map((member) => member.ordinal));
    for (const member of this.configuration?.members ?? []) ordinals.add(member.ordinal);
    ordinals.delete(this.ordinal);
    return [...ordinals].sort((a, b) => a - b);
  }

  private onStatus(status: StatusMessage): void {
    if (status.address !== null) this.rememberAddress(status.from, status.address);
    // Only answers to this replica's own questions count for an election: a status that was merely
    // delayed could describe a replica as it was long ago, before it led and acknowledged writes.
    if (status.askedAtMs !== null) {
      const previous = this.statuses.get(status.from);
      if (previous === undefined || previous.askedAtMs <= status.askedAtMs) {
        this.statuses.set(status.from, { status, askedAtMs: status.askedAtMs });
      }
    }
    if (status.epoch > this.currentEpoch && this.role === 'leader') {
      // Someone has seen a newer epoch, so a newer leader may exist: stop acknowledging at once.
      this.stepDown(status.epoch);
    }
    if (status.replyWanted) this.send(status.from, this.myStatus(false, status.sentAtMs));
    if (this.role === 'leader') {
      // A member that does not know its leader gets a heartbeat at once rather than at the next tick.
      if (status.leaderOrdinal !== this.ordinal && status.epoch <= this.currentEpoch) {
        const progress = this.progress.get(status.from);
        if (progress !== undefined) progress.lastSentMs = Number.NEGATIVE_INFINITY;
        this.sendAppends();
      }
      return;
    }
    if (this.leaderOrdinal === null && !this.snapshotting) this.tryElection();
  }

  /**
   * The election rule. Among the fresh statuses (this replica's own included), take the most up-to-date
   * log and its in-sync set S. A replica may take part only if its in-sync lease is valid, or if every
   * member of S is visible; the candidates are then the lease holders, or all of S. The candidate with the
   * highest (last epoch, last index), lowest ordinal on ties, starts the next epoch. Each replica only
   * ever elects itself, using its own current eligibility.
   */
  private tryElection(): void {
    const fresh = new Map<number, StatusMessage>();
    for (const [ordinal, received] of this.statuses) {
      if (this.nowMs - received.askedAtMs <= this.timings.electionTimeoutMs) fresh.set(ordinal, received.status);
    }
    fresh.set(this.ordinal, this.myStatus(false, null));

    let newest: StatusMessage | undefined;
    for (const status of fresh.values()) {
      if (status.configuration === null) continue;
      if (newest === undefined || compareLogPositions(status, newest) > 0) newest = status;
    }
    const member = (status: StatusMessage): boolean =>
      status.configuration!.members.some((candidate) => candidate.ordinal === this.ordinal);
    const removedByOperator = (status: StatusMessage): boolean =>
      (status.configuration!.removed ?? []).includes(this.ordinal);
    const emptyLog = this.configuration === null && this.history.lastIndex === 0;
    if (newest !== undefined && !member(newest) && (emptyLog || !removedByOperator(newest))) {
      this.waitingReason = `asking the leader to let replica ${this.ordinal} join the cluster`;
      return;
    } else if (newest !== undefined && !member(newest)) {
      this.waitingReason =
        'this replica is not a member of the newest configuration (it was removed): wipe its data directory to join again';
      return;
    }
    for (const status of fresh.values()) {
      if (status.from !== this.ordinal && status.leaderOrdinal !== null && status.epoch >= this.currentEpoch) {
        this.waitingReason = `replica ${status.from} still follows leader ${status.leaderOrdinal}`;
        return;
      }
    }
    // Give every live replica one round to report, so that the most up-to-date one is seen.
    const lostAtMs = this.leaderLostAtMs ?? this.nowMs;
    if (this.nowMs - lostAtMs < 2 * this.timings.heartbeatIntervalMs) {
      this.waitingReason = 'gathering the status of the other replicas';
      return;
    }

    if (this.configuration === null && this.history.lastIndex === 0) return this.tryBootstrap(fresh);

    if (newest === undefined) {
      this.waitingReason = 'no replica with a configuration is visible';
      return;
    }
    const inSyncSet = newest.configuration!.inSync;
    const missing = inSyncSet.filter((ordinal) => !fresh.has(ordinal));
    const everyMemberVisible = missing.length === 0;
    if (!everyMemberVisible && !this.leaseValid()) {
      this.waitingReason =
        `waiting for replica${missing.length > 1 ? 's' : ''} ${missing.join(', ')} of the newest in-sync set ` +
        `{${inSyncSet.join(', ')}}: only they may hold the newest acknowledged writes`;
      return;
    }
    const candidates = [...fresh.values()].filter(
      (status) =>
        (everyMemberVisible ? inSyncSet.includes(status.from) : status.leaseValid) &&
        status.configuration !== null &&
        status.configuration.inSync.includes(status.from),
    );
    if (!candidates.some((status) => status.from === this.ordinal)) {
      this.waitingReason = 'this replica is not eligible to lead: it may lack acknowledged writes';
      return;
    }
    let winner = candidates[0]!;
    for (const candidate of candidates) {
      const order = compareLogPositions(candidate, winner);
      if (order > 0 || (order === 0 && candidate.from < winner.from)) winner = candidate;
    }
    if (winner.from !== this.ordinal) {
      this.waitingReason = `waiting for replica ${winner.from}, the most up-to-date, to take over`;
      return;
    }
    let highestEpoch = this.currentEpoch;
    for (const status of fresh.values()) highestEpoch = Math.max(highestEpoch, status.epoch);
    this.becomeLeader(nextEpoch(highestEpoch, this.ordinal), false);
  }

  /** A brand-new cluster starts once, from replica 0, and only when every peer is visible with an empty log. */
  private tryBootstrap(fresh: Map<number, StatusMessage>): void {
    if (this.ordinal !== BOOTSTRAP_ORDINAL) {
      this.waitingReason = 'waiting for replica 0 to initialise the cluster';
      return;
    }
    const others = this.peers.filter((member) => member.ordinal !== this.ordinal);
    const notReady = others.filter((member) => {
      const status = fresh.get(member.ordinal);
      return status === undefined || status.lastIndex !== 0 || status.configuration !== null;
    });
    if (notReady.length > 0) {
      this.waitingReason =
        `waiting to see replicas ${notReady.map((member) => member.ordinal).join(', ')} with empty logs ` +
        'before initialising a new cluster';
      return;
    }
    this.becomeLeader(nextEpoch(this.currentEpoch, this.ordinal), true);
  }

  private onAppend(message: AppendMessage): void {
    if (message.epoch < this.currentEpoch) {
      // An older leader: refuse, and tell it the newer epoch so that it steps down.
      this.send(message.from, this.appendReply(false, 0, message.sentAtMs, undefined));
      return;
    }
    assert(epochLeaderOrdinal(message.epoch) === message.from, 'an epoch belongs to one leader');
    if (message.epoch === this.currentEpoch) {
      assert(this.role !== 'leader', `two leaders in epoch ${message.epoch}`);
    } else {
      this.adoptEpoch(message.epoch);
    }
    this.leaderOrdinal = message.from;
    this.lastLeaderContactMs = this.nowMs;
    this.leaderLostAtMs = null;
    this.knownCommitIndex = Math.max(this.knownCommitIndex, message.commitIndex);
    if (this.snapshotting) {
      this.send(message.from, this.appendReply(false, 0, message.sentAtMs, undefined));
      return;
    }

    // The entries must directly follow a position both logs agree on; entries already held are skipped,
    // which makes duplicated and re-sent appends harmless. A held entry of another epoch means the logs
    // diverged: this replica applied entries the leader does not have, and needs a snapshot.
    const ok = this.appendMatching(message);
    if (ok && message.leaseEchoMs !== null) {
      this.leaseExpiresAtMs = Math.max(this.leaseExpiresAtMs, message.leaseEchoMs + this.timings.leaseDurationMs);
    }
    const matchIndex = ok ? message.prevIndex + message.entries.length : 0;
    this.send(message.from, {
      ...this.appendReply(ok, matchIndex, message.sentAtMs, ok && message.requestDigest ? this.history.lastIndex : undefined),
      carriedEntries: message.entries.length > 0,
    });
  }

  private appendMatching(message: AppendMessage): boolean {
    if (this.history.epochAt(message.prevIndex) !== message.prevEpoch) return false;
    for (const entry of message.entries) {
      const held = this.history.epochAt(entry.index);
      if (held !== undefined) {
        if (held !== entry.epoch) return false;
        continue;
      }
      if (entry.index !== this.history.lastIndex + 1) return false;
      this.appendEntry(entry);
    }
    return true;
  }

  private appendEntry(entry: WireEntry): void {
    this.history.append(entry.index, entry.epoch);
    if (entry.configuration !== undefined) {
      this.configuration = entry.configuration;
      this.configurationIndex = entry.index;
    }
    this.output.entriesToPersist.push(entry);
  }

  private appendReply(
    ok: boolean,
    matchIndex: number,
    echoSentAtMs: number,
    digestIndex: number | undefined,
  ): AppendReplyMessage {
    return {
      type: 'appendReply',
      from: this.ordinal,
      epoch: this.currentEpoch,
      ok,
      matchIndex,
      lastIndex: this.history.lastIndex,
      lastEpoch: this.history.lastEpoch,
      incarnation: this.incarnation,
      followerTimeMs: this.nowMs,
      echoSentAtMs,
      carriedEntries: false,
      snapshotting: this.snapshotting,
      ...(digestIndex === undefined ? {} : { digest: { index: digestIndex, value: '' } }),
    };
  }

  private onInstallSnapshot(message: InstallSnapshotMessage): void {
    if (message.epoch < this.currentEpoch) return;
    if (message.epoch > this.currentEpoch) this.adoptEpoch(message.epoch);
    this.leaderOrdinal = message.from;
    this.lastLeaderContactMs = this.nowMs;
    if (this.snapshotting) return;
    if (message.leaderLastIndex <= this.installedSnapshotLastIndex) {
      // A reminder sent before the snapshot this replica just installed: tell the leader where it stands.
      this.send(message.from, this.appendReply(false, 0, 0, undefined));
      return;
    }
    this.snapshotting = true;
    this.leaseExpiresAtMs = Number.NEGATIVE_INFINITY;
    this.output.fetchSnapshotFrom = message.from;
  }

  /** A new replica asks to become a member: it is added, not in sync; it catches up from a snapshot. */
  private onJoin(message: JoinMessage): void {
    this.rememberAddress(message.from, message.address);
    if (this.role !== 'leader') return;
    const configuration = this.configuration!;
    if (configuration.members.some((member) => member.ordinal === message.from)) return;
    // A replica an operator removed comes back only wiped, so that removal is not undone by accident.
    if ((configuration.removed ?? []).includes(message.from) && !message.emptyLog) return;
    // One configuration change at a time: the joiner asks again until this one is committed.
    if (this.configurationIndex > this.commitIndex) return;
    this.appendOwnEntry({
      configuration: normalizeConfiguration({
        members: [...configuration.members, { ordinal: message.from, address: message.address }],
        inSync: configuration.inSync,
        removed: (configuration.removed ?? []).filter((ordinal) => ordinal !== message.from),
      }),
    });
    this.sendAppends();
  }

  /** Keeps a bounded number of learned addresses: one per ordinal, and ordinals are bounded by the config. */
  private rememberAddress(ordinal: number, address: string): void {
    if (this.learnedAddresses.size >= 1024 && !this.learnedAddresses.has(ordinal)) return;
    this.learnedAddresses.set(ordinal, address);
  }

  /** Accepts a newer epoch: persisted first, and a leader stops leading. */
  private adoptEpoch(epoch: number): void {
    assert(epoch > this.currentEpoch, 'epochs only grow');
    if (this.role === 'leader') this.stepDown(epoch);
    this.currentEpoch = epoch;
    this.output.persistEpoch = epoch;
  }

  private stepDown(epoch: number): void {
    const wasLeader = this.role === 'leader';
    if (epoch > this.currentEpoch) {
      this.currentEpoch = epoch;
      this.output.persistEpoch = epoch;
    }
    this.role = 'follower';
    this.leaderOrdinal = null;
    this.leaderLostAtMs = this.nowMs;
    this.lastLeaderContactMs = this.nowMs;
    // A former leader holds no follower lease: it must not claim to be in sync.
    this.leaseExpiresAtMs = Number.NEGATIVE_INFINITY;
    this.progress.clear();
    if (wasLeader) this.output.steppedDown = true;
  }

  // ---------------------------------------------------------------------------------------------------
  // Leader side.

  private becomeLeader(epoch: number, bootstrap: boolean): void {
    this.currentEpoch = epoch;
    this.output.persistEpoch = epoch;
    this.role = 'leader';
    this.leaderOrdinal = this.ordinal;
    this.epochStartedAtMs = this.nowMs;
    this.wokeAtMs = this.nowMs;
    this.lastTickMs = this.nowMs;
    this.commitIndex = 0;
    this.statuses.clear();
    this.waitingReason = null;
    this.progress.clear();
    for (const ordinal of this.otherMembers()) this.progress.set(ordinal, this.newProgress());
    this.output.becameLeader = true;
    if (bootstrap) {
      this.appendOwnEntry({ initialize: true });
      this.appendOwnEntry({ configuration: normalizeConfiguration({ members: this.peers, inSync: [this.ordinal] }) });
    } else {
      // The first entry of an epoch (like Raft's no-op) carries the configuration: followers with a
      // divergent tail find out, and nothing is acknowledged until every in-sync member holds it.
      assert(this.configuration !== null, 'an elected leader has a configuration');
      this.appendOwnEntry({ configuration: this.configuration });
    }
    this.sendAppends();
    this.advanceCommit();
  }

  private newProgress(): FollowerProgress {
    return {
      matchIndex: 0,
      nextIndex: this.history.lastIndex + 1,
      inflightAppends: 0,
      lastSentMs: Number.NEGATIVE_INFINITY,
      lastOkReplyMs: Number.NEGATIVE_INFINITY,
      lastAnsweredSentAtMs: Number.NEGATIVE_INFINITY,
      lastAnsweredReceivedMs: this.nowMs,
      lastFollowerTimeMs: null,
      lastProgressMs: this.nowMs,
      digestRequestedAtIndex: null,
      digestRequestedAtMs: Number.NEGATIVE_INFINITY,
      snapshotRequestedAtMs: null,
      incarnation: 0,
      evictionRequestedAtMs: null,
    };
  }

  private appendOwnEntry(entry: Omit<EntryMeta, 'index' | 'epoch'>): void {
    const index = this.history.lastIndex + 1;
    this.history.append(index, this.currentEpoch);
    if (entry.configuration !== undefined) {
      this.configuration = entry.configuration;
      this.configurationIndex = index;
      if (this.role === 'leader') this.syncProgressWithMembers();
    }
    this.output.entriesToPersist.push({ index, epoch: this.currentEpoch, ...entry });
  }

  /** The leader replicates to exactly the members of its latest configuration. */
  private syncProgressWithMembers(): void {
    const members = new Set(this.otherMembers());
    for (const ordinal of members) if (!this.progress.has(ordinal)) this.progress.set(ordinal, this.newProgress());
    for (const ordinal of [...this.progress.keys()]) if (!members.has(ordinal)) this.progress.delete(ordinal);
  }

  /** Removal waits this long after the last sign of life: the follower's lease, twice, with drift. */
  private removalDelayMs(): number {
    return 2 * this.timings.leaseDurationMs * (1 + this.timings.clockDriftRatio) + this.timings.heartbeatIntervalMs;
  }

  private leaderTick(): void {
    if (this.nowMs - this.lastTickMs > this.timings.electionTimeoutMs) {
      // This leader did not run for a while (a pause): count every silence again from now, so that a
      // follower is removed only after it failed to answer attempts made while this leader was running.
      this.wokeAtMs = this.nowMs;
    }
    this.lastTickMs = this.nowMs;
    const configuration = this.configuration!;
    const silent = configuration.inSync.filter((ordinal) => {
      if (ordinal === this.ordinal) return false;
      const progress = this.progress.get(ordinal);
      const lastSignOfLifeMs = Math.max(progress?.lastOkReplyMs ?? -Infinity, this.epochStartedAtMs, this.wokeAtMs);
      return this.nowMs - lastSignOfLifeMs > this.removalDelayMs();
    });
    // A leader that is handing over keeps at least one other member in sync: the one it hands over to.
    const remaining = configuration.inSync.filter((o) => !silent.includes(o) && !(o === this.ordinal && this.leavingAtIndex !== null));
    if (silent.length > 0 && remaining.length > 0) {
      this.appendOwnEntry({
        configuration: { ...configuration, inSync: configuration.inSync.filter((o) => !silent.includes(o)) },
      });
    }
    // An operator's removal takes effect once the member's lease, no longer renewed, has certainly run out.
    const evictionDelayMs = this.timings.leaseDurationMs * (1 + this.timings.clockDriftRatio) + this.timings.heartbeatIntervalMs;
    for (const [ordinal, progress] of this.progress) {
      if (progress.evictionRequestedAtMs === null || this.nowMs - progress.evictionRequestedAtMs <= evictionDelayMs) continue;
      this.appendOwnEntry({ configuration: withoutMember(this.configuration!, ordinal) });
    }
    for (const progress of this.progress.values()) {
      // Appends or replies were lost: start again from the last confirmed position.
      const outstanding = progress.nextIndex > progress.matchIndex + 1 || progress.inflightAppends > 0;
      if (outstanding && this.nowMs - progress.lastProgressMs > 4 * this.timings.heartbeatIntervalMs) {
        progress.inflightAppends = 0;
        progress.nextIndex = progress.matchIndex + 1;
        progress.lastProgressMs = this.nowMs;
      }
    }
    this.sendAppends();
    this.advanceCommit();
  }

  /** Every in-sync follower answered, within one lease, a message this leader sent in this epoch. */
  private authorityValid(): boolean {
    if (this.role !== 'leader' || this.configuration === null) return false;
    return this.configuration.inSync.every((ordinal) => {
      if (ordinal === this.ordinal) return true;
      const progress = this.progress.get(ordinal);
      return progress !== undefined && this.nowMs - progress.lastAnsweredSentAtMs < this.timings.leaseDurationMs;
    });
  }

  private sendAppends(): void {
    const configuration = this.configuration!;
    const authority = this.authorityValid();
    for (const [ordinal, progress] of this.progress) {
      if (progress.snapshotRequestedAtMs !== null) {
        // The follower is fetching a snapshot; remind it now and then in case the request was lost.
        if (this.nowMs - progress.snapshotRequestedAtMs > this.timings.leaseDurationMs) this.requestSnapshot(ordinal, progress);
        continue;
      }
      const inSync = configuration.inSync.includes(ordinal);
      const leaseEchoMs = inSync && authority && progress.evictionRequestedAtMs === null ? progress.lastFollowerTimeMs : null;
      if (progress.nextIndex <= this.history.lastIndex && this.history.epochAt(progress.nextIndex - 1) === undefined) {
        // The entries this follower needs were truncated from the log: only a snapshot can bring it up.
        this.requestSnapshot(ordinal, progress);
        continue;
      }
      let sent = false;
      // A follower that has not answered for an election timeout gets one append at a time: a probe, not a
      // pipeline of entries nobody may be reading.
      const responsive = this.nowMs - progress.lastAnsweredReceivedMs <= this.timings.electionTimeoutMs;
      const inflightLimit = responsive ? this.timings.maxInflightAppends : 1;
      while (progress.inflightAppends < inflightLimit && progress.nextIndex <= this.history.lastIndex) {
        const fromIndex = progress.nextIndex;
        const toIndex = Math.min(this.history.lastIndex, fromIndex + this.timings.maxEntriesPerAppend - 1);
        this.sendAppend(ordinal, progress, fromIndex - 1, { fromIndex, toIndex }, leaseEchoMs, false);
        progress.nextIndex = toIndex + 1;
        progress.inflightAppends += 1;
        sent = true;
      }
      if (sent) continue;
      // Asked once per leader index, and again after a lease without a verified answer (it may be lost).
      const wantsDigest =
        !inSync &&
        progress.matchIndex === this.history.lastIndex &&
        (progress.digestRequestedAtIndex !== this.history.lastIndex ||
          this.nowMs - progress.digestRequestedAtMs > this.timings.leaseDurationMs) &&
        this.configurationIndex <= this.commitIndex;
      if (wantsDigest || this.nowMs - progress.lastSentMs >= this.timings.heartbeatIntervalMs) {
        if (wantsDigest) {
          progress.digestRequestedAtIndex = this.history.lastIndex;
          progress.digestRequestedAtMs = this.nowMs;
        }
        // A heartbeat checks the last position known to match; if the log no longer holds it, it probes at
        // the end of the log, and the follower's answer says where it stands.
        const probeIndex =
          this.history.epochAt(progress.matchIndex) === undefined ? this.history.lastIndex : progress.matchIndex;
        this.sendAppend(ordinal, progress, probeIndex, undefined, leaseEchoMs, wantsDigest);
      }
    }
  }

  private sendAppend(
    ordinal: number,
    progress: FollowerProgress,
    prevIndex: number,
    entryRange: { fromIndex: number; toIndex: number } | undefined,
    leaseEchoMs: number | null,
    requestDigest: boolean,
  ): void {
    const prevEpoch = this.history.epochAt(prevIndex);
    assert(prevEpoch !== undefined, `the leader has no entry ${prevIndex}`);
    progress.lastSentMs = this.nowMs;
    this.send(ordinal, {
      type: 'append',
      from: this.ordinal,
      epoch: this.currentEpoch,
      prevIndex,
      prevEpoch,
      entries: [],
      ...(entryRange === undefined ? {} : { entryRange }),
      commitIndex: this.commitIndex,
      leaseEchoMs,
      sentAtMs: this.nowMs,
      requestDigest,
    });
  }

  private requestSnapshot(ordinal: number, progress: FollowerProgress): void {
    progress.snapshotRequestedAtMs = this.nowMs;
    progress.inflightAppends = 0;
    this.send(ordinal, {
      type: 'installSnapshot',
      from: this.ordinal,
      epoch: this.currentEpoch,
      leaderLastIndex: this.history.lastIndex,
    });
  }

  private onAppendReply(reply: AppendReplyMessage): void {
    if (reply.epoch > this.currentEpoch) {
      if (this.role === 'leader') this.stepDown(reply.epoch);
      else this.adoptEpoch(reply.epoch);
      return;
    }
    if (this.role !== 'leader' || reply.epoch < this.currentEpoch) return;
    const progress = this.progress.get(reply.from);
    if (progress === undefined) return;
    if (reply.incarnation < progress.incarnation) return; // From a run of the follower that has since ended.
    if (reply.incarnation > progress.incarnation) {
      // The follower restarted. If it came back with less than we believed it held, it lost its disk:
      // believe only what it holds now.
      progress.incarnation = reply.incarnation;
      if (reply.lastIndex < progress.matchIndex) {
        progress.matchIndex = 0;
        progress.nextIndex = this.history.lastIndex + 1;
        progress.inflightAppends = 0;
      }
    }
    progress.lastAnsweredSentAtMs = Math.max(progress.lastAnsweredSentAtMs, reply.echoSentAtMs);
    progress.lastAnsweredReceivedMs = this.nowMs;
    if (reply.snapshotting) {
      // The follower is busy with the snapshot it was asked to fetch: nothing else until it is done.
      progress.snapshotRequestedAtMs ??= this.nowMs;
      progress.inflightAppends = 0;
      return;
    }
    // A follower whose last entry equals ours at that index holds our log up to there (log matching), so
    // any reply, a heartbeat's included, can advance what we know it holds.
    const followerLogIsPrefix =
      reply.lastIndex <= this.history.lastIndex && this.history.epochAt(reply.lastIndex) === reply.lastEpoch;
    const heldIndex = Math.max(reply.ok ? reply.matchIndex : 0, followerLogIsPrefix ? reply.lastIndex : 0);
    if (heldIndex > progress.matchIndex) {
      progress.matchIndex = heldIndex;
      progress.lastProgressMs = this.nowMs;
    }
    if (reply.ok) {
      progress.lastOkReplyMs = this.nowMs;
      progress.lastFollowerTimeMs = Math.max(progress.lastFollowerTimeMs ?? -Infinity, reply.followerTimeMs);
      if (reply.carriedEntries) progress.inflightAppends = Math.max(0, progress.inflightAppends - 1);
      progress.nextIndex = Math.max(progress.nextIndex, progress.matchIndex + 1);
      // Everything sent is held: no append is outstanding, whatever became of their replies.
      if (progress.nextIndex === progress.matchIndex + 1) progress.inflightAppends = 0;
      if (reply.digestVerified === true && reply.digest !== undefined) this.maybeReadmit(reply.from, reply.digest.index);
    } else if (
      followerLogIsPrefix &&
      progress.snapshotRequestedAtMs === null &&
      this.history.lastIndex > 0 &&
      ((reply.lastIndex === 0 && this.history.lastIndex > this.timings.maxEntriesPerAppend) ||
        this.history.lastIndex - reply.lastIndex > this.timings.snapshotLagEntries)
    ) {
      // An empty replica (a new one, or a replaced disk) bootstraps from a snapshot unless the log fits in one
      // append, and so does a replica too far behind for entry-by-entry catch-up to be quicker.
      this.requestSnapshot(reply.from, progress);
    } else if (followerLogIsPrefix) {
      // A gap (lost or reordered appends, or a fresh snapshot): continue right after the follower's end.
      progress.inflightAppends = 0;
      progress.snapshotRequestedAtMs = null;
      progress.nextIndex = reply.lastIndex + 1;
      progress.lastProgressMs = this.nowMs;
    } else if (progress.snapshotRequestedAtMs === null) {
      // The follower holds entries this leader does not (a crashed leader's unacknowledged tail): they are
      // applied to its tables and cannot be undone, so it is rebuilt from a snapshot.
      this.requestSnapshot(reply.from, progress);
    }
    this.sendAppends();
    this.advanceCommit();
  }

  /** A caught-up follower whose digest matched re-enters the in-sync set (one change at a time). */
  private maybeReadmit(ordinal: number, digestIndex: number): void {
    const configuration = this.configuration!;
    const progress = this.progress.get(ordinal)!;
    if (configuration.inSync.includes(ordinal)) return;
    if (this.configurationIndex > this.commitIndex) return;
    if (progress.matchIndex < digestIndex) return;
    this.appendOwnEntry({
      configuration: normalizeConfiguration({ ...configuration, inSync: [...configuration.inSync, ordinal] }),
    });
  }

  /**
   * The commit index is the highest index every in-sync member holds, but it moves only once the latest
   * configuration entry itself is held by all of them: a changed in-sync set counts only when its members
   * know it.
   */
  private advanceCommit(): void {
    if (this.role !== 'leader') return;
    const configuration = this.configuration!;
    let held = this.history.lastIndex;
    for (const ordinal of configuration.inSync) {
      if (ordinal === this.ordinal) continue;
      held = Math.min(held, this.progress.get(ordinal)?.matchIndex ?? 0);
    }
    if (held >= this.configurationIndex && held > this.commitIndex) this.commitIndex = held;
    this.output.commitIndex = this.commitIndex;
    if (this.leavingAtIndex !== null && this.commitIndex >= this.leavingAtIndex) {
      // This leader's own removal is committed: hand over by stepping down; it takes no part in elections.
      this.leavingAtIndex = null;
      this.stepDown(this.currentEpoch);
    }
  }

  private send(to: number, message: PeerMessage): void {
    this.output.messages.push({ to, message });
  }
}

/** The configuration after an operator removed `ordinal`: it is recorded, so the replica knows why. */
function withoutMember(configuration: Configuration, ordinal: number): Configuration {
  return normalizeConfiguration({
    members: configuration.members.filter((member) => member.ordinal !== ordinal),
    inSync: configuration.inSync.filter((member) => member !== ordinal),
    removed: [...(configuration.removed ?? []), ordinal],
  });
}
