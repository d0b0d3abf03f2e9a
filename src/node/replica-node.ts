/**
 * The driver of one replica: it owns the SQLite store and the pure protocol core, feeds the core ticks and
 * peer messages, and carries out what the core returns in the order the core requires (persist the epoch,
 * persist entries, send messages, then acknowledge writes). It is the ChatService's WritePath: a client
 * write is appended and applied by the leader, then acknowledged once every in-sync follower holds it.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { WritePath } from '../api/chat-service.js';
import { assert } from '../core/assert.js';
import type { ClientCommand, Command, CommandResult } from '../core/commands.js';
import { ChatError, FailedPreconditionError, UnavailableError } from '../core/errors.js';
import type { PeerMessage } from '../core/replication/messages.js';
import {
  type ProtocolStatus,
  ReplicaCore,
  type ReplicationTimings,
} from '../core/replication/replica-core.js';
import type { Member, WireEntry } from '../core/replication/types.js';
import { ReplicaStore, type LogEntry } from '../storage/replica-store.js';
import { createSnapshot, type SnapshotFile, swapInSnapshot } from '../storage/snapshot.js';

/** What the driver needs to reach other replicas. The transport layer implements it. */
export interface PeerNetwork {
  send(address: string, message: PeerMessage): void;
  /** Fetches a verified snapshot from the replica at `address` into a temporary file in `directory`. */
  fetchSnapshot(
    address: string,
    request: { requesterOrdinal: number; epoch: number },
    directory: string,
    onProgress: (bytesReceived: number, sizeBytes: number) => void,
  ): Promise<{ tempPath: string; lastIndex: number }>;
}

/** Receives the driver's events, for metrics. */
export interface ReplicaObserver {
  onElection(): void;
  onSnapshotInstalled(durationSeconds: number): void;
  onReplicationRoundTrip(durationSeconds: number): void;
  onSnapshotServed(outcome: 'sent' | 'cancelled' | 'failed', sizeBytes: number): void;
}

export interface ReplicaNodeOptions {
  readonly ordinal: number;
  readonly peers: readonly Member[];
  readonly timings: ReplicationTimings;
  /** How many of the newest log entries are kept; older ones are deleted (snapshots carry their effect). */
  readonly logRetentionEntries: number;
  readonly dataDirectory: string;
  /** Where clients reach this replica; handed to clients that asked a follower. */
  readonly clientAddress: string;
}

interface PendingWrite {
  readonly index: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  readonly submittedAtMs: number;
}

/** How many leader digests are kept for comparing with followers that ask to re-enter the in-sync set. */
const DIGEST_CACHE_ENTRIES = 8;

export class ReplicaNode implements WritePath {
  private store: ReplicaStore;
  private readonly core: ReplicaCore;
  private readonly databasePath: string;
  private readonly leadershipLostListeners: (() => void)[] = [];
  private authorityWaiters: { resolve: () => void; reject: (error: unknown) => void; timer: NodeJS.Timeout }[] = [];
  /** Client writes queued for the next batch. */
  private submitted: { command: ClientCommand; resolve: (result: CommandResult) => void; reject: (error: unknown) => void }[] =
    [];
  /** Writes and reads waiting for the commit index, in index order. */
  private waiting: PendingWrite[] = [];
  private readonly clientAddressByOrdinal = new Map<number, string>();
  private readonly digestByIndex = new Map<number, string>();
  private flushScheduled = false;
  private tickTimer: NodeJS.Timeout | undefined;
  private snapshotStartedAtMs: number | undefined;
  private snapshotProgress: { bytesReceived: number; sizeBytes: number } | undefined;
  private stopped = false;
  /** While the database file is being swapped for a snapshot, the store is closed: inputs are dropped. */
  private swapping = false;

  constructor(
    private readonly options: ReplicaNodeOptions,
    private readonly network: PeerNetwork,
    private readonly logger: Logger,
    private readonly observer: ReplicaObserver,
  ) {
    this.databasePath = join(options.dataDirectory, 'replichat.sqlite');
    this.store = ReplicaStore.open(this.databasePath);
    // The wall clock at start tells runs of this process apart (see AppendReplyMessage.incarnation).
    this.core = new ReplicaCore(options.ordinal, options.peers, options.timings, this.store.protocolState(), Date.now());
    this.clientAddressByOrdinal.set(options.ordinal, options.clientAddress);
  }

