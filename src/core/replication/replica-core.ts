/**
 * The replication protocol of one replica, as a pure state machine: no I/O, no clock reads, no randomness.
 * The driver feeds it ticks (with the current time), peer messages, client appends and the answers of the
 * configuration store; after each call it takes the output and carries it out in this order: persist the
 * epoch and the campaign, persist the entries, send the request to the configuration store, send the
 * messages, then acknowledge writes up to the commit index.
 *
 * Who leads and who is in sync is decided only by the configuration store (cluster-record.ts): a replica
 * leads only once a compare-and-swap naming it succeeded, and the leader changes the in-sync set only by a
 * compare-and-swap. Timing decides only when to ask. NOTEBOOK.md §8 states the protocol and the argument
 * for each invariant; the comments here say which rule a branch implements.
 */
import { assert } from '../assert.js';
import type { ClusterRecord } from './cluster-record.js';
import { type EpochStart, EpochHistory } from './epoch-history.js';
import { commitIndexFor, type FollowerProgress, newProgress } from './leader-progress.js';
import { isMember, takeoverRecord, withInSync, withMember, withoutInSync, withoutMember } from './membership.js';
import type {
  AppendMessage,
  AppendReplyMessage,
  InstallSnapshotMessage,
  JoinMessage,
  Outgoing,
  PeerMessage,
  StatusMessage,
} from './messages.js';
import { type CandidateStatus, chooseTakeover } from './takeover.js';
import type { Configuration, EntryMeta, Member, WireEntry } from './types.js';

/** Timing and batching settings; validated by the config so that inSyncTimeout > election timeout > heartbeat. */
export interface ReplicationTimings {
  readonly heartbeatIntervalMs: number;
  /** A follower that hears nothing from its leader for this long asks the store whether to take over. */
  readonly electionTimeoutMs: number;
  /** The leader asks the store to drop a follower that has not caught up for this long. */
  readonly inSyncTimeoutMs: number;
  /** How often a leader reads the store to find out whether it was replaced. */
  readonly storeCheckIntervalMs: number;
  readonly maxEntriesPerAppend: number;
  readonly maxInflightAppends: number;
  /** A follower further behind than this many entries is sent a snapshot instead of entries. */
  readonly snapshotLagEntries: number;
}

export const DEFAULT_REPLICATION_TIMINGS: ReplicationTimings = Object.freeze({
  heartbeatIntervalMs: 50,
  electionTimeoutMs: 500,
  inSyncTimeoutMs: 1000,
  storeCheckIntervalMs: 500,
  maxEntriesPerAppend: 512,
  maxInflightAppends: 8,
  snapshotLagEntries: 10_000,
});

/**
 * A takeover this replica asked the store for and whose outcome it does not know yet. While it is
 * pending, the replica refuses appends older than `epoch`: that refusal is what stops the old leader from
 * acknowledging anything once the swap succeeds.
 */
export interface Campaign {
  readonly epoch: number;
  /** The store version the swap names; once the store holds another version, the swap can never succeed. */
  readonly expectedVersion: string | null;
}

/** What a replica keeps on disk that the protocol needs back after a restart. */
export interface PersistedProtocolState {
  readonly currentEpoch: number;
  readonly campaign: Campaign | null;
  readonly epochStarts: readonly EpochStart[];
  readonly lastIndex: number;
  /** The latest configuration entry in the log: a hint for addresses until the store answers. */
  readonly configuration: Configuration | null;
  /** Set on a replica seeded from a backup: it may create the store's record although its log is not empty. */
  readonly restoredFromBackup: boolean;
}

export type Role = 'follower' | 'leader';

/** A versioned record as the store returns it (the same shape as configuration-store.ts's). */
export interface StoredRecord {
  readonly record: ClusterRecord;
  readonly version: string;
}

/** A request to the configuration store. At most one is outstanding at a time. */
export type StoreRequest =
  | { readonly kind: 'read' }
  | {
      readonly kind: 'compareAndSwap';
      readonly expectedVersion: string | null;
      readonly record: ClusterRecord;
      /** Why, for logs. */
      readonly purpose: string;
    };

/** The store's answer to the outstanding request. */
export type StoreAnswer =
  | { readonly kind: 'read'; readonly current: StoredRecord | null }
  | { readonly kind: 'compareAndSwap'; readonly swapped: boolean; readonly current: StoredRecord | null }
  | { readonly kind: 'failed'; readonly reason: string };

/** What the driver must do after a call, in this order. */
export interface CoreOutput {
  /** Persist this epoch before anything else (it was raised). */
  persistEpoch: number | undefined;
  /** Persist this campaign (null: clear it) before the store request is sent. */
  persistCampaign: Campaign | null | undefined;
  /** Append and apply these entries, in order (a follower's appends, or a leader's own entries). */
  entriesToPersist: WireEntry[];
  /** Send this to the configuration store, then call storeAnswered with the outcome. */
  storeRequest: StoreRequest | undefined;
  messages: Outgoing[];
  /** Writes at or below this index may be acknowledged (leader only). */
  commitIndex: number;
  /** The replica stopped leading, and why: fail every pending write so that clients retry elsewhere. */
  steppedDown: string | undefined;
  becameLeader: boolean;
  /** Fetch a snapshot from this ordinal, then call snapshotInstalled or snapshotFailed. */
  fetchSnapshotFrom: number | undefined;
  /** Changes of the record worth a log line. */
  recordChanges: string[];
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
  /** The record as last read from or written to the store. */
  readonly record: ClusterRecord | null;
  readonly snapshotting: boolean;
  /** Whether the last request to the configuration store succeeded. */
  readonly storeReachable: boolean;
  readonly storeProblem: string | null;
  /** Why no leader is being elected, while there is none; or why the leader cannot reconfigure. */
  readonly waitingReason: string | null;
  readonly followers: readonly { ordinal: number; matchIndex: number; lagEntries: number; inSync: boolean }[];
}

const BOOTSTRAP_ORDINAL = 0;

/** A follower being re-admitted to the in-sync set; see ReplicaCore.proposeConfigurationChange. */
interface PendingReadmission {
  /** The store version the re-admission's swap names; null until the swap is sent. */
  expectedVersion: string | null;
  /** The commit index when it was first counted: it must hold this much before the store is asked. */
  readonly requiredIndex: number;
  readonly sinceMs: number;
}

export class ReplicaCore {
  private role: Role = 'follower';
  private currentEpoch: number;
  private campaign: Campaign | null;
  /** The record the pending campaign asks for, to send again after a failed swap (not persisted). */
  private campaignRecord: ClusterRecord | null = null;
  private readonly history: EpochHistory;
  private logConfiguration: Configuration | null;
  private readonly restoredFromBackup: boolean;
  private leaderOrdinal: number | null = null;
  private nowMs = 0;
  private started = false;

  // What this replica knows of the store.
  private stored: StoredRecord | null = null;
  /** Whether any read has answered yet (null is a real answer: no record). */
  private storeKnown = false;
  private storeRequestOutstanding: StoreRequest | null = null;
  private lastStoreAnswerMs = Number.NEGATIVE_INFINITY;
  private lastStoreRequestMs = Number.NEGATIVE_INFINITY;
  private storeProblem: string | null = null;
  /** A read is wanted as soon as nothing is outstanding (a reply named a newer epoch, a handover …). */
  private storeReadWanted = true;

