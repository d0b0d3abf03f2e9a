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
];

/** The tables whose rows make up the replicated state, each with the columns that order its rows. */
export const REPLICATED_TABLES: readonly { readonly name: string; readonly orderBy: string }[] = [
  { name: 'users', orderBy: 'username' },
  { name: 'messages', orderBy: 'id' },
  { name: 'sessions', orderBy: 'id' },
  { name: 'requests', orderBy: 'request_id' },
  { name: 'cluster_state', orderBy: 'key' },
];
