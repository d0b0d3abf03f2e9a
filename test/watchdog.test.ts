/**
 * The watchdog of test/support/watchdog.ts, which every test etcd runs under and which removes the shared
 * peer certificates: when the process that started it ends, however it ends, the child is killed and the
 * directory removed. Without it each test run left an etcd's 120 MB and a certificates directory behind per
 * test process.
 */
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
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

test('a process that exits without cleaning up still has its directory removed', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'replichat-watchdog-'));
  writeFileSync(join(directory, 'data'), 'x');
  // A real process of its own, which asks for the removal and exits at once, as a jest worker does.
  const script = `import { spawn } from 'node:child_process';
${readFileSync(new URL('./support/watchdog.ts', import.meta.url), 'utf8').match(/^const WATCHDOG = `[^`]*`;$/m)![0]}
const watchdog = spawn('bash', ['-c', WATCHDOG, 'sleep', process.argv[1], 'infinity'], { stdio: ['pipe', 'pipe', 'pipe'] });
watchdog.unref();
for (const stream of [watchdog.stdin, watchdog.stdout, watchdog.stderr]) stream.unref();`;
  execFileSync(process.execPath, ['--input-type=module', '-e', script, directory]);
  const deadlineMs = Date.now() + 10_000;
  while (existsSync(directory) && Date.now() < deadlineMs) await new Promise((resolve) => setTimeout(resolve, 20));
  expect(existsSync(directory)).toBe(false);
});