  // Follower and takeover state.
  private lastLeaderContactMs = 0;
  private knownCommitIndex = 0;
  private snapshotting = false;
  /** The last index of the snapshot installed last, to recognise reminders that crossed the install. */
  private installedSnapshotLastIndex = 0;
  private installedSnapshotAtMs = Number.NEGATIVE_INFINITY;
  private leaderLostAtMs: number | null = null;
  private lastStatusBroadcastMs = Number.NEGATIVE_INFINITY;
  private lastFollowerTickMs = Number.NEGATIVE_INFINITY;
  /** The replica a snapshot is being fetched from: it hears where this replica stands once it is installed. */
  private snapshotSource: number | null = null;
  private readonly statuses = new Map<number, ReceivedStatus>();
  private waitingReason: string | null = null;

  // Leader state.
  private readonly progress = new Map<number, FollowerProgress>();
  private epochStartIndex = 0;
  private epochStartedAtMs = 0;
  private wokeAtMs = 0;
  private lastTickMs = 0;
  private commitIndex = 0;
  /**
   * Followers counted for commits before the store lists them in sync (a re-admission in flight), with the
   * store version the swap named: until the store holds another version, the swap may still succeed.
   */
  private readonly pendingInSync = new Map<number, PendingReadmission>();
  /** Operator removals waiting for their turn (one change at a time). */
  private readonly removalsRequested = new Set<number>();
  /** Set while this leader hands over: it accepts no writes, and names `successor` once it caught up. */
  private handover: { successor: number | null; removeSelf: boolean } | null = null;

  /** Addresses of replicas that are not members yet (joiners), learned from their join requests. */
  private readonly learnedAddresses = new Map<number, string>();
  /** Set by a graceful stop: the replica takes part in no takeover any more. */
  private stopping = false;

  private output: CoreOutput = ReplicaCore.emptyOutput(0);

  constructor(
    readonly ordinal: number,
    /** The static peer list (every replica, this one included), used before the store answered. */
    private readonly peers: readonly Member[],
    private readonly timings: ReplicationTimings,
    persisted: PersistedProtocolState,
    /** Which run of this replica process this is: a counter raised and persisted at every start. */
    private readonly incarnation: number,
    /** A random identifier the driver drew, used only if this replica creates a brand-new cluster. */
    private readonly newClusterId: string,
    /** This replica's database, made when it was created; see AppendReplyMessage.storageId. */
    private readonly storageId: string,
  ) {
    assert(timings.inSyncTimeoutMs > timings.heartbeatIntervalMs, 'the in-sync timeout must exceed the heartbeat');
    assert(timings.electionTimeoutMs > timings.heartbeatIntervalMs, 'the election timeout must exceed the heartbeat');
    this.currentEpoch = persisted.currentEpoch;
    this.campaign = persisted.campaign;
    this.history = new EpochHistory(persisted.epochStarts, persisted.lastIndex);
    this.logConfiguration = persisted.configuration;
    this.restoredFromBackup = persisted.restoredFromBackup;
  }

