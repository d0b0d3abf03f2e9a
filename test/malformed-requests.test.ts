/**
 * Feeds malformed, oversized and unauthorised requests to every RPC of a real server process over real
 * gRPC, and checks that each gets its documented status code with a message, and that the server goes on
 * serving afterwards (it neither crashed nor lost data).
 */
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawChatClient } from './support/grpc-client.js';
import { type ServerProcess, startServer } from './support/processes.js';

let directory: string;
let server: ServerProcess;
let client: RawChatClient;
let aliceToken: string;
let bobToken: string;
let messageToBob: string;

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-malformed-'));
  server = await startServer({ dataDirectory: directory, extraArguments: ['--subscriptions-per-user-max', '2'] });
  client = new RawChatClient(server.address);
  aliceToken = await client.register('alice');
  bobToken = await client.register('bob');
  const sent = await client.ok('SendMessage', { requestId: 'first-send', recipient: 'bob', body: 'hello' }, aliceToken);
  messageToBob = (sent.message as { id: string }).id;
});

afterAll(async () => {
  client.close();
  expect(await server.stop()).toBe(0);
  rmSync(directory, { recursive: true, force: true });
});

const { INVALID_ARGUMENT, UNAUTHENTICATED, NOT_FOUND, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ALREADY_EXISTS } =
  grpc.status;
const longName = 'a'.repeat(33);
const id = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;

// [method, request, which session, expected status, a word the message must hold]
const cases: [string, Record<string, unknown>, 'alice' | 'bob' | 'none' | 'forged', grpc.status, string][] = [
  ['CreateAccount', { requestId: 'c1', username: '', password: 'long enough' }, 'none', INVALID_ARGUMENT, 'username'],
  ['CreateAccount', { requestId: 'c2', username: 'has space', password: 'long enough' }, 'none', INVALID_ARGUMENT, 'username'],
  ['CreateAccount', { requestId: 'c3', username: longName, password: 'long enough' }, 'none', INVALID_ARGUMENT, '32'],
  ['CreateAccount', { requestId: 'c4', username: 'carol', password: 'short' }, 'none', INVALID_ARGUMENT, 'password'],
  ['CreateAccount', { requestId: 'c5', username: 'carol', password: 'x'.repeat(300) }, 'none', INVALID_ARGUMENT, 'password'],
  ['CreateAccount', { requestId: '', username: 'carol', password: 'long enough' }, 'none', INVALID_ARGUMENT, 'request_id'],
  ['CreateAccount', { requestId: 'bad id!', username: 'carol', password: 'long enough' }, 'none', INVALID_ARGUMENT, 'request_id'],
  ['CreateAccount', { requestId: 'c6', username: 'alice', password: 'long enough' }, 'none', ALREADY_EXISTS, 'taken'],
  ['AccountExists', { username: '*' }, 'none', INVALID_ARGUMENT, 'username'],
  ['Login', { requestId: 'l1', username: 'alice', password: '' }, 'none', INVALID_ARGUMENT, 'password'],
  ['Login', { requestId: 'l2', username: 'alice', password: 'wrong password' }, 'none', UNAUTHENTICATED, 'invalid'],
  ['Login', { requestId: 'l3', username: 'nobody', password: 'wrong password' }, 'none', UNAUTHENTICATED, 'invalid'],
  ['Logout', { requestId: 'o1' }, 'none', UNAUTHENTICATED, 'log in'],
  ['Logout', { requestId: 'o2' }, 'forged', UNAUTHENTICATED, 'not valid'],
  ['ListAccounts', { pattern: 'a*' }, 'none', UNAUTHENTICATED, 'log in'],
  ['ListAccounts', { pattern: 'a%' }, 'alice', INVALID_ARGUMENT, 'pattern'],
  ['ListAccounts', { pattern: 'a'.repeat(65) }, 'alice', INVALID_ARGUMENT, 'pattern'],
  ['ListAccounts', { pageSize: 100_000 }, 'alice', INVALID_ARGUMENT, 'page_size'],
  ['ListAccounts', { pageToken: 'not-a-token' }, 'alice', INVALID_ARGUMENT, 'page_token'],
  ['SendMessage', { requestId: 's1', recipient: 'bob', body: 'x'.repeat(4097) }, 'alice', INVALID_ARGUMENT, 'bytes'],
  ['SendMessage', { requestId: 's2', recipient: 'bob', body: '' }, 'alice', INVALID_ARGUMENT, 'body'],
  ['SendMessage', { requestId: 's3', recipient: 'nobody', body: 'hi' }, 'alice', NOT_FOUND, 'nobody'],
  ['SendMessage', { requestId: 's4', recipient: 'bob', body: 'hi' }, 'none', UNAUTHENTICATED, 'log in'],
  ['SendMessage', { requestId: 'first-send', recipient: 'bob', body: 'other body' }, 'alice', grpc.status.FAILED_PRECONDITION, 'request_id'],
  ['AcknowledgeMessages', { requestId: 'a1', messageIds: ['not-a-uuid'] }, 'bob', INVALID_ARGUMENT, 'UUID'],
  ['AcknowledgeMessages', { requestId: 'a2', messageIds: [] }, 'bob', INVALID_ARGUMENT, 'empty'],
  ['AcknowledgeMessages', { requestId: 'a3', messageIds: Array.from({ length: 501 }, (_, n) => id(n)) }, 'bob', INVALID_ARGUMENT, '500'],
  ['AcknowledgeMessages', { requestId: 'a4', messageIds: [id(7)] }, 'bob', NOT_FOUND, id(7)],
  ['ReadMessages', { requestId: 'r1', limit: 100_000 }, 'bob', INVALID_ARGUMENT, 'limit'],
  ['ReadMessages', { requestId: 'r2', limit: 1 }, 'none', UNAUTHENTICATED, 'log in'],
  ['ListHistory', { pageToken: '!!!' }, 'bob', INVALID_ARGUMENT, 'page_token'],
  ['ListHistory', { withUsername: 'bad name' }, 'bob', INVALID_ARGUMENT, 'with_username'],
  ['DeleteMessages', { requestId: 'd1', messageIds: [] }, 'bob', INVALID_ARGUMENT, 'empty'],
  ['DeleteMessages', { requestId: 'd2', messageIds: [id(8)] }, 'bob', NOT_FOUND, id(8)],
  ['DeleteAccount', { requestId: 'x1', password: 'wrong password' }, 'bob', UNAUTHENTICATED, 'invalid'],
  ['DeleteAccount', { requestId: 'x2', password: '' }, 'bob', INVALID_ARGUMENT, 'password'],
  // This server runs without --admin-token, so operator RPCs are off for everyone, users included.
  ['RemoveMember', { ordinal: 1 }, 'alice', PERMISSION_DENIED, 'admin-token'],
  ['RemoveMember', { ordinal: 1 }, 'none', PERMISSION_DENIED, 'admin-token'],
];

