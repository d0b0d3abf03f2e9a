/**
 * Proves that storing each message body and request envelope once (migration 3, src/storage/command-encoding.ts)
 * loses nothing, on real SQLite files: every log entry reads back as exactly the command that was appended
 * (same fields, same JSON text, so the same log chain on a replica that replays it), also after the rows it
 * refers to are deleted (a message deleted, an account deleted with its messages, request records pruned
 * after 24 hours); a retried send still gets its first result; the body is on disk once while the message
 * exists; and a database written in the old layout (schema version 2) migrates to the same entries and
 * request results.
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClientCommand, Command } from '../src/core/commands.js';
import { PRUNE_EVERY_ENTRIES, REQUEST_RETENTION_MS } from '../src/core/limits.js';
import { MIGRATIONS } from '../src/storage/migrations.js';
import { type LogEntry, ReplicaStore } from '../src/storage/replica-store.js';
import { EnvelopeSequence, uuid } from './support/storage-commands.js';

let directory: string;
const envelopes = new EnvelopeSequence();
const envelope = (principal: string) => envelopes.envelope(principal);

function send(n: number, sender: string, recipient: string, instant = false): ClientCommand {
  return {
    kind: 'sendMessage', ...envelope('session:s'), messageId: uuid(n), sender, recipient,
    body: `body of message ${n} `.padEnd(300, 'x'), instant,
  };
}

/** The commands of a small history: accounts, sends (one pushed, one to a name typed in another case), reads, deletions. */
function history(): Command[] {
  return [
    { kind: 'initializeCluster', clusterId: 'c', sessionSecretHex: 'ab'.repeat(32), timestampMs: envelopes.timestampMs },
    ...['alice', 'bob', 'carol'].map(
      (username): Command => ({ kind: 'createAccount', ...envelope(`user:${username}`), username, passwordHash: `h-${username}` }),
    ),
    send(1, 'alice', 'bob'),
    send(2, 'carol', 'bob', true),
    send(3, 'alice', 'BOB'),
    send(4, 'bob', 'carol'),
    send(5, 'carol', 'alice'),
    { kind: 'markDelivered', ...envelope('session:b'), reason: 'read', username: 'bob', messageIds: [uuid(1)] },
    { kind: 'deleteMessages', ...envelope('session:b'), username: 'bob', messageIds: [uuid(2)] },
    { kind: 'deleteAccount', ...envelope('session:a'), username: 'alice' },
  ];
}

function appendAll(store: ReplicaStore, commands: readonly Command[]): void {
  for (const command of commands) store.appendAndApply(1, command);
}

beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-compact-'));
});
afterEach(() => {
  rmSync(directory, { recursive: true, force: true });
});

test('every entry reads back as the command appended, also after its message and its account are deleted', () => {
  const store = ReplicaStore.open(join(directory, 'store.sqlite'));
  const commands = history();
  appendAll(store, commands);
  // Messages 1, 3 and 5 were deleted with alice, message 2 by bob: only 4 still exists.
  expect(store.chat.message(uuid(4))).toBeDefined();
  expect([1, 2, 3, 5].map((n) => store.chat.message(uuid(n)))).toEqual([undefined, undefined, undefined, undefined]);

  const entries = store.entries(1, 1000);
  expect(entries.map((entry) => entry.command)).toEqual(commands);
  // The same text, key for key, so that the log chain of a replica replaying these entries is the same.
  expect(entries.map((entry) => JSON.stringify(entry.command))).toEqual(commands.map((command) => JSON.stringify(command)));

  const replica = ReplicaStore.open(join(directory, 'replica.sqlite'));
  for (const entry of entries) replica.applyEntry(entry);
  expect(replica.logChainDigest).toBe(store.logChainDigest);
  expect(replica.stateDigest()).toBe(store.stateDigest());
  replica.close();

  // The same after reopening: the last entry's timestamp is read back through its request row.
  store.close();
  const reopened = ReplicaStore.open(join(directory, 'store.sqlite'));
  expect(reopened.lastTimestampMs).toBe(commands[commands.length - 1]!.timestampMs);
  expect(reopened.entries(1, 1000).map((entry) => entry.command)).toEqual(commands);
  reopened.close();
});

test('a retried send gets its first result, whole while the message exists and without the body once it is gone', () => {
  const store = ReplicaStore.open(join(directory, 'store.sqlite'));
  appendAll(store, history().slice(0, 7));
  const sentToBob = store.entries(1, 100).find((entry) => entry.command.kind === 'sendMessage' && entry.command.messageId === uuid(3))!;
  const request = (sentToBob.command as ClientCommand).requestId;
  const whole = store.chat.request(request);
  // The message names the account as registered, though the sender typed BOB.
  expect(whole?.result).toEqual({
    message: {
      id: uuid(3), sequence: sentToBob.index, sender: 'alice', recipient: 'bob', body: (sentToBob.command as { body: string }).body,
      sentAtMs: sentToBob.command.timestampMs, delivered: false, instant: false,
    },
  });
  // Reading the message later does not change the recorded first result.
  store.appendAndApply(1, { kind: 'markDelivered', ...envelope('session:b'), reason: 'read', username: 'bob', messageIds: [uuid(3)] });
  expect(store.chat.request(request)?.result).toEqual(whole?.result);

  store.appendAndApply(1, { kind: 'deleteMessages', ...envelope('session:b'), username: 'bob', messageIds: [uuid(3)] });
  const { body: _body, ...withoutBody } = (whole?.result as { message: Record<string, unknown> }).message;
  expect(store.chat.request(request)?.result).toEqual({ message: withoutBody });
  store.close();
});

