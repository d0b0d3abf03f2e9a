/**
 * A replica's durable store: the command log and the chat state in one SQLite file. Appending a command to
 * the log and applying it to the tables happen in one transaction, so after any crash the log and the
 * tables agree: either both hold the entry or neither does. The in-memory counters (last index, last
 * epoch, the log chain) move only once the outermost transaction has committed, so that a rolled-back
 * transaction can never leave them ahead of the disk.
 */
import { createHash } from 'node:crypto';
import { assert } from '../core/assert.js';
import type { Command, CommandResult } from '../core/commands.js';
import type { EpochStart } from '../core/replication/epoch-history.js';
import type { Campaign, PersistedProtocolState } from '../core/replication/replica-core.js';
import { ChatState } from './chat-state.js';
import { commandChainText, decodeLogRow, LOG_ROW_SELECT, type LogRow, storedCommandText } from './command-encoding.js';
import { openDatabase, type SqliteDatabase } from './database.js';
import { computeStateDigest } from './state-digest.js';

/** One entry of the log: a command at a position, tagged with the epoch of the leader that wrote it. */
export interface LogEntry {
  readonly index: number;
  readonly epoch: number;
  readonly command: Command;
}

/** What the counters are after the entries applied so far (committed or staged in the open transaction). */
interface LogPosition {
  readonly lastIndex: number;
  readonly lastEpoch: number;
  readonly lastTimestampMs: number;
  readonly logChain: string;
}

/** How many recent log-chain values are remembered, for comparing with followers (see chainAt). */
const RECENT_CHAIN_ENTRIES = 4096;

/** The per-replica rows of local_metadata that a snapshot swap must carry over (they are this replica's promises). */
const LOCAL_PROMISE_KEYS = ['current_epoch', 'campaign', 'run_counter', 'storage_id'] as const;

export class ReplicaStore {
  readonly chat: ChatState;
  private committed: LogPosition;
  private staged: LogPosition;
  /** Chain values of entries staged in the open transaction, promoted to `recentChains` on commit. */
  private stagedChains: [number, string][] = [];
  private readonly recentChains = new Map<number, string>();
  /**
   * How many atomically() calls are running. The outermost one writes the log chain to cluster_state; it
   * is counted here rather than read from database.inTransaction, because a caller may open a transaction
   * of its own around appendAndApply (test/support/membership-cluster.ts does), and the chain must then
   * still be written inside that transaction, as it always was.
   */
  private atomicDepth = 0;
  /**
   * One transaction function for every atomically() call: database.transaction() builds four wrapper
   * functions each time it is called, which cost as much as a statement per entry. Nested calls still
   * become savepoints, because the wrapper checks database.inTransaction each time it runs.
   */
  private readonly transaction;
  private readonly appendStatement;
  private readonly entriesStatement;
  private readonly chainStatement;
  private readonly metadataGet;
  private readonly metadataSet;
  private readonly metadataDelete;

