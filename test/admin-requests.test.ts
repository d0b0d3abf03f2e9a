/**
 * Proves the operator RPC's guard and its refusals on a real single-replica server started with
 * --admin-token: a missing or wrong token is PERMISSION_DENIED, a malformed ordinal INVALID_ARGUMENT, and
 * requests the protocol refuses (a non-member, the last member) FAILED_PRECONDITION with the reason; the
 * server keeps serving afterwards.
 */
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawChatClient } from './support/grpc-client.js';
import { type ServerProcess, startServer } from './support/processes.js';

const ADMIN_TOKEN = 'operator-token-0123456789';
let directory: string;
let server: ServerProcess;
let client: RawChatClient;

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-admin-'));
  server = await startServer({ dataDirectory: directory, extraArguments: ['--admin-token', ADMIN_TOKEN] });
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
