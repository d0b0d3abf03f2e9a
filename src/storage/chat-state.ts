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
  type RotateSessionKeyCommand,
  type UpgradePasswordHashCommand,
  type SendMessageCommand,
  type StoredMessage,
} from '../core/commands.js';
import type { Configuration } from '../core/replication/types.js';
import type { SessionKey } from '../core/session-key.js';
import {
  AlreadyExistsError,
  FailedPreconditionError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
} from '../core/errors.js';
import { PRUNE_EVERY_ENTRIES, REQUEST_RETENTION_MAX_COUNT, REQUEST_RETENTION_MS } from '../core/limits.js';
import { usernameKey } from '../core/validation.js';
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

/**
 * True when SQLite hands `value` back unchanged from the TEXT or INTEGER column it is written to. A string
 * is stored as UTF-8, which a lone surrogate does not survive (it reads back as U+FFFD); a number survives,
 * integer or not, except -0 (read back as 0) and NaN (stored as NULL). Anything else (a bigint, a boolean)
 * may come back changed.
 */
function readsBackUnchanged(value: unknown): boolean {
  // String.prototype.isWellFormed is in Node 20, but not in the ES2022 library this project compiles against.
  if (typeof value === 'string') return (value as string & { isWellFormed(): boolean }).isWellFormed();
  return typeof value === 'number' && !Object.is(value, -0) && !Number.isNaN(value);
}

/** Token-signing keys live at once at most; a rotation beyond that is refused until older keys retire. */
export const SESSION_KEYS_LIVE_MAX = 16;

/**
 * What the idempotency record keeps of a result. A message's body is left out, so that deleting the message
 * (or its account) leaves no copy of the body in the requests table; a replay reads the body from the
 * message, if it still exists.
 */
function recordedResult(command: Command, result: CommandResult): unknown {
  if (command.kind !== 'sendMessage') return result;
  const { body: _body, ...message } = (result as CommandResult<'sendMessage'>).message;
  return { message };
}

export class ChatState {
  private readonly statements: Record<string, Statement>;

