/**
 * Snapshots: a consistent copy of a replica's whole database, taken while writes go on, that travels to
 * another replica to repair a diverged or lagging follower or to bootstrap a new one.
 *
 * The sending side copies the live database with SQLite's online backup API, strips the per-replica
 * `local_metadata` rows from the copy, and hashes it. The receiving side writes the incoming bytes to a
 * temporary file next to its database, refuses it unless its size and SHA-256 match the header, and then
 * swaps it in with one atomic rename. Every step streams, so a 1 GB database never needs 1 GB of memory.
 *
 * Temporary files are named `snapshot-(outgoing|incoming)-<32 hex>.sqlite`. Any such file found at startup
 * is left over from an interrupted snapshot and is deleted by `cleanUpTempSnapshots`.
 */
import Database from 'better-sqlite3';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, mkdir, open, readdir, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { assert } from '../core/assert.js';
import type { SqliteDatabase } from './database.js';

/** What a receiver must know before it accepts a snapshot's bytes; mirrors SnapshotHeader in peer.proto. */
export interface SnapshotHeader {
  /** The log index the snapshot's state corresponds to; 0 for a database with an empty log. */
  readonly lastIndex: number;
  readonly lastEpoch: number;
  readonly sizeBytes: number;
  /** Lowercase hex SHA-256 of the whole file. */
  readonly sha256Hex: string;
}

/** A snapshot written to a temporary file on the sending replica. */
export interface SnapshotFile extends SnapshotHeader {
  readonly path: string;
  /** Deletes the file (and any SQLite side files); safe to call more than once. */
  remove(): Promise<void>;
}

export interface CreateSnapshotOptions {
  /**
   * Pages copied per backup step. The event loop runs between steps, so writes and reads go on while the
   * copy is made; a smaller value keeps each pause of the event loop shorter.
   */
  readonly pagesPerStep?: number;
  /** Called after every backup step except the last; tests use it to write while the copy is under way. */
  readonly onBackupStep?: (progress: Database.BackupMetadata) => void;
}

/** A snapshot that cannot be accepted: bad header, wrong size, wrong checksum, or an unusable old database. */
export class SnapshotError extends Error {
  override name = 'SnapshotError';
}

/** 1024 pages of the default 4 KiB: about 4 MiB copied per step, a few milliseconds of blocked event loop. */
export const DEFAULT_BACKUP_PAGES_PER_STEP = 1024;

/** The read size for hashing, large enough to keep system calls few and small enough to bound memory. */
const HASH_READ_BYTES = 1024 * 1024;

const TEMP_SNAPSHOT_NAME = /^snapshot-(?:outgoing|incoming)-[0-9a-f]{32}\.sqlite(?:-wal|-shm|-journal)?$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** The files SQLite may keep next to a database; each belongs to exactly one database file. */
const SIDE_FILE_SUFFIXES = ['-wal', '-shm', '-journal'] as const;

/**
 * Takes a consistent snapshot of `database` into a new temporary file in `directory`, without stopping
 * writes. SQLite's backup copies the database a few pages per step; a write made between steps through the
 * same connection is also applied to the pages already copied, so the copy ends up equal to the database
 * as it was after the last step, with every write made during the copy included. (A write through another
 * connection would restart the copy instead; a replica has only one connection.)
 */
export async function createSnapshot(
  database: SqliteDatabase,
  directory: string,
  options: CreateSnapshotOptions = {},
): Promise<SnapshotFile> {
  const pagesPerStep = options.pagesPerStep ?? DEFAULT_BACKUP_PAGES_PER_STEP;
  assert(Number.isSafeInteger(pagesPerStep) && pagesPerStep > 0, `pagesPerStep must be positive, not ${pagesPerStep}`);
  await mkdir(directory, { recursive: true });
  const path = join(directory, temporarySnapshotName('outgoing'));
  try {
    await database.backup(path, {
      progress: (progress) => {
        options.onBackupStep?.(progress);
        return pagesPerStep;
      },
    });
    const { lastIndex, lastEpoch } = prepareCopyForTransfer(path);
    const { sizeBytes, sha256Hex } = await hashFile(path);
    return { path, lastIndex, lastEpoch, sizeBytes, sha256Hex, remove: () => removeDatabaseFiles(path) };
  } catch (error) {
    await removeDatabaseFiles(path);
    throw error;
  }
}

/**
 * Clears the per-replica rows from the copy, reads the log position the copy corresponds to, and folds the
 * copy into one self-contained file. The copy is opened read-write rather than read-only because clearing
 * `local_metadata` is a write; nothing else is changed.
 */
