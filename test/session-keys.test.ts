/**
 * Proves three rules about sessions and secrets on a real server whose admin token comes from a file:
 * - The session-signing key rotates through the RotateSessionKey admin RPC: a token signed by the old key
 *   keeps working, a new login gets a token that names the new key, and a rotation with revoke_previous
 *   ends every older token at once. Without the admin token the RPC is refused.
 * - A password hash made with older scrypt parameters (written into the stopped replica's file, as an
 *   account made before the upgrade would hold) still logs in, and that login replaces it, through the
 *   log (an upgradePasswordHash command), with a hash of the current parameters.
 * - A logged-out session's token, still correctly signed, is refused by every write, while a write it
 *   retries with the same request id gets the answer recorded before the logout.
 */
import * as grpc from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { randomBytes, scryptSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SCRYPT_PARAMETERS } from '../src/api/password-hashing.js';
import { RawChatClient } from './support/grpc-client.js';
import { type ServerProcess, startServer } from './support/processes.js';

const ADMIN_TOKEN = 'session-keys-admin-token-0123';
const PASSWORD = 'session keys password';

let directory: string;
let server: ServerProcess;
let client: RawChatClient;

async function start(): Promise<void> {
  server = await startServer({
    dataDirectory: join(directory, 'data'),
    // This file checks the production parameters (OWASP's), so it does not take the test clusters' cheaper cost.
    extraArguments: ['--admin-token-file', join(directory, 'admin-token'), '--password-hash-cost-log2', '17'],
  });
  client = new RawChatClient(server.address);
}

async function stop(): Promise<void> {
  client.close();
  expect(await server.stop()).toBe(0);
}

let loginCounter = 0;
async function login(username: string): Promise<string> {
  const answer = await client.ok('Login', { requestId: `login-${username}-${++loginCounter}`, username, password: PASSWORD });
  return answer.sessionToken as string;
}

async function works(token: string): Promise<boolean> {
  const outcome = await client.call('ListAccounts', { pattern: '*' }, token);
  if (outcome.code !== grpc.status.OK && outcome.code !== grpc.status.UNAUTHENTICATED) {
    throw new Error(`unexpected ${grpc.status[outcome.code]}: ${outcome.details}`);
  }
  return outcome.code === grpc.status.OK;
}

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-session-keys-'));
  writeFileSync(join(directory, 'admin-token'), ADMIN_TOKEN, { mode: 0o600 });
  await start();
  await client.ok('CreateAccount', { requestId: 'create-alice', username: 'alice', password: PASSWORD });
}, 60_000);

afterAll(async () => {
  client.close();
  await server.stop();
  rmSync(directory, { recursive: true, force: true });
});

test('rotation keeps old tokens working, signs new ones with the new key, and revocation ends the old ones', async () => {
  const before = await login('alice');
  expect(before.split('.')).toHaveLength(2);
  expect(await works(before)).toBe(true);

  const refused = await client.call('RotateSessionKey', { requestId: 'rotate-no-token' }, 'not-the-admin-token');
  expect(grpc.status[refused.code]).toBe('PERMISSION_DENIED');

  const rotated = await client.ok('RotateSessionKey', { requestId: 'rotate-1' }, ADMIN_TOKEN);
  expect(rotated.keyId).toBe(1);
  expect(await works(before)).toBe(true);
  const afterRotation = await login('alice');
  expect(afterRotation.split('.')[1]).toBe('1');
  expect(await works(afterRotation)).toBe(true);
  // A retried rotation answers the first result instead of rotating twice.
  expect((await client.ok('RotateSessionKey', { requestId: 'rotate-1' }, ADMIN_TOKEN)).keyId).toBe(1);

  const revoked = await client.ok('RotateSessionKey', { requestId: 'rotate-2', revokePrevious: true }, ADMIN_TOKEN);
  expect(revoked.keyId).toBe(2);
  expect(await works(before)).toBe(false);
  expect(await works(afterRotation)).toBe(false);
  const afterRevocation = await login('alice');
  expect(afterRevocation.split('.')[1]).toBe('2');
  expect(await works(afterRevocation)).toBe(true);
}, 60_000);

test('a logged-out session can no longer write, while a write it retries gets its recorded answer', async () => {
  // The write handlers verify the token once, to name the request's principal, and then look the session
  // up only if no earlier result answers the request: that lookup alone must refuse an ended session.
  await client.ok('CreateAccount', { requestId: 'create-bob', username: 'bob', password: PASSWORD });
  const token = await login('alice');
  const first = { requestId: 'send-before-logout', recipient: 'bob', body: 'sent before the logout' };
  const sent = (await client.ok('SendMessage', first, token)).message as { id: string };
  await client.ok('Logout', { requestId: 'logout-alice' }, token);
  const writes: [string, Record<string, unknown>][] = [
    ['SendMessage', { requestId: 'send-after-logout', recipient: 'bob', body: 'too late' }],
    ['ReadMessages', { requestId: 'read-after-logout', limit: 1 }],
    ['AcknowledgeMessages', { requestId: 'acknowledge-after-logout', messageIds: [sent.id] }],
    ['DeleteMessages', { requestId: 'delete-after-logout', messageIds: [sent.id] }],
    ['DeleteAccount', { requestId: 'delete-account-after-logout', password: PASSWORD }],
    ['Logout', { requestId: 'logout-again' }],
  ];
  for (const [method, request] of writes) {
    const outcome = await client.call(method, request, token);
    expect([method, grpc.status[outcome.code], outcome.details]).toEqual([method, 'UNAUTHENTICATED', expect.stringContaining('ended or expired')]);
  }
  const replayed = (await client.ok('SendMessage', first, token)).message as { id: string };
  expect(replayed.id).toBe(sent.id);
  expect(await works(await login('alice'))).toBe(true);
});

test('a hash with older scrypt parameters logs in once, and that login upgrades it through the log', async () => {
  await client.ok('CreateAccount', { requestId: 'create-olduser', username: 'olduser', password: PASSWORD });
  await stop();
  const databasePath = join(directory, 'data', 'replichat.sqlite');
  const salt = randomBytes(16);
  const oldKey = scryptSync(PASSWORD.normalize('NFC'), salt, 32, { N: 16384, r: 8, p: 1 });
  const oldHash = ['scrypt', 16384, 8, 1, salt.toString('base64'), oldKey.toString('base64')].join('$');
  const writable = new Database(databasePath);
  try {
    writable.prepare("UPDATE users SET password_hash = ? WHERE username = 'olduser'").run(oldHash);
  } finally {
    writable.close();
  }

  await start();
  await login('olduser');
  await stop();

  const database = new Database(databasePath, { readonly: true, fileMustExist: true });
  try {
    const { password_hash: stored } = database.prepare("SELECT password_hash FROM users WHERE username = 'olduser'").get() as {
      password_hash: string;
    };
    expect(stored).not.toBe(oldHash);
    expect(stored.split('$').slice(0, 4)).toEqual(['scrypt', String(SCRYPT_PARAMETERS.cost), '8', '1']);
    const logged = database.prepare("SELECT command FROM command_log WHERE command LIKE '%upgradePasswordHash%'").all() as {
      command: string;
    }[];
    expect(logged.map((row) => JSON.parse(row.command).passwordHash)).toEqual([stored]);
  } finally {
    database.close();
  }
  await start();
  // The new hash works for the next login too.
  expect((await login('olduser')).length).toBeGreaterThan(0);
}, 90_000);
