/**
 * The CLI end to end: a real server process, and every command run as its own `node dist/cli/main.js`
 * process, the way a user or a script runs them. Two users register; messages wait while the recipient is
 * away and are read in pages; a message reaches a running `listen` at once and is acknowledged; a deleted
 * message leaves the history; and a deleted account takes its messages and its name with it, after which
 * sending to it fails with NOT_FOUND. Each user has a session file of its own, as on two machines.
 */
import { mkdtempSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChatMessage } from '../src/cli/chat-client.js';
import {
  type CliResult,
  metricValue,
  runCli,
  spawnCli,
  waitFor,
  waitUntilAnswering,
} from './support/cli-processes.js';
import { type ServerProcess, startServer } from './support/processes.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const UUID_VERSION_7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const PASSWORDS = { alice: 'alice-password-1', bob: 'bob-password-1' } as const;
const INSECURE_WARNING = 'replichat: warning: --insecure: passwords and messages travel in plaintext';

let directory: string;
let server: ServerProcess | undefined;

function sessionFile(user: string): string {
  return join(directory, `${user}-session.json`);
}

/** Runs a command as `user`: that user's session file, the test server, plaintext. */
function as(user: string, args: readonly string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  return runCli(args, {
    env: {
      REPLICHAT_SERVERS: server!.address,
      REPLICHAT_INSECURE: '1',
      REPLICHAT_SESSION_FILE: sessionFile(user),
      ...options.env,
    },
    ...(options.input === undefined ? {} : { input: options.input }),
  });
}

/** Like `as`, but the command must succeed; resolves with its stdout. */
async function ok(user: string, args: readonly string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<string> {
  const result = await as(user, args, options);
  if (result.code !== 0) {
    throw new Error(`replichat ${args.join(' ')} exited with ${result.code}\n${result.stdout}\n${result.stderr}`);
  }
  return result.stdout;
}

/** Runs a --json command as `user` and parses its one JSON document. */
async function json<T>(user: string, args: readonly string[], options: { input?: string } = {}): Promise<T> {
  return JSON.parse(await ok(user, ['--json', ...args], options)) as T;
}

async function historyOf(user: string): Promise<ChatMessage[]> {
  return (await json<{ messages: ChatMessage[] }>(user, ['history', '--page-size', '500'])).messages;
}

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-cli-'));
  server = await startServer({ dataDirectory: join(directory, 'data') });
  await waitUntilAnswering(server.address);
});

afterAll(async () => {
  if (server !== undefined) expect(await server.stop()).toBe(0);
  rmSync(directory, { recursive: true, force: true });
});

