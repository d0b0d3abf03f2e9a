/**
 * `backup FILE` and `restore FILE --data-dir DIR`.
 *
 * A backup is the leader's whole database, copied online with SQLite's backup API (writes go on) and sent
 * only once every entry in it is committed, so it never holds a write that a failover could take back. The
 * CLI writes it to a temporary file beside FILE, checks its size and SHA-256 against the header the leader
 * sent, fsyncs it and renames it to FILE, then writes FILE.sha256 in the format of `sha256sum`, so that
 * `sha256sum -c FILE.sha256` checks it too. FILE is an ordinary SQLite database.
 *
 * A restore seeds the data directory of replica 0 of a NEW cluster, offline: it checks the file against
 * FILE.sha256, copies it to a temporary file in DIR, checks that it is a replichat database, clears the
 * per-replica `local_metadata` and marks it `restored_from_backup`, fsyncs it and renames it to
 * DIR/replichat.sqlite. Replica 0 started on DIR then creates the new cluster's configuration from it; the
 * other replicas start empty and join by snapshot.
 */
import type { Command } from 'commander';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ADMIN_TOKEN_HELP, type AdminTokenOptions, adminTokenFileOption, operatorClient } from './admin-token.js';
import { type CliContext, runCommand } from './cli-context.js';
import { CliError, UsageError } from './cli-error.js';

/** The database file name a replica uses in its data directory (src/storage/database.ts). */
export const DATABASE_FILE_NAME = 'replichat.sqlite';
/** The `local_metadata` key that tells replica 0 to found a new cluster on this database. */
export const RESTORED_FROM_BACKUP_KEY = 'restored_from_backup';

const SHA256_LINE = /^([0-9a-f]{64}) [ *](.+)$/;

function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Makes a rename durable: the directory entry is on disk once its directory is fsynced. */
async function fsyncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `text` to `path` through a temporary file, fsynced and renamed, so that `path` is whole or absent. */
async function writeFileDurably(path: string, text: string): Promise<void> {
  const temporaryPath = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temporaryPath, 'wx', 0o600);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporaryPath, path);
}

async function sha256OfFile(path: string): Promise<{ sha256Hex: string; sizeBytes: number }> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    sizeBytes += chunk.length;
  }
  return { sha256Hex: hash.digest('hex'), sizeBytes };
}

/** The checksum FILE.sha256 holds for FILE; fails when the file is missing or names another file. */
async function expectedChecksum(backupPath: string): Promise<string> {
  const checksumPath = `${backupPath}.sha256`;
  let text: string;
  try {
    text = await readFile(checksumPath, 'utf8');
  } catch {
    throw new CliError(`no checksum file ${checksumPath}: \`replichat backup\` writes it beside the backup`, 'NO_CHECKSUM');
  }
  const match = SHA256_LINE.exec(text.trim());
  if (match === null || basename(match[2]!) !== basename(backupPath)) {
    throw new CliError(`${checksumPath} is not a sha256sum line for ${basename(backupPath)}`, 'NO_CHECKSUM');
  }
  return match[1]!;
}

interface BackupOptions extends AdminTokenOptions {
  readonly force?: boolean;
}

async function backup(context: CliContext, file: string, options: BackupOptions): Promise<void> {
  const path = resolve(file);
  if (!options.force && (await exists(path))) throw new CliError(`${path} exists; pass --force to replace it`, 'EXISTS');
  const client = await operatorClient(context, options);
  const { header, chunks } = await client.backup();
  if (header.sha256Hex === '' || header.sizeBytes <= 0) throw new CliError('the server sent a backup without a size or checksum', 'BAD_BACKUP');
  await mkdir(dirname(path), { recursive: true });
  const temporaryPath = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.partial`);
  const hash = createHash('sha256');
  let receivedBytes = 0;
  const handle = await open(temporaryPath, 'wx', 0o600);
  try {
    try {
      for await (const chunk of chunks) {
        receivedBytes += chunk.length;
        if (receivedBytes > header.sizeBytes) throw new CliError(`the server sent more than the ${header.sizeBytes} bytes it announced`, 'BAD_BACKUP');
        hash.update(chunk);
        await handle.write(chunk);
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    const sha256Hex = hash.digest('hex');
    if (receivedBytes !== header.sizeBytes || sha256Hex !== header.sha256Hex) {
      throw new CliError(
        `the backup arrived damaged (${receivedBytes} of ${header.sizeBytes} bytes, SHA-256 ${sha256Hex} instead of ${header.sha256Hex}); nothing was written`,
        'BAD_BACKUP',
      );
    }
    await rename(temporaryPath, path);
  } catch (error) {
    await rm(temporaryPath, { force: true });
    throw error;
  }
  await writeFileDurably(`${path}.sha256`, `${header.sha256Hex}  ${basename(path)}\n`);
  await fsyncDirectory(dirname(path));
  context.output.result(
    { path, sizeBytes: header.sizeBytes, sha256Hex: header.sha256Hex, lastIndex: header.lastIndex, clusterId: header.clusterId },
    [
      `Backed up the cluster ${header.clusterId} up to log index ${header.lastIndex}: ${path} (${header.sizeBytes} bytes).`,
      `SHA-256 ${header.sha256Hex}, also in ${path}.sha256.`,
    ],
  );
}

interface RestoreOptions {
  readonly dataDir: string;
}

/** Checks that the copy is a replichat database and marks it as the seed of a new cluster. */
async function prepareRestoredDatabase(path: string): Promise<{ lastIndex: number; clusterId: string }> {
  // Loaded only here, so that other commands never load the native SQLite module.
  const { default: Database } = await import('better-sqlite3');
  let database;
  try {
    database = new Database(path, { fileMustExist: true, timeout: 0 });
  } catch (error) {
    throw new CliError(`the backup is not an SQLite database: ${(error as Error).message}`, 'BAD_BACKUP');
  }
  try {
    const check = database.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new CliError(`the backup fails SQLite's quick_check: ${String(check)}`, 'BAD_BACKUP');
    const tables = new Set(
      (database.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((row) => row.name),
    );
    for (const table of ['users', 'messages', 'command_log', 'cluster_state', 'local_metadata']) {
      if (!tables.has(table)) throw new CliError(`the backup is not a replichat database: it has no table ${table}`, 'BAD_BACKUP');
    }
    const clusterId = (database.prepare("SELECT value FROM cluster_state WHERE key = 'cluster_id'").get() as { value: string } | undefined)?.value ?? '';
    const lastIndex = (database.prepare('SELECT max(log_index) AS lastIndex FROM command_log').get() as { lastIndex: number | null }).lastIndex ?? 0;
    // The old replica's promises (its epoch, its view of the configuration store) are not the new cluster's.
    database.transaction(() => {
      database.prepare('DELETE FROM local_metadata').run();
      database.prepare('INSERT INTO local_metadata (key, value) VALUES (?, ?)').run(RESTORED_FROM_BACKUP_KEY, '1');
    })();
    return { lastIndex, clusterId };
  } finally {
    database.close();
  }
}

