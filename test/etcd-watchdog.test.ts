/**
 * The watchdog that every test etcd runs under (test/support/etcd-process.ts): when the process that
 * started it closes the watchdog's stdin, as the kernel does when that process ends however it ends, the
 * child is killed and its directory removed. An etcd shared by a test file is never stopped, so without
 * the removal each test run left about 120 MB per test process in the temp directory.
 */
import { once } from 'node:events';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnUnderWatchdog } from './support/etcd-process.js';

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('once its stdin closes and nothing reads its output, the watchdog kills its child and removes its directory', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'replichat-watchdog-'));
  writeFileSync(join(directory, 'data'), 'x'.repeat(1024));
  const watchdog = spawnUnderWatchdog('sleep', ['600'], directory);
  let output = '';
  watchdog.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  while (!/^pid \d+$/m.test(output)) await once(watchdog.stdout!, 'data');
  const childPid = Number(/^pid (\d+)$/m.exec(output)![1]);
  expect(isRunning(childPid)).toBe(true);
  expect(existsSync(directory)).toBe(true);

  // As when this process ends: nothing reads the watchdog's output any more, and its stdin closes.
  const exited = once(watchdog, 'exit');
  watchdog.stdout!.destroy();
  watchdog.stderr!.destroy();
  watchdog.stdin!.end();
  await exited;

  expect(isRunning(childPid)).toBe(false);
  expect(existsSync(directory)).toBe(false);
});