test.each(cases)('%s %j as %s gets status %i', async (method, request, who, expected, word) => {
  const token = { alice: aliceToken, bob: bobToken, none: undefined, forged: `${'0'.repeat(32)}.forged` }[who];
  const outcome = await client.call(method, request, token);
  expect(grpc.status[outcome.code]).toBe(grpc.status[expected]);
  expect(outcome.details).toContain(word);
});

test('a message may be acknowledged only by its recipient and deleted only by its two parties', async () => {
  const carolToken = await client.register('carol');
  const acknowledge = await client.call('AcknowledgeMessages', { requestId: 'p1', messageIds: [messageToBob] }, aliceToken);
  expect(acknowledge.code).toBe(PERMISSION_DENIED);
  const remove = await client.call('DeleteMessages', { requestId: 'p2', messageIds: [messageToBob] }, carolToken);
  expect(remove.code).toBe(PERMISSION_DENIED);
  const history = await client.ok('ListHistory', {}, bobToken);
  expect((history.messages as unknown[]).length).toBe(0); // Not yet delivered, so not in bob's history.
  const unread = await client.ok('Login', { requestId: 'relogin-bob', username: 'bob', password: 'correct horse' });
  expect(unread.unreadCount).toBe(1);
});

test('bytes that are not a protobuf message get INVALID_ARGUMENT from every method', async () => {
  const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x0a, 0xff]);
  const methods = [
    'CreateAccount', 'AccountExists', 'Login', 'Logout', 'ListAccounts', 'SendMessage', 'AcknowledgeMessages',
    'ReadMessages', 'ListHistory', 'DeleteMessages', 'DeleteAccount', 'GetReplicaStatus', 'RemoveMember',
  ];
  for (const method of methods) {
    const status = await new Promise<grpc.ServiceError | null>((resolve) => {
      client.client.makeUnaryRequest(
        `/replichat.v1.ChatService/${method}`,
        (bytes: Buffer) => bytes,
        (bytes: Buffer) => bytes,
        garbage,
        (error) => resolve(error),
      );
    });
    expect([method, status?.code]).toEqual([method, INVALID_ARGUMENT]);
  }
});

test('a request larger than the frame limit is refused with RESOURCE_EXHAUSTED', async () => {
  const outcome = await client.call(
    'SendMessage',
    { requestId: 'huge', recipient: 'bob', body: 'x'.repeat(5 * 1024 * 1024) },
    aliceToken,
  );
  expect(outcome.code).toBe(RESOURCE_EXHAUSTED);
});

test('subscriptions past the per-user limit get RESOURCE_EXHAUSTED', async () => {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${bobToken}`);
  const open = () => {
    const stream = client.client.Subscribe!({}, metadata) as grpc.ClientReadableStream<unknown>;
    const ended = new Promise<grpc.status>((resolve) => stream.on('error', (error: grpc.ServiceError) => resolve(error.code)));
    const firstMessage = new Promise((resolve) => stream.once('data', resolve));
    return { stream, ended, firstMessage };
  };
  const first = open();
  const second = open();
  // A stream is registered once the server has handled the call, which the client cannot see; a live send
  // that reaches both streams proves it.
  await expectEventually(async () => {
    await client.ok('SendMessage', { requestId: `probe-${Date.now()}`, recipient: 'bob', body: 'probe' }, aliceToken);
    const both = Promise.all([first.firstMessage, second.firstMessage]).then(() => true);
    return Promise.race([both, delay(100).then(() => false)]);
  });
  const third = open();
  expect(await third.ended).toBe(RESOURCE_EXHAUSTED);
  first.stream.cancel();
  second.stream.cancel();
  expect(await first.ended).toBe(grpc.status.CANCELLED);
  expect(await second.ended).toBe(grpc.status.CANCELLED);
});

test('the server still serves after all of the above', async () => {
  const outcome = await client.ok('AccountExists', { username: 'alice' });
  expect(outcome.exists).toBe(true);
  const sent = await client.ok('SendMessage', { requestId: 'after', recipient: 'bob', body: 'still here' }, aliceToken);
  expect((sent.message as { body: string }).body).toBe('still here');
});

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Retries a probe until it returns true, failing after a deadline. */
async function expectEventually(probe: () => Promise<boolean>, deadlineMs = 10_000): Promise<void> {
  const giveUpAt = Date.now() + deadlineMs;
  while (Date.now() < giveUpAt) {
    if (await probe()) return;
  }
  throw new Error(`condition not met within ${deadlineMs} ms`);
}