function prepareCopyForTransfer(path: string): { lastIndex: number; lastEpoch: number } {
  const copy = new Database(path, { fileMustExist: true, timeout: 0 });
  try {
    // With secure_delete the cleared rows are overwritten with zeros, so they do not travel in free pages.
    copy.pragma('secure_delete = ON');
    copy.exec('DELETE FROM local_metadata');
    const last = copy
      .prepare('SELECT log_index, epoch FROM command_log ORDER BY log_index DESC LIMIT 1')
      .get() as { log_index: number; epoch: number } | undefined;
    // The copy inherits WAL mode from its source. Switching to a rollback journal checkpoints the WAL into
    // the main file and deletes it, so the single file that is hashed and sent holds everything.
    const journalMode = copy.pragma('journal_mode = DELETE', { simple: true }) as string;
    assert(journalMode === 'delete', `the snapshot copy stayed in journal mode ${journalMode}`);
    return { lastIndex: last?.log_index ?? 0, lastEpoch: last?.epoch ?? 0 };
  } finally {
    copy.close();
  }
}

/** The size and hex SHA-256 of a file, read in bounded chunks. */
export async function hashFile(path: string): Promise<{ sizeBytes: number; sha256Hex: string }> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: HASH_READ_BYTES }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    sizeBytes += chunk.length;
  }
  return { sizeBytes, sha256Hex: hash.digest('hex') };
}

/**
 * Checks a header that came from another replica. These are operating errors, not assertions: a faulty or
 * hostile peer must not crash the receiver.
 */
export function validateSnapshotHeader(header: SnapshotHeader): void {
  for (const field of ['lastIndex', 'lastEpoch', 'sizeBytes'] as const) {
    const value = header[field];
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new SnapshotError(`snapshot header field ${field} is not a non-negative integer: ${value}`);
    }
  }
  // Every SQLite database has at least one page, and installing an empty file would wipe the replica.
  if (header.sizeBytes === 0) throw new SnapshotError('snapshot header announces an empty file');
  if (!SHA256_HEX.test(header.sha256Hex)) {
    throw new SnapshotError(`snapshot header has a malformed sha256Hex: ${JSON.stringify(header.sha256Hex)}`);
  }
}

/**
 * Writes an incoming snapshot to a new temporary file in `directory` and returns its path once the file
 * holds exactly `header.sizeBytes` bytes whose SHA-256 is `header.sha256Hex` and has been fsynced. On any
 * failure (more bytes than announced, a stream that ends early or fails, a checksum mismatch) the
 * temporary file is deleted and the error propagates. `directory` must be the directory of the database
 * the snapshot will replace, so that `swapInSnapshot` can rename within one file system.
 */
export async function receiveSnapshotToTemp(
  directory: string,
  header: SnapshotHeader,
  chunks: AsyncIterable<Buffer>,
): Promise<string> {
  validateSnapshotHeader(header);
  await mkdir(directory, { recursive: true });
  const path = join(directory, temporarySnapshotName('incoming'));
  const file = await open(path, 'wx');
  let closed = false;
  try {
    const hash = createHash('sha256');
    let receivedBytes = 0;
    for await (const chunk of chunks) {
      // Refusing as soon as the stream overshoots keeps a faulty sender from filling the disk.
      if (receivedBytes + chunk.length > header.sizeBytes) {
        throw new SnapshotError(`snapshot stream carries more than the ${header.sizeBytes} bytes its header announced`);
      }
      hash.update(chunk);
      await writeFully(file, chunk);
      receivedBytes += chunk.length;
    }
    if (receivedBytes !== header.sizeBytes) {
      throw new SnapshotError(`snapshot stream ended after ${receivedBytes} of ${header.sizeBytes} bytes`);
    }
    const sha256Hex = hash.digest('hex');
    if (sha256Hex !== header.sha256Hex) {
      throw new SnapshotError(
        `snapshot checksum mismatch: received ${sha256Hex}, header announced ${header.sha256Hex}`,
      );
    }
    await file.sync();
    await file.close();
    closed = true;
    return path;
  } catch (error) {
    if (!closed) await file.close().catch(() => undefined);
    await rm(path, { force: true });
    throw error;
  }
}

/** Writes all of `chunk` at the file's current position; a single write may be short. */
async function writeFully(file: FileHandle, chunk: Buffer): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await file.write(chunk, offset, chunk.length - offset, null);
    offset += bytesWritten;
  }
}

