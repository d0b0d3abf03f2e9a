/**
 * Versioned schema migrations, applied in order inside one transaction each; `PRAGMA user_version` records
 * the version reached. A migration is never edited once released: a change is a new migration.
 */
export interface Migration {
  readonly version: number;
  readonly description: string;
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: 'chat tables, idempotency records, replicated cluster state, command log, local metadata',
    sql: `
      -- The replicated chat state: changed only by applying commands from the log.
      CREATE TABLE users (
        username      TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL
      ) WITHOUT ROWID;

      CREATE TABLE messages (
        id         TEXT PRIMARY KEY,
        -- The log index of the send: a total order that every replica agrees on, unlike clocks.
        sequence   INTEGER NOT NULL UNIQUE,
        sender     TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        recipient  TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        body       TEXT NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        delivered  INTEGER NOT NULL DEFAULT 0 CHECK (delivered IN (0, 1)),
        instant    INTEGER NOT NULL CHECK (instant IN (0, 1))
      ) WITHOUT ROWID;
      -- Unread counts and ReadMessages: the undelivered messages of one recipient, oldest first.
      CREATE INDEX messages_by_recipient ON messages (recipient, delivered, sequence);
      -- History and account deletion: the messages one user sent.
      CREATE INDEX messages_by_sender ON messages (sender, sequence);

      CREATE TABLE sessions (
        id            TEXT PRIMARY KEY,
        username      TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE INDEX sessions_by_username ON sessions (username);
      CREATE INDEX sessions_by_expiry ON sessions (expires_at_ms);

      -- Idempotency records: the first result of every client write, kept for a bounded time and count.
      CREATE TABLE requests (
        request_id    TEXT PRIMARY KEY,
        principal     TEXT NOT NULL,
        kind          TEXT NOT NULL,
        fingerprint   TEXT NOT NULL,
        result        TEXT NOT NULL,
        log_index     INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL
      ) WITHOUT ROWID;
      CREATE INDEX requests_by_age ON requests (created_at_ms, request_id);

      -- Replicated cluster-wide values, such as the cluster id and the session signing secret.
      CREATE TABLE cluster_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) WITHOUT ROWID;

      -- The durable command log. Appending an entry and applying it happen in one transaction.
      CREATE TABLE command_log (
        log_index INTEGER PRIMARY KEY,
        epoch     INTEGER NOT NULL,
        command   TEXT NOT NULL
      );

      -- Values that belong to this replica alone (its applied index, its epoch): not part of the digest.
      CREATE TABLE local_metadata (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 2,
    description: 'usernames are unique ignoring case: users.username_key holds the normalised name',
    // The key is usernameKey() of src/core/validation.ts. Usernames are ASCII (USERNAME_PATTERN), where
    // SQLite's lower() equals NFC followed by toLowerCase(), so this SQL computes the same key as the code.
    // Accounts that already collide keep working: the oldest (then the smallest name) gets the plain key,
    // each younger one the key `<key>#<username>`, which no typed name can produce ('#' is not a username
    // character). Lookups try the exact name first, so a younger account still logs in by its exact name,
    // while every other spelling reaches the oldest, and no new spelling of the name can be registered.
    sql: `
      ALTER TABLE users ADD COLUMN username_key TEXT NOT NULL DEFAULT '';
      UPDATE users SET username_key = lower(username);
      UPDATE users SET username_key = username_key || '#' || username
        WHERE EXISTS (
          SELECT 1 FROM users AS older
            WHERE lower(older.username) = lower(users.username)
              AND (older.created_at_ms < users.created_at_ms
                OR (older.created_at_ms = users.created_at_ms AND older.username < users.username)));
      CREATE UNIQUE INDEX users_by_key ON users (username_key);
    `,
  },
  {
    version: 3,
    description: 'a message body and a request envelope on disk once: rowid tables, a log that refers to the rows',
    // Before: about 11 KB per 1 KB message (bench/disk-per-message.mjs), because the body was stored three
    // times (the message row, the request's stored result, the logged command) and WITHOUT ROWID rows of
    // more than about 1 KB spill into an overflow page of their own. Now:
    // - messages and requests are rowid tables keyed by the log index (`sequence`, `log_index`), with their
    //   UUIDs as unique columns, so a large row shares its page with others;
    // - a send's stored result is NULL while its message exists: ChatState.request rebuilds it from the row;
    //   when the message is deleted it becomes the message without its body (as recordedResult keeps it);
    // - a client command's log entry leaves out its envelope (the request row at the same index holds it),
    //   and a send's entry leaves out the message fields its message row holds (see command-encoding.ts);
    // - before a referenced row is deleted, these triggers write the values back into the entry and the
    //   result, so that an entry can always be read back whole, however long the log keeps it (the log
    //   held a deleted message's body until truncation before, too; the requests table never does).
    // Requests are pruned by age in log order now (timestamps never decrease along the log), so the age
    // index is gone.
    sql: `
      DROP INDEX messages_by_recipient;
      DROP INDEX messages_by_sender;
      ALTER TABLE messages RENAME TO messages_before_3;
      CREATE TABLE messages (
        id         TEXT NOT NULL UNIQUE,
        -- The log index of the send, and the rowid.
        sequence   INTEGER PRIMARY KEY,
        sender     TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        recipient  TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        body       TEXT NOT NULL,
        sent_at_ms INTEGER NOT NULL,
        delivered  INTEGER NOT NULL DEFAULT 0 CHECK (delivered IN (0, 1)),
        instant    INTEGER NOT NULL CHECK (instant IN (0, 1))
      );
      INSERT INTO messages (id, sequence, sender, recipient, body, sent_at_ms, delivered, instant)
        SELECT id, sequence, sender, recipient, body, sent_at_ms, delivered, instant FROM messages_before_3;
      DROP TABLE messages_before_3;
      -- Each index ends with the rowid, which is the sequence, so ORDER BY sequence needs no extra column.
      CREATE INDEX messages_by_recipient ON messages (recipient, delivered);
      CREATE INDEX messages_by_sender ON messages (sender);

      DROP INDEX requests_by_age;
      ALTER TABLE requests RENAME TO requests_before_3;
      CREATE TABLE requests (
        request_id    TEXT NOT NULL UNIQUE,
        principal     TEXT NOT NULL,
        kind          TEXT NOT NULL,
        fingerprint   TEXT NOT NULL,
        -- NULL for a send whose message still exists: the result is that message as it was stored.
        result        TEXT,
        log_index     INTEGER PRIMARY KEY,
        created_at_ms INTEGER NOT NULL
      );
      INSERT INTO requests (request_id, principal, kind, fingerprint, result, log_index, created_at_ms)
        SELECT request_id, principal, kind, fingerprint,
               CASE WHEN kind <> 'sendMessage' THEN result
                    WHEN log_index IN (SELECT sequence FROM messages) THEN NULL
                    ELSE json_remove(result, '$.message.body') END,
               log_index, created_at_ms
          FROM requests_before_3;
      DROP TABLE requests_before_3;

      UPDATE command_log SET command = json_remove(command, '$.requestId', '$.principal', '$.fingerprint', '$.timestampMs')
        WHERE json_type(command, '$.requestId') IS NOT NULL
          AND EXISTS (SELECT 1 FROM requests AS r WHERE r.log_index = command_log.log_index
            AND r.request_id = json_extract(command, '$.requestId') AND r.principal = json_extract(command, '$.principal')
            AND r.fingerprint = json_extract(command, '$.fingerprint') AND r.created_at_ms = json_extract(command, '$.timestampMs'));
      UPDATE command_log SET command = json_remove(command, '$.messageId', '$.sender', '$.body', '$.instant')
        WHERE json_extract(command, '$.kind') = 'sendMessage'
          AND EXISTS (SELECT 1 FROM messages AS m WHERE m.sequence = command_log.log_index
            AND m.id = json_extract(command, '$.messageId') AND m.sender = json_extract(command, '$.sender')
            AND m.body = json_extract(command, '$.body') AND m.instant = json_extract(command, '$.instant'));

      CREATE TRIGGER messages_keep_referenced_values BEFORE DELETE ON messages BEGIN
        UPDATE command_log SET command = json_insert(command, '$.messageId', OLD.id, '$.sender', OLD.sender,
            '$.body', OLD.body, '$.instant', json(CASE OLD.instant WHEN 1 THEN 'true' ELSE 'false' END))
          WHERE log_index = OLD.sequence;
        UPDATE requests SET result = json_object('message', json_object('id', OLD.id, 'sequence', OLD.sequence,
            'sender', OLD.sender, 'recipient', OLD.recipient, 'sentAtMs', OLD.sent_at_ms,
            'delivered', json('false'), 'instant', json(CASE OLD.instant WHEN 1 THEN 'true' ELSE 'false' END)))
          WHERE log_index = OLD.sequence AND result IS NULL;
      END;
      CREATE TRIGGER requests_keep_referenced_values BEFORE DELETE ON requests BEGIN
        UPDATE command_log SET command = json_insert(command, '$.requestId', OLD.request_id, '$.principal', OLD.principal,
            '$.fingerprint', OLD.fingerprint, '$.timestampMs', OLD.created_at_ms)
          WHERE log_index = OLD.log_index AND json_type(command, '$.requestId') IS NULL;
      END;
    `,
  },
];

/** The tables whose rows make up the replicated state, each with the columns that order its rows. */
export const REPLICATED_TABLES: readonly { readonly name: string; readonly orderBy: string }[] = [
  { name: 'users', orderBy: 'username' },
  { name: 'messages', orderBy: 'id' },
  { name: 'sessions', orderBy: 'id' },
  { name: 'requests', orderBy: 'request_id' },
  { name: 'cluster_state', orderBy: 'key' },
];
