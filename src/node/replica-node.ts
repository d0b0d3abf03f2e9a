/**
 * The driver of one replica: it owns the SQLite store and the pure protocol core, feeds the core ticks,
 * peer messages and the configuration store's answers, and carries out what the core returns in the order
 * the core requires: persist the epoch and the campaign, persist entries, ask the configuration store, send
 * messages, then acknowledge writes. It is the ChatService's WritePath: a client write is appended and
 * applied by the leader, then acknowledged once every member of the in-sync set holds it.
 *
 * Fail-stop: any error that is not a ChatError, thrown on any path while carrying out the core's output
 * (peer messages included), goes to the FatalHandler, which ends the process before anything more is sent.
 * The replica then recovers from its log at the next start.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { WritePath } from '../api/chat-service.js';
import { assert } from '../core/assert.js';
import type { ClientCommand, Command, CommandResult } from '../core/commands.js';
import { ChatError, FailedPreconditionError, UnavailableError } from '../core/errors.js';
import type { ClusterRecord } from '../core/replication/cluster-record.js';
import type { PeerMessage } from '../core/replication/messages.js';
import {
  type CoreOutput,
  type ProtocolStatus,
  ReplicaCore,
  type ReplicationTimings,
  type Role,
  type StoreAnswer,
  type StoreRequest,
} from '../core/replication/replica-core.js';
import type { Member, WireEntry } from '../core/replication/types.js';
import { lockDataDirectory, type DataDirectoryLock } from '../storage/data-directory-lock.js';
import { ReplicaStore, type LogEntry } from '../storage/replica-store.js';
import { createSnapshot, type SnapshotFile, swapInSnapshot } from '../storage/snapshot.js';
import type { Clock, DriverSeams, TimerHandle } from './seams.js';

/** Receives the driver's events, for metrics and the Kubernetes pod label. */
export interface ReplicaObserver {
  onElection(): void;
  onSnapshotInstalled(durationSeconds: number): void;
  onReplicationRoundTrip(durationSeconds: number): void;
  onSnapshotServed(outcome: 'sent' | 'cancelled' | 'failed', sizeBytes: number): void;
  /** The replica became leader or follower; called once at start too. */
  onRoleChanged?(role: Role): void;
  /** A batch of entries was committed to SQLite in this many seconds (fsync included). */
  onStorageCommit?(durationSeconds: number): void;
  /** The configuration store answered (reachable) or failed (unreachable). */
  onConfigurationStoreAnswer?(reachable: boolean): void;
}

