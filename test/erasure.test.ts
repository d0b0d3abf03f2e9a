/**
 * Proves that a deleted message's body is unreachable through the API, idempotent replays included, on a
 * real server: a SendMessage replayed with its request id returns the body while the message exists, and
 * no body once the recipient deleted it, or once the recipient's account is gone. It also reads the SQLite
 * file afterwards: the idempotency records hold no body at all, while the command log still does, as
 * NOTEBOOK.md section 17 says (until log retention deletes those entries).
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawChatClient } from './support/grpc-client.js';
import { type ServerProcess, startServer } from './support/processes.js';

const PASSWORD = 'erasure password';
const SECRET_BODY = 'the launch code is 0000';
const OTHER_SECRET = 'my account will be gone';

let directory: string;
let server: ServerProcess;
let client: RawChatClient;

async function login(username: string): Promise<string> {
  const answer = await client.ok('Login', { requestId: `login-${username}-${Date.now()}`, username, password: PASSWORD });
  return answer.sessionToken as string;
}

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-erasure-'));
  server = await startServer({ dataDirectory: join(directory, 'data') });
  client = new RawChatClient(server.address);
  for (const username of ['alice', 'bob', 'carol']) {
    await client.ok('CreateAccount', { requestId: `create-${username}`, username, password: PASSWORD });
  }
}, 60_000);

afterAll(async () => {
  client.close();
  await server.stop();
  rmSync(directory, { recursive: true, force: true });
});

test('a replayed SendMessage returns the body while the message exists, and none after the recipient deleted it', async () => {
  const alice = await login('alice');
  const bob = await login('bob');
  const send = { requestId: 'send-secret', recipient: 'bob', body: SECRET_BODY };
  const sent = (await client.ok('SendMessage', send, alice)).message as Record<string, unknown>;
  expect(sent.body).toBe(SECRET_BODY);
  const replayedBefore = (await client.ok('SendMessage', send, alice)).message as Record<string, unknown>;
  expect([replayedBefore.id, replayedBefore.body]).toEqual([sent.id, SECRET_BODY]);

  expect((await client.ok('DeleteMessages', { requestId: 'delete-secret', messageIds: [sent.id] }, bob)).deletedCount).toBe(1);
  const replayedAfter = (await client.ok('SendMessage', send, alice)).message as Record<string, unknown>;
  expect(replayedAfter.id).toBe(sent.id);
  expect(replayedAfter.body ?? '').toBe('');
  expect(JSON.stringify(replayedAfter)).not.toContain('launch code');
});

test('a replayed SendMessage returns no body once the recipient deleted their account', async () => {
  const alice = await login('alice');
  const carol = await login('carol');
  const send = { requestId: 'send-to-carol', recipient: 'carol', body: OTHER_SECRET };
  const sent = (await client.ok('SendMessage', send, alice)).message as Record<string, unknown>;
  await client.ok('DeleteAccount', { requestId: 'carol-leaves', password: PASSWORD }, carol);
  const replayed = (await client.ok('SendMessage', send, alice)).message as Record<string, unknown>;
  expect(replayed.id).toBe(sent.id);
  expect(replayed.body ?? '').toBe('');
});

test('on disk: the idempotency records hold no body; the command log still does, until retention deletes it', async () => {
  expect(await server.stop()).toBe(0);
  const database = new Database(join(directory, 'data', 'replichat.sqlite'), { readonly: true, fileMustExist: true });
  try {
    const results = (database.prepare("SELECT result FROM requests WHERE kind = 'sendMessage'").all() as { result: string }[]).map(
      (row) => row.result,
    );
    expect(results.length).toBe(2);
    for (const result of results) {
      expect(JSON.parse(result).message.body).toBeUndefined();
      expect(result).not.toContain(SECRET_BODY);
      expect(result).not.toContain(OTHER_SECRET);
    }
    expect(database.prepare('SELECT count(*) AS count FROM messages').get()).toEqual({ count: 0 });
    const logged = database.prepare('SELECT count(*) AS count FROM command_log WHERE command LIKE ?').get(`%${SECRET_BODY}%`);
    expect(logged).toEqual({ count: 1 });
  } finally {
    database.close();
  }
});