  /** Starts the protocol timer. */
  start(): void {
    const tickIntervalMs = Math.max(5, Math.floor(this.options.timings.heartbeatIntervalMs / 2));
    this.tickTimer = setInterval(() => this.tick(), tickIntervalMs);
    this.tick();
  }

  stop(): void {
    this.stopped = true;
    if (this.tickTimer !== undefined) clearInterval(this.tickTimer);
    const shuttingDown = new UnavailableError('the replica is shutting down');
    for (const item of this.submitted.splice(0)) item.reject(shuttingDown);
    for (const waiter of this.authorityWaiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(shuttingDown);
    }
    this.failWaiting(shuttingDown);
    this.store.close();
  }

  /** The monotonic clock the protocol runs on: it never jumps with the wall clock. */
  private nowMs(): number {
    return performance.now();
  }

  // ---------------------------------------------------------------------------------------------------
  // WritePath, for the ChatService.

  get chat() {
    return this.store.chat;
  }

  nextTimestampMs(): number {
    return Math.max(Date.now(), this.store.lastTimestampMs);
  }

  checkServing(): void {
    if (this.stopped) throw new UnavailableError('the replica is shutting down');
    if (this.swapping) throw new UnavailableError('the replica is installing a snapshot');
    if (this.core.isLeader) return;
    const leader = this.core.currentLeader;
    const leaderAddress = leader === null ? undefined : this.clientAddressByOrdinal.get(leader);
    throw new UnavailableError(
      leader === null
        ? `replica ${this.options.ordinal} is not the leader and no leader is known yet`
        : `replica ${this.options.ordinal} is not the leader; replica ${leader} is`,
      leaderAddress,
    );
  }

  /**
   * Queues a client write. Writes that arrive in the same turn of the event loop are applied together in
   * one SQLite transaction (group commit: one fsync for the batch, each write in its own savepoint so that
   * one refused write does not undo the others), then replicated in one append per follower.
   */
  submit(command: ClientCommand): Promise<CommandResult> {
    this.checkServing();
    return new Promise((resolve, reject) => {
      this.submitted.push({ command, resolve, reject });
      this.scheduleFlush();
    });
  }

  /** Applies the queued writes as one batch; see submit. */
  private applySubmitted(): void {
    const batch = this.submitted;
    this.submitted = [];
    if (batch.length === 0) return;
    const position = this.core.nextClientPosition();
    if (position === undefined) {
      for (const item of batch) item.reject(this.notLeader());
      return;
    }
    const outcomes: (() => void)[] = [];
    let appended = false;
    this.store.database.transaction(() => {
      for (const item of batch) {
        const { command } = item;
        // Idempotency, checked in the same transaction as the append: a retry that raced the first
        // attempt gets the first result instead of a second entry.
        const earlier = this.store.chat.request(command.requestId);
        if (earlier !== undefined) {
          const sameRequest =
            earlier.principal === command.principal &&
            earlier.kind === command.kind &&
            earlier.fingerprint === command.fingerprint;
          outcomes.push(() =>
            sameRequest
              ? this.awaitCommitted(earlier.logIndex).then(() => item.resolve(earlier.result as CommandResult), item.reject)
              : item.reject(
                  new FailedPreconditionError(`request_id ${command.requestId} was already used for a different request`),
                ),
          );
          continue;
        }
        try {
          // A ChatError (the command does not apply) rolls back this write's savepoint only.
          const { entry, result } = this.store.appendAndApply(position.epoch, command);
          appended = true;
          outcomes.push(() => {
            this.core.clientEntryAppended(entry.index, this.nowMs());
            this.awaitCommitted(entry.index).then(() => item.resolve(result), item.reject);
          });
        } catch (error) {
          if (!(error instanceof ChatError)) throw error;
          outcomes.push(() => item.reject(error));
        }
      }
    })();
    for (const outcome of outcomes) outcome();
    if (appended) this.truncateLogIfLong();
  }