/** Where the simulation injects storage faults: throw in beforeWrite to fail a write, in afterWrite to crash after it. */
export interface StorageFaults {
  beforeWrite(kind: 'epoch' | 'entries' | 'snapshot'): void;
  afterWrite(kind: 'epoch' | 'entries' | 'snapshot'): void;
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

/** Entries kept in memory for building appends (see ReplicaNode.recentEntries): the pipeline's worth, twice. */
const RECENT_ENTRIES = 8192;
/** And at most about this much memory, whatever the message size limit (bodies may be up to 1 MiB). */
const RECENT_ENTRIES_MAX_BYTES = 64 * 1024 * 1024;

/**
 * The most client writes one batch applies. Writes that queued together beyond it go out as further batches
 * in the next turns, without waiting for the first one's replication (see holdsWritesForReplication): the
 * leader commits the second batch while the first is replicated, and answers the first batch's writes
 * before the second's, so that in a closed loop the clients' next requests overlap the leader's work
 * instead of all following it. The size was chosen by measurement (NOTEBOOK §20, "Batches of at most 32
 * writes"): it raised throughput at 64 and at 256 clients, while a limit of 16 gained nothing.
 */
const MAX_WRITES_PER_BATCH = 32;

/** What an entry costs in memory, roughly: its message body (UTF-16), plus a fixed part for the rest. */
function approximateSizeBytes(entry: LogEntry): number {
  return 512 + (entry.command.kind === 'sendMessage' ? 2 * entry.command.body.length : 0);
}

interface PendingWrite {
  readonly index: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  readonly submittedAtMs: number;
}

interface PendingRead {
  /** The leader's clock when the read arrived; it is served once authority is confirmed past it. */
  readonly arrivedAtMs: number;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
  readonly timer: TimerHandle;
}

export class ReplicaNode implements WritePath {
  private store: ReplicaStore;
  private readonly core: ReplicaCore;
  private readonly clock: Clock;
  private readonly databasePath: string;
  private readonly lock: DataDirectoryLock;
  private readonly leadershipLostListeners: (() => void)[] = [];
  /** Client writes queued for the next batch. */
  private submitted: { command: ClientCommand; resolve: (result: CommandResult) => void; reject: (error: unknown) => void }[] =
    [];
  /** Whether the last batch was full and left writes queued: those go out without waiting for it. */
  private batchLeftWritesQueued = false;
  /** Writes waiting for the commit index, in index order. */
  private waiting: PendingWrite[] = [];
  private reads: PendingRead[] = [];
  private readonly clientAddressByOrdinal = new Map<number, string>();
  private flushScheduled = false;
  private tickTimer: TimerHandle | undefined;
  private snapshotStartedAtMs: number | undefined;
  private snapshotProgress: { bytesReceived: number; sizeBytes: number } | undefined;
  private stopped = false;
  /** While the database file is being swapped for a snapshot, the store is closed: inputs are dropped. */
  private swapping = false;
  private lastRole: Role | undefined;
  /** Resolves when the snapshot swap in progress is done. */
  private swapDone: Promise<void> = Promise.resolve();
  private lastWaitingReason: string | null = null;
  private storeReachable = true;
  /**
   * The newest entries of the log, as they were appended, so that an append to a follower is built without
   * reading them back from SQLite (every follower needs the same entries, usually within a millisecond of
   * their commit). Bounded by RECENT_ENTRIES and RECENT_ENTRIES_MAX_BYTES; anything older is read from the
   * store.
   */
  private readonly recentEntries = new Map<number, LogEntry>();
  private recentEntriesBytes = 0;

  constructor(
    private readonly options: ReplicaNodeOptions,
    private readonly seams: DriverSeams & { readonly storageFaults?: StorageFaults },
    private readonly logger: Logger,
    private readonly observer: ReplicaObserver,
  ) {
    this.clock = seams.clock;
    // The lock comes first: a second server on this directory must not even open the database.
    this.lock = lockDataDirectory(options.dataDirectory);
    this.databasePath = join(options.dataDirectory, 'replichat.sqlite');
    try {
      this.store = ReplicaStore.open(this.databasePath);
    } catch (error) {
      this.lock.release();
      throw error;
    }
    const incarnation = this.store.nextIncarnation();
    this.core = new ReplicaCore(
      options.ordinal,
      options.peers,
      options.timings,
      this.store.protocolState(),
      incarnation,
      randomUUID(),
      this.store.storageId(() => randomUUID()),
    );
    this.clientAddressByOrdinal.set(options.ordinal, options.clientAddress);
  }

  /** Starts the protocol timer. */
  start(): void {
    this.reportRole();
    this.guard('start', () => this.tick());
  }

  /** Closes the store at once (a crash-like stop: nothing is handed over). See shutDownGracefully. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.tickTimer !== undefined) this.clock.clearTimeout(this.tickTimer);
    const shuttingDown = new UnavailableError('the replica is shutting down');
    for (const item of this.submitted.splice(0)) item.reject(shuttingDown);
    this.failReads(shuttingDown);
    this.failWaiting(shuttingDown);
    this.store.close();
    this.lock.release();
  }

  /**
   * A graceful stop, for SIGTERM and rolling updates: a leader hands leadership to its most up-to-date
   * in-sync follower; a follower asks the leader to take it out of the in-sync set, so that writes never
   * wait for it to time out. Both wait at most `deadlineMs`, then stop anyway.
   */
  async shutDownGracefully(deadlineMs: number): Promise<void> {
    if (this.stopped) return;
    const giveUpAtMs = this.clock.nowMs() + deadlineMs;
    const pause = (): Promise<void> =>
      new Promise((resolve) => this.clock.setTimeout(resolve, this.options.timings.heartbeatIntervalMs / 2));
    if (this.core.isLeader) {
      const refusal = this.core.requestHandover(this.clock.nowMs());
      this.carryOut();
      if (refusal !== undefined) this.logger.warn({ refusal }, 'stopping without a handover');
      while (refusal === undefined && this.core.isLeader && this.clock.nowMs() < giveUpAtMs && !this.stopped) await pause();
    } else if (this.core.inRecordedInSyncSet) {
      while (this.core.inRecordedInSyncSet && this.clock.nowMs() < giveUpAtMs && !this.stopped) {
        this.guard('leave', () => {
          this.core.requestLeave(this.clock.nowMs());
          this.core.refreshRecord(this.clock.nowMs());
          this.carryOut();
        });
        await pause();
      }
    }
    this.stop();
  }

