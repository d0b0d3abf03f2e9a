/**
 * Proves that a second server on a data directory in use refuses to start before it touches the database
 * (issue: re-running the local cluster started a second process on a live data directory), and that the
 * lock dies with its process, SIGKILL included, so a crash never leaves a stale lock. Real processes, real
 * SQLite files, a real etcd (the shared one of test/support/processes.ts).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DataDirectoryInUseError, lockDataDirectory } from '../src/storage/data-directory-lock.js';
import { CLI_PATH, configurationStoreArguments, startServer } from './support/processes.js';
import { sharedPeerCertificates } from './support/peer-certificates.js';

let directory: string;
beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-lock-'));
});
afterEach(() => rmSync(directory, { recursive: true, force: true }));

test('a second lock on the same directory in the same process is refused, and released locks can be taken again', () => {
  const first = lockDataDirectory(directory);
  expect(() => lockDataDirectory(directory)).toThrow(DataDirectoryInUseError);
  first.release();
  const again = lockDataDirectory(directory);
  again.release();
});

test('a second server on a live data directory exits with a clear message and leaves the database untouched', async () => {
  const dataDirectory = join(directory, 'data');
  const server = await startServer({ dataDirectory });
  try {
    const databasePath = join(dataDirectory, 'replichat.sqlite');
    const before = readFileSync(databasePath);
    const beforeModifiedMs = statSync(databasePath).mtimeMs;
    const second = spawn(
      process.execPath,
      [
        CLI_PATH, 'server', '--data-dir', dataDirectory, '--insecure', '--ordinal', '0',
        '--listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0',
        ...sharedPeerCertificates(undefined).serverArguments(0),
        ...(await configurationStoreArguments(dataDirectory, [])),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    second.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const exitCode = await new Promise<number | null>((resolve) => second.once('exit', (code) => resolve(code)));
    expect(exitCode).not.toBe(0);
    expect(stderr).toContain('is in use by another replichat server');
    expect(statSync(databasePath).mtimeMs).toBe(beforeModifiedMs);
    expect(readFileSync(databasePath).equals(before)).toBe(true);
  } finally {
    await server.stop();
  }
});

test('the lock dies with a SIGKILLed server: a new server starts on the same directory', async () => {
  const dataDirectory = join(directory, 'data');
  const first = await startServer({ dataDirectory });
  await first.kill('SIGKILL');
  const second = await startServer({ dataDirectory });
  await second.stop();
});