  private constructor(readonly database: SqliteDatabase) {
    this.chat = new ChatState(database);
    this.transaction = database.transaction((work: () => unknown): unknown => work());
    this.appendStatement = database.prepare('INSERT INTO command_log (log_index, epoch, command) VALUES (?, ?, ?)');
    // Entries are stored without the values their request and message rows hold (command-encoding.ts).
    this.entriesStatement = database.prepare(`${LOG_ROW_SELECT} WHERE l.log_index >= ? ORDER BY l.log_index LIMIT ?`);
    this.chainStatement = database.prepare(
      "INSERT INTO cluster_state (key, value) VALUES ('log_chain', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    );
    this.metadataGet = database.prepare('SELECT value FROM local_metadata WHERE key = ?');
    this.metadataSet = database.prepare(
      'INSERT INTO local_metadata (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
    );
    this.metadataDelete = database.prepare('DELETE FROM local_metadata WHERE key = ?');
    const last = database
      .prepare(`${LOG_ROW_SELECT} WHERE l.log_index = (SELECT max(log_index) FROM command_log)`)
      .get() as LogRow | undefined;
    this.committed = {
      lastIndex: last?.index ?? 0,
      lastEpoch: last?.epoch ?? 0,
      lastTimestampMs: last === undefined ? 0 : decodeLogRow(last).timestampMs,
      logChain: this.chat.clusterValue('log_chain') ?? '',
    };
    this.staged = this.committed;
    if (this.committed.lastIndex > 0) this.recentChains.set(this.committed.lastIndex, this.committed.logChain);
  }

  /** Opens the store in `filePath` (':memory:' for tests). */
  static open(filePath: string): ReplicaStore {
    return new ReplicaStore(openDatabase(filePath));
  }

  /**
   * A hash chained over every entry applied so far (index and command text). Replicas apply the same
   * commands deterministically, so equal chains mean equal states; unlike the state digest it costs nothing
   * to read, which is why re-admission to the in-sync set compares it (the full digest of a large database
   * would block the event loop for seconds). It is part of the replicated state, so snapshots carry it.
   */
  get logChainDigest(): string {
    return this.staged.logChain;
  }

  /** The chain value after the entry at `index`, if it is one of the most recent ones. */
  chainAt(index: number): string | undefined {
    return this.recentChains.get(index);
  }

  /** The index of the last entry in the log; 0 when the log is empty. */
  get lastIndex(): number {
    return this.staged.lastIndex;
  }

  get lastEpoch(): number {
    return this.staged.lastEpoch;
  }

  /** The timestamp of the last logged command, so that the next one is never earlier. */
  get lastTimestampMs(): number {
    return this.staged.lastTimestampMs;
  }

  /**
   * Runs `work` in one transaction (nested calls become savepoints). The counters of entries applied inside
   * move to the committed view only once the outermost transaction commits; if it throws, they fall back.
   * A nested call that throws puts the staged counters back to where they were when it began, because its
   * savepoint has been rolled back and took its entries with it.
   *
   * The log chain is written to cluster_state once, at the end of the outermost call and inside its
   * transaction, rather than once per entry: only the last value can ever be committed, and an entry whose
   * savepoint was rolled back has already left the staged chain by then.
   */
  atomically<T>(work: () => T): T {
    const outermost = !this.database.inTransaction;
    const first = this.atomicDepth === 0;
    const before = this.staged;
    const stagedChainCount = this.stagedChains.length;
    this.atomicDepth += 1;
    try {
      // The transaction function is shared, so its type cannot carry T: it returns what `work` returned.
      const result = this.transaction(() => {
        const value = work();
        if (first && this.staged.lastIndex !== before.lastIndex) this.chainStatement.run(this.staged.logChain);
        return value;
      }) as T;
      if (outermost) this.promote();
      return result;
    } catch (error) {
      if (outermost) {
        this.rollBackCounters();
      } else {
        this.staged = before;
        this.stagedChains.length = stagedChainCount;
      }
      throw error;
    } finally {
      this.atomicDepth -= 1;
    }
  }

  private promote(): void {
    this.committed = this.staged;
    for (const [index, chain] of this.stagedChains) {
      this.recentChains.set(index, chain);
      // Entries are staged one after another (stageEntry asserts it), so the oldest remembered one is the
      // one RECENT_CHAIN_ENTRIES back: deleting it by key is what the loop below would do, but in constant
      // time. The Map's first key, after many deletions, costs a scan over the holes they leave.
      if (this.recentChains.size > RECENT_CHAIN_ENTRIES) this.recentChains.delete(index - RECENT_CHAIN_ENTRIES);
    }
    this.stagedChains = [];
    while (this.recentChains.size > RECENT_CHAIN_ENTRIES) this.recentChains.delete(this.recentChains.keys().next().value!);
  }

  private rollBackCounters(): void {
    this.staged = this.committed;
    this.stagedChains = [];
  }

  /**
   * Applies `command` as the next entry and appends it, in one fsynced transaction. A ChatError from the
   * state machine rolls back both and propagates: nothing is logged.
   */
  appendAndApply(epoch: number, command: Command): { entry: LogEntry; result: CommandResult } {
    const entry: LogEntry = { index: this.staged.lastIndex + 1, epoch, command };
    const result = this.applyEntry(entry);
    return { entry, result };
  }

  /**
   * Applies an entry that must directly follow the last one (a follower's path, and replay), in a
   * transaction of its own (a savepoint when nested), so that a ChatError leaves nothing behind.
   */
  applyEntry(entry: LogEntry): CommandResult {
    return this.atomically(() => this.stageEntry(entry));
  }

  /**
   * Applies entries that directly follow the log, all in one transaction: one fsync for a whole batch.
   * The entries share that transaction without a savepoint each: an entry that fails to apply fails the
   * whole batch, which rolls back every entry of it, so a savepoint per entry would never be rolled back
   * to on its own.
   */
  applyEntries(entries: readonly LogEntry[]): void {
    if (entries.length === 0) return;
    this.atomically(() => {
      for (const entry of entries) this.stageEntry(entry);
    });
  }

  /**
   * Applies and appends one entry in the open transaction, and stages its counters. Whoever calls it rolls
   * the transaction (or savepoint) back if it throws; atomically() then puts the staged counters back, and
   * writes the chain to cluster_state before the outermost transaction commits.
   */
  private stageEntry(entry: LogEntry): CommandResult {
    const before = this.staged;
    assert(entry.index === before.lastIndex + 1, `entry ${entry.index} does not follow ${before.lastIndex}`);
    assert(entry.epoch >= before.lastEpoch, `entry epoch ${entry.epoch} is older than ${before.lastEpoch}`);
    const chainText = commandChainText(entry.command);
    const chain = createHash('sha256').update(`${before.logChain}\n${entry.index}\n${chainText}`).digest('hex');
    const applied = this.chat.apply(entry.index, entry.command);
    this.appendStatement.run(entry.index, entry.epoch, storedCommandText(entry.command, applied));
    // Staged only once every statement succeeded: a ChatError above leaves the counters as they were.
    this.staged = {
      lastIndex: entry.index,
      lastEpoch: entry.epoch,
      lastTimestampMs: Math.max(before.lastTimestampMs, entry.command.timestampMs),
      logChain: chain,
    };
    this.stagedChains.push([entry.index, chain]);
    return applied;
  }

  /** The oldest index the log still holds. */
  firstLogIndex(): number {
    const row = this.database.prepare('SELECT min(log_index) AS firstIndex FROM command_log').get() as {
      firstIndex: number | null;
    };
    return row.firstIndex ?? this.lastIndex + 1;
  }

  /**
   * Deletes log entries before `firstIndex`. Their effect stays in the tables, and snapshots carry it to
   * replicas that need older entries; the log itself is local, not part of the replicated state.
   */
  truncateLogBefore(firstIndex: number): void {
    assert(firstIndex <= this.lastIndex, 'truncation keeps at least the last entry');
    this.database.prepare('DELETE FROM command_log WHERE log_index < ?').run(firstIndex);
  }

  private metadata(key: string): string | undefined {
    return (this.metadataGet.get(key) as { value: string } | undefined)?.value;
  }

  /** The highest epoch this replica has accepted or started; persisted before it is acted on. */
  get currentEpoch(): number {
    return Math.max(Number(this.metadata('current_epoch') ?? 0), this.lastEpoch);
  }

  setCurrentEpoch(epoch: number): void {
    assert(Number.isSafeInteger(epoch), `epoch ${epoch} is not a safe integer`);
    assert(epoch >= this.currentEpoch, `the epoch must not go back from ${this.currentEpoch} to ${epoch}`);
    this.metadataSet.run('current_epoch', String(epoch));
  }

  /** A takeover asked of the configuration store whose outcome is not known yet; see Campaign. */
  get campaign(): Campaign | null {
    const value = this.metadata('campaign');
    return value === undefined ? null : (JSON.parse(value) as Campaign);
  }

  setCampaign(campaign: Campaign | null): void {
    if (campaign === null) this.metadataDelete.run('campaign');
    else this.metadataSet.run('campaign', JSON.stringify(campaign));
  }

  /** Clears the mark `replichat restore` leaves, once the restored replica created its cluster. */
  clearRestoredFromBackup(): void {
    this.metadataDelete.run('restored_from_backup');
  }

  /** This database's random identifier, made at its first use (see AppendReplyMessage.storageId). */
  storageId(makeOne: () => string): string {
    const existing = this.metadata('storage_id');
    if (existing !== undefined) return existing;
    const made = makeOne();
    this.metadataSet.run('storage_id', made);
    return made;
  }

  /** Raises and persists the run counter; each start of the replica process is a new incarnation. */
  nextIncarnation(): number {
    const next = Number(this.metadata('run_counter') ?? 0) + 1;
    this.metadataSet.run('run_counter', String(next));
    return next;
  }

  /** This replica's promises, to carry over a snapshot swap (the snapshot carries the sender's state, not these). */
  localPromises(): Map<string, string> {
    const promises = new Map<string, string>();
    for (const key of LOCAL_PROMISE_KEYS) {
      const value = this.metadata(key);
      if (value !== undefined) promises.set(key, value);
    }
    return promises;
  }

  restoreLocalPromises(promises: ReadonlyMap<string, string>): void {
    this.atomically(() => {
      for (const [key, value] of promises) {
        // The epoch never goes back across a swap: keep the larger of ours and the snapshot's.
        if (key === 'current_epoch' && Number(value) < this.currentEpoch) continue;
        this.metadataSet.run(key, value);
      }
    });
  }

  /** What the protocol core needs back after a restart or a snapshot. */
  protocolState(): PersistedProtocolState {
    const epochStarts = this.database
      .prepare('SELECT epoch, min(log_index) AS firstIndex FROM command_log GROUP BY epoch ORDER BY firstIndex')
      .all() as EpochStart[];
    return {
      currentEpoch: this.currentEpoch,
      campaign: this.campaign,
      epochStarts,
      lastIndex: this.lastIndex,
      configuration: this.chat.configuration(),
      restoredFromBackup: this.metadata('restored_from_backup') === '1',
    };
  }

  /** Up to `maxCount` entries starting at `fromIndex`, in order. */
  entries(fromIndex: number, maxCount: number): LogEntry[] {
    const rows = this.entriesStatement.all(fromIndex, maxCount) as LogRow[];
    return rows.map((row) => ({ index: row.index, epoch: row.epoch, command: decodeLogRow(row) }));
  }

  stateDigest(): string {
    return computeStateDigest(this.database);
  }

  close(): void {
    this.database.close();
  }
}
