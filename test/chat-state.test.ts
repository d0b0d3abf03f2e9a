/**
 * Proves the chat state machine's contract on real SQLite files: commands are deterministic (replaying the
 * log into an empty database reproduces the state digest), a command that cannot apply changes nothing
 * (neither tables nor log), deleting an account cascades as documented, and request ids are remembered.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClientCommand } from '../src/core/commands.js';
import { ChatError } from '../src/core/errors.js';
import { ReplicaStore } from '../src/storage/replica-store.js';
import { EnvelopeSequence, uuid } from './support/storage-commands.js';

let directory: string;
const envelopes = new EnvelopeSequence();
const envelope = (principal: string) => envelopes.envelope(principal);

function populate(store: ReplicaStore): void {
  store.appendAndApply(1, { kind: 'initializeCluster', clusterId: 'c', sessionSecretHex: 'ab'.repeat(32), timestampMs: envelopes.timestampMs });
  for (const username of ['alice', 'bob', 'carol']) {
    store.appendAndApply(1, { kind: 'createAccount', ...envelope(`user:${username}`), username, passwordHash: `h-${username}` });
  }
  store.appendAndApply(1, {
    kind: 'login', ...envelope('user:bob'), username: 'bob', sessionId: 'f'.repeat(32), expiresAtMs: envelopes.timestampMs + 1000,
  });
  for (let n = 1; n <= 5; n += 1) {
    store.appendAndApply(1, {
      kind: 'sendMessage', ...envelope('session:x'), messageId: uuid(n), sender: n % 2 ? 'alice' : 'carol',
      recipient: 'bob', body: `message ${n}`, instant: n === 5,
    });
  }
  store.appendAndApply(1, {
    kind: 'markDelivered', ...envelope('session:y'), reason: 'read', username: 'bob', messageIds: [uuid(1), uuid(2)],
  });
  store.appendAndApply(1, { kind: 'deleteMessages', ...envelope('session:y'), username: 'bob', messageIds: [uuid(3)] });
}

beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-state-'));
});
afterEach(() => {
  rmSync(directory, { recursive: true, force: true });
});

test('replaying the log into an empty database reproduces the state digest', () => {
  const original = ReplicaStore.open(join(directory, 'original.sqlite'));
  populate(original);
  const digest = original.stateDigest();
  const entries = original.entries(1, 10_000);
  expect(entries).toHaveLength(original.lastIndex);

  const replica = ReplicaStore.open(join(directory, 'replay.sqlite'));
  for (const entry of entries) replica.applyEntry(entry);
  expect(replica.stateDigest()).toBe(digest);
  expect(replica.lastIndex).toBe(original.lastIndex);

  // The digest is sensitive to state: one more change on the replica makes them differ.
  replica.appendAndApply(1, { kind: 'deleteMessages', ...envelope('session:y'), username: 'bob', messageIds: [uuid(4)] });
  expect(replica.stateDigest()).not.toBe(digest);
  original.close();
  replica.close();
});

test('the state and the log survive closing and reopening the file', () => {
  const path = join(directory, 'reopen.sqlite');
  const store = ReplicaStore.open(path);
  populate(store);
  const digest = store.stateDigest();
  const lastIndex = store.lastIndex;
  store.close();
  const reopened = ReplicaStore.open(path);
  expect(reopened.stateDigest()).toBe(digest);
  expect(reopened.lastIndex).toBe(lastIndex);
  expect(reopened.chat.unreadCount('bob')).toBe(2);
  reopened.close();
});

test('a command that cannot apply changes neither the tables nor the log', () => {
  const store = ReplicaStore.open(join(directory, 'refuse.sqlite'));
  populate(store);
  const digest = store.stateDigest();
  const lastIndex = store.lastIndex;
  const refused: ClientCommand[] = [
    { kind: 'createAccount', ...envelope('user:alice'), username: 'alice', passwordHash: 'x' },
    { kind: 'sendMessage', ...envelope('session:x'), messageId: uuid(99), sender: 'alice', recipient: 'nobody', body: 'b', instant: false },
    // Carol did not receive message 4 (she sent it) and did not send message 1: she may not delete 1.
    { kind: 'deleteMessages', ...envelope('session:z'), username: 'carol', messageIds: [uuid(4), uuid(1)] },
    { kind: 'markDelivered', ...envelope('session:z'), reason: 'acknowledge', username: 'carol', messageIds: [uuid(4)] },
  ];
  const codes = refused.map((command) => {
    try {
      store.appendAndApply(1, command);
      return 'applied';
    } catch (error) {
      return (error as ChatError).code;
    }
  });
  expect(codes).toEqual(['ALREADY_EXISTS', 'NOT_FOUND', 'PERMISSION_DENIED', 'PERMISSION_DENIED']);
  expect(store.stateDigest()).toBe(digest);
  expect(store.lastIndex).toBe(lastIndex);
  expect(store.entries(1, 10_000)).toHaveLength(lastIndex);
  store.close();
});

test('deleting an account removes its sessions and every message it sent or received', () => {
  const store = ReplicaStore.open(join(directory, 'delete.sqlite'));
  populate(store);
  expect(store.chat.session('f'.repeat(32))?.username).toBe('bob');
  // Bob holds messages 1, 2 (read), 4 and 5 (unread); alice sent 1 and 5, carol sent 2 and 4.
  store.appendAndApply(1, { kind: 'deleteAccount', ...envelope('session:a'), username: 'alice' });
  expect(store.chat.userExists('alice')).toBe(false);
  expect(store.chat.message(uuid(1))).toBeUndefined();
  expect(store.chat.message(uuid(5))).toBeUndefined();
  expect(store.chat.message(uuid(2))?.sender).toBe('carol');
  expect(store.chat.unreadCount('bob')).toBe(1);
  store.appendAndApply(1, { kind: 'deleteAccount', ...envelope('session:b'), username: 'bob' });
  expect(store.chat.session('f'.repeat(32))).toBeUndefined();
  expect(store.chat.history('carol', undefined, Number.MAX_SAFE_INTEGER, 100)).toEqual([]);
  const foreignKeyProblems = store.database.pragma('foreign_key_check') as unknown[];
  expect(foreignKeyProblems).toEqual([]);
  store.close();
});

test('every client write leaves a request record holding its first result', () => {
  const store = ReplicaStore.open(join(directory, 'requests.sqlite'));
  populate(store);
  const send = store.entries(1, 100).find((entry) => entry.command.kind === 'sendMessage');
  expect(send).toBeDefined();
  const command = send!.command as ClientCommand;
  const record = store.chat.request(command.requestId);
  expect(record).toMatchObject({ principal: command.principal, kind: 'sendMessage', logIndex: send!.index });
  expect((record!.result as { message: { id: string } }).message.id).toBe(uuid(1));
  store.close();
});