test('entries still read back whole after their request records are pruned', () => {
  const store = ReplicaStore.open(join(directory, 'store.sqlite'));
  const commands = history().slice(0, 8);
  appendAll(store, commands);
  // A day later, enough entries to reach the next pruning index: the early request records expire.
  envelopes.timestampMs += REQUEST_RETENTION_MS + 1000;
  const filler: Command[] = [];
  while (store.lastIndex + filler.length < PRUNE_EVERY_ENTRIES) filler.push(send(100 + filler.length, 'bob', 'carol'));
  const entries: LogEntry[] = filler.map((command, offset) => ({ index: store.lastIndex + 1 + offset, epoch: 1, command }));
  store.applyEntries(entries);
  expect(store.chat.request((commands[4] as ClientCommand).requestId)).toBeUndefined();
  expect(store.chat.request((filler[0] as ClientCommand).requestId)).toBeDefined();

  const readBack = store.entries(1, commands.length).map((entry) => entry.command);
  expect(readBack).toEqual(commands);
  expect(readBack.map((command) => JSON.stringify(command))).toEqual(commands.map((command) => JSON.stringify(command)));
  store.close();
});

test('a message body is on disk once while the message exists: not in the log, not in the request record', () => {
  const store = ReplicaStore.open(join(directory, 'store.sqlite'));
  appendAll(store, history().slice(0, 9));
  const body = (send(4, 'bob', 'carol') as { body: string }).body;
  const count = (sql: string) => (store.database.prepare(sql).get(body) as { count: number }).count;
  expect(count('SELECT count(*) AS count FROM messages WHERE body = ?')).toBe(1);
  expect(count("SELECT count(*) AS count FROM command_log WHERE instr(command, ?) > 0")).toBe(0);
  expect(count("SELECT count(*) AS count FROM requests WHERE instr(coalesce(result, ''), ?) > 0")).toBe(0);
  store.close();
});

test('a database in the old layout (schema version 2) migrates to the same entries and request results', () => {
  // The old layout and rows exactly as the code before migration 3 wrote them: whole commands in the log,
  // whole results in the request records.
  const path = join(directory, 'old.sqlite');
  const old = new Database(path);
  old.pragma('journal_mode = WAL');
  for (const migration of MIGRATIONS.filter((candidate) => candidate.version <= 2)) old.exec(migration.sql);
  old.pragma('user_version = 2');
  // Everything but the account deletion, which comes after the migration.
  const commands = history().slice(0, 11);
  const insertUser = old.prepare('INSERT INTO users (username, password_hash, created_at_ms, username_key) VALUES (?, ?, ?, ?)');
  const insertMessage = old.prepare('INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
  const insertRequest = old.prepare('INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?, ?)');
  const insertEntry = old.prepare('INSERT INTO command_log (log_index, epoch, command) VALUES (?, 1, ?)');
  const results = new Map<string, unknown>();
  commands.forEach((command, offset) => {
    const index = offset + 1;
    insertEntry.run(index, JSON.stringify(command));
    if (command.kind === 'createAccount') insertUser.run(command.username, command.passwordHash, command.timestampMs, command.username);
    let result: unknown = {};
    if (command.kind === 'sendMessage') {
      const recipient = command.recipient.toLowerCase();
      insertMessage.run(command.messageId, index, command.sender, recipient, command.body, command.timestampMs, 0, command.instant ? 1 : 0);
      result = { message: { id: command.messageId, sequence: index, sender: command.sender, recipient, body: command.body, sentAtMs: command.timestampMs, delivered: false, instant: command.instant } };
    }
    if (command.kind === 'markDelivered') old.prepare('UPDATE messages SET delivered = 1 WHERE id = ?').run(command.messageIds[0]);
    if (command.kind === 'deleteMessages') old.prepare('DELETE FROM messages WHERE id = ?').run(command.messageIds[0]);
    if (command.kind !== 'initializeCluster' && command.kind !== 'configuration') {
      insertRequest.run(command.requestId, command.principal, command.kind, command.fingerprint, JSON.stringify(result), index, command.timestampMs);
      results.set(command.requestId, result);
    }
  });
  old.close();

  const store = ReplicaStore.open(path);
  expect(store.database.pragma('user_version', { simple: true })).toBeGreaterThanOrEqual(3);
  expect(store.entries(1, 100).map((entry) => entry.command)).toEqual(commands);
  for (const [requestId, result] of results) {
    const message = (result as { message?: { id: string; body: string } }).message;
    // The send whose message was deleted before the migration keeps its result without the body.
    if (message !== undefined && store.chat.message(message.id) === undefined) {
      const { body: _body, ...withoutBody } = message;
      expect(store.chat.request(requestId)?.result).toEqual({ message: withoutBody });
    } else {
      expect(store.chat.request(requestId)?.result).toEqual(result);
    }
  }
  // After the migration, a deletion still keeps the log whole.
  store.appendAndApply(1, { kind: 'deleteAccount', ...envelope('session:a'), username: 'alice' });
  expect(store.entries(1, commands.length).map((entry) => entry.command)).toEqual(commands);
  store.close();
});
