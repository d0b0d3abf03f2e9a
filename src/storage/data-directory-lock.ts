/**
 * An exclusive lock on a replica's data directory, held for the life of the process, so that a second
 * server started on a directory in use refuses to start before it touches the database. It is a kernel
 * lock taken by SQLite itself (an exclusive lock on `<data-dir>/lock.sqlite` in EXCLUSIVE locking mode):
 * the kernel releases it when the process dies, even by SIGKILL, so a crash never leaves a stale lock,
 * and SQLite also tracks it between connections of one process (tests run several replicas in one).
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

/** The data directory is in use by another process (or another replica of this one). */
export class DataDirectoryInUseError extends Error {
  override name = 'DataDirectoryInUseError';
}

export interface DataDirectoryLock {
  release(): void;
}

export function lockDataDirectory(directory: string): DataDirectoryLock {
  mkdirSync(directory, { recursive: true });
  const database = new Database(join(directory, 'lock.sqlite'));
  try {
    database.pragma('locking_mode = EXCLUSIVE');
    database.pragma('busy_timeout = 0');
    // A write transaction takes the exclusive lock; in EXCLUSIVE mode it is kept after the commit.
    database.exec('CREATE TABLE IF NOT EXISTS lock (id INTEGER PRIMARY KEY); BEGIN EXCLUSIVE; COMMIT;');
  } catch (error) {
    database.close();
    throw new DataDirectoryInUseError(
      `the data directory ${directory} is in use by another replichat server (${(error as Error).message}); ` +
        'stop that one first',
    );
  }
  return { release: () => database.close() };
}