  private static emptyOutput(commitIndex: number): CoreOutput {
    return {
      persistEpoch: undefined,
      persistCampaign: undefined,
      entriesToPersist: [],
      storeRequest: undefined,
      messages: [],
      commitIndex,
      steppedDown: undefined,
      becameLeader: false,
      fetchSnapshotFrom: undefined,
      recordChanges: [],
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

  /** Whether this leader accepts client writes now (not while it hands over). */
  get acceptsWrites(): boolean {
    return this.role === 'leader' && this.handover === null;
  }

  /** The record as last known, for the driver and the peer service. */
  get record(): ClusterRecord | null {
    return this.stored?.record ?? null;
  }

  /** Whether `ordinal` is a member of the newest known record. */
  isMemberOrdinal(ordinal: number): boolean {
    return this.stored !== null && isMember(this.stored.record, ordinal);
  }

  /**
   * The leader clock time up to which this leader's authority is confirmed: every member it counts for
   * commits accepted an append sent at or after it. A read that arrived at or before this time is
   * linearizable: no newer leader can have existed when it arrived, because a newer leader must be one of
   * them, and it refuses this epoch's appends from before it asked the store. No clocks are compared
   * across machines: both times are this leader's own.
   */
  readConfirmedAtMs(): number {
    if (this.role !== 'leader') return Number.NEGATIVE_INFINITY;
    let confirmed = this.nowMs;
    for (const ordinal of this.quorum()) {
      if (ordinal === this.ordinal) continue;
      confirmed = Math.min(confirmed, this.progress.get(ordinal)?.lastAcceptedSentAtMs ?? Number.NEGATIVE_INFINITY);
    }
    return confirmed;
  }

  /** The address of a member: from the record, the static peer list, or a joiner's request. */
  memberAddress(ordinal: number): string | undefined {
    return (
      this.stored?.record.members.find((member) => member.ordinal === ordinal)?.address ??
      this.logConfiguration?.members.find((member) => member.ordinal === ordinal)?.address ??
      this.peers.find((member) => member.ordinal === ordinal)?.address ??
      this.learnedAddresses.get(ordinal)
    );
  }

  status(): ProtocolStatus {
    const inSync = this.stored?.record.inSync ?? [];
    return {
      ordinal: this.ordinal,
      role: this.role,
      epoch: this.currentEpoch,
      leaderOrdinal: this.leaderOrdinal,
      lastIndex: this.history.lastIndex,
      lastEpoch: this.history.lastEpoch,
      commitIndex: this.role === 'leader' ? this.commitIndex : this.knownCommitIndex,
      record: this.stored?.record ?? null,
      snapshotting: this.snapshotting,
      storeReachable: this.storeProblem === null,
      storeProblem: this.storeProblem,
      waitingReason: this.role === 'leader' || this.leaderOrdinal !== null ? this.leaderWaitingReason() : this.waitingReason,
      followers: [...this.progress.entries()].map(([ordinal, progress]) => ({
        ordinal,
        matchIndex: progress.matchIndex,
        lagEntries: this.history.lastIndex - progress.matchIndex,
        inSync: inSync.includes(ordinal),
      })),
    };
  }

  private leaderWaitingReason(): string | null {
    if (this.role !== 'leader') return null;
    if (this.storeProblem !== null) {
      return `the configuration store is unreachable (${this.storeProblem}): writes go on with the in-sync set, reconfiguration waits`;
    }
    return null;
  }

  // ---------------------------------------------------------------------------------------------------
  // Inputs.

  /** Advances time. The driver calls it every few milliseconds. */
  tick(nowMs: number): void {
    this.observeTime(nowMs);
    if (this.role === 'leader') this.leaderTick();
    else this.followerTick();
    this.maybeRequestStore();
  }

  receive(message: PeerMessage, nowMs: number): void {
    this.observeTime(nowMs);
    switch (message.type) {
      case 'append':
        this.onAppend(message);
        break;
      case 'appendReply':
        this.onAppendReply(message);
        break;
      case 'status':
        this.onStatus(message);
        break;
      case 'installSnapshot':
        this.onInstallSnapshot(message);
        break;
      case 'join':
        this.onJoin(message);
        break;
      case 'leave':
        this.onLeave(message.from, message.epoch);
        break;
      case 'handover':
        // The leader says the store now names this replica: read it (the store, not the message, decides).
        if (message.epoch >= this.currentEpoch) this.storeReadWanted = true;
        break;
    }
    this.maybeRequestStore();
  }

  /** The configuration store answered the outstanding request. */
  storeAnswered(answer: StoreAnswer, nowMs: number): void {
    this.observeTime(nowMs);
    const request = this.storeRequestOutstanding;
    assert(request !== null, 'a store answer without a request');
    this.storeRequestOutstanding = null;
    if (answer.kind === 'failed') {
      this.storeProblem = answer.reason;
      // The outcome of a failed swap is unknown: find out by reading before anything else.
      this.storeReadWanted = true;
      return;
    }
    this.storeProblem = null;
    this.lastStoreAnswerMs = this.nowMs;
    if (answer.kind === 'read') {
      assert(request.kind === 'read', 'a read answer to a swap');
      this.learnRecord(answer.current);
    } else {
      assert(request.kind === 'compareAndSwap', 'a swap answer to a read');
      this.learnRecord(answer.current);
      if (answer.swapped) {
        this.output.recordChanges.push(request.purpose);
        // A handover: tell the successor to read the store now rather than after an election timeout.
        if (request.record.leader !== this.ordinal) {
          this.send(request.record.leader, { type: 'handover', from: this.ordinal, epoch: request.record.epoch });
        }
      } else {
        this.onSwapLost(request);
      }
    }
    if (this.role === 'leader') {
      this.sendAppends();
      this.advanceCommit();
    } else {
      this.followerTick();
    }
    this.maybeRequestStore();
  }

  /**
   * An operator asks the leader to remove a member. It leaves the members and the in-sync set by one
   * compare-and-swap; a leader that removes itself hands over first. Returns why the request is refused,
   * or undefined.
   */
  requestRemoval(ordinal: number, nowMs: number): string | undefined {
    this.observeTime(nowMs);
    if (this.role !== 'leader') return 'only the leader removes members';
    const record = this.stored!.record;
    if (!isMember(record, ordinal)) return `replica ${ordinal} is not a member`;
    if (record.members.length === 1) return 'the last member cannot be removed';
    if (ordinal === this.ordinal) {
      const refusal = this.startHandover(true);
      if (refusal !== undefined) return refusal;
    } else {
      this.removalsRequested.add(ordinal);
    }
    this.leaderTick();
    this.maybeRequestStore();
    return undefined;
  }

  /**
   * A graceful stop of the leader: it stops taking writes, waits until its most up-to-date in-sync follower
   * holds its whole log, and names it leader of the next epoch in the store. Returns why it cannot, or
   * undefined.
   */
  requestHandover(nowMs: number): string | undefined {
    this.observeTime(nowMs);
    if (this.role !== 'leader') return 'not the leader';
    this.stopping = true;
    const refusal = this.startHandover(false);
    if (refusal === undefined) {
      this.leaderTick();
      this.maybeRequestStore();
    }
    return refusal;
  }

  /** A graceful stop of a follower: ask the leader to take this replica out of the in-sync set now. */
  requestLeave(nowMs: number): void {
    this.observeTime(nowMs);
    this.stopping = true;
    if (this.role === 'leader' || this.leaderOrdinal === null) return;
    this.send(this.leaderOrdinal, { type: 'leave', from: this.ordinal, epoch: this.currentEpoch });
  }

  /** Whether the store, as last read, lists this replica in the in-sync set. */
  get inRecordedInSyncSet(): boolean {
    return this.stored?.record.inSync.includes(this.ordinal) ?? false;
  }

  /** Asks for a fresh read of the store at the next opportunity (the driver's graceful stop waits on it). */
  refreshRecord(nowMs: number): void {
    this.observeTime(nowMs);
    this.storeReadWanted = true;
    this.maybeRequestStore();
  }

  /**
   * The operator's last resort (Kafka's unclean election), for when every member of the recorded in-sync
   * set is gone for good: this replica names itself leader of the next epoch, alone in the in-sync set,
   * whatever the record says. Acknowledged writes it does not hold are lost. Returns why it cannot.
   */
  forceLeadership(nowMs: number): string | undefined {
    this.observeTime(nowMs);
    if (this.role === 'leader') return 'this replica already leads';
    if (this.stored === null) return 'the configuration store has not been read yet (or holds no record)';
    if (this.storeRequestOutstanding !== null) return 'a request to the configuration store is outstanding; retry shortly';
    const record = this.stored.record;
    const members = isMember(record, this.ordinal)
      ? record.members
      : [...record.members, { ordinal: this.ordinal, address: this.memberAddress(this.ordinal) ?? '' }];
    const forced: ClusterRecord = {
      ...record,
      members,
      removed: record.removed.filter((ordinal) => ordinal !== this.ordinal),
      epoch: record.epoch + 1,
      leader: this.ordinal,
      inSync: [this.ordinal],
    };
    this.startCampaign(forced, `forced leadership of epoch ${forced.epoch} by an operator`);
    return undefined;
  }

  /** The position a client write would take; undefined unless this replica leads and accepts writes. */
  nextClientPosition(): { index: number; epoch: number } | undefined {
    if (!this.acceptsWrites) return undefined;
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

  /** Sends a heartbeat to every follower now, so that a waiting read is confirmed within a round trip. */
  requestReadRound(nowMs: number): void {
    this.observeTime(nowMs);
    if (this.role !== 'leader') return;
    for (const progress of this.progress.values()) progress.lastSentMs = Number.NEGATIVE_INFINITY;
    this.sendAppends();
  }

  /** The snapshot the driver fetched is installed: the log now ends where the snapshot does. */
  snapshotInstalled(state: PersistedProtocolState, nowMs: number): void {
    this.observeTime(nowMs);
    this.history.reset(state.epochStarts, state.lastIndex);
    this.logConfiguration = state.configuration;
    this.snapshotting = false;
    this.installedSnapshotLastIndex = state.lastIndex;
    this.installedSnapshotAtMs = this.nowMs;
    const source = this.leaderOrdinal ?? this.snapshotSource;
    this.snapshotSource = null;
    this.lastLeaderContactMs = this.nowMs;
    if (source !== null) this.send(source, this.appendReply(false, 0, 0, false));
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
  // The configuration store.

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

  /** Emits a read when one is wanted or due, unless a request is outstanding. */
  private maybeRequestStore(): void {
    if (this.storeRequestOutstanding !== null || this.output.storeRequest !== undefined) return;
    const dueMs = this.role === 'leader' ? this.timings.storeCheckIntervalMs : this.timings.electionTimeoutMs;
    // After a failure, retry no faster than a heartbeat.
    if (this.storeProblem !== null && this.nowMs - this.lastStoreRequestMs < this.timings.heartbeatIntervalMs) return;
    // A follower with a leader reads now and then too, so that what it reports (members, in-sync set) is
    // never far behind; nothing it decides depends on that.
    const sinceAnswerMs = this.nowMs - this.lastStoreAnswerMs;
    const readDue =
      this.storeReadWanted ||
      (this.role === 'leader' && sinceAnswerMs >= dueMs) ||
      (this.role === 'follower' && this.leaderOrdinal === null && sinceAnswerMs >= dueMs) ||
      (this.role === 'follower' && sinceAnswerMs >= 4 * this.timings.storeCheckIntervalMs);
    if (readDue) this.requestStore({ kind: 'read' });
  }

  private requestStore(request: StoreRequest): void {
    assert(this.storeRequestOutstanding === null, 'one store request at a time');
    this.storeRequestOutstanding = request;
    this.lastStoreRequestMs = this.nowMs;
    if (request.kind === 'read') this.storeReadWanted = false;
    this.output.storeRequest = request;
  }

  /** Whether a compare-and-swap may be sent now: one configuration change at a time, of every kind. */
  private canSwap(): boolean {
    return this.storeRequestOutstanding === null && this.output.storeRequest === undefined;
  }

  private learnRecord(current: StoredRecord | null): void {
    this.storeKnown = true;
    const bootstrapping = this.campaign !== null && this.campaign.expectedVersion === null;
    const campaignBefore = this.campaign;
    const epochBefore = this.currentEpoch;
    if (current === null) {
      this.stored = null;
    } else if (this.stored === null || this.stored.version !== current.version) {
      this.stored = current;
      this.learnedAddresses.clear();
    }
    this.resolveCampaign();
    if (current === null) return;
    const record = current.record;
    if (this.role === 'leader') {
      if (record.epoch !== this.currentEpoch || record.leader !== this.ordinal) {
        this.stepDown(`the configuration store names replica ${record.leader} leader of epoch ${record.epoch}`);
      } else {
        for (const [ordinal, pending] of [...this.pendingInSync]) {
          // Settled either way once the store moved past the version the re-admission named.
          if (record.inSync.includes(ordinal)) this.pendingInSync.delete(ordinal);
          else if (pending.expectedVersion !== null && current.version !== pending.expectedVersion) this.pendingInSync.delete(ordinal);
        }
        this.syncProgressWithMembers();
      }
    }
    if (record.epoch > this.currentEpoch && record.leader !== this.ordinal) {
      // A newer leader exists: refuse the older one's appends from now on, and give the new one an election
      // timeout to reach this replica.
      this.adoptEpoch(record.epoch);
      this.lastLeaderContactMs = this.nowMs;
    }
    if (this.role === 'follower' && record.leader === this.ordinal && record.epoch >= this.currentEpoch) {
      // The store names this replica. A won campaign, or a handover to it (an epoch newer than any it had
      // accepted), makes it lead that epoch. Its own older epoch (it led, then restarted or stepped down)
      // does not: what that run counted for commits is forgotten, and a swap it sent may still land, so it
      // takes a new epoch by a swap of its own. A replica with an empty log leads only the cluster it has
      // just created: an empty log named leader is a lost disk, and the others take over.
      const won = campaignBefore !== null && record.epoch === campaignBefore.epoch;
      const handedOver = campaignBefore === null && record.epoch > epochBefore;
      if (this.emptyLog() && !bootstrapping) {
        this.waitingReason = 'the store names this replica leader, but its log is empty (a lost disk?): the others take over';
      } else if (won || handedOver) {
        this.becomeLeader(record.epoch, bootstrapping);
      } else if (this.campaign === null && this.canSwap() && !this.stopping) {
        this.startCampaign(
          takeoverRecord(record, this.ordinal, record.inSync),
          `took over again as leader of epoch ${record.epoch + 1} after a restart`,
        );
      }
    }
  }

  /**
   * Clears a pending campaign once its outcome is known: won (the store names this replica for its epoch)
   * or lost for good (the store holds another version than the one the swap named, so it can never
   * succeed). While the outcome is unknown, the campaign stays, and with it the refusal of older appends.
   */
  private resolveCampaign(): void {
    if (this.campaign === null || !this.storeKnown) return;
    const current = this.stored;
    const won = current !== null && current.record.epoch === this.campaign.epoch && current.record.leader === this.ordinal;
    const lost = !won && (current === null ? this.campaign.expectedVersion !== null : current.version !== this.campaign.expectedVersion);
    if (won || lost) {
      if (won) this.adoptEpochQuietly(this.campaign.epoch);
      this.campaign = null;
      this.output.persistCampaign = null;
    }
  }

  private onSwapLost(request: Extract<StoreRequest, { kind: 'compareAndSwap' }>): void {
    // Someone else moved first. A leader whose epoch changed stepped down in learnRecord; otherwise the
    // next tick proposes again from the current record if the change is still wanted.
    for (const [ordinal, pending] of [...this.pendingInSync]) {
      if (pending.expectedVersion === null) continue;
      if (this.stored?.version !== pending.expectedVersion && !(this.stored?.record.inSync.includes(ordinal) ?? false)) {
        this.pendingInSync.delete(ordinal);
      }
    }
    if (this.handover !== null && request.record.leader !== this.ordinal) {
      // The handover's swap lost: stay leader if the store still says so (learnRecord decided), and try again.
      this.handover = this.role === 'leader' ? { ...this.handover, successor: null } : null;
    }
  }

  /** Persists the intention, then asks the store; see Campaign. */
  private startCampaign(record: ClusterRecord, purpose: string): void {
    assert(this.stored !== null, 'a campaign needs a known record');
    const campaign: Campaign = { epoch: record.epoch, expectedVersion: this.stored.version };
    assert(campaign.epoch > this.currentEpoch, `a campaign for epoch ${campaign.epoch} is not newer than ${this.currentEpoch}`);
    this.campaign = campaign;
    this.campaignRecord = record;
    this.output.persistCampaign = campaign;
    this.requestStore({ kind: 'compareAndSwap', expectedVersion: this.stored.version, record, purpose });
  }

  // ---------------------------------------------------------------------------------------------------
  // Follower side: following, taking over, joining.

  private followerTick(): void {
    if (this.nowMs - this.lastFollowerTickMs > this.timings.electionTimeoutMs) {
      // This replica itself did not run for a while (a pause, a starved CPU): the silence was its own, so
      // the leader gets a fresh election timeout rather than being deposed for it.
      this.lastLeaderContactMs = this.nowMs;
    }
    this.lastFollowerTickMs = this.nowMs;
    // A follower fetching a snapshot hears only reminders from its leader; it keeps that leader meanwhile.
    const silent = this.nowMs - this.lastLeaderContactMs > this.timings.electionTimeoutMs;
    if (this.leaderOrdinal !== null && silent && !this.snapshotting) {
      this.leaderOrdinal = null;
      this.leaderLostAtMs = this.nowMs;
      // Learn at once whether the store already names someone else.
      this.storeReadWanted = true;
    }
    if (this.leaderOrdinal !== null || this.snapshotting) return;
    if (this.nowMs - this.lastStatusBroadcastMs >= this.timings.heartbeatIntervalMs) {
      this.lastStatusBroadcastMs = this.nowMs;
      for (const ordinal of this.statusTargets()) this.send(ordinal, this.myStatus(true, null));
      this.askToJoin();
    }
    this.considerTakeover();
  }

  /** Whether the store has been read since the leader was lost: decisions need a record that fresh. */
  private recordFresh(): boolean {
    return this.storeKnown && this.lastStoreAnswerMs >= (this.leaderLostAtMs ?? Number.NEGATIVE_INFINITY);
  }

  private considerTakeover(): void {
    if (this.stopping) {
      // A replica on its way out never asks to lead: it would take over only to stop at once.
      this.waitingReason = 'this replica is stopping';
      return;
    }
    if (!this.recordFresh()) {
      this.waitingReason =
        this.storeProblem === null
          ? 'reading the configuration store'
          : `the configuration store is unreachable (${this.storeProblem}): no leader can be named until it answers`;
      return;
    }
    if (this.campaign !== null) {
      this.waitingReason = `asking the configuration store to name this replica leader of epoch ${this.campaign.epoch}`;
      // A swap that failed (a timeout, the store down) may not have taken effect: while the store still
      // holds the version it named, the same swap is sent again. Nothing else may be sent meanwhile.
      const stillPossible = this.campaign.expectedVersion === (this.stored?.version ?? null);
      if (stillPossible && this.canSwap()) this.resendCampaign(this.campaign);
      return;
    }
    if (this.stored === null) return this.considerBootstrap();
    const record = this.stored.record;
    if (!isMember(record, this.ordinal)) {
      this.waitingReason = record.removed.includes(this.ordinal) && !this.emptyLog()
        ? 'this replica is not a member (an operator removed it): wipe its data directory to join again'
        : `asking leader ${record.leader} to let replica ${this.ordinal} join the cluster`;
      return;
    }
    if (this.nowMs - this.lastLeaderContactMs <= this.timings.electionTimeoutMs) {
      this.waitingReason = `waiting for leader ${record.leader} of epoch ${record.epoch} to make contact`;
      return;
    }
    if (this.emptyLog()) {
      this.waitingReason = 'this replica\'s log is empty (a new or wiped disk): it may lead only after catching up';
      return;
    }
    if (record.epoch < this.currentEpoch) {
      // This replica saw a newer epoch than the record it holds: read again before deciding.
      this.storeReadWanted = true;
      return;
    }
    // Give every live replica one round to report, so that the most up-to-date one is seen.
    const lostAtMs = this.leaderLostAtMs ?? this.nowMs;
    if (this.nowMs - lostAtMs < 2 * this.timings.heartbeatIntervalMs) {
      this.waitingReason = 'gathering the status of the other replicas';
      return;
    }
    const others: CandidateStatus[] = [];
    for (const [ordinal, received] of this.statuses) {
      if (this.nowMs - received.askedAtMs > this.timings.electionTimeoutMs) continue;
      if (!isMember(record, ordinal)) continue;
      others.push({ ordinal, ...pickPosition(received.status) });
    }
    const self: CandidateStatus = {
      ordinal: this.ordinal,
      lastIndex: this.history.lastIndex,
      lastEpoch: this.history.lastEpoch,
      leaderOrdinal: null,
      epoch: this.currentEpoch,
    };
    const patient = this.nowMs - lostAtMs >= 2 * this.timings.electionTimeoutMs;
    const choice = chooseTakeover(record, self, others, patient);
    if (choice.kind === 'wait') {
      this.waitingReason = choice.reason;
      return;
    }
    if (!this.canSwap()) return;
    const next = takeoverRecord(record, this.ordinal, choice.keepInSync);
    if (next.epoch <= this.currentEpoch) {
      this.storeReadWanted = true;
      return;
    }
    this.waitingReason = `asking the configuration store to name this replica leader of epoch ${next.epoch}`;
    this.startCampaign(next, `took over as leader of epoch ${next.epoch} (in sync: ${next.inSync.join(', ')})`);
  }

  private resendCampaign(campaign: Campaign): void {
    const record =
      this.campaignRecord !== null && this.campaignRecord.epoch === campaign.epoch
        ? this.campaignRecord
        : this.stored === null
          ? this.bootstrapRecord()
          : takeoverRecord(this.stored.record, this.ordinal, []);
    if (record.epoch !== campaign.epoch) return;
    this.requestStore({
      kind: 'compareAndSwap',
      expectedVersion: campaign.expectedVersion,
      record,
      purpose: `asked again to lead epoch ${record.epoch}`,
    });
  }

  private bootstrapRecord(): ClusterRecord {
    return {
      epoch: Math.max(1, this.currentEpoch + 1),
      leader: this.ordinal,
      members: [...this.peers].sort((a, b) => a.ordinal - b.ordinal),
      inSync: [this.ordinal],
      removed: [],
      clusterId: this.newClusterId,
    };
  }

  /** A brand-new cluster is created once, by replica 0, when the store holds no record. */
  private considerBootstrap(): void {
    if (this.ordinal !== BOOTSTRAP_ORDINAL) {
      this.waitingReason = 'the configuration store holds no cluster yet: waiting for replica 0 to create it';
      return;
    }
    if (!this.emptyLog() && !this.restoredFromBackup) {
      // A replica with data never starts a new cluster on its own: the store may have been wiped or
      // pointed elsewhere, and starting afresh would silently fork the data.
      this.waitingReason =
        'the configuration store holds no cluster record, but this replica has data: check --etcd-prefix and ' +
        '--cluster-name (or the Lease name); if the store lost its data, restore it from its own backup, or seed a ' +
        'new cluster from this data with `replichat backup` and `replichat restore`';
      return;
    }
    if (!this.canSwap()) return;
    const record = this.bootstrapRecord();
    this.waitingReason = 'creating the cluster in the configuration store';
    this.campaignRecord = record;
    this.campaign = { epoch: record.epoch, expectedVersion: null };
    this.output.persistCampaign = this.campaign;
    this.requestStore({ kind: 'compareAndSwap', expectedVersion: null, record, purpose: `created the cluster (epoch ${record.epoch})` });
  }

  private emptyLog(): boolean {
    return this.history.lastIndex === 0;
  }

  /** A replica that is not a member asks the recorded leader to add it. */
  private askToJoin(): void {
    if (this.stored === null) return;
    const record = this.stored.record;
    if (isMember(record, this.ordinal)) return;
    if (record.removed.includes(this.ordinal) && !this.emptyLog()) return;
    const address = this.memberAddress(this.ordinal);
    if (address === undefined) return;
    this.send(record.leader, { type: 'join', from: this.ordinal, epoch: this.currentEpoch, address, emptyLog: this.emptyLog() });
  }

  private myStatus(replyWanted: boolean, askedAtMs: number | null): StatusMessage {
    return {
      type: 'status',
      from: this.ordinal,
      epoch: this.currentEpoch,
      lastIndex: this.history.lastIndex,
      lastEpoch: this.history.lastEpoch,
      leaderOrdinal: this.role === 'leader' ? this.ordinal : this.leaderOrdinal,
      replyWanted,
      sentAtMs: this.nowMs,
      askedAtMs,
    };
  }

  /** Whom a replica without a leader asks for status: every member and every static peer. */
  private statusTargets(): number[] {
    const ordinals = new Set<number>(this.peers.map((member) => member.ordinal));
    for (const member of this.stored?.record.members ?? []) ordinals.add(member.ordinal);
    ordinals.delete(this.ordinal);
    return [...ordinals].sort((a, b) => a - b);
  }

  private onStatus(status: StatusMessage): void {
    // Only answers to this replica's own questions count: a status that was merely delayed could
    // describe a replica as it was long ago.
    if (status.askedAtMs !== null && status.askedAtMs <= this.nowMs) {
      const previous = this.statuses.get(status.from);
      if (previous === undefined || previous.askedAtMs <= status.askedAtMs) {
        this.statuses.set(status.from, { status, askedAtMs: status.askedAtMs });
      }
    }
    if (status.replyWanted) this.send(status.from, this.myStatus(false, status.sentAtMs));
    if (status.epoch > this.currentEpoch) this.storeReadWanted = true;
    if (this.role === 'leader') {
      // A member that does not know its leader gets a heartbeat at once rather than at the next tick.
      if (status.leaderOrdinal !== this.ordinal && status.epoch <= this.currentEpoch) {
        const progress = this.progress.get(status.from);
        if (progress !== undefined) progress.lastSentMs = Number.NEGATIVE_INFINITY;
        this.sendAppends();
      }
      return;
    }
    if (this.leaderOrdinal === null && !this.snapshotting) this.considerTakeover();
  }

  /** The lowest epoch whose appends this replica accepts: its epoch, or a pending campaign's. */
  private fenceEpoch(): number {
    return Math.max(this.currentEpoch, this.campaign?.epoch ?? 0);
  }

  private onAppend(message: AppendMessage): void {
    if (message.epoch < this.fenceEpoch()) {
      // An older leader: refuse, and tell it the newer epoch so that it reads the store.
      this.send(message.from, this.appendReply(false, 0, message.sentAtMs, false));
      return;
    }
    if (this.role === 'leader') {
      assert(message.epoch !== this.currentEpoch, `two leaders in epoch ${message.epoch}`);
      this.stepDown(`replica ${message.from} leads the newer epoch ${message.epoch}`);
    }
    if (message.epoch > this.currentEpoch) this.adoptEpoch(message.epoch);
    if (this.campaign !== null && message.epoch >= this.campaign.epoch && message.from !== this.ordinal) {
      // Another replica leads an epoch at least as new as the campaign's, so the store moved past the
      // version the campaign named: it can never succeed.
      this.campaign = null;
      this.output.persistCampaign = null;
    }
    this.leaderOrdinal = message.from;
    this.lastLeaderContactMs = this.nowMs;
    this.leaderLostAtMs = null;
    this.knownCommitIndex = Math.max(this.knownCommitIndex, message.commitIndex);
    if (this.snapshotting) {
      this.send(message.from, this.appendReply(false, 0, message.sentAtMs, false));
      return;
    }
    // The entries must directly follow a position both logs agree on; entries already held are skipped,
    // which makes duplicated and re-sent appends harmless. A held entry of another epoch means the logs
    // diverged: this replica applied entries the leader does not have, and needs a snapshot.
    const ok = this.appendMatching(message);
    const matchIndex = ok ? message.prevIndex + message.entries.length : 0;
    this.send(message.from, {
      ...this.appendReply(ok, matchIndex, message.sentAtMs, ok && message.requestDigest, message.leaderIncarnation),
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
      // Log matching needs entries in epoch order; a broken order is a bug in the sender.
      if (entry.epoch < this.history.lastEpoch || entry.epoch > message.epoch) return false;
      this.appendEntry(entry);
    }
    return true;
  }

  private appendEntry(entry: WireEntry): void {
    this.history.append(entry.index, entry.epoch);
    if (entry.configuration !== undefined) this.logConfiguration = entry.configuration;
    this.output.entriesToPersist.push(entry);
  }

  private appendReply(
    ok: boolean,
    matchIndex: number,
    echoSentAtMs: number,
    withDigest: boolean,
    echoLeaderIncarnation = 0,
  ): AppendReplyMessage {
    return {
      type: 'appendReply',
      from: this.ordinal,
      epoch: this.fenceEpoch(),
      ok,
      matchIndex,
      lastIndex: this.history.lastIndex,
      lastEpoch: this.history.lastEpoch,
      incarnation: this.incarnation,
      storageId: this.storageId,
      echoSentAtMs,
      echoLeaderIncarnation,
      carriedEntries: false,
      snapshotting: this.snapshotting,
      // An empty log has no chain to compare (and is never re-admitted).
      ...(withDigest && this.history.lastIndex > 0 ? { digest: { index: this.history.lastIndex, value: '' } } : {}),
    };
  }

  private onInstallSnapshot(message: InstallSnapshotMessage): void {
    // Installed only from the leader of the current epoch: the one this replica follows (it learned it from
    // an append), or the one the store names for that epoch (a replica that restarted far behind hears
    // nothing but this request from its leader). Never from whoever asks.
    if (this.role === 'leader' || message.epoch < this.fenceEpoch()) return;
    const named = this.stored !== null && this.stored.record.epoch === message.epoch && this.stored.record.leader === message.from;
    const followed = message.epoch === this.currentEpoch && message.from === this.leaderOrdinal;
    if (!named && !followed) {
      if (message.epoch > this.currentEpoch) this.storeReadWanted = true;
      return;
    }
    if (message.epoch > this.currentEpoch) this.adoptEpoch(message.epoch);
    this.leaderOrdinal = message.from;
    this.leaderLostAtMs = null;
    this.lastLeaderContactMs = this.nowMs;
    if (this.snapshotting) return;
    if (
      message.leaderLastIndex <= this.installedSnapshotLastIndex ||
      this.nowMs - this.installedSnapshotAtMs < this.timings.electionTimeoutMs
    ) {
      // A reminder sent before the snapshot this replica just installed (it crossed this replica's answer):
      // tell the leader where it stands rather than fetch a second snapshot.
      this.send(message.from, this.appendReply(false, 0, 0, false));
      return;
    }
    this.snapshotting = true;
    this.snapshotSource = message.from;
    this.output.fetchSnapshotFrom = message.from;
  }

  /** A replica asks to become a member: it is added, not in sync; it catches up, then is re-admitted. */
  private onJoin(message: JoinMessage): void {
    if (this.role !== 'leader') return;
    const record = this.stored!.record;
    if (isMember(record, message.from)) return;
    // A replica an operator removed comes back only wiped, so that removal is not undone by accident.
    if (record.removed.includes(message.from) && !message.emptyLog) return;
    if (this.learnedAddresses.size < 64 || this.learnedAddresses.has(message.from)) {
      this.learnedAddresses.set(message.from, message.address);
    }
    // One configuration change at a time: the joiner asks again until its turn comes.
    if (!this.canSwap()) return;
    this.requestStore({
      kind: 'compareAndSwap',
      expectedVersion: this.stored!.version,
      record: withMember(record, { ordinal: message.from, address: message.address }),
      purpose: `added replica ${message.from} as a member`,
    });
  }

  private onLeave(from: number, epoch: number): void {
    if (this.role !== 'leader' || epoch > this.currentEpoch) return;
    const progress = this.progress.get(from);
    if (progress !== undefined) progress.leaving = true;
    this.leaderTick();
  }

  /** Accepts a newer epoch: persisted first, and a leader stops leading. */
  private adoptEpoch(epoch: number): void {
    assert(epoch > this.currentEpoch, 'epochs only grow');
    if (this.role === 'leader') this.stepDown(`epoch ${epoch} began`);
    this.currentEpoch = epoch;
    this.output.persistEpoch = epoch;
  }

  private adoptEpochQuietly(epoch: number): void {
    if (epoch <= this.currentEpoch) return;
    this.currentEpoch = epoch;
    this.output.persistEpoch = epoch;
  }

  private stepDown(reason: string): void {
    const wasLeader = this.role === 'leader';
    this.role = 'follower';
    this.leaderOrdinal = null;
    this.leaderLostAtMs = this.nowMs;
    this.lastLeaderContactMs = this.nowMs;
    this.progress.clear();
    this.pendingInSync.clear();
    this.removalsRequested.clear();
    this.handover = null;
    this.storeReadWanted = true;
    if (wasLeader) this.output.steppedDown = reason;
  }

  // ---------------------------------------------------------------------------------------------------
  // Leader side: replication, commit, the in-sync set.

  private becomeLeader(epoch: number, bootstrap: boolean): void {
    this.adoptEpochQuietly(epoch);
    this.role = 'leader';
    this.leaderOrdinal = this.ordinal;
    this.leaderLostAtMs = null;
    this.epochStartedAtMs = this.nowMs;
    this.wokeAtMs = this.nowMs;
    this.lastTickMs = this.nowMs;
    this.lastStoreAnswerMs = this.nowMs;
    this.commitIndex = 0;
    this.statuses.clear();
    this.waitingReason = null;
    this.progress.clear();
    this.pendingInSync.clear();
    this.handover = null;
    this.syncProgressWithMembers();
    this.output.becameLeader = true;
    const record = this.stored!.record;
    const configuration: Configuration = { members: record.members, inSync: record.inSync };
    // Only a brand-new log gets the cluster's secrets; a log restored from a backup already has them.
    if (this.history.lastIndex === 0) this.appendOwnEntry({ initialize: true });
    // The first entry of an epoch (like Raft's no-op) carries the configuration: followers with a
    // divergent tail find out, and nothing is acknowledged until every in-sync member holds it.
    this.appendOwnEntry({ configuration });
    this.epochStartIndex = this.history.lastIndex;
    this.sendAppends();
    this.advanceCommit();
  }

  private appendOwnEntry(entry: Omit<EntryMeta, 'index' | 'epoch'>): void {
    const index = this.history.lastIndex + 1;
    this.history.append(index, this.currentEpoch);
    if (entry.configuration !== undefined) this.logConfiguration = entry.configuration;
    this.output.entriesToPersist.push({ index, epoch: this.currentEpoch, ...entry });
  }

  /** The leader replicates to exactly the members of the record. */
  private syncProgressWithMembers(): void {
    const members = new Set(this.stored!.record.members.map((member) => member.ordinal));
    members.delete(this.ordinal);
    for (const ordinal of members) if (!this.progress.has(ordinal)) this.progress.set(ordinal, newProgress(this.nowMs, this.history.lastIndex));
    for (const ordinal of [...this.progress.keys()]) if (!members.has(ordinal)) this.progress.delete(ordinal);
  }

  /** Whom commits wait for: the recorded in-sync set, plus followers being re-admitted. */
  private quorum(): Set<number> {
    const quorum = new Set(this.stored?.record.inSync ?? []);
    for (const ordinal of this.pendingInSync.keys()) quorum.add(ordinal);
    return quorum;
  }

  private leaderTick(): void {
    if (this.nowMs - this.lastTickMs > this.timings.electionTimeoutMs) {
      // This leader did not run for a while (a pause): count every silence again from now, so that a
      // follower is dropped only after it failed to answer attempts made while this leader was running.
      this.wokeAtMs = this.nowMs;
      this.storeReadWanted = true;
    }
    this.lastTickMs = this.nowMs;
    for (const progress of this.progress.values()) {
      // Appends or replies were lost: start again from the last confirmed position.
      const outstanding = progress.nextIndex > progress.matchIndex + 1 || progress.inflightAppends > 0;
      if (outstanding && this.nowMs - progress.lastProgressMs > 4 * this.timings.heartbeatIntervalMs) {
        progress.inflightAppends = 0;
        progress.nextIndex = progress.matchIndex + 1;
        progress.lastProgressMs = this.nowMs;
      }
    }
    this.proposeConfigurationChange();
    this.sendAppends();
    this.advanceCommit();
  }

  /** At most one change is proposed at a time, in this order of urgency. */
  private proposeConfigurationChange(): void {
    if (this.role !== 'leader' || !this.canSwap() || this.stored === null) return;
    const { record, version } = this.stored;
    const swap = (next: ClusterRecord, purpose: string): void =>
      this.requestStore({ kind: 'compareAndSwap', expectedVersion: version, record: next, purpose });

    // 1. A handover whose successor caught up.
    if (this.handover !== null) {
      const successor = this.handover.successor ?? this.chooseSuccessor();
      this.handover.successor = successor;
      const progress = successor === null ? undefined : this.progress.get(successor);
      if (successor !== null && progress !== undefined && progress.matchIndex === this.history.lastIndex && this.commitIndex === this.history.lastIndex) {
        const next = takeoverRecord(record, successor, record.inSync.filter((ordinal) => ordinal !== this.ordinal));
        const final = this.handover.removeSelf ? withoutMember(next, this.ordinal) : next;
        swap(final, `handed leadership of epoch ${final.epoch} to replica ${successor}`);
        return;
      }
    }
    // 2. Followers that fell out of sync leave the in-sync set; commits wait for them until the store agrees.
    const lagging = record.inSync.filter((ordinal) => {
      if (ordinal === this.ordinal) return false;
      const progress = this.progress.get(ordinal);
      if (progress === undefined) return true;
      if (progress.leaving) return true;
      const sinceMs = Math.max(progress.lastCaughtUpMs, this.epochStartedAtMs, this.wokeAtMs);
      return this.nowMs - sinceMs > this.timings.inSyncTimeoutMs;
    });
    if (lagging.length > 0) {
      swap(withoutInSync(record, lagging), `removed replica ${lagging.join(', ')} from the in-sync set`);
      return;
    }
    // 3. Operator removals.
    for (const ordinal of this.removalsRequested) {
      this.removalsRequested.delete(ordinal);
      if (!isMember(record, ordinal) || ordinal === this.ordinal) continue;
      swap(withoutMember(record, ordinal), `removed replica ${ordinal} from the members at an operator's request`);
      return;
    }
    // 4. Re-admission of a caught-up follower whose state was verified equal, in two steps, so that it
    // works under a continuous stream of writes (the follower is never exactly at the end). First it is
    // counted for commits: every entry committed from then on waits for it. Then, once it holds every entry
    // committed before that moment, the store is asked to list it in sync.
    if (this.handover !== null) return;
    for (const [ordinal, progress] of this.progress) {
      if (record.inSync.includes(ordinal) || progress.leaving || progress.snapshotRequestedAtMs !== null) continue;
      const pending = this.pendingInSync.get(ordinal);
      if (pending === undefined) {
        if (!this.caughtUp(progress)) continue;
        if (progress.verifiedDigestIndex === 0 || progress.matchIndex < progress.verifiedDigestIndex) continue;
        // Only a follower that answers now is counted for commits: a dead one (its last digest is old)
        // would stall every write until it is dropped again (found by the simulation).
        const freshMs = 2 * this.timings.heartbeatIntervalMs + this.timings.electionTimeoutMs / 5;
        if (this.nowMs - progress.verifiedDigestAtMs > freshMs || this.nowMs - progress.lastOkReplyMs > freshMs) continue;
        // Acknowledged writes may lie anywhere up to the epoch's first entry (the previous leader acknowledged
        // them) or up to the commit index: the follower must hold both before it can be listed.
        const requiredIndex = Math.max(this.commitIndex, this.epochStartIndex);
        this.pendingInSync.set(ordinal, { expectedVersion: null, requiredIndex, sinceMs: this.nowMs });
        continue;
      }
      if (pending.expectedVersion !== null) {
        // Asked already. While the store still holds the version that swap named, it has not taken effect
        // (its answer was lost or timed out): ask again; the same expected version lets at most one apply.
        if (pending.expectedVersion === version) {
          swap(withInSync(record, ordinal), `re-admitted replica ${ordinal} to the in-sync set`);
          return;
        }
        continue;
      }
      if (progress.matchIndex >= pending.requiredIndex) {
        pending.expectedVersion = version;
        swap(withInSync(record, ordinal), `re-admitted replica ${ordinal} to the in-sync set`);
        return;
      }
      // Not asked yet, so nobody relies on it: a follower that does not catch up stops holding commits back.
      if (this.nowMs - pending.sinceMs > this.timings.inSyncTimeoutMs) this.pendingInSync.delete(ordinal);
    }
  }

  /** Within the pipeline window of the leader's end, as Kafka's replica.lag.time.max.ms counts "caught up". */
  private caughtUp(progress: FollowerProgress): boolean {
    return this.history.lastIndex - progress.matchIndex <= this.timings.maxEntriesPerAppend;
  }

  private chooseSuccessor(): number | null {
    let best: number | null = null;
    for (const ordinal of this.stored!.record.inSync) {
      if (ordinal === this.ordinal) continue;
      const progress = this.progress.get(ordinal);
      if (progress === undefined || progress.leaving) continue;
      if (this.nowMs - progress.lastAnsweredReceivedMs > this.timings.electionTimeoutMs) continue;
      if (best === null || progress.matchIndex > this.progress.get(best)!.matchIndex) best = ordinal;
    }
    return best;
  }

  private startHandover(removeSelf: boolean): string | undefined {
    if (this.chooseSuccessor() === null) {
      return 'the leader can hand over only while another in-sync member answers: retry once one does';
    }
    this.handover = { successor: null, removeSelf };
    return undefined;
  }

  private sendAppends(): void {
    if (this.role !== 'leader') return;
    const quorum = this.quorum();
    for (const [ordinal, progress] of this.progress) {
      if (progress.snapshotRequestedAtMs !== null) {
        // The follower is fetching a snapshot; remind it well within its election timeout, so that the request
        // is repeated if it was lost and the follower never mistakes the wait for a dead leader.
        if (this.nowMs - progress.snapshotRequestedAtMs > this.timings.electionTimeoutMs / 2) this.requestSnapshot(ordinal, progress);
        continue;
      }
      if (progress.nextIndex <= this.history.lastIndex && this.history.epochAt(progress.nextIndex - 1) === undefined) {
        // The entries this follower needs were truncated from the log: only a snapshot can bring it up.
        this.requestSnapshot(ordinal, progress);
        continue;
      }
      // Followers out of the in-sync set are asked for their digest once they are close, at most once a
      // heartbeat, on an ordinary append: re-admission must not wait for a quiet moment that never comes.
      const wantsDigest =
        !quorum.has(ordinal) &&
        this.caughtUp(progress) &&
        this.nowMs - progress.lastDigestRequestMs >= this.timings.heartbeatIntervalMs;
      let sent = false;
      // A follower that has not answered for an election timeout is sent no entries, only the heartbeat
      // below: its answer says where it stands, and entries follow at the next tick. Entries for a
      // follower that may be dead cost the leader a read of up to a whole append from SQLite (it is far
      // behind what the driver keeps in memory) and its encoding, at every reset of its position in
      // leaderTick, for nothing; a follower that is merely slow loses one heartbeat interval once it
      // answers again.
      const responsive = this.nowMs - progress.lastAnsweredReceivedMs <= this.timings.electionTimeoutMs;
      while (
        responsive &&
        progress.inflightAppends < this.timings.maxInflightAppends &&
        progress.nextIndex <= this.history.lastIndex
      ) {
        const fromIndex = progress.nextIndex;
        const toIndex = Math.min(this.history.lastIndex, fromIndex + this.timings.maxEntriesPerAppend - 1);
        const digest = wantsDigest && !sent;
        this.sendAppend(ordinal, progress, fromIndex - 1, { fromIndex, toIndex }, digest);
        progress.nextIndex = toIndex + 1;
        progress.inflightAppends += 1;
        sent = true;
      }
      if (sent) continue;
      if (wantsDigest || this.nowMs - progress.lastSentMs >= this.timings.heartbeatIntervalMs) {
        // A heartbeat checks the last position known to match; if the log no longer holds it, it probes at
        // the end of the log, and the follower's answer says where it stands.
        const probeIndex =
          this.history.epochAt(progress.matchIndex) === undefined ? this.history.lastIndex : progress.matchIndex;
        this.sendAppend(ordinal, progress, probeIndex, undefined, wantsDigest);
      }
    }
  }

  private sendAppend(
    ordinal: number,
    progress: FollowerProgress,
    prevIndex: number,
    entryRange: { fromIndex: number; toIndex: number } | undefined,
    requestDigest: boolean,
  ): void {
    const prevEpoch = this.history.epochAt(prevIndex);
    assert(prevEpoch !== undefined, `the leader has no entry ${prevIndex}`);
    progress.lastSentMs = this.nowMs;
    if (requestDigest) progress.lastDigestRequestMs = this.nowMs;
    this.send(ordinal, {
      type: 'append',
      from: this.ordinal,
      epoch: this.currentEpoch,
      prevIndex,
      prevEpoch,
      entries: [],
      ...(entryRange === undefined ? {} : { entryRange }),
      commitIndex: this.commitIndex,
      sentAtMs: this.nowMs,
      leaderIncarnation: this.incarnation,
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
      // A newer epoch exists or is being asked for: the store decides whether this leader was replaced.
      this.storeReadWanted = true;
      return;
    }
    if (this.role !== 'leader' || reply.epoch < this.currentEpoch) return;
    const progress = this.progress.get(reply.from);
    if (progress === undefined) return;
    if (progress.storageId === null) {
      progress.storageId = reply.storageId;
    } else if (reply.storageId !== progress.storageId) {
      // A delayed reply from a disk this follower has since lost says nothing about what it holds now.
      if (progress.retiredStorageIds.has(reply.storageId)) return;
      // A new disk: believe only what it holds now; its run counter starts again.
      if (progress.retiredStorageIds.size < 16) progress.retiredStorageIds.add(progress.storageId);
      progress.storageId = reply.storageId;
      progress.incarnation = 0;
      progress.matchIndex = 0;
      progress.nextIndex = this.history.lastIndex + 1;
      progress.inflightAppends = 0;
      progress.verifiedDigestIndex = 0;
    }
    if (reply.incarnation < progress.incarnation) return; // From a run of the follower that has since ended.
    if (reply.incarnation > progress.incarnation) {
      // The follower restarted. If it came back with less than we believed it held, it lost its disk:
      // believe only what it holds now.
      progress.incarnation = reply.incarnation;
      progress.leaving = false;
      if (reply.lastIndex < progress.matchIndex) {
        progress.matchIndex = 0;
        progress.nextIndex = this.history.lastIndex + 1;
        progress.inflightAppends = 0;
        progress.verifiedDigestIndex = 0;
      }
    }
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
    if (!followerLogIsPrefix && reply.lastIndex > 0) {
      // The follower's last entry is not in this leader's log: it holds entries this leader does not (a
      // deposed leader's unacknowledged tail), applied to its tables, which cannot be undone. Only a
      // snapshot repairs it, whether or not this reply accepted an append (a heartbeat at an index both
      // logs share is accepted, and would otherwise hide the divergence while no new write arrives).
      if (progress.snapshotRequestedAtMs === null) this.requestSnapshot(reply.from, progress);
      this.sendAppends();
      this.advanceCommit();
      return;
    }
    if (this.caughtUp(progress)) progress.lastCaughtUpMs = this.nowMs;
    if (reply.ok && reply.lastIndex === 0 && this.history.lastIndex > this.timings.maxEntriesPerAppend && progress.snapshotRequestedAtMs === null) {
      // An empty replica accepted a heartbeat at index 0: it needs the whole log, which does not fit in an
      // append; send the snapshot now rather than when the next write reveals the gap.
      this.requestSnapshot(reply.from, progress);
    }
    if (reply.ok) {
      progress.lastOkReplyMs = this.nowMs;
      // Only an accepted append of this epoch, sent by this very run (its clock), confirms the read
      // authority (see readConfirmedAtMs): a delayed reply to an earlier run's append says nothing of now.
      if (reply.echoLeaderIncarnation === this.incarnation) {
        progress.lastAcceptedSentAtMs = Math.max(progress.lastAcceptedSentAtMs, Math.min(reply.echoSentAtMs, this.nowMs));
      }
      if (reply.carriedEntries) progress.inflightAppends = Math.max(0, progress.inflightAppends - 1);
      progress.nextIndex = Math.max(progress.nextIndex, progress.matchIndex + 1);
      // Everything sent is held: no append is outstanding, whatever became of their replies.
      if (progress.nextIndex === progress.matchIndex + 1) progress.inflightAppends = 0;
      if (reply.digestVerified === true && reply.digest !== undefined && reply.digest.index <= progress.matchIndex) {
        progress.verifiedDigestIndex = Math.max(progress.verifiedDigestIndex, reply.digest.index);
        progress.verifiedDigestAtMs = this.nowMs;
      }
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
    if (!this.quorum().has(reply.from)) this.proposeConfigurationChange();
    this.sendAppends();
    this.advanceCommit();
  }

  /** The commit index is the highest index every member of the quorum holds; see commitIndexFor. */
  private advanceCommit(): void {
    if (this.role !== 'leader') return;
    this.commitIndex = commitIndexFor(
      this.ordinal,
      this.history.lastIndex,
      this.quorum(),
      this.progress,
      this.epochStartIndex,
      this.commitIndex,
    );
    this.output.commitIndex = this.commitIndex;
    if (this.handover !== null) this.proposeConfigurationChange();
  }

  private send(to: number, message: PeerMessage): void {
    this.output.messages.push({ to, message });
  }
}

function pickPosition(status: StatusMessage): Omit<CandidateStatus, 'ordinal'> {
  return { lastIndex: status.lastIndex, lastEpoch: status.lastEpoch, leaderOrdinal: status.leaderOrdinal, epoch: status.epoch };
}
