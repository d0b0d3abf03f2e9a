/**
 * Day-to-day operations through the CLI, against one real 3-replica cluster on loopback (real processes,
 * real SQLite files, SIGKILL), every command run as its own `node dist/cli/main.js` process:
 * - `--version` works;
 * - a username that differs from an existing one only in case is refused, and the account answers to any
 *   case while it shows as it was typed;
 * - `history` is newest first and its paging hint keeps --with and --page-size;
 * - each login keeps its own profile in one session file, and --profile picks one;
 * - `status` exits 0 when healthy, 3 with a member down, 4 with no leader (none answers), and warns on
 *   stderr;
 * - `listen` survives a 30 s full-cluster outage (all three replicas SIGKILLed), says so once, and then
 *   delivers what was sent;
 * - a backup taken online with the admin token from a file, the cluster destroyed, a new cluster seeded
 *   from the backup with `restore`: every message is there.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChatMessage } from '../src/cli/chat-client.js';
import { type CliResult, LoopbackCluster, runCli, spawnCli, waitFor } from './support/cli-processes.js';

const ADMIN_TOKEN = 'cli-operations-admin-token-0123456789';
const PASSWORD = 'operations-password-1';
/** The outage `listen` must survive. */
const OUTAGE_MS = 30_000;

let directory: string;
let cluster: LoopbackCluster;
let adminTokenFile: string;

function sessionFile(name: string): string {
  return join(directory, `${name}-session.json`);
}

interface RunOptions {
  readonly input?: string;
  readonly env?: Record<string, string>;
  readonly servers?: readonly string[];
  readonly timeoutMs?: number;
}

function environmentFor(user: string, options: RunOptions): Record<string, string> {
  return {
    REPLICHAT_SERVERS: (options.servers ?? cluster.addresses).join(','),
    REPLICHAT_INSECURE: '1',
    REPLICHAT_SESSION_FILE: sessionFile(user),
    ...options.env,
  };
}

function as(user: string, args: readonly string[], options: RunOptions = {}): Promise<CliResult> {
  return runCli(args, {
    env: environmentFor(user, options),
    ...(options.input === undefined ? {} : { input: options.input }),
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
  });
}

