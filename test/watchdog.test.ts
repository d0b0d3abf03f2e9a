/**
 * The watchdog of test/support/watchdog.ts, which every test etcd runs under and which removes the shared
 * peer certificates: when the process that started it ends, however it ends, the child is killed and the
 * directory removed. Without it each test run left an etcd's 120 MB and a certificates directory behind per
 * test process.
 */
import { type ChildProcess, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnUnderWatchdog } from './support/watchdog.js';

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** What the watchdog sees when its parent ends: nothing reads its output any more, and its stdin closes. */
async function parentGoesAway(watchdog: ChildProcess): Promise<void> {
  const exited = once(watchdog, 'exit');
  watchdog.stdout!.destroy();
  watchdog.stderr!.destroy();
  watchdog.stdin!.end();
  await exited;
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

  // As when this process ends.
  await parentGoesAway(watchdog);

  expect(isRunning(childPid)).toBe(false);
  expect(existsSync(directory)).toBe(false);
});

test('a watchdog whose parent goes away at once still kills its child and removes the directory', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'replichat-watchdog-'));
  // A duration no other process uses, to find the child without its pid line.
  const duration = `600.${process.pid}${Date.now() % 1000}`;
  const watchdog = spawnUnderWatchdog('sleep', [duration], directory);
  // As when the parent ends right after the spawn: bash has not written its pid line yet.
  await parentGoesAway(watchdog);

  expect(existsSync(directory)).toBe(false);
  expect(spawnSync('pgrep', ['-f', `sleep ${duration}`]).status).toBe(1);
});