  constructor(private readonly database: SqliteDatabase) {
    const prepare = (sql: string): Statement => database.prepare(sql);
    this.statements = {
      // Names are matched exactly first, so that an account that collided before usernames ignored case
      // (see migration 2) still answers to its exact name; any other spelling finds the account by its key.
      exactUsername: prepare('SELECT username FROM users WHERE username = ?'),
      usernameByKey: prepare('SELECT username FROM users WHERE username_key = ?'),
      // A key is taken by an account with that key, or by a younger collided one (`<key>#<name>`).
      keyTaken: prepare(
        "SELECT 1 FROM users WHERE username_key = @key OR substr(username_key, 1, length(@key) + 1) = @key || '#' LIMIT 1",
      ),
      passwordHash: prepare('SELECT password_hash AS passwordHash FROM users WHERE username = ?'),
      insertUser: prepare('INSERT INTO users (username, username_key, password_hash, created_at_ms) VALUES (?, ?, ?, ?)'),
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
      // The hash pins the row (its salt is random); the name is compared ignoring case only as a second check.
      upgradePasswordHash: prepare(
        'UPDATE users SET password_hash = @passwordHash WHERE password_hash = @previousHash AND lower(username) = lower(@username)',
      ),
      // Subscribe's replay: the oldest undelivered messages whose bodies fit in @maxBytes together (the first
      // one always, so that a replay always makes progress), at most @limit of them.
      undeliveredWithinBytes: prepare(
        `SELECT * FROM (
           SELECT *, sum(length(CAST(body AS BLOB))) OVER (ORDER BY sequence ROWS UNBOUNDED PRECEDING) AS running_bytes
             FROM messages
             WHERE recipient = @username AND delivered = 0 AND (@instantOnly = 0 OR instant = 1)
             ORDER BY sequence LIMIT @limit
         ) WHERE running_bytes - length(CAST(body AS BLOB)) < @maxBytes ORDER BY sequence`,
      ),
      deleteMessage: prepare('DELETE FROM messages WHERE id = ?'),
      unreadCount: prepare('SELECT count(*) AS count FROM messages WHERE recipient = ? AND delivered = 0 AND sequence <= ?'),
      oldestUndelivered: prepare(
        'SELECT * FROM messages WHERE recipient = ? AND delivered = 0 ORDER BY sequence LIMIT ?',
      ),
      pushedUnacknowledged: prepare(
        'SELECT * FROM messages WHERE recipient = ? AND delivered = 0 AND instant = 1 ORDER BY sequence LIMIT ?',
      ),
      // The pattern matches the key, so that `dave*` finds Dave too; pages still go by the name as shown.
      listAccounts: prepare('SELECT username FROM users WHERE username_key GLOB lower(?) AND username > ? ORDER BY username LIMIT ?'),
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
      // A send's result is rebuilt from its message row, which has the same rowid (migration 3).
      request: prepare(
        `SELECT r.request_id, r.principal, r.kind, r.fingerprint, r.result, r.log_index,
                m.id AS message_id, m.sender, m.recipient, m.body, m.sent_at_ms, m.instant
           FROM requests AS r LEFT JOIN messages AS m ON m.sequence = r.log_index
          WHERE r.request_id = ?`,
      ),
      insertRequest: prepare(
        `INSERT INTO requests (request_id, principal, kind, fingerprint, result, log_index, created_at_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
      ),
      // Timestamps never decrease along the log, so the expired records are a prefix in log order: the
      // scan stops at the first live one instead of reading the whole table.
      pruneRequestsByAge: prepare(
        `DELETE FROM requests WHERE log_index < coalesce(
           (SELECT log_index FROM requests WHERE created_at_ms >= ? ORDER BY log_index LIMIT 1), 9223372036854775807)`,
      ),
      requestCount: prepare('SELECT count(*) AS count FROM requests'),
      pruneRequestsByCount: prepare(
        'DELETE FROM requests WHERE log_index IN (SELECT log_index FROM requests ORDER BY log_index LIMIT ?)',
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
        // A send's result is its message row (see request()); nothing of it is stored twice.
        command.kind === 'sendMessage' ? null : JSON.stringify(recordedResult(command, result)),
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
      case 'upgradePasswordHash':
        return this.upgradePasswordHash(command);
      case 'rotateSessionKey':
        return this.rotateSessionKey(command);
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
      const existing = this.canonicalUsername(command.username) ?? command.username;
      throw new AlreadyExistsError(
        existing === command.username
          ? `the username ${command.username} is taken`
          : `the username ${command.username} is taken: it differs from ${existing} only in case`,
      );
    }
    this.statements.insertUser!.run(command.username, usernameKey(command.username), command.passwordHash, command.timestampMs);
    return { username: command.username };
  }

  private login(command: LoginCommand): CommandResult<'login'> {
    const username = this.canonicalUsername(command.username);
    if (username === undefined) throw new UnauthenticatedError();
    this.statements.insertSession!.run(command.sessionId, username, command.timestampMs, command.expiresAtMs);
    // The key is the newest one when the login applies (log order), so every replica derives the same token.
    return { sessionId: command.sessionId, expiresAtMs: command.expiresAtMs, keyId: this.currentSessionKey()?.id ?? 0 };
  }

  private logout(command: LogoutCommand): CommandResult<'logout'> {
    // Logging out of a session that has already ended is not an error: the caller's goal holds.
    this.statements.deleteSession!.run(command.sessionId, command.username);
    return {};
  }

  private sendMessage(logIndex: number, command: SendMessageCommand): CommandResult<'sendMessage'> {
    if (!this.userExists(command.sender)) throw new UnauthenticatedError('the sender account no longer exists');
    // The recipient as typed may differ in case from the account's name; the message names the account.
    const recipient = this.canonicalUsername(command.recipient);
    if (recipient === undefined) throw new NotFoundError(`no account named ${command.recipient}`);
    // The row as insertMessage writes it (delivered starts at 0), and as `SELECT *` would read it back.
    const row: MessageRow = {
      id: command.messageId,
      sequence: logIndex,
      sender: command.sender,
      recipient,
      body: command.body,
      sent_at_ms: command.timestampMs,
      delivered: 0,
      instant: command.instant ? 1 : 0,
    };
    this.statements.insertMessage!.run(row.id, row.sequence, row.sender, row.recipient, row.body, row.sent_at_ms, row.instant);
    // No trigger changes an inserted message, so the result is the row just written, mapped as a read maps
    // it; reading it back would cost a statement per send. A value that SQLite would give back changed is
    // the exception: then the message is read back, so that the result is always what the table holds.
    // (The recipient came from the users table, so it reads back unchanged.)
    const message =
      readsBackUnchanged(row.id) &&
      readsBackUnchanged(row.sequence) &&
      readsBackUnchanged(row.sender) &&
      readsBackUnchanged(row.body) &&
      readsBackUnchanged(row.sent_at_ms)
        ? toMessage(row)
        : this.message(command.messageId);
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

  private upgradePasswordHash(command: UpgradePasswordHashCommand): CommandResult<'upgradePasswordHash'> {
    // A no-op when the account is gone or its hash changed meanwhile: the newer hash stands.
    const changes = this.statements.upgradePasswordHash!.run({
      passwordHash: command.passwordHash,
      previousHash: command.previousHash,
      username: command.username,
    }).changes;
    return { upgraded: changes === 1 };
  }

  private rotateSessionKey(command: RotateSessionKeyCommand): CommandResult<'rotateSessionKey'> {
    const keys = this.sessionKeys();
    if (keys.length === 0) throw new FailedPreconditionError('the cluster is not initialised yet');
    const next = Math.max(...keys.map((key) => key.id)) + 1;
    if (command.keyId !== next) {
      throw new FailedPreconditionError(`session key ${command.keyId} is not the next one (${next}); rotate again`);
    }
    const live = keys
      .map((key) => ({ ...key, retiresAtMs: Math.min(key.retiresAtMs ?? command.previousKeysRetireAtMs, command.previousKeysRetireAtMs) }))
      .filter((key) => key.retiresAtMs > command.timestampMs);
    // The new key counts too: at most SESSION_KEYS_LIVE_MAX keys are ever accepted at once.
    if (live.length + 1 > SESSION_KEYS_LIVE_MAX) {
      throw new FailedPreconditionError(
        `${live.length} older session keys are still live; wait until they retire, or rotate with revoke_previous`,
      );
    }
    const stored: SessionKey[] = [...live, { id: command.keyId, secretHex: command.secretHex, retiresAtMs: null }];
    this.statements.upsertClusterValue!.run('session_keys', JSON.stringify(stored));
    return { keyId: command.keyId };
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

  /**
   * The account's name as it was registered, for a name typed in any case: the exact name if an account has
   * it, else the account with the same usernameKey(); undefined when there is none.
   */
  canonicalUsername(username: string): string | undefined {
    const exact = this.statements.exactUsername!.get(username) as { username: string } | undefined;
    if (exact !== undefined) return exact.username;
    const byKey = this.statements.usernameByKey!.get(usernameKey(username)) as { username: string } | undefined;
    return byKey?.username;
  }

  /** True when the name, ignoring case, belongs to an account, or cannot be registered because of one. */
  userExists(username: string): boolean {
    return this.canonicalUsername(username) !== undefined || this.statements.keyTaken!.get({ key: usernameKey(username) }) !== undefined;
  }

  passwordHash(username: string): string | undefined {
    const canonical = this.canonicalUsername(username);
    if (canonical === undefined) return undefined;
    const row = this.statements.passwordHash!.get(canonical) as { passwordHash: string } | undefined;
    return row?.passwordHash;
  }

  session(sessionId: string): SessionRecord | undefined {
    return this.statements.session!.get(sessionId) as SessionRecord | undefined;
  }

  message(id: string): StoredMessage | undefined {
    const row = this.statements.message!.get(id) as MessageRow | undefined;
    return row === undefined ? undefined : toMessage(row);
  }

  /** Undelivered messages of `username` sent at or before log index `upToSequence` (committed state only, when given the commit index). */
  unreadCount(username: string, upToSequence = Number.MAX_SAFE_INTEGER): number {
    const row = this.statements.unreadCount!.get(this.canonicalUsername(username) ?? username, upToSequence) as { count: number };
    return row.count;
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
        : this.statements.historyWith!.all({
            username,
            before: beforeSequence,
            limit,
            peer: this.canonicalUsername(withUsername) ?? withUsername,
          });
    return (rows as MessageRow[]).map(toMessage);
  }

  request(requestId: string): RequestRecord | undefined {
    const row = this.statements.request!.get(requestId) as
      | {
          request_id: string;
          principal: string;
          kind: string;
          fingerprint: string;
          result: string | null;
          log_index: number;
          message_id: string | null;
          sender: string;
          recipient: string;
          body: string;
          sent_at_ms: number;
          instant: number;
        }
      | undefined;
    if (row === undefined) return undefined;
    let result: unknown;
    if (row.result === null) {
      // A send whose message exists: its result was the message as stored then, still undelivered.
      assert(row.kind === 'sendMessage' && row.message_id !== null, `request ${requestId} has neither a result nor a message`);
      result = {
        message: toMessage({
          id: row.message_id,
          sequence: row.log_index,
          sender: row.sender,
          recipient: row.recipient,
          body: row.body,
          sent_at_ms: row.sent_at_ms,
          delivered: 0,
          instant: row.instant,
        }),
      };
    } else {
      result = JSON.parse(row.result) as unknown;
    }
    return {
      requestId: row.request_id,
      principal: row.principal,
      kind: row.kind,
      fingerprint: row.fingerprint,
      result,
      logIndex: row.log_index,
    };
  }


  /**
   * The token-signing keys not yet dropped: the cluster's first secret as key 0 until the first rotation,
   * then the list the rotations keep (src/api/session-token.ts says which are accepted when).
   */
  sessionKeys(): SessionKey[] {
    const stored = this.clusterValue('session_keys');
    if (stored !== undefined) return JSON.parse(stored) as SessionKey[];
    const secret = this.clusterValue('session_secret');
    return secret === undefined ? [] : [{ id: 0, secretHex: secret, retiresAtMs: null }];
  }

  /** The key that signs new sessions: the newest. */
  currentSessionKey(): SessionKey | undefined {
    const keys = this.sessionKeys();
    return keys.reduce<SessionKey | undefined>((newest, key) => (newest === undefined || key.id > newest.id ? key : newest), undefined);
  }

  /**
   * The oldest undelivered messages of `username` (only pushed ones with `instantOnly`) whose bodies fit in
   * `maxBytes` together, at most `limit`; the first always, however large.
   */
  undeliveredWithinBytes(username: string, instantOnly: boolean, maxBytes: number, limit: number): StoredMessage[] {
    const rows = this.statements.undeliveredWithinBytes!.all({ username, instantOnly: instantOnly ? 1 : 0, maxBytes, limit });
    return (rows as MessageRow[]).map(toMessage);
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
