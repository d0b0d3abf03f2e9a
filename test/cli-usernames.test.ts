/**
 * Usernames ignore case, at the state machine, on a real SQLite database: a name that differs from an
 * existing one only in case cannot be registered, logs in to that account, and a message to it names the
 * account as registered. And the migration that introduced the rule (migration 2) on a database made
 * before it, where `Dave`, `dave` and `DAVE` were three accounts: each keeps working under its exact name,
 * every other spelling reaches the oldest, and no further spelling can be registered, not even once the
 * oldest is deleted. The end-to-end refusal through the CLI is in test/cli-operations.test.ts.
 */
import Database from 'better-sqlite3';
import type { Command } from '../src/core/commands.js';
import { AlreadyExistsError, UnauthenticatedError } from '../src/core/errors.js';
import { usernameKey } from '../src/core/validation.js';
import { ChatState } from '../src/storage/chat-state.js';
import { migrate } from '../src/storage/database.js';
import { MIGRATIONS } from '../src/storage/migrations.js';

let nextIndex = 1;

function envelope(principal: string) {
  const index = nextIndex;
  return { requestId: `request-${index}`, principal, fingerprint: `fingerprint-${index}`, timestampMs: 1_000 + index };
}

/** Applies one command at the next log index, in its own transaction, as the replica store does. */
function apply(database: Database.Database, state: ChatState, command: Command): unknown {
  const index = nextIndex;
  nextIndex += 1;
  return database.transaction(() => state.apply(index, command))();
}

function createAccount(database: Database.Database, state: ChatState, username: string): unknown {
  return apply(database, state, { kind: 'createAccount', ...envelope(`user:${username}`), username, passwordHash: `hash-of-${username}` });
}

/** A database with the schema before usernames ignored case: only migration 1. */
function databaseBeforeMigration2(): Database.Database {
  const database = new Database(':memory:');
  database.pragma('foreign_keys = ON');
  database.exec(MIGRATIONS[0]!.sql);
  database.pragma('user_version = 1');
  return database;
}

test('usernameKey is NFC, then lower case', () => {
  expect(usernameKey('Dave')).toBe('dave');
  expect(usernameKey('DAVE.o-1')).toBe('dave.o-1');
  // Two encodings of é (precomposed, and e with a combining accent) get one key.
  expect(usernameKey('Ren\u00e9')).toBe(usernameKey('Rene\u0301'));
});

test('a name that differs only in case is refused, logs in to the account, and receives as the account', () => {
  const database = databaseBeforeMigration2();
  migrate(database);
  const state = new ChatState(database);
  createAccount(database, state, 'Dave');
  createAccount(database, state, 'alice');

  expect(() => createAccount(database, state, 'dAVE')).toThrow(AlreadyExistsError);
  expect(() => createAccount(database, state, 'dAVE')).toThrow('the username dAVE is taken: it differs from Dave only in case');
  expect(state.canonicalUsername('DAVE')).toBe('Dave');
  expect(state.passwordHash('dave')).toBe('hash-of-Dave');

  apply(database, state, { kind: 'login', ...envelope('user:dave'), username: 'dave', sessionId: 'session-1', expiresAtMs: 10_000_000 });
  expect(state.session('session-1')?.username).toBe('Dave');
  expect(() =>
    apply(database, state, { kind: 'login', ...envelope('user:nobody'), username: 'nobody', sessionId: 'session-2', expiresAtMs: 10_000_000 }),
  ).toThrow(UnauthenticatedError);

  const sent = apply(database, state, {
    kind: 'sendMessage',
    ...envelope('session:x'),
    messageId: '00000000-0000-4000-8000-000000000001',
    sender: 'alice',
    recipient: 'dAvE',
    body: 'hello',
    instant: false,
  }) as { message: { recipient: string } };
  expect(sent.message.recipient).toBe('Dave');
  expect(state.unreadCount('DAVE')).toBe(1);
  expect(state.listAccounts('DA*', '', 10)).toEqual(['Dave']);
});

test('migration 2 keeps accounts that already collide working, and lets no new spelling in', () => {
  const database = databaseBeforeMigration2();
  const insert = database.prepare('INSERT INTO users (username, password_hash, created_at_ms) VALUES (?, ?, ?)');
  // `dave` is the oldest; `Dave` and `DAVE` came later, in that order.
  insert.run('Dave', 'hash-of-Dave', 2_000);
  insert.run('dave', 'hash-of-dave', 1_000);
  insert.run('DAVE', 'hash-of-DAVE', 3_000);
  insert.run('erin', 'hash-of-erin', 500);

  migrate(database);
  const state = new ChatState(database);

  const keys = database.prepare('SELECT username, username_key AS key FROM users ORDER BY username').all();
  expect(keys).toEqual([
    { username: 'DAVE', key: 'dave#DAVE' },
    { username: 'Dave', key: 'dave#Dave' },
    { username: 'dave', key: 'dave' },
    { username: 'erin', key: 'erin' },
  ]);
  // Each account answers to its exact name; any other spelling reaches the oldest.
  expect(state.passwordHash('Dave')).toBe('hash-of-Dave');
  expect(state.passwordHash('DAVE')).toBe('hash-of-DAVE');
  expect(state.passwordHash('dave')).toBe('hash-of-dave');
  expect(state.passwordHash('dAvE')).toBe('hash-of-dave');
  expect(() => createAccount(database, state, 'daVE')).toThrow(AlreadyExistsError);

  // With the oldest deleted, the younger ones still block every new spelling.
  apply(database, state, { kind: 'deleteAccount', ...envelope('session:y'), username: 'dave' });
  expect(state.canonicalUsername('dave')).toBeUndefined();
  expect(state.userExists('dave')).toBe(true);
  expect(() => createAccount(database, state, 'dave')).toThrow(AlreadyExistsError);
  expect(state.passwordHash('Dave')).toBe('hash-of-Dave');
});
