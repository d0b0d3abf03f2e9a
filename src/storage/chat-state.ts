/**
 * The chat state machine on SQLite. `apply` changes the replicated tables and nothing else, using only the
 * command's fields and the current rows, so every replica that applies the same log reaches the same state.
 * The read methods never write. Callers run `apply` inside the transaction that also appends the command to
 * the log (see replica-store.ts); a ChatError thrown from `apply` rolls both back.
 */
import type { Statement } from 'better-sqlite3';
import { assert } from '../core/assert.js';
import {
  type Command,
  type ConfigurationCommand,
  isClientCommand,
  type CommandResult,
  type CreateAccountCommand,
  type DeleteAccountCommand,
  type DeleteMessagesCommand,
  type InitializeClusterCommand,
  type LoginCommand,
  type LogoutCommand,
  type MarkDeliveredCommand,
  type SendMessageCommand,
  type StoredMessage,
} from '../core/commands.js';
import type { Configuration } from '../core/replication/types.js';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
} from '../core/errors.js';
import { PRUNE_EVERY_ENTRIES, REQUEST_RETENTION_MAX_COUNT, REQUEST_RETENTION_MS } from '../core/limits.js';
import type { SqliteDatabase } from './database.js';

interface MessageRow {
  id: string;
  sequence: number;
  sender: string;
  recipient: string;
  body: string;
  sent_at_ms: number;
  delivered: number;
  instant: number;
}

/** A remembered client write: enough to answer a retry with the first result. */
export interface RequestRecord {
  readonly requestId: string;
  readonly principal: string;
  readonly kind: string;
  readonly fingerprint: string;
  readonly result: unknown;
  readonly logIndex: number;
}

export interface SessionRecord {
  readonly id: string;
  readonly username: string;
  readonly expiresAtMs: number;
}

function toMessage(row: MessageRow): StoredMessage {
  return {
    id: row.id,
    sequence: row.sequence,
    sender: row.sender,
    recipient: row.recipient,
    body: row.body,
    sentAtMs: row.sent_at_ms,
    delivered: row.delivered === 1,
    instant: row.instant === 1,
  };
}

export class ChatState {
  private readonly statements: Record<string, Statement>;