  /** Resolves once `index` is committed (held by every in-sync replica); rejects if this replica stops leading. */
  awaitCommitted(index: number): Promise<void> {
    if (!this.core.isLeader) return Promise.reject(this.notLeader());
    if (this.core.knownCommit >= index) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const pending: PendingWrite = { index, resolve, reject, submittedAtMs: this.nowMs() };
      // Writes arrive in index order; reads may wait on an index already in the list.
      let position = this.waiting.length;
      while (position > 0 && this.waiting[position - 1]!.index > index) position -= 1;
      this.waiting.splice(position, 0, pending);
    });
  }

  /**
   * Before a read: waits until this leader's authority holds (every in-sync follower answered it within a
   * lease, so no newer leader can have acknowledged a write yet: a new leader waits two leases before it
   * can drop this one) and until everything it has applied is committed. A read thus sees every
   * acknowledged write and no unacknowledged one, even on a leader that was paused and does not yet know
   * it was replaced.
   */
  readBarrier(): Promise<void> {
    this.checkServing();
    return this.awaitAuthority().then(() => this.awaitCommitted(this.store.lastIndex));
  }

  private awaitAuthority(): Promise<void> {
    if (this.core.holdsLease) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.authorityWaiters = this.authorityWaiters.filter((other) => other !== waiter);
          reject(new UnavailableError('this leader cannot confirm that it still leads; retry shortly'));
        }, this.options.timings.leaseDurationMs),
      };
      this.authorityWaiters.push(waiter);
    });
  }

  private settleAuthorityWaiters(): void {
    if (this.authorityWaiters.length === 0) return;
    const leading = this.core.isLeader;
    if (leading && !this.core.holdsLease) return;
    const waiters = this.authorityWaiters;
    this.authorityWaiters = [];
    for (const waiter of waiters) {
      clearTimeout(waiter.timer);
      if (leading) waiter.resolve();
      else waiter.reject(this.notLeader());
    }
  }

  private notLeader(): UnavailableError {
    try {
      this.checkServing();
    } catch (error) {
      return error as UnavailableError;
    }
    return new UnavailableError('leadership changed');
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // Writes that arrive in the same turn of the event loop go out in one append per follower.
    setImmediate(() => {
      this.flushScheduled = false;
      if (this.stopped) return;
      this.applySubmitted();
      this.core.flush(this.nowMs());
      this.carryOut();
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // Protocol inputs.

  private tick(): void {
    if (this.stopped || this.swapping) return;
    this.core.tick(this.nowMs());
    this.carryOut();
    this.reportWaiting();
  }

  private lastWaitingReason: string | null = null;

  /** Says in the log, once per change, why no leader is being elected. */
  private reportWaiting(): void {
    const status = this.core.status();
    // While a snapshot is installed the replica does not elect; an old reason would only be noise.
    const reason = status.snapshotting ? null : status.waitingReason;
    if (reason === this.lastWaitingReason) return;
    this.lastWaitingReason = reason;
    if (reason !== null && !reason.startsWith('gathering')) this.logger.warn({ reason }, 'no leader yet');
  }

  /** A message from another replica, with the client address it advertises. */
  onPeerMessage(message: PeerMessage, fromClientAddress: string): void {
    // A message dropped while the database is swapped is retransmitted by its sender.
    if (this.stopped || this.swapping) return;
    if (fromClientAddress !== '') this.clientAddressByOrdinal.set(message.from, fromClientAddress);
    let received = message;
    if (message.type === 'appendReply' && message.digest !== undefined) {
      received = { ...message, digestVerified: this.digestByIndex.get(message.digest.index) === message.digest.value };
    }
    this.core.receive(received, this.nowMs());
    this.carryOut();
  }

  /** Carries out the core's output: persist the epoch, persist entries, send, acknowledge. */
  private carryOut(): void {
    const output = this.core.takeOutput();
    if (output.persistEpoch !== undefined) this.store.setCurrentEpoch(output.persistEpoch);
    if (output.becameLeader) {
      this.observer.onElection();
      this.logger.info({ epoch: this.core.epoch, lastIndex: this.store.lastIndex }, 'became the leader');
    }
    if (output.entriesToPersist.length > 0) this.persist(output.entriesToPersist);
    for (const outgoing of output.messages) {
      const address = this.core.memberAddress(outgoing.to);
      if (address === undefined) continue;
      this.network.send(address, this.prepareForSending(outgoing.message));
    }
    if (output.steppedDown) {
      this.logger.warn({ epoch: this.core.epoch }, 'stepped down');
      this.failWaiting(this.notLeader());
      for (const listener of this.leadershipLostListeners) listener();
    }
    if (this.core.isLeader) this.acknowledge(output.commitIndex);
    this.settleAuthorityWaiters();
    if (output.fetchSnapshotFrom !== undefined) void this.installSnapshotFrom(output.fetchSnapshotFrom);
  }

  private persist(entries: readonly WireEntry[]): void {
    const logEntries: LogEntry[] = entries.map((entry) => ({
      index: entry.index,
      epoch: entry.epoch,
      command: this.commandOf(entry),
    }));
    this.store.applyEntries(logEntries);
    this.truncateLogIfLong();
  }

  /** Keeps the log within its bound, deleting in steps of a tenth of it so that deletes stay rare. */
  private truncateLogIfLong(): void {
    const retention = this.options.logRetentionEntries;
    if (this.store.lastIndex - this.core.firstIndex < retention + Math.ceil(retention / 10)) return;
    const firstIndex = this.store.lastIndex - retention + 1;
    this.store.truncateLogBefore(firstIndex);
    this.core.logTruncated(firstIndex);
  }

  /** A follower's entries carry their command; the leader's own entries get one made here. */
  private commandOf(entry: WireEntry): Command {
    if (entry.command !== undefined) return entry.command as Command;
    if (entry.initialize === true) {
      return {
        kind: 'initializeCluster',
        clusterId: randomUUID(),
        sessionSecretHex: randomBytes(32).toString('hex'),
        timestampMs: this.nextTimestampMs(),
      };
    }
    assert(entry.configuration !== undefined, `entry ${entry.index} has no command`);
    this.logger.info({ index: entry.index, inSync: entry.configuration.inSync }, 'configuration changed');
    return { kind: 'configuration', configuration: entry.configuration, timestampMs: this.nextTimestampMs() };
  }

  /** Fills in what the core leaves to the driver: the entries of an append, and state digests. */
  private prepareForSending(message: PeerMessage): PeerMessage {
    if (message.type === 'append') {
      if (message.requestDigest) this.rememberDigest();
      if (message.entryRange === undefined) return message;
      const { fromIndex, toIndex } = message.entryRange;
      const entries: WireEntry[] = this.store.entries(fromIndex, toIndex - fromIndex + 1).map((entry) => ({
        index: entry.index,
        epoch: entry.epoch,
        command: entry.command,
        ...(entry.command.kind === 'configuration' ? { configuration: entry.command.configuration } : {}),
        ...(entry.command.kind === 'initializeCluster' ? { initialize: true as const } : {}),
      }));
      const { entryRange: _omitted, ...rest } = message;
      return { ...rest, entries };
    }
    if (message.type === 'appendReply' && message.digest !== undefined) {
      assert(message.digest.index === this.store.lastIndex, 'a digest is taken at the last index');
      return { ...message, digest: { index: message.digest.index, value: this.store.logChainDigest } };
    }
    return message;
  }

  private rememberDigest(): void {
    const index = this.store.lastIndex;
    if (this.digestByIndex.has(index)) return;
    this.digestByIndex.set(index, this.store.logChainDigest);
    while (this.digestByIndex.size > DIGEST_CACHE_ENTRIES) {
      this.digestByIndex.delete(this.digestByIndex.keys().next().value!);
    }
  }

  private acknowledge(commitIndex: number): void {
    let released = 0;
    while (released < this.waiting.length && this.waiting[released]!.index <= commitIndex) released += 1;
    if (released === 0) return;
    const done = this.waiting.splice(0, released);
    const nowMs = this.nowMs();
    for (const pending of done) {
      this.observer.onReplicationRoundTrip((nowMs - pending.submittedAtMs) / 1000);
      pending.resolve();
    }
  }

  private failWaiting(error: unknown): void {
    const failed = this.waiting;
    this.waiting = [];
    for (const pending of failed) pending.reject(error);
  }

  private async installSnapshotFrom(ordinal: number): Promise<void> {
    const address = this.core.memberAddress(ordinal);
    this.snapshotStartedAtMs = this.nowMs();
    this.logger.info({ from: ordinal }, 'fetching a snapshot: this replica\'s log cannot be repaired entry by entry');
    try {
      assert(address !== undefined, `no address for replica ${ordinal}`);
      const fetched = await this.network.fetchSnapshot(
        address,
        { requesterOrdinal: this.options.ordinal, epoch: this.core.epoch },
        this.options.dataDirectory,
        (bytesReceived, sizeBytes) => {
          this.snapshotProgress = { bytesReceived, sizeBytes };
        },
      );
      if (this.stopped) return;
      const epoch = this.store.currentEpoch;
      this.swapping = true;
      this.store.close();
      try {
        await swapInSnapshot(fetched.tempPath, this.databasePath);
      } finally {
        this.store = ReplicaStore.open(this.databasePath);
        this.swapping = false;
      }
      // The snapshot carries the sender's state, not this replica's promises: keep our epoch.
      if (epoch > this.store.currentEpoch) this.store.setCurrentEpoch(epoch);
      const durationSeconds = (this.nowMs() - this.snapshotStartedAtMs) / 1000;
      this.observer.onSnapshotInstalled(durationSeconds);
      this.logger.info({ lastIndex: this.store.lastIndex, durationSeconds }, 'installed a snapshot');
      this.core.snapshotInstalled(this.store.protocolState(), this.nowMs());
    } catch (error) {
      this.logger.warn({ err: error, from: ordinal }, 'fetching the snapshot failed; will retry when asked again');
      this.core.snapshotFailed(this.nowMs());
    } finally {
      this.snapshotStartedAtMs = undefined;
      this.snapshotProgress = undefined;
    }
    this.carryOut();
  }

  // ---------------------------------------------------------------------------------------------------
  // For the peer service.

  currentEpoch(): number {
    return this.core.epoch;
  }

  /** A consistent copy of this replica's database, taken while writes go on. */
  createSnapshot(): Promise<SnapshotFile> {
    if (this.swapping) return Promise.reject(new UnavailableError('this replica is installing a snapshot itself'));
    return createSnapshot(this.store.database, this.options.dataDirectory);
  }

  replicaStatus(): Record<string, unknown> {
    const status = this.status();
    return {
      ordinal: status.ordinal,
      role: status.role,
      epoch: status.epoch,
      leaderOrdinal: status.leaderOrdinal ?? -1,
      leaderAddress: status.leaderClientAddress ?? '',
      lastIndex: status.lastIndex,
      lastEpoch: status.lastEpoch,
      commitIndex: status.commitIndex,
      members: status.configuration?.members.map((member) => member.ordinal) ?? [],
      inSync: status.configuration?.inSync ?? [],
      leaseValid: status.leaseValid,
      snapshotting: status.snapshotting,
      waitingReason: status.waitingReason ?? '',
      followers: status.followers,
      clientAddress: status.clientAddress,
      snapshotSeconds: status.snapshotSeconds ?? 0,
      snapshotBytesReceived: this.snapshotProgress?.bytesReceived ?? 0,
      snapshotBytesTotal: this.snapshotProgress?.sizeBytes ?? 0,
    };
  }

  onLeadershipLost(listener: () => void): void {
    this.leadershipLostListeners.push(listener);
  }

  removeMember(ordinal: number): void {
    const refusal = this.core.requestRemoval(ordinal, this.nowMs());
    this.carryOut();
    if (refusal !== undefined) throw new FailedPreconditionError(refusal);
    this.logger.info({ ordinal }, 'removing a member at an operator\'s request');
  }

  snapshotServed(outcome: 'sent' | 'cancelled' | 'failed', sizeBytes: number): void {
    this.observer.onSnapshotServed(outcome, sizeBytes);
    this.logger.info({ outcome, sizeBytes }, 'served a snapshot');
  }

  statusJson(): string {
    return JSON.stringify(this.status());
  }

  // ---------------------------------------------------------------------------------------------------
  // Views.

  get database() {
    return this.store.database;
  }

  get lastIndex(): number {
    return this.store.lastIndex;
  }

  get snapshotBytesReceived(): number {
    return this.snapshotProgress?.bytesReceived ?? 0;
  }

  /** The protocol status plus what only the driver knows. */
  status(): ProtocolStatus & { clientAddress: string; leaderClientAddress: string | null; snapshotSeconds: number | null } {
    const status = this.core.status();
    return {
      ...status,
      clientAddress: this.options.clientAddress,
      leaderClientAddress:
        status.leaderOrdinal === null ? null : (this.clientAddressByOrdinal.get(status.leaderOrdinal) ?? null),
      snapshotSeconds: this.snapshotStartedAtMs === undefined ? null : (this.nowMs() - this.snapshotStartedAtMs) / 1000,
    };
  }
}
