/**
 * Proves the operator RPC's guard and its refusals on a real single-replica server that reads its admin
 * token from --admin-token-file (never from argv: the token is not in /proc/PID/cmdline, and a server given
 * the old --admin-token flag refuses to start): a missing or wrong token is PERMISSION_DENIED, a malformed ordinal INVALID_ARGUMENT, and
 * requests the protocol refuses (a non-member, the last member) FAILED_PRECONDITION with the reason; the
 * server keeps serving afterwards.
 */
import * as grpc from '@grpc/grpc-js';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawChatClient } from './support/grpc-client.js';
import { CLI_PATH, type ServerProcess, startServer } from './support/processes.js';

const ADMIN_TOKEN = 'operator-token-0123456789';
let directory: string;
let server: ServerProcess;
let client: RawChatClient;

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-admin-'));
  writeFileSync(join(directory, 'admin-token'), `${ADMIN_TOKEN}\n`, { mode: 0o600 });
  server = await startServer({
    dataDirectory: join(directory, 'data'),
    extraArguments: ['--admin-token-file', join(directory, 'admin-token')],
  });
  client = new RawChatClient(server.address);
});

afterAll(async () => {
  client.close();
  expect(await server.stop()).toBe(0);
  rmSync(directory, { recursive: true, force: true });
});

test.each([
  ['no token', { ordinal: 0 }, undefined, grpc.status.PERMISSION_DENIED, 'admin token'],
  ['a wrong token', { ordinal: 0 }, 'not-the-token-at-all', grpc.status.PERMISSION_DENIED, 'admin token'],
  ['a negative ordinal', { ordinal: -1 }, ADMIN_TOKEN, grpc.status.INVALID_ARGUMENT, 'ordinal'],
  ['an ordinal that is not a member', { ordinal: 7 }, ADMIN_TOKEN, grpc.status.FAILED_PRECONDITION, 'not a member'],
  ['the last member', { ordinal: 0 }, ADMIN_TOKEN, grpc.status.FAILED_PRECONDITION, 'last member'],
] as const)('RemoveMember with %s is refused', async (_case, request, token, expected, word) => {
  const outcome = await client.call('RemoveMember', request, token);
  expect(grpc.status[outcome.code]).toBe(grpc.status[expected]);
  expect(outcome.details).toContain(word);
});

test('the server still serves after the refusals', async () => {
  const status = await client.ok('GetReplicaStatus', {});
  expect(status).toMatchObject({ role: 'leader', ordinal: 0, inSync: [0] });
});

test('the admin token comes from the file: it works, and it is nowhere in the command line', async () => {
  const cmdline = readFileSync(`/proc/${server.process.pid}/cmdline`, 'utf8');
  expect(cmdline).toContain('--admin-token-file');
  expect(cmdline).not.toContain(ADMIN_TOKEN);
  const outcome = await client.call('RemoveMember', { ordinal: 7 }, ADMIN_TOKEN);
  // FAILED_PRECONDITION (not a member), not PERMISSION_DENIED: the token from the file was accepted.
  expect(grpc.status[outcome.code]).toBe(grpc.status[grpc.status.FAILED_PRECONDITION]);
});

test('a server given the token on argv (the old --admin-token flag) refuses to start and says why', () => {
  const result = spawnSync(process.execPath, [CLI_PATH, 'server', '--insecure', '--admin-token', ADMIN_TOKEN], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  expect(result.status).not.toBe(0);
  expect(result.stderr).toContain('--admin-token-file');
});