  constructor(private readonly database: SqliteDatabase) {
    const prepare = (sql: string): Statement => database.prepare(sql);
    this.statements = {
      userExists: prepare('SELECT 1 FROM users WHERE username = ?'),
      passwordHash: prepare('SELECT password_hash AS passwordHash FROM users WHERE username = ?'),
      insertUser: prepare('INSERT INTO users (username, password_hash, created_at_ms) VALUES (?, ?, ?)'),
      deleteUser: prepare('DELETE FROM users WHERE username = ?'),
      insertSession: prepare('INSERT INTO sessions (id, username, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?)'),
      deleteSession: prepare('DELETE FROM sessions WHERE id = ? AND username = ?'),
      session: prepare('SELECT id, username, expires_at_ms AS expiresAtMs FROM sessions WHERE id = ?'),
      insertMessage: prepare(
        `INSERT INTO messages (id, sequence, sender, recipient, body, sent_at_ms, delivered, instant)
         VALUES (?, ?, ?, ?, ?, ?, 0, ?)`,
      ),
      message: prepare('SELECT * FROM messages WHERE id = ?'),
      markDelivered: prepare('UPDATE messages SET delivered = 1 WHERE id = ? AND delivered = 0'),
      deleteMessage: prepare('DELETE FROM messages WHERE id = ?'),
      unreadCount: prepare('SELECT count(*) AS count FROM messages WHERE recipient = ? AND delivered = 0'),
      oldestUndelivered: prepare(
        'SELECT * FROM messages WHERE recipient = ? AND delivered = 0 ORDER BY sequence LIMIT ?',
      ),
      pushedUnacknowledged: prepare(
        'SELECT * FROM messages WHERE recipient = ? AND delivered = 0 AND instant = 1 ORDER BY sequence LIMIT ?',
      ),
      listAccounts: prepare('SELECT username FROM users WHERE username GLOB ? AND username > ? ORDER BY username LIMIT ?'),
      history: prepare(
        `SELECT * FROM (
           SELECT * FROM messages WHERE sender = @username AND sequence < @before
           UNION ALL
           SELECT * FROM messages
             WHERE recipient = @username AND delivered = 1 AND sender <> @username AND sequence < @before
         ) ORDER BY sequence DESC LIMIT @limit`,
      ),
      historyWith: prepare(
        `SELECT * FROM (
           SELECT * FROM messages WHERE sender = @username AND recipient = @peer AND sequence < @before
           UNION ALL
           SELECT * FROM messages
             WHERE recipient = @username AND sender = @peer AND delivered = 1 AND sender <> @username
               AND sequence < @before
         ) ORDER BY sequence DESC LIMIT @limit`,
      ),
      request: prepare('SELECT * FROM requests WHERE request_id = ?'),
      insertRequest: prepare(
        `INSERT INTO requests (request_id, principal, kind, fingerprint, result, log_index, created_at_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
      ),
      pruneRequestsByAge: prepare('DELETE FROM requests WHERE created_at_ms < ?'),
      requestCount: prepare('SELECT count(*) AS count FROM requests'),
      pruneRequestsByCount: prepare(
        `DELETE FROM requests WHERE request_id IN (
           SELECT request_id FROM requests ORDER BY created_at_ms, request_id LIMIT ?)`,
      ),
      pruneSessions: prepare('DELETE FROM sessions WHERE expires_at_ms < ?'),
      clusterValue: prepare('SELECT value FROM cluster_state WHERE key = ?'),
      setClusterValue: prepare('INSERT INTO cluster_state (key, value) VALUES (?, ?)'),
      upsertClusterValue: prepare(
        'INSERT INTO cluster_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
      ),
    };
  }

  // ---------------------------------------------------------------------------------------------------
  // Writes: only through apply, only inside the caller's transaction.

  /**
   * Applies one command at log index `logIndex`. Throws a ChatError, before changing anything, when the
   * command cannot apply to this state; the leader then logs nothing.
   */
  apply(logIndex: number, command: Command): CommandResult {
    assert(this.database.inTransaction, 'ChatState.apply must run inside a transaction');
    const result = this.applyCommand(logIndex, command);
    if (isClientCommand(command)) {
      this.statements.insertRequest!.run(
        command.requestId,
        command.principal,
        command.kind,
        command.fingerprint,
        JSON.stringify(result),
        logIndex,
        command.timestampMs,
      );
    }
    if (logIndex % PRUNE_EVERY_ENTRIES === 0) this.prune(command.timestampMs);
    return result;
  }

  private applyCommand(logIndex: number, command: Command): CommandResult {
    switch (command.kind) {
      case 'initializeCluster':
        return this.initializeCluster(command);
      case 'configuration':
        return this.applyConfiguration(logIndex, command);
      case 'createAccount':
        return this.createAccount(command);
      case 'login':
        return this.login(command);
      case 'logout':
        return this.logout(command);
      case 'sendMessage':
        return this.sendMessage(logIndex, command);
      case 'markDelivered':
        return this.markDelivered(command);
      case 'deleteMessages':
        return this.deleteMessages(command);
      case 'deleteAccount':
        return this.deleteAccount(command);
    }
  }

  private initializeCluster(command: InitializeClusterCommand): CommandResult<'initializeCluster'> {
    if (this.clusterValue('cluster_id') !== undefined) {
      throw new FailedPreconditionError('the cluster is already initialised');
    }
    this.statements.setClusterValue!.run('cluster_id', command.clusterId);
    this.statements.setClusterValue!.run('session_secret', command.sessionSecretHex);
    this.statements.setClusterValue!.run('created_at_ms', String(command.timestampMs));
    return {};
  }

  private applyConfiguration(logIndex: number, command: ConfigurationCommand): CommandResult<'configuration'> {
    this.statements.upsertClusterValue!.run('configuration', JSON.stringify(command.configuration));
    this.statements.upsertClusterValue!.run('configuration_index', String(logIndex));
    return {};
  }

  private createAccount(command: CreateAccountCommand): CommandResult<'createAccount'> {
    if (this.userExists(command.username)) {
      throw new AlreadyExistsError(`the username ${command.username} is taken`);
    }
    this.statements.insertUser!.run(command.username, command.passwordHash, command.timestampMs);
    return { username: command.username };
  }

  private login(command: LoginCommand): CommandResult<'login'> {
    if (!this.userExists(command.username)) throw new UnauthenticatedError();
    this.statements.insertSession!.run(command.sessionId, command.username, command.timestampMs, command.expiresAtMs);
    return { sessionId: command.sessionId, expiresAtMs: command.expiresAtMs };
  }

  private logout(command: LogoutCommand): CommandResult<'logout'> {
    // Logging out of a session that has already ended is not an error: the caller's goal holds.
    this.statements.deleteSession!.run(command.sessionId, command.username);
    return {};
  }

  private sendMessage(logIndex: number, command: SendMessageCommand): CommandResult<'sendMessage'> {
    if (!this.userExists(command.sender)) throw new UnauthenticatedError('the sender account no longer exists');
    if (!this.userExists(command.recipient)) throw new NotFoundError(`no account named ${command.recipient}`);
    this.statements.insertMessage!.run(
      command.messageId,
      logIndex,
      command.sender,
      command.recipient,
      command.body,
      command.timestampMs,
      command.instant ? 1 : 0,
    );
    const message = this.message(command.messageId);
    assert(message !== undefined, 'a message just inserted must be found');
    return { message };
  }

  private markDelivered(command: MarkDeliveredCommand): CommandResult<'markDelivered'> {
    for (const id of command.messageIds) {
      const message = this.message(id);
      if (message === undefined) throw new NotFoundError(`no message with id ${id}`);
      if (message.recipient !== command.username) {
        throw new PermissionDeniedError(`message ${id} was not sent to ${command.username}`);
      }
    }
    let changedCount = 0;
    for (const id of command.messageIds) changedCount += this.statements.markDelivered!.run(id).changes;
    return { messageIds: [...command.messageIds], changedCount };
  }

  private deleteMessages(command: DeleteMessagesCommand): CommandResult<'deleteMessages'> {
    for (const id of command.messageIds) {
      const message = this.message(id);
      if (message === undefined) throw new NotFoundError(`no message with id ${id}`);
      if (message.sender !== command.username && message.recipient !== command.username) {
        throw new PermissionDeniedError(`only the sender or the recipient may delete message ${id}`);
      }
    }
    let deletedCount = 0;
    for (const id of command.messageIds) deletedCount += this.statements.deleteMessage!.run(id).changes;
    return { deletedCount };
  }

  private deleteAccount(command: DeleteAccountCommand): CommandResult<'deleteAccount'> {
    // ON DELETE CASCADE removes the account's sessions and every message it sent or received.
    const changes = this.statements.deleteUser!.run(command.username).changes;
    if (changes === 0) throw new NotFoundError(`no account named ${command.username}`);
    return {};
  }

  /** Forgets expired sessions and request ids past their retention, deterministically from the log. */
  private prune(nowMs: number): void {
    this.statements.pruneSessions!.run(nowMs);
    this.statements.pruneRequestsByAge!.run(nowMs - REQUEST_RETENTION_MS);
    const { count } = this.statements.requestCount!.get() as { count: number };
    if (count > REQUEST_RETENTION_MAX_COUNT) {
      this.statements.pruneRequestsByCount!.run(count - REQUEST_RETENTION_MAX_COUNT);
    }
  }

  // ---------------------------------------------------------------------------------------------------
  // Reads: never write.

  userExists(username: string): boolean {
    return this.statements.userExists!.get(username) !== undefined;
  }

  passwordHash(username: string): string | undefined {
    const row = this.statements.passwordHash!.get(username) as { passwordHash: string } | undefined;
    return row?.passwordHash;
  }

  session(sessionId: string): SessionRecord | undefined {
    return this.statements.session!.get(sessionId) as SessionRecord | undefined;
  }

  message(id: string): StoredMessage | undefined {
    const row = this.statements.message!.get(id) as MessageRow | undefined;
    return row === undefined ? undefined : toMessage(row);
  }

  unreadCount(username: string): number {
    return (this.statements.unreadCount!.get(username) as { count: number }).count;
  }

  oldestUndelivered(username: string, limit: number): StoredMessage[] {
    return (this.statements.oldestUndelivered!.all(username, limit) as MessageRow[]).map(toMessage);
  }

  /** Messages pushed to a subscriber that it has not acknowledged yet, oldest first. */
  pushedUnacknowledged(username: string, limit: number): StoredMessage[] {
    return (this.statements.pushedUnacknowledged!.all(username, limit) as MessageRow[]).map(toMessage);
  }

  /** Usernames matching a GLOB pattern (validated to hold only username characters, `*` and `?`). */
  listAccounts(pattern: string, afterUsername: string, limit: number): string[] {
    return (this.statements.listAccounts!.all(pattern, afterUsername, limit) as { username: string }[]).map(
      (row) => row.username,
    );
  }

  /** The caller's sent messages and delivered received messages, newest first, before `beforeSequence`. */
  history(username: string, withUsername: string | undefined, beforeSequence: number, limit: number): StoredMessage[] {
    const rows =
      withUsername === undefined
        ? this.statements.history!.all({ username, before: beforeSequence, limit })
        : this.statements.historyWith!.all({ username, before: beforeSequence, limit, peer: withUsername });
    return (rows as MessageRow[]).map(toMessage);
  }

  request(requestId: string): RequestRecord | undefined {
    const row = this.statements.request!.get(requestId) as
      | { request_id: string; principal: string; kind: string; fingerprint: string; result: string; log_index: number }
      | undefined;
    if (row === undefined) return undefined;
    return {
      requestId: row.request_id,
      principal: row.principal,
      kind: row.kind,
      fingerprint: row.fingerprint,
      result: JSON.parse(row.result) as unknown,
      logIndex: row.log_index,
    };
  }

  /** The latest configuration in the log (entries are applied as they are appended). */
  configuration(): Configuration | null {
    const value = this.clusterValue('configuration');
    return value === undefined ? null : (JSON.parse(value) as Configuration);
  }

  clusterValue(key: string): string | undefined {
    const row = this.statements.clusterValue!.get(key) as { value: string } | undefined;
    return row?.value;
  }
}