/**
 * Atomically replaces the database at `databasePath` with the verified snapshot at `tempPath` (from
 * `receiveSnapshotToTemp`, in the same directory). The caller must have closed every connection to
 * `databasePath` first, and reopens it afterwards.
 *
 * Why the order is crash-safe, at every point a crash can hit:
 * 1. A WAL or rollback journal left next to the old database (it was not closed cleanly) is first folded
 *    into the old database by opening and checkpointing it. This must happen before the rename: SQLite
 *    does not check that a WAL belongs to the file it sits next to, so the old WAL next to the new file
 *    would be replayed into it and corrupt it. Deleting the old WAL instead would lose or corrupt the old
 *    database if we crashed before the rename. A crash during the checkpoint is recovered by SQLite as usual.
 * 2. The snapshot file is fsynced before the rename, so the rename can never expose a file whose contents
 *    have not reached the disk.
 * 3. rename() replaces the directory entry atomically: the database path names either the complete old
 *    database or the complete new one, never a mix. Until the directory is fsynced a power loss may undo
 *    the rename, which leaves the complete old database and a temporary file.
 * 4. Side files still present after the rename can only belong to the old database, so they are deleted;
 *    after step 1 there are normally none.
 * 5. fsyncing the directory makes the rename and the deletions durable.
 * An interrupted transfer or swap leaves at most a temporary snapshot file, which `cleanUpTempSnapshots`
 * deletes at the next start.
 */
export async function swapInSnapshot(tempPath: string, databasePath: string): Promise<void> {
  const directory = dirname(resolve(databasePath));
  assert(dirname(resolve(tempPath)) === directory, `snapshot ${tempPath} is not in the directory of ${databasePath}`);
  assert(TEMP_SNAPSHOT_NAME.test(basename(tempPath)), `${tempPath} is not a temporary snapshot file`);
  assert(!TEMP_SNAPSHOT_NAME.test(basename(databasePath)), `${databasePath} looks like a temporary snapshot file`);
  await settleReplacedDatabase(databasePath);
  await syncPath(tempPath, 'r+');
  await rename(tempPath, databasePath);
  await removeSideFiles(databasePath);
  await syncPath(directory, 'r');
}

/** Step 1 of `swapInSnapshot`: leaves the old database, if there is one, as one self-contained file. */
async function settleReplacedDatabase(databasePath: string): Promise<void> {
  if (!(await exists(databasePath))) {
    // Journals without their database belong to nothing, and must not meet the new file.
    await removeSideFiles(databasePath);
    return;
  }
  const journals = await Promise.all([`${databasePath}-wal`, `${databasePath}-journal`].map(exists));
  if (!journals.includes(true)) return;
  try {
    // timeout 0: a connection still open elsewhere is a caller's bug and must fail now, not after a wait.
    const old = new Database(databasePath, { fileMustExist: true, timeout: 0 });
    try {
      // The first read rolls back a hot rollback journal; the TRUNCATE checkpoint copies every WAL frame into
      // the main file. Closing the last connection then deletes the WAL and its index.
      old.prepare('SELECT count(*) FROM sqlite_schema').get();
      const checkpoint = old.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
      if (checkpoint[0]?.busy !== 0) {
        throw new SnapshotError(`${databasePath} could not be checkpointed: another connection still has it open`);
      }
    } finally {
      old.close();
    }
  } catch (error) {
    if (!isCorruptDatabaseError(error)) throw error;
    // A database SQLite cannot read is no worse off without its journals, and they must not be replayed into
    // the new file.
    await removeSideFiles(databasePath);
  }
}

/**
 * Recognises SQLite's "not a database" and "corrupt" errors by their code. Not by `instanceof SqliteError`:
 * the native addon keeps the error class of the first module instance that loaded it, so under a module
 * loader with several registries (jest runs each test file in its own) the class can differ.
 */
function isCorruptDatabaseError(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string') return false;
  return code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT' || code.startsWith('SQLITE_CORRUPT_');
}

/**
 * Deletes temporary snapshot files left in `directory` by an interrupted transfer, swap or serve, and
 * returns their names. Call it at startup, before any snapshot is in progress: it would delete live ones.
 */
export async function cleanUpTempSnapshots(directory: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(directory);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const leftovers = names.filter((name) => TEMP_SNAPSHOT_NAME.test(name)).sort();
  await Promise.all(leftovers.map((name) => rm(join(directory, name), { force: true })));
  return leftovers;
}

function temporarySnapshotName(direction: 'outgoing' | 'incoming'): string {
  return `snapshot-${direction}-${randomBytes(16).toString('hex')}.sqlite`;
}

async function removeDatabaseFiles(path: string): Promise<void> {
  await rm(path, { force: true });
  await removeSideFiles(path);
}

async function removeSideFiles(databasePath: string): Promise<void> {
  await Promise.all(SIDE_FILE_SUFFIXES.map((suffix) => rm(`${databasePath}${suffix}`, { force: true })));
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
}

/** fsyncs a file (opened 'r+') or a directory (opened 'r'). */
async function syncPath(path: string, flags: 'r' | 'r+'): Promise<void> {
  const handle = await open(path, flags);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