  /** Runs `work`; any error that is not a ChatError ends the replica (fail-stop). */
  private guard(context: string, work: () => void): void {
    try {
      work();
    } catch (error) {
      if (error instanceof ChatError) throw error;
      this.seams.fatal(error, context);
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // WritePath, for the ChatService.

  get chat() {
    return this.store.chat;
  }

  nextTimestampMs(): number {
    return Math.max(this.clock.wallClockMs(), this.store.lastTimestampMs);
  }

  checkServing(): void {
    if (this.stopped) throw new UnavailableError('the replica is shutting down');
    if (this.swapping) throw new UnavailableError('the replica is installing a snapshot');
    if (this.core.acceptsWrites) return;
    const leader = this.core.currentLeader;
    const leaderAddress = leader === null || leader === this.options.ordinal ? undefined : this.clientAddressByOrdinal.get(leader);
    if (this.core.isLeader) throw new UnavailableError(`replica ${this.options.ordinal} is handing over leadership; retry shortly`);
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
   * one refused write does not undo the others), then replicated in one append per follower; up to
   * MAX_WRITES_PER_BATCH of them, and the rest in the next turns.
   */
  submit(command: ClientCommand): Promise<CommandResult> {
    this.checkServing();
    return new Promise((resolve, reject) => {
      this.submitted.push({ command, resolve, reject });
      this.scheduleFlush();
    });
  }

  /** Applies the oldest queued writes, at most MAX_WRITES_PER_BATCH, as one batch; see submit. */
  private applySubmitted(): void {
    const batch = this.submitted.splice(0, MAX_WRITES_PER_BATCH);
    this.batchLeftWritesQueued = this.submitted.length > 0;
    if (batch.length === 0) return;
    const position = this.core.nextClientPosition();
    if (position === undefined) {
      for (const item of batch) item.reject(this.notLeader());
      return;
    }
    const outcomes: (() => void)[] = [];
    let appended = false;
    this.seams.storageFaults?.beforeWrite('entries');
    const startedAtMs = this.clock.nowMs();
    this.store.atomically(() => {
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
            this.remember(entry);
            this.core.clientEntryAppended(entry.index, this.clock.nowMs());
            this.awaitCommitted(entry.index).then(() => item.resolve(result), item.reject);
          });
        } catch (error) {
          if (!(error instanceof ChatError)) throw error;
          outcomes.push(() => item.reject(error));
        }
      }
    });
    if (appended) this.observer.onStorageCommit?.((this.clock.nowMs() - startedAtMs) / 1000);
    this.seams.storageFaults?.afterWrite('entries');
    for (const outcome of outcomes) outcome();
    if (appended) this.truncateLogIfLong();
  }

  committedIndex(): number {
    return this.core.knownCommit;
  }

  /** Resolves once `index` is committed (held by every in-sync replica); rejects if this replica stops leading. */
  awaitCommitted(index: number): Promise<void> {
    if (!this.core.isLeader) return Promise.reject(this.notLeader());
    if (this.core.knownCommit >= index) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const pending: PendingWrite = { index, resolve, reject, submittedAtMs: this.clock.nowMs() };
      // Writes arrive in index order; a retried request may wait on an index already in the list.
      let position = this.waiting.length;
      while (position > 0 && this.waiting[position - 1]!.index > index) position -= 1;
      this.waiting.splice(position, 0, pending);
    });
  }

  /**
   * Before a read: resolves once (1) this leader's authority is confirmed after the read arrived: every
   * member it counts for commits accepted an append sent after that moment, so no newer leader existed
   * when the read arrived (a newer leader is one of them, and refuses this epoch before it asks the store);
   * and (2) everything applied to the tables is committed, so the read shows no unacknowledged write. The
   * caller reads synchronously when this resolves; new writes wait while a confirmed read waits for (2).
   */
  readBarrier(): Promise<void> {
    this.checkServing();
    return new Promise((resolve, reject) => {
      const read: PendingRead = {
        arrivedAtMs: this.clock.nowMs(),
        resolve,
        reject,
        timer: this.clock.setTimeout(() => {
          this.reads = this.reads.filter((other) => other !== read);
          reject(new UnavailableError('this leader cannot confirm that it still leads; retry shortly'));
        }, 2 * this.options.timings.electionTimeoutMs),
      };
      this.reads.push(read);
      this.guard('read', () => {
        this.core.requestReadRound(this.clock.nowMs());
        this.carryOut();
      });
    });
  }

  /** Serves the reads whose conditions hold; see readBarrier. */
  private settleReads(): void {
    if (this.reads.length === 0) return;
    if (!this.core.isLeader || this.stopped) {
      this.failReads(this.notLeader());
      return;
    }
    if (this.core.knownCommit < this.store.lastIndex) return;
    const confirmedAtMs = this.core.readConfirmedAtMs();
    const ready = this.reads.filter((read) => read.arrivedAtMs <= confirmedAtMs);
    if (ready.length === 0) return;
    this.reads = this.reads.filter((read) => read.arrivedAtMs > confirmedAtMs);
    for (const read of ready) {
      this.clock.clearTimeout(read.timer);
      read.resolve();
    }
  }

  /** Whether queued writes must wait: for a confirmed read's commit, or for the batch being replicated. */
  private writesWait(): boolean {
    return this.readWaitingForCommit() || this.holdsWritesForReplication();
  }

  /**
   * Whether new writes wait for the batch being replicated to commit, and then go out together. Every
   * replica shares the disk's fsyncs: a batch costs one on the leader and one on each follower whatever its
   * size, so while one is replicated the writes that arrive join the next one instead of starting batches
   * of one or two whose fsyncs queue behind each other. A batch that already fills an append goes out at
   * once, and so do writes left over from a full batch (MAX_WRITES_PER_BATCH): they queued together with
   * it, so they would have gone out with it. A write arriving when nothing is in flight is applied in its
   * own turn, as before.
   */
  private holdsWritesForReplication(): boolean {
    return (
      this.core.isLeader &&
      !this.batchLeftWritesQueued &&
      this.core.knownCommit < this.store.lastIndex &&
      this.submitted.length < this.options.timings.maxEntriesPerAppend
    );
  }

  /** Whether a confirmed read is waiting only for the commit index: new writes wait until it is served. */
  private readWaitingForCommit(): boolean {
    if (this.reads.length === 0 || !this.core.isLeader) return false;
    const confirmedAtMs = this.core.readConfirmedAtMs();
    return this.reads.some((read) => read.arrivedAtMs <= confirmedAtMs);
  }

  private failReads(error: unknown): void {
    const reads = this.reads;
    this.reads = [];
    for (const read of reads) {
      this.clock.clearTimeout(read.timer);
      read.reject(error);
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
    this.clock.defer(() => {
      this.flushScheduled = false;
      // During a snapshot swap the store is closed; the swap carries out the core's output when it is done.
      if (this.stopped || this.swapping) return;
      this.guard('flush', () => {
        if (!this.writesWait()) this.applySubmitted();
        this.core.flush(this.clock.nowMs());
        this.carryOut();
      });
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // Protocol inputs.

  private tick(): void {
    if (this.stopped) return;
    const tickIntervalMs = Math.max(5, Math.floor(this.options.timings.heartbeatIntervalMs / 2));
    this.tickTimer = this.clock.setTimeout(() => this.guard('tick', () => this.tick()), tickIntervalMs);
    if (this.swapping) return;
    this.core.tick(this.clock.nowMs());
    this.carryOut();
    this.reportWaiting();
  }

  /** Says in the log, once per change, why no leader is being elected. */
  private reportWaiting(): void {
    const status = this.core.status();
    // While a snapshot is installed the replica does not elect; an old reason would only be noise.
    const reason = status.snapshotting ? null : status.waitingReason;
    if (reason === this.lastWaitingReason) return;
    this.lastWaitingReason = reason;
    if (reason !== null && !reason.startsWith('gathering') && !reason.startsWith('reading')) this.logger.warn({ reason }, 'no leader yet');
  }

  /** A message from another replica, with the client address it advertises. */
  onPeerMessage(message: PeerMessage, fromClientAddress: string): void {
    // A message dropped while the database is swapped is retransmitted by its sender.
    if (this.stopped || this.swapping) return;
    if (fromClientAddress !== '') this.clientAddressByOrdinal.set(message.from, fromClientAddress);
    this.guard(`peer message ${message.type}`, () => {
      let received = message;
      if (message.type === 'appendReply' && message.digest !== undefined) {
        received = { ...message, digestVerified: this.store.chainAt(message.digest.index) === message.digest.value };
      }
      this.core.receive(received, this.clock.nowMs());
    });
    // Carried out once the turn's other messages are in (scheduleFlush): appends that arrive together
    // are persisted in one transaction (one fsync), and replies that arrive together are acted on at once.
    // Until then nothing of the core's output has been sent, so nothing claims what is not yet on disk.
    this.scheduleFlush();
  }

  /**
   * Carries out the core's output in order: persist the epoch and campaign, persist entries, ask the
   * configuration store, send, acknowledge. Callers run it inside guard().
   */
  private carryOut(): void {
    const output = this.core.takeOutput();
    this.persistPromises(output);
    if (output.becameLeader) {
      // A replica seeded from a backup creates its cluster once; after that it is an ordinary replica.
      this.store.clearRestoredFromBackup();
      this.observer.onElection();
      this.logger.info({ epoch: this.core.epoch, lastIndex: this.store.lastIndex }, 'became the leader');
    }
    for (const change of output.recordChanges) this.logger.info({ epoch: this.core.epoch, record: this.core.record }, change);
    if (output.entriesToPersist.length > 0) this.persist(output.entriesToPersist);
    if (output.storeRequest !== undefined) this.askStore(output.storeRequest);
    for (const outgoing of output.messages) {
      const address = this.core.memberAddress(outgoing.to);
      if (address === undefined) continue;
      this.seams.transport.send(address, this.prepareForSending(outgoing.message));
    }
    if (output.steppedDown !== undefined) {
      this.logger.warn({ epoch: this.core.epoch, reason: output.steppedDown }, 'stepped down');
      this.failWaiting(this.notLeader());
      for (const listener of this.leadershipLostListeners) listener();
    }
    if (this.core.isLeader) this.acknowledge(output.commitIndex);
    this.settleReads();
    // Writes that waited (for a read just served, or for the batch being replicated) go out now; once this
    // replica no longer leads, applySubmitted refuses them.
    if (this.submitted.length > 0 && !this.writesWait()) this.scheduleFlush();
    this.reportRole();
    if (output.fetchSnapshotFrom !== undefined) void this.installSnapshotFrom(output.fetchSnapshotFrom);
  }

  private persistPromises(output: CoreOutput): void {
    if (output.persistEpoch === undefined && output.persistCampaign === undefined) return;
    this.seams.storageFaults?.beforeWrite('epoch');
    this.store.atomically(() => {
      if (output.persistEpoch !== undefined) this.store.setCurrentEpoch(output.persistEpoch);
      if (output.persistCampaign !== undefined) this.store.setCampaign(output.persistCampaign);
    });
    this.seams.storageFaults?.afterWrite('epoch');
  }

  private reportRole(): void {
    const role: Role = this.core.isLeader ? 'leader' : 'follower';
    if (role === this.lastRole) return;
    this.lastRole = role;
    this.observer.onRoleChanged?.(role);
  }

  /** Sends one request to the configuration store; its answer comes back as a core input. */
  private askStore(request: StoreRequest): void {
    const store = this.seams.configurationStore;
    const asked: Promise<StoreAnswer> =
      request.kind === 'read'
        ? store.read().then((current) => ({ kind: 'read', current }))
        : store
            .compareAndSwap(request.expectedVersion, request.record)
            .then((outcome) => ({ kind: 'compareAndSwap', swapped: outcome.swapped, current: outcome.current }));
    asked
      .catch((error: unknown): StoreAnswer => ({ kind: 'failed', reason: error instanceof Error ? error.message : String(error) }))
      .then(async (answer) => {
        // While the database is swapped for a snapshot nothing may be persisted: the answer waits for the swap.
        while (this.swapping && !this.stopped) await this.swapDone;
        if (this.stopped) return;
        const reachable = answer.kind !== 'failed';
        this.observer.onConfigurationStoreAnswer?.(reachable);
        if (reachable !== this.storeReachable) {
          this.storeReachable = reachable;
          if (reachable) this.logger.info({ store: store.description }, 'the configuration store answers again');
          else this.logger.warn({ store: store.description, reason: (answer as { reason: string }).reason }, 'the configuration store is unreachable');
        }
        this.guard('configuration store answer', () => {
          this.core.storeAnswered(answer, this.clock.nowMs());
          this.carryOut();
        });
      })
      .catch((error: unknown) => {
        // guard() ends the process in production; in the simulation the crash surfaces here.
        if (!this.stopped) this.seams.fatal(error, 'configuration store answer');
      });
  }

  private persist(entries: readonly WireEntry[]): void {
    const logEntries: LogEntry[] = entries.map((entry) => ({
      index: entry.index,
      epoch: entry.epoch,
      command: this.commandOf(entry),
    }));
    this.seams.storageFaults?.beforeWrite('entries');
    const startedAtMs = this.clock.nowMs();
    try {
      this.store.applyEntries(logEntries);
    } catch (error) {
      // The core already counts these entries as held: a replica whose state machine refuses one has
      // diverged, whatever the error's class. It stops, and recovers (or is repaired) at the next start.
      this.seams.fatal(error, 'applying replicated entries');
    }
    this.observer.onStorageCommit?.((this.clock.nowMs() - startedAtMs) / 1000);
    this.seams.storageFaults?.afterWrite('entries');
    for (const entry of logEntries) this.remember(entry);
    this.truncateLogIfLong();
  }

  /** Keeps an entry for building appends; see recentEntries. */
  private remember(entry: LogEntry): void {
    this.recentEntries.set(entry.index, entry);
    this.recentEntriesBytes += approximateSizeBytes(entry);
    // Map iteration follows insertion, which follows the log: the first key is the oldest.
    while (this.recentEntries.size > RECENT_ENTRIES || this.recentEntriesBytes > RECENT_ENTRIES_MAX_BYTES) {
      const [oldestIndex, oldest] = this.recentEntries.entries().next().value!;
      this.recentEntries.delete(oldestIndex);
      this.recentEntriesBytes -= approximateSizeBytes(oldest);
    }
  }

  private forgetRecentEntries(beforeIndex: number): void {
    for (const [index, entry] of this.recentEntries) {
      if (index >= beforeIndex) break;
      this.recentEntries.delete(index);
      this.recentEntriesBytes -= approximateSizeBytes(entry);
    }
  }

  /** Entries `fromIndex` to `toIndex` of the log: from recentEntries when it holds them all, else from SQLite. */
  private entriesBetween(fromIndex: number, toIndex: number): LogEntry[] {
    const count = toIndex - fromIndex + 1;
    const first = this.recentEntries.get(fromIndex);
    const last = this.recentEntries.get(toIndex);
    if (first !== undefined && last !== undefined) {
      // The map holds a contiguous run of the log (entries are remembered in order, and forgotten oldest
      // first), so holding both ends means holding everything between.
      const entries: LogEntry[] = [];
      for (let index = fromIndex; index <= toIndex; index += 1) entries.push(this.recentEntries.get(index)!);
      return entries;
    }
    return this.store.entries(fromIndex, count);
  }

  /** Keeps the log within its bound, deleting in steps of a tenth of it so that deletes stay rare. */
  private truncateLogIfLong(): void {
    const retention = this.options.logRetentionEntries;
    if (this.store.lastIndex - this.core.firstIndex < retention + Math.ceil(retention / 10)) return;
    const firstIndex = this.store.lastIndex - retention + 1;
    this.store.truncateLogBefore(firstIndex);
    this.core.logTruncated(firstIndex);
    this.forgetRecentEntries(firstIndex);
  }

  /** A follower's entries carry their command; the leader's own entries get one made here. */
  private commandOf(entry: WireEntry): Command {
    if (entry.command !== undefined) return entry.command as Command;
    if (entry.initialize === true) {
      return {
        kind: 'initializeCluster',
        clusterId: this.core.record?.clusterId ?? randomUUID(),
        sessionSecretHex: randomBytes(32).toString('hex'),
        timestampMs: this.nextTimestampMs(),
      };
    }
    assert(entry.configuration !== undefined, `entry ${entry.index} has no command`);
    return { kind: 'configuration', configuration: entry.configuration, timestampMs: this.nextTimestampMs() };
  }

  /** Fills in what the core leaves to the driver: the entries of an append, and log-chain digests. */
  private prepareForSending(message: PeerMessage): PeerMessage {
    if (message.type === 'append') {
      if (message.entryRange === undefined) return message;
      const { fromIndex, toIndex } = message.entryRange;
      const entries: WireEntry[] = this.entriesBetween(fromIndex, toIndex).map((entry) => ({
        index: entry.index,
        epoch: entry.epoch,
        command: entry.command,
        ...(entry.command.kind === 'configuration' ? { configuration: entry.command.configuration } : {}),
        ...(entry.command.kind === 'initializeCluster' ? { initialize: true as const } : {}),
      }));
      assert(entries.length === toIndex - fromIndex + 1, `the log lacks entries ${fromIndex}-${toIndex}`);
      const { entryRange: _omitted, ...rest } = message;
      return { ...rest, entries };
    }
    if (message.type === 'appendReply' && message.digest !== undefined) {
      // The digest names the last index when the append was received; later appends of the same turn may
      // have been persisted since (see onPeerMessage), so it is the chain value at that index, not the last.
      const value = this.store.chainAt(message.digest.index);
      assert(value !== undefined, `no chain value for index ${message.digest.index}, which was just persisted`);
      return { ...message, digest: { index: message.digest.index, value } };
    }
    return message;
  }

  private acknowledge(commitIndex: number): void {
    let released = 0;
    while (released < this.waiting.length && this.waiting[released]!.index <= commitIndex) released += 1;
    if (released === 0) return;
    const done = this.waiting.splice(0, released);
    const nowMs = this.clock.nowMs();
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
    this.snapshotStartedAtMs = this.clock.nowMs();
    this.logger.info({ from: ordinal }, 'fetching a snapshot: this replica\'s log cannot be repaired entry by entry');
    let fetched: { tempPath: string; lastIndex: number };
    try {
      assert(address !== undefined, `no address for replica ${ordinal}`);
      fetched = await this.seams.transport.fetchSnapshot(
        address,
        { requesterOrdinal: this.options.ordinal, epoch: this.core.epoch },
        this.options.dataDirectory,
        (bytesReceived, sizeBytes) => {
          this.snapshotProgress = { bytesReceived, sizeBytes };
        },
      );
    } catch (error) {
      this.snapshotStartedAtMs = undefined;
      this.snapshotProgress = undefined;
      if (this.stopped) return;
      this.logger.warn({ err: error, from: ordinal }, 'fetching the snapshot failed; will retry when asked again');
      this.guard('snapshot failed', () => {
        this.core.snapshotFailed(this.clock.nowMs());
        this.carryOut();
      });
      return;
    }
    if (this.stopped) return;
    try {
      // This replica's promises (epoch, campaign, run counter) are not in the snapshot: carry them over.
      const promises = this.store.localPromises();
      // Peer messages received in this turn may have left output to carry out (see onPeerMessage): it
      // belongs to the database being replaced, so it is carried out before the store closes.
      this.carryOut();
      this.seams.storageFaults?.beforeWrite('snapshot');
      this.forgetRecentEntries(Number.POSITIVE_INFINITY);
      this.swapping = true;
      let swapped!: () => void;
      this.swapDone = new Promise((resolve) => (swapped = resolve));
      this.store.close();
      try {
        await swapInSnapshot(fetched.tempPath, this.databasePath);
      } finally {
        this.store = ReplicaStore.open(this.databasePath);
        this.swapping = false;
        swapped();
      }
      this.store.restoreLocalPromises(promises);
      this.seams.storageFaults?.afterWrite('snapshot');
    } catch (error) {
      // A failed swap leaves the database in an unknown state: stop, and recover at the next start.
      this.seams.fatal(error, 'snapshot swap');
    }
    const durationSeconds = (this.clock.nowMs() - this.snapshotStartedAtMs) / 1000;
    this.snapshotStartedAtMs = undefined;
    this.snapshotProgress = undefined;
    this.observer.onSnapshotInstalled(durationSeconds);
    this.logger.info({ lastIndex: this.store.lastIndex, durationSeconds }, 'installed a snapshot');
    this.guard('snapshot installed', () => {
      this.core.snapshotInstalled(this.store.protocolState(), this.clock.nowMs());
      this.carryOut();
    });
  }

  // ---------------------------------------------------------------------------------------------------
  // For the peer service and operators.

  currentEpoch(): number {
    return this.core.epoch;
  }

  /** Whether `ordinal` is a member of the newest configuration this replica knows (snapshots go only to members). */
  isMember(ordinal: number): boolean {
    return this.core.isMemberOrdinal(ordinal);
  }

  /** The ordinal that leads `epoch`, when the newest record this replica knows is that epoch's. */
  leaderOfEpoch(epoch: number): number | undefined {
    const record = this.core.record;
    if (record !== null && record.epoch === epoch) return record.leader;
    // The record may not have been read since this epoch began: the leader this replica follows in it is
    // known from its appends.
    if (epoch === this.core.epoch && this.core.currentLeader !== null) return this.core.currentLeader;
    return undefined;
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
      members: status.record?.members.map((member) => member.ordinal) ?? [],
      inSync: status.record?.inSync ?? [],
      recordedLeader: status.record?.leader ?? -1,
      removed: status.record?.removed ?? [],
      configurationStore: this.seams.configurationStore.description,
      configurationStoreReachable: status.storeReachable,
      waitingReason: status.waitingReason ?? '',
      followers: status.followers,
      clientAddress: status.clientAddress,
      snapshotting: status.snapshotting,
      snapshotSeconds: status.snapshotSeconds ?? 0,
      snapshotBytesReceived: this.snapshotProgress?.bytesReceived ?? 0,
      snapshotBytesTotal: this.snapshotProgress?.sizeBytes ?? 0,
    };
  }

  onLeadershipLost(listener: () => void): void {
    this.leadershipLostListeners.push(listener);
  }

  removeMember(ordinal: number): void {
    let refusal: string | undefined;
    this.guard('remove member', () => {
      refusal = this.core.requestRemoval(ordinal, this.clock.nowMs());
      this.carryOut();
    });
    if (refusal !== undefined) throw new FailedPreconditionError(refusal);
    this.logger.info({ ordinal }, 'removing a member at an operator\'s request');
  }

  /**
   * The operator's last resort: names this replica leader, alone in the in-sync set, whatever the record
   * says. Returns what may be lost: the replica's last index, to compare with the others'.
   */
  forceLeadership(): { lastIndex: number; record: ClusterRecord | null } {
    let refusal: string | undefined;
    this.guard('force leadership', () => {
      refusal = this.core.forceLeadership(this.clock.nowMs());
      this.carryOut();
    });
    if (refusal !== undefined) throw new FailedPreconditionError(refusal);
    this.logger.warn({ lastIndex: this.store.lastIndex, record: this.core.record }, 'an operator forced this replica to lead');
    return { lastIndex: this.store.lastIndex, record: this.core.record };
  }

  snapshotServed(outcome: 'sent' | 'cancelled' | 'failed', sizeBytes: number): void {
    this.observer.onSnapshotServed(outcome, sizeBytes);
    this.logger.info({ outcome, sizeBytes }, 'served a snapshot');
  }

  statusJson(): string {
    return JSON.stringify(this.replicaStatus());
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

  /** The full state digest (slow on a large database: for tests and the simulation). */
  stateDigest(): string {
    return this.store.stateDigest();
  }

  /** The protocol status plus what only the driver knows. */
  status(): ProtocolStatus & { clientAddress: string; leaderClientAddress: string | null; snapshotSeconds: number | null } {
    const status = this.core.status();
    return {
      ...status,
      clientAddress: this.options.clientAddress,
      leaderClientAddress:
        status.leaderOrdinal === null ? null : (this.clientAddressByOrdinal.get(status.leaderOrdinal) ?? null),
      snapshotSeconds: this.snapshotStartedAtMs === undefined ? null : (this.clock.nowMs() - this.snapshotStartedAtMs) / 1000,
    };
  }
}
