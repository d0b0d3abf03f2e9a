/**
 * A replica's durable store: the command log and the chat state in one SQLite file. Appending a command to
 * the log and applying it to the tables happen in one transaction, so after any crash the log and the
 * tables agree: either both hold the entry or neither does.
 */
import { createHash } from 'node:crypto';
import { assert } from '../core/assert.js';
import type { Command, CommandResult } from '../core/commands.js';
import type { EpochStart } from '../core/replication/epoch-history.js';
import type { PersistedProtocolState } from '../core/replication/replica-core.js';
import { ChatState } from './chat-state.js';
import { openDatabase, type SqliteDatabase } from './database.js';
import { computeStateDigest } from './state-digest.js';

/** One entry of the log: a command at a position, tagged with the epoch of the leader that wrote it. */
export interface LogEntry {
  readonly index: number;
  readonly epoch: number;
  readonly command: Command;
}

export class ReplicaStore {
  readonly chat: ChatState;
  private lastIndexValue: number;
  private lastEpochValue: number;
  private lastTimestampMsValue: number;
  private readonly appendStatement;
  private readonly entriesStatement;
  private readonly chainStatement;
  private logChainValue: string;

  private constructor(readonly database: SqliteDatabase) {
    this.chat = new ChatState(database);
    this.appendStatement = database.prepare('INSERT INTO command_log (log_index, epoch, command) VALUES (?, ?, ?)');
    this.entriesStatement = database.prepare(
      'SELECT log_index AS "index", epoch, command FROM command_log WHERE log_index >= ? ORDER BY log_index LIMIT ?',
    );
    const last = database
      .prepare('SELECT log_index AS "index", epoch, command FROM command_log ORDER BY log_index DESC LIMIT 1')
      .get() as { index: number; epoch: number; command: string } | undefined;
    this.lastIndexValue = last?.index ?? 0;
    this.lastEpochValue = last?.epoch ?? 0;
    this.lastTimestampMsValue = last === undefined ? 0 : (JSON.parse(last.command) as Command).timestampMs;
    this.chainStatement = database.prepare(
      "INSERT INTO cluster_state (key, value) VALUES ('log_chain', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    );
    this.logChainValue = this.chat.clusterValue('log_chain') ?? '';
  }

  /**
   * A hash chained over every entry applied so far (index and command text). Replicas apply the same
   * commands deterministically, so equal chains mean equal states; unlike the state digest it costs nothing
   * to read, which is why re-admission to the in-sync set compares it (the full digest of a large database
   * would block the event loop for seconds). It is part of the replicated state, so snapshots carry it.
   */
  get logChainDigest(): string {
    return this.logChainValue;
  }

  /** Opens the store in `filePath` (':memory:' for tests). */
  static open(filePath: string): ReplicaStore {
    return new ReplicaStore(openDatabase(filePath));
  }

  /** The index of the last entry in the log; 0 when the log is empty. */
  get lastIndex(): number {
    return this.lastIndexValue;
  }

  get lastEpoch(): number {
    return this.lastEpochValue;
  }

  /** The timestamp of the last logged command, so that the next one is never earlier. */
  get lastTimestampMs(): number {
    return this.lastTimestampMsValue;
  }

  /**
   * Applies `command` as the next entry and appends it, in one fsynced transaction. A ChatError from the
   * state machine rolls back both and propagates: nothing is logged.
   */
  appendAndApply(epoch: number, command: Command): { entry: LogEntry; result: CommandResult } {
    const entry: LogEntry = { index: this.lastIndexValue + 1, epoch, command };
    const result = this.applyEntry(entry);
    return { entry, result };
  }

  /** Applies an entry that must directly follow the last one (a follower's path, and replay). */
  applyEntry(entry: LogEntry): CommandResult {
    assert(entry.index === this.lastIndexValue + 1, `entry ${entry.index} does not follow ${this.lastIndexValue}`);
    assert(entry.epoch >= this.lastEpochValue, `entry epoch ${entry.epoch} is older than ${this.lastEpochValue}`);
    const commandText = JSON.stringify(entry.command);
    const chain = createHash('sha256').update(`${this.logChainValue}\n${entry.index}\n${commandText}`).digest('hex');
    const result = this.database.transaction(() => {
      const applied = this.chat.apply(entry.index, entry.command);
      this.appendStatement.run(entry.index, entry.epoch, commandText);
      this.chainStatement.run(chain);
      return applied;
    })();
    this.logChainValue = chain;
    this.lastIndexValue = entry.index;
    this.lastEpochValue = entry.epoch;
    this.lastTimestampMsValue = Math.max(this.lastTimestampMsValue, entry.command.timestampMs);
    return result;
  }

  /**
   * Applies entries that directly follow the log, all in one transaction: one fsync for a whole batch
   * from the leader.
   */
  applyEntries(entries: readonly LogEntry[]): void {
    if (entries.length === 0) return;
    this.database.transaction(() => {
      for (const entry of entries) this.applyEntry(entry);
    })();
  }

  /** The oldest index the log still holds. */
  firstLogIndex(): number {
    const row = this.database.prepare('SELECT min(log_index) AS firstIndex FROM command_log').get() as {
      firstIndex: number | null;
    };
    return row.firstIndex ?? this.lastIndexValue + 1;
  }

  /**
   * Deletes log entries before `firstIndex`. Their effect stays in the tables, and snapshots carry it to
   * replicas that need older entries; the log itself is local, not part of the replicated state.
   */
  truncateLogBefore(firstIndex: number): void {
    assert(firstIndex <= this.lastIndexValue, 'truncation keeps at least the last entry');
    this.database.prepare('DELETE FROM command_log WHERE log_index < ?').run(firstIndex);
  }

  /** The highest epoch this replica has accepted or started; persisted before it is acted on. */
  get currentEpoch(): number {
    const row = this.database.prepare("SELECT value FROM local_metadata WHERE key = 'current_epoch'").get() as
      | { value: string }
      | undefined;
    return Math.max(Number(row?.value ?? 0), this.lastEpochValue);
  }

  setCurrentEpoch(epoch: number): void {
    assert(epoch >= this.currentEpoch, `the epoch must not go back from ${this.currentEpoch} to ${epoch}`);
    this.database
      .prepare(
        "INSERT INTO local_metadata (key, value) VALUES ('current_epoch', ?) " +
          'ON CONFLICT (key) DO UPDATE SET value = excluded.value',
      )
      .run(String(epoch));
  }

  /** What the protocol core needs back after a restart or a snapshot. */
  protocolState(): PersistedProtocolState {
    const epochStarts = this.database
      .prepare('SELECT epoch, min(log_index) AS firstIndex FROM command_log GROUP BY epoch ORDER BY firstIndex')
      .all() as EpochStart[];
    const stored = this.chat.clusterValue('configuration_index');
    return {
      currentEpoch: this.currentEpoch,
      epochStarts,
      lastIndex: this.lastIndexValue,
      configuration: this.chat.configuration(),
      configurationIndex: stored === undefined ? 0 : Number(stored),
    };
  }

  /** Up to `maxCount` entries starting at `fromIndex`, in order. */
  entries(fromIndex: number, maxCount: number): LogEntry[] {
    const rows = this.entriesStatement.all(fromIndex, maxCount) as { index: number; epoch: number; command: string }[];
    return rows.map((row) => ({ index: row.index, epoch: row.epoch, command: JSON.parse(row.command) as Command }));
  }

  stateDigest(): string {
    return computeStateDigest(this.database);
  }

  close(): void {
    this.database.close();
  }
}