async function ok(user: string, args: readonly string[], options: RunOptions = {}): Promise<string> {
  const result = await as(user, args, options);
  if (result.code !== 0) throw new Error(`replichat ${args.join(' ')} exited with ${result.code}\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

async function json<T>(user: string, args: readonly string[], options: RunOptions = {}): Promise<T> {
  return JSON.parse(await ok(user, ['--json', ...args], options)) as T;
}

async function register(user: string, name = user): Promise<void> {
  await ok(user, ['register', name, '--password-stdin'], { input: `${PASSWORD}\n` });
}

async function allHistory(user: string, options: RunOptions = {}): Promise<ChatMessage[]> {
  return (await json<{ messages: ChatMessage[] }>(user, ['history', '--page-size', '500'], options)).messages;
}

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-cli-operations-'));
  adminTokenFile = join(directory, 'admin-token');
  writeFileSync(adminTokenFile, `${ADMIN_TOKEN}\n`, { mode: 0o600 });
  // Servers and CLI read the admin token from a file, never from argv.
  cluster = await LoopbackCluster.start(join(directory, 'cluster'), 3, ['--admin-token-file', adminTokenFile]);
  await register('alice');
  await register('bob');
});

afterAll(async () => {
  await cluster?.killAll('SIGTERM');
  rmSync(directory, { recursive: true, force: true });
});

test('--version prints the version in package.json', async () => {
  const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  const result = await runCli(['--version']);
  expect(result.code).toBe(0);
  expect(result.stdout).toBe(`replichat ${version} (Node.js ${process.version})\n`);
});

test('a username that differs only in case is refused; the account answers to any case and shows as typed', async () => {
  await register('dave', 'Dave');
  const refused = await as('other-dave', ['register', 'dAVE', '--password-stdin'], { input: `${PASSWORD}\n` });
  expect(refused.code).toBe(1);
  expect(refused.stderr).toContain('ALREADY_EXISTS: the username dAVE is taken');

  // A login in another case reaches the same account, and the profile shows the name as registered.
  const login = await json<{ username: string }>('dave-again', ['login', 'DAVE', '--password-stdin'], { input: `${PASSWORD}\n` });
  expect(login.username).toBe('Dave');
  const sent = await json<ChatMessage>('alice', ['send', 'dave', 'hello Dave']);
  expect(sent.recipient).toBe('Dave');
  const read = await json<{ messages: ChatMessage[] }>('dave-again', ['read']);
  expect(read.messages.map((message) => [message.sender, message.recipient, message.body])).toEqual([['alice', 'Dave', 'hello Dave']]);
  expect(await json('alice', ['users', 'DA*'])).toEqual({ usernames: ['Dave'], nextPageToken: '' });
});

test('history is newest first, and its paging hint keeps --with and --page-size', async () => {
  const ids: string[] = [];
  for (const body of ['h1', 'h2', 'h3']) ids.push((await ok('alice', ['send', 'bob', body])).trim());
  // Something from another conversation, which the hint must not mix in.
  await ok('alice', ['send', 'dave', 'not for bob']);

  const first = await as('alice', ['history', '--with', 'bob', '--page-size', '2']);
  expect(first.code).toBe(0);
  const lines = first.stdout.trim().split('\n');
  expect(lines.map((line) => /: (h\d) \(/.exec(line)?.[1])).toEqual(['h3', 'h2']);
  const hint = /Older messages: (replichat history .*)\n/.exec(first.stderr)?.[1];
  expect(hint).toMatch(/^replichat history --with bob --page-size 2 --page-token \S+$/);

  // Following the hint, word for word, gives the next page of the same conversation.
  const next = await as('alice', hint!.split(' ').slice(1));
  expect(next.code).toBe(0);
  expect(next.stdout.trim().split('\n').map((line) => /: (\S+) \(/.exec(line)?.[1])).toEqual(['h1']);
  expect(next.stdout).not.toContain('not for bob');
});

test('each login keeps its own profile in the session file; --profile picks one, the last login is current', async () => {
  const shared = 'shared';
  await ok(shared, ['login', 'alice', '--password-stdin'], { input: `${PASSWORD}\n` });
  const second = await as(shared, ['login', 'bob', '--password-stdin'], { input: `${PASSWORD}\n` });
  expect(second.code).toBe(0);
  expect(second.stderr).toContain('Switched from the profile alice, which stays logged in');

  expect(await json(shared, ['whoami'])).toMatchObject({ username: 'bob', expired: false });
  expect(await json(shared, ['--profile', 'alice', 'whoami'])).toMatchObject({ username: 'alice' });
  const profiles = await json<{ current: string; profiles: { name: string; username: string }[] }>(shared, ['profile', 'list']);
  expect(profiles.current).toBe('bob');
  expect(profiles.profiles.map((profile) => [profile.name, profile.username]).sort()).toEqual([['alice', 'alice'], ['bob', 'bob']]);

  // Both sessions work: alice's message through her profile reaches bob through his.
  const id = (await ok(shared, ['--profile', 'alice', 'send', 'bob', 'from a second profile'])).trim();
  expect((await json<{ messages: ChatMessage[] }>(shared, ['read'])).messages.map((message) => message.id)).toContain(id);
  // Logging out of one profile leaves the other.
  await ok(shared, ['--profile', 'alice', 'logout']);
  expect(await json(shared, ['whoami'])).toMatchObject({ username: 'bob' });
});

test('status exits 0 when healthy, 3 with a member down, and warns on stderr', async () => {
  const healthy = await as('alice', ['--json', 'status']);
  expect(healthy.code).toBe(0);
  expect(JSON.parse(healthy.stdout)).toMatchObject({ health: 'healthy', warnings: [] });

  await cluster.kill(2);
  // The leader takes the dead member out of the in-sync set after a second or so; either way it is degraded.
  const degraded = await as('alice', ['status']);
  expect(degraded.code).toBe(3);
  expect(degraded.stderr).toContain(`replichat: warning: the replica at ${cluster.addresses[2]} did not answer`);
  await cluster.startReplica(2);
  await waitFor('the restarted replica is back in the in-sync set', async () => (await as('alice', ['status'])).code === 0, {
    timeoutMs: 20_000,
    intervalMs: 250,
  });
});

test(
  'listen survives a 30 s full-cluster outage, says so once, and then delivers what was sent',
  async () => {
    const subscribersBefore = await cluster.subscriberCount();
    const listener = spawnCli(['--json', 'listen'], { env: environmentFor('bob', {}) });
    // Without --include-queued, listen prints only what arrives once it is subscribed: a message sent
    // earlier waits for `read`. So the first message goes out only once the subscription is open.
    await waitFor('bob has an open subscription', async () => (await cluster.subscriberCount()) > subscribersBefore);
    const marker = (await ok('alice', ['send', 'bob', 'before the outage'])).trim();
    await listener.waitForLine((line) => line.includes(marker), 15_000);

    await cluster.killAll('SIGKILL');
    const noAnswer = await as('alice', ['status']);
    expect(noAnswer.code).toBe(4);
    expect(noAnswer.stderr).toContain('no leader: none of the 3 servers answered');

    // The outage itself is the point of this test: it must last 30 s, while `listen` keeps running.
    const outageEndsAtMs = Date.now() + OUTAGE_MS;
    await waitFor('the outage has lasted 30 s', () => {
      expect(listener.process.exitCode).toBeNull();
      return Date.now() >= outageEndsAtMs;
    }, { timeoutMs: OUTAGE_MS + 5_000, intervalMs: 500 });

    await Promise.all([0, 1, 2].map((ordinal) => cluster.startReplica(ordinal)));

    const afterIds: string[] = [];
    for (const body of ['after the outage 1', 'after the outage 2']) afterIds.push((await ok('alice', ['send', 'bob', body])).trim());
    for (const id of afterIds) await listener.waitForLine((line) => line.includes(id), 20_000);

    const stopped = await listener.stop('SIGTERM');
    expect(stopped.code).toBe(0);
    expect(stopped.stderr.match(/live messages interrupted/g)).toHaveLength(1);
    expect(stopped.stderr.match(/live messages are back/g)).toHaveLength(1);
  },
  OUTAGE_MS + 90_000,
);

test('backup and restore: back up online, destroy the cluster, restore a new one, and every message is there', async () => {
  const backupPath = join(directory, 'backups', 'chat.sqlite');
  const noToken = await as('alice', ['backup', backupPath]);
  expect(noToken.code).toBe(2);
  const wrongTokenFile = join(directory, 'wrong-token');
  writeFileSync(wrongTokenFile, 'not-the-admin-token-at-all\n');
  const wrongToken = await as('alice', ['backup', backupPath, '--admin-token-file', wrongTokenFile]);
  expect(wrongToken.code).toBe(1);
  expect(wrongToken.stderr).toContain('PERMISSION_DENIED');
  expect(existsSync(backupPath)).toBe(false);

  const before = { alice: await allHistory('alice'), bob: await allHistory('bob') };
  expect(before.bob.length).toBeGreaterThan(0);
  const backup = await json<{ path: string; sha256Hex: string; sizeBytes: number }>('alice', ['backup', backupPath, '--admin-token-file', adminTokenFile]);
  expect(backup.path).toBe(backupPath);
  expect(readFileSync(`${backupPath}.sha256`, 'utf8')).toBe(`${backup.sha256Hex}  chat.sqlite\n`);

  // Destroy the cluster: every replica killed, every data directory gone.
  await cluster.killAll('SIGKILL');
  rmSync(join(directory, 'cluster'), { recursive: true, force: true });

  // A damaged backup is refused before anything is written.
  const damagedPath = join(directory, 'backups', 'damaged.sqlite');
  const damaged = readFileSync(backupPath);
  damaged.writeUInt8(damaged.readUInt8(damaged.length - 1) ^ 0xff, damaged.length - 1);
  writeFileSync(damagedPath, damaged);
  writeFileSync(`${damagedPath}.sha256`, `${backup.sha256Hex}  damaged.sqlite\n`);
  const refused = await as('alice', ['restore', damagedPath, '--data-dir', join(directory, 'damaged-restore')]);
  expect(refused.code).toBe(1);
  expect(refused.stderr).toContain('does not match its checksum');
  expect(existsSync(join(directory, 'damaged-restore', 'replichat.sqlite'))).toBe(false);

  const restoredDirectory = join(directory, 'restored');
  await ok('alice', ['restore', backupPath, '--data-dir', join(restoredDirectory, 'replica-0')]);
  cluster = await LoopbackCluster.start(restoredDirectory, 3, ['--admin-token-file', adminTokenFile]);

  // The same accounts and passwords work on the new cluster, and every message is there.
  for (const user of ['alice', 'bob'] as const) {
    await ok(user, ['login', user, '--password-stdin'], { input: `${PASSWORD}\n` });
    const after = await allHistory(user);
    expect(after.map((message) => [message.id, message.body])).toEqual(before[user].map((message) => [message.id, message.body]));
  }
});