async function restore(context: CliContext, file: string, options: RestoreOptions): Promise<void> {
  const backupPath = resolve(file);
  const directory = resolve(options.dataDir);
  const target = join(directory, DATABASE_FILE_NAME);
  if (await exists(target)) {
    throw new CliError(`${target} exists: restore seeds a NEW cluster; give an empty data directory`, 'EXISTS');
  }
  const expected = await expectedChecksum(backupPath);
  const { sha256Hex, sizeBytes } = await sha256OfFile(backupPath);
  if (sha256Hex !== expected) {
    throw new CliError(`${backupPath} does not match its checksum (SHA-256 ${sha256Hex}, expected ${expected}); nothing was restored`, 'BAD_BACKUP');
  }
  await mkdir(directory, { recursive: true, mode: 0o700 });
  const temporaryPath = join(directory, `.restore-${randomBytes(8).toString('hex')}.sqlite`);
  try {
    // Copied by streaming, so that the checked bytes are the ones that land in the data directory.
    const output = await open(temporaryPath, 'wx', 0o600);
    const copyHash = createHash('sha256');
    try {
      for await (const chunk of createReadStream(backupPath, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Buffer>) {
        copyHash.update(chunk);
        await output.write(chunk);
      }
      await output.sync();
    } finally {
      await output.close();
    }
    if (copyHash.digest('hex') !== expected) throw new CliError(`${backupPath} changed while it was copied; nothing was restored`, 'BAD_BACKUP');
    const { lastIndex, clusterId } = await prepareRestoredDatabase(temporaryPath);
    const prepared = await open(temporaryPath, 'r+');
    try {
      await prepared.sync();
    } finally {
      await prepared.close();
    }
    for (const suffix of ['-wal', '-shm', '-journal']) await rm(`${temporaryPath}${suffix}`, { force: true });
    await rename(temporaryPath, target);
    await fsyncDirectory(directory);
    context.output.result({ dataDirectory: directory, path: target, sizeBytes, lastIndex, clusterId }, [
      `Restored ${backupPath} (cluster ${clusterId}, log index ${lastIndex}) into ${target}.`,
      `Start replica 0 of the new cluster with --data-dir ${directory}; start every other replica with an empty`,
      'data directory: they join by snapshot. Do not start it beside the old cluster with the same peers.',
    ]);
  } catch (error) {
    for (const suffix of ['', '-wal', '-shm', '-journal']) await rm(`${temporaryPath}${suffix}`, { force: true });
    throw error;
  }
}

export function addBackupCommands(program: Command): void {
  program
    .command('backup')
    .description("save a consistent copy of the leader's database, taken online, with a SHA-256 checksum")
    .argument('<file>', 'where to write the backup; FILE.sha256 is written beside it')
    .addOption(adminTokenFileOption())
    .option('--force', 'replace FILE if it exists')
    .addHelpText(
      'after',
      `\n${ADMIN_TOKEN_HELP}\n\nThe copy holds every committed write up to its log index, every account, message and session,\n` +
        'and the session-signing secret: keep it as secret as the admin token. `sha256sum -c FILE.sha256` checks it.\n' +
        'With --json: {"path", "sizeBytes", "sha256Hex", "lastIndex", "clusterId"}.',
    )
    .action(async (file: string, options: BackupOptions, command: Command) => {
      await runCommand(command, (context) => backup(context, file, options));
    });

  program
    .command('restore')
    .description('seed the data directory of replica 0 of a new cluster from a backup (offline)')
    .argument('<file>', 'a file written by `replichat backup`, with FILE.sha256 beside it')
    .requiredOption('--data-dir <dir>', "replica 0's data directory; it must not hold a database yet")
    .addHelpText(
      'after',
      '\nChecks FILE against FILE.sha256 and SQLite\'s quick_check, writes DIR/replichat.sqlite (fsynced, renamed into\n' +
        'place), and marks it restored_from_backup so that replica 0 founds the new cluster on it. Start the other\n' +
        'replicas with empty data directories; they join by snapshot.\n' +
        'With --json: {"dataDirectory", "path", "sizeBytes", "lastIndex", "clusterId"}.',
    )
    .action(async (file: string, options: RestoreOptions, command: Command) => {
      await runCommand(command, async (context) => {
        if (!(await stat(resolve(file)).then((info) => info.isFile(), () => false))) throw new UsageError(`${file} is not a file`);
        await restore(context, file, options);
      });
    });
}