test('two users chat through the CLI, and a deleted account takes its messages along', async () => {
  // Registering logs in and stores the session, readable only by its owner.
  const registered = await as('alice', ['register', 'alice', '--password-stdin'], { input: `${PASSWORDS.alice}\n` });
  expect(registered).toMatchObject({ code: 0, stdout: 'Created the account alice.\nLogged in as alice. 0 unread messages.\n' });
  expect(registered.stderr).toContain(INSECURE_WARNING);
  expect(statSync(sessionFile('alice')).mode & 0o777).toBe(0o600);
  await ok('bob', ['register', 'bob', '--password-stdin'], { input: `${PASSWORDS.bob}\n` });
  expect(await json('bob', ['whoami'])).toMatchObject({ username: 'bob', expired: false, servers: [server!.address] });

  // Bob goes offline; alice's three messages wait for him. The last body comes from stdin.
  await ok('bob', ['logout']);
  expect(existsSync(sessionFile('bob'))).toBe(false);
  const sentIds = [
    (await ok('alice', ['send', 'bob', 'first', 'message'])).trim(),
    (await ok('alice', ['send', 'bob', 'second'])).trim(),
    (await ok('alice', ['send', 'bob', '-'], { input: 'third, from stdin\n' })).trim(),
  ];
  for (const id of sentIds) expect(id).toMatch(UUID);
  // The server makes ids time-ordered (UUID version 7), so that each lands at the end of its index.
  for (const id of sentIds) expect(id).toMatch(UUID_VERSION_7);
  expect([...sentIds].sort()).toEqual(sentIds);

  // Bob logs in (password from the environment this time), sees 3 unread, and reads them 2 then 1.
  expect(await ok('bob', ['login', 'bob'], { env: { REPLICHAT_PASSWORD: PASSWORDS.bob } })).toBe(
    'Logged in as bob. 3 unread messages. `replichat read` shows them.\n',
  );
  const firstRead = await json<{ messages: ChatMessage[]; remainingUnreadCount: number }>('bob', ['read', '-n', '2']);
  expect(firstRead.messages.map((message) => [message.sender, message.body, message.id])).toEqual([
    ['alice', 'first message', sentIds[0]],
    ['alice', 'second', sentIds[1]],
  ]);
  expect(firstRead.remainingUnreadCount).toBe(1);
  const secondRead = (await ok('bob', ['read', '--count', '1'])).split('\n');
  expect(secondRead[0]).toMatch(
    new RegExp(`^\\[\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\] alice: third, from stdin \\(${sentIds[2]}\\)$`),
  );
  expect(secondRead[1]).toBe('0 unread messages left.');

  // While bob listens, a new message from alice is pushed to him at once, printed, and acknowledged.
  const subscribersBefore = (await metricValue(server!.metricsPort, 'replichat_subscribers')) ?? 0;
  const listener = spawnCli(['--json', 'listen', '--count', '1'], {
    env: { REPLICHAT_SERVERS: server!.address, REPLICHAT_INSECURE: '1', REPLICHAT_SESSION_FILE: sessionFile('bob') },
  });
  await waitFor('bob has an open subscription', async () => {
    return ((await metricValue(server!.metricsPort, 'replichat_subscribers')) ?? 0) > subscribersBefore;
  });
  const liveId = (await ok('alice', ['send', 'bob', 'are', 'you', 'there?'])).trim();
  const line = await listener.waitForLine((candidate) => candidate.includes(liveId), 10_000);
  expect(JSON.parse(line)).toMatchObject({ id: liveId, sender: 'alice', recipient: 'bob', body: 'are you there?', instant: true });
  const listened = await listener.exited;
  expect(listened.code).toBe(0);
  // Acknowledged: the message is delivered, so it is not waiting for `read`, and it is in the history.
  expect(await json('bob', ['read'])).toEqual({ messages: [], remainingUnreadCount: 0 });
  expect((await historyOf('bob')).map((message) => message.id)).toContain(liveId);

  await ok('bob', ['send', 'alice', 'yes,', 'here']);

  // The user directory matches wildcards.
  expect(await json('bob', ['users', 'a*'])).toEqual({ usernames: ['alice'], nextPageToken: '' });
  expect(await json('bob', ['users', '--page-size', '1', '--all'])).toEqual({ usernames: ['alice', 'bob'], nextPageToken: '' });

  // Bob deletes one message; his history no longer holds it.
  expect(await ok('bob', ['delete', sentIds[1]!])).toBe('Deleted 1 message.\n');
  const historyAfterDelete = await historyOf('bob');
  expect(historyAfterDelete.map((message) => message.id)).not.toContain(sentIds[1]);
  expect(historyAfterDelete.map((message) => message.id)).toContain(sentIds[0]);

  // Alice deletes her account: her session file goes, and so does every message from or to her.
  expect(await json('alice', ['delete-account', '--yes', '--password-stdin'], { input: `${PASSWORDS.alice}\n` })).toEqual({
    username: 'alice',
    deleted: true,
  });
  expect(existsSync(sessionFile('alice'))).toBe(false);
  const historyAfterAccountDeletion = await historyOf('bob');
  expect(
    historyAfterAccountDeletion.filter((message) => message.sender === 'alice' || message.recipient === 'alice'),
  ).toEqual([]);
  expect(await json('bob', ['users', 'a*'])).toEqual({ usernames: [], nextPageToken: '' });

  // Sending to the deleted account fails with NOT_FOUND, in text and in JSON.
  const refused = await as('bob', ['send', 'alice', 'hello?']);
  expect(refused.code).toBe(1);
  expect(refused.stdout).toBe('');
  expect(refused.stderr).toContain('replichat: NOT_FOUND: no account named alice\n');
  const refusedJson = await as('bob', ['--json', 'send', 'alice', 'hello?']);
  expect(refusedJson.code).toBe(1);
  expect(JSON.parse(refusedJson.stdout)).toEqual({ error: { code: 'NOT_FOUND', message: 'no account named alice' } });
});

test('usage errors exit 2, and refused requests exit 1 with the status name', async () => {
  const missingArgument = await as('carol', ['send']);
  expect(missingArgument.code).toBe(2);
  expect(missingArgument.stderr).toContain("replichat: missing required argument 'recipient'");

  const badCount = await as('carol', ['read', '--count', 'many']);
  expect(badCount.code).toBe(2);

  const notLoggedIn = await as('carol', ['read']);
  expect(notLoggedIn.code).toBe(1);
  expect(notLoggedIn.stderr).toContain('replichat: not logged in');

  await ok('carol', ['register', 'carol', '--password-stdin'], { input: 'carol-password-1\n' });
  const wrongPassword = await as('carol', ['login', 'carol', '--password-stdin'], { input: 'not-her-password\n' });
  expect(wrongPassword.code).toBe(1);
  expect(wrongPassword.stderr).toContain('replichat: UNAUTHENTICATED: invalid username or password');

  // Deleting an account needs a confirmation that only --yes gives when stdin is not a terminal.
  const unconfirmed = await as('carol', ['delete-account', '--password-stdin'], { input: 'carol-password-1\n' });
  expect(unconfirmed.code).toBe(2);
  expect(existsSync(sessionFile('carol'))).toBe(true);
});
