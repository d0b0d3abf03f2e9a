/**
 * Opens a replica's SQLite database with the settings durability depends on, and brings its schema up to
 * date. WAL with synchronous=FULL means a committed transaction has been fsynced before commit returns.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { assert } from '../core/assert.js';
import { MIGRATIONS } from './migrations.js';

export type SqliteDatabase = Database.Database;

/**
 * The page size of a new database. With SQLite's default of 4 KiB, only three rows of a 1 KB message fit in
 * a page and a quarter of it stays empty; 16 KiB pages hold fourteen or fifteen. It only takes effect when
 * the file is created: an existing database keeps its page size (WAL mode cannot change it).
 */
export const PAGE_SIZE_BYTES = 16384;

/** Opens (creating if needed) the database at `filePath`, or an in-memory one for ':memory:'. */
export function openDatabase(filePath: string): SqliteDatabase {
  if (filePath !== ':memory:') mkdirSync(dirname(filePath), { recursive: true });
  const database = new Database(filePath);
  database.pragma(`page_size = ${PAGE_SIZE_BYTES}`);
  database.pragma('journal_mode = WAL');
  database.pragma('synchronous = FULL');
  database.pragma('foreign_keys = ON');
  // A leader's write runs in a savepoint, whose statement journal holds the pages it changes: about eight
  // 16 KiB pages for a send, past the 64 KiB SQLite keeps in memory, so every write created, wrote and
  // unlinked a temporary file. The journal only undoes a savepoint inside an open transaction; after a
  // crash, the WAL alone decides what was committed, so keeping it in memory changes no durability.
  database.pragma('temp_store = MEMORY');
  // A replica is the only writer of its file; waiting on a lock would mean a second process on the same
  // data directory, which must fail loudly rather than interleave.
  database.pragma('busy_timeout = 0');
  migrate(database);
  return database;
}

/** Applies every migration newer than the database's user_version, each in its own transaction. */
export function migrate(database: SqliteDatabase): number {
  const current = database.pragma('user_version', { simple: true }) as number;
  const latest = MIGRATIONS[MIGRATIONS.length - 1]?.version ?? 0;
  assert(current <= latest, `database schema version ${current} is newer than this build knows (${latest})`);
  for (const migration of MIGRATIONS) {
    if (migration.version <= current) continue;
    database.transaction(() => {
      database.exec(migration.sql);
      database.pragma(`user_version = ${migration.version}`);
    })();
  }
  return latest;
}
