/**
 * Proves that an acknowledged write survives a crash: a real server process is killed with SIGKILL right
 * after its last acknowledged send, restarted on the same data directory, and every acknowledged message is
 * found. Also proves idempotency across the crash: a send retried with the same request id, before and after
 * the restart, yields exactly one message.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawChatClient } from './support/grpc-client.js';
import { startServer } from './support/processes.js';

let directory: string;

beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-crash-'));
});
afterEach(() => {
  rmSync(directory, { recursive: true, force: true });
});

test('every acknowledged message survives SIGKILL and restart', async () => {
  const first = await startServer({ dataDirectory: directory });
  const client = new RawChatClient(first.address);
  const aliceToken = await client.register('alice');
  await client.register('bob');

  // 300 sends, 30 in flight at a time; the kill lands right after the last acknowledgement.
  const acknowledged: string[] = [];
  for (let batch = 0; batch < 10; batch += 1) {
    const sends = Array.from({ length: 30 }, (_, n) =>
      client.ok('SendMessage', { requestId: `send-${batch}-${n}`, recipient: 'bob', body: `m ${batch}.${n}` }, aliceToken),
    );
    for (const response of await Promise.all(sends)) acknowledged.push((response.message as { id: string }).id);
  }
  await first.kill('SIGKILL');
  client.close();

  const second = await startServer({ dataDirectory: directory });
  const after = new RawChatClient(second.address);
  const bobLogin = await after.ok('Login', { requestId: 'bob-after', username: 'bob', password: 'correct horse' });
  expect(bobLogin.unreadCount).toBe(acknowledged.length);
  const found = new Set<string>();
  for (;;) {
    const read = await after.ok('ReadMessages', { requestId: `read-${found.size}`, limit: 100 }, bobLogin.sessionToken as string);
    const messages = read.messages as { id: string }[];
    if (messages.length === 0) break;
    for (const message of messages) found.add(message.id);
  }
  expect([...found].sort()).toEqual([...acknowledged].sort());
  after.close();
  expect(await second.stop()).toBe(0);
});

test('a send retried with the same request id, across a crash, makes exactly one message', async () => {
  const first = await startServer({ dataDirectory: directory });
  const client = new RawChatClient(first.address);
  const aliceToken = await client.register('alice');
  const bobToken = await client.register('bob');
  const request = { requestId: 'the-one-send', recipient: 'bob', body: 'only once' };
  const original = await client.ok('SendMessage', request, aliceToken);
  const retried = await client.ok('SendMessage', request, aliceToken);
  expect(retried.message).toEqual(original.message);
  await first.kill('SIGKILL');
  client.close();

  const second = await startServer({ dataDirectory: directory });
  const after = new RawChatClient(second.address);
  // The session token still works after the restart: sessions are in the replicated state.
  const afterCrash = await after.ok('SendMessage', request, aliceToken);
  expect(afterCrash.message).toEqual(original.message);
  const history = await after.ok('ListHistory', {}, aliceToken);
  expect((history.messages as { body: string }[]).map((message) => message.body)).toEqual(['only once']);
  const read = await after.ok('ReadMessages', { requestId: 'bob-reads', limit: 10 }, bobToken);
  expect((read.messages as unknown[]).length).toBe(1);
  after.close();
  expect(await second.stop()).toBe(0);
});
