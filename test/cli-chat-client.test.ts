/**
 * ChatClient's failover rules, against fake ChatService servers in this process whose answers the test
 * chooses: a follower that names the leader, a server that is down, one that hangs, one that refuses for
 * good, one that names a "leader" outside the client's list, one with a certificate the client cannot
 * check. Proves that a write keeps its request id across servers, that only UNAVAILABLE-like failures are
 * retried, that the retry budget bounds a call, that a hint to an unlisted address is neither followed nor
 * stored, that a TLS failure is reported at once with a hint about the CA and without grpc-js's wording,
 * and that a subscription moves to the leader after losing its stream, hands each message to the caller
 * once, and outlasts an outage longer than any call's retry budget, reporting it once.
 */
import * as grpc from '@grpc/grpc-js';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChatClient, ChatClientError, type ChatMessage } from '../src/cli/chat-client.js';
import { waitFor } from './support/cli-processes.js';
import {
  type FakeServer,
  type StreamAnswer,
  type UnaryAnswer,
  type Wire,
  startFakeChatServer,
  statusWithLeader,
  wireMessage,
} from './support/fake-chat-server.js';
import { freePort } from './support/processes.js';

const servers: FakeServer[] = [];
const clients: ChatClient[] = [];

/** Starts a fake (see fake-chat-server.ts) that afterEach stops. */
async function startFake(
  unary: (method: string, request: Wire, callNumber: number) => UnaryAnswer,
  subscribe?: StreamAnswer,
  credentials?: grpc.ServerCredentials,
): Promise<FakeServer> {
  const fake = await startFakeChatServer(unary, { subscribe, credentials });
  servers.push(fake);
  return fake;
}

function client(addresses: string[], options: Partial<ConstructorParameters<typeof ChatClient>[0]> = {}): ChatClient {
  const made = new ChatClient({ servers: addresses, tls: 'insecure', ...options });
  clients.push(made);
  return made;
}


const sent = { response: { message: wireMessage('00000000-0000-4000-8000-000000000001', 'hi') } };

afterEach(() => {
  for (const made of clients.splice(0)) made.close();
  for (const fake of servers.splice(0)) fake.stop();
});

test('a write follows the leader a follower names, with the same request id and the bearer token', async () => {
  const leader = await startFake(() => sent);
  const follower = await startFake(() => ({ status: grpc.status.UNAVAILABLE, details: 'not the leader', leader: leader.address }));
  // The leader is last in the list, so that only the hint can make it the second server asked.
  const unrelated = await startFake(() => ({ status: grpc.status.UNAVAILABLE, details: 'not the leader either' }));
  const chat = client([follower.address, unrelated.address, leader.address], { sessionToken: 'token-1' });

  expect((await chat.sendMessage('bob', 'hi')).body).toBe('hi');

  const requestId = follower.calls[0]!.request.requestId;
  expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
  expect(leader.calls.map((call) => [call.method, call.request.requestId, call.authorization])).toEqual([
    ['SendMessage', requestId, 'Bearer token-1'],
  ]);
  expect(unrelated.calls).toHaveLength(0);
  // The next call, and the next process through the session file, start with the leader.
  expect(chat.preferredServers()[0]).toBe(leader.address);
  await chat.readMessages();
  expect(follower.calls).toHaveLength(1);
});

test('each write gets a new time-ordered request id (UUID version 7), later than the one before', async () => {
  const server = await startFake(() => sent);
  const chat = client([server.address], { sessionToken: 'token-1' });
  for (let n = 0; n < 5; n += 1) await chat.sendMessage('bob', `message ${n}`);
  const requestIds = server.calls.map((call) => String(call.request.requestId));
  expect(requestIds).toHaveLength(5);
  for (const requestId of requestIds) expect(requestId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  expect(new Set(requestIds).size).toBe(5);
  expect([...requestIds].sort()).toEqual(requestIds);
});

test('the CLI ignores a hint to an address outside its list, and never stores it', async () => {
  // A follower that lies: it names a "leader" the client was never told about, which would get the password.
  const impostor = await startFake(() => sent);
  const lying = await startFake(() => ({ status: grpc.status.UNAVAILABLE, details: 'not the leader', leader: impostor.address }));
  const leader = await startFake(() => sent);
  const chat = client([lying.address, leader.address]);

  await chat.login('alice', 'alice-password');

  expect(impostor.calls).toHaveLength(0);
  expect(leader.calls.map((call) => call.method)).toEqual(['Login']);
  expect(chat.preferredServers()).toEqual([leader.address, lying.address]);
  expect(chat.preferredServers()).not.toContain(impostor.address);
});

test('a certificate the client cannot check fails at once, with a hint about the CA and no grpc-js wording', async () => {
  const certificates = mkdtempSync(join(tmpdir(), 'replichat-cli-client-certs-'));
  try {
    execFileSync('bash', [new URL('../scripts/make-dev-certs.sh', import.meta.url).pathname, certificates], { stdio: 'ignore' });
    const credentials = grpc.ServerCredentials.createSsl(null, [
      { cert_chain: readFileSync(join(certificates, 'server.pem')), private_key: readFileSync(join(certificates, 'server-key.pem')) },
    ]);
    const tlsServer = await startFake(() => ({ response: { exists: true } }), undefined, credentials);
    // The system's roots do not know the throwaway CA, as when REPLICHAT_CA_CERT was forgotten.
    const chat = client([tlsServer.address], { tls: {}, retryBudgetMs: 60_000, deadlineMs: 2_000 });

    const failure = (await chat.accountExists('alice').catch((error: unknown) => error)) as ChatClientError;

    expect(failure).toBeInstanceOf(ChatClientError);
    expect(failure.codeName).toBe('UNAVAILABLE');
    expect(failure.message).toContain("cannot verify the server's TLS certificate");
    expect(failure.message).toContain('--ca-cert or REPLICHAT_CA_CERT');
    expect(failure.message).not.toMatch(/Last error|Resolution note|No connection established/);
    // One attempt, not a retry budget's worth: every server would fail the same way.
    expect(failure.message).not.toContain('tried');

    // With the CA, the same server answers.
    const trusting = client([tlsServer.address], { tls: { caCertPath: join(certificates, 'ca.pem') } });
    expect(await trusting.accountExists('alice')).toBe(true);
  } finally {
    rmSync(certificates, { recursive: true, force: true });
  }
});

test('a write moves past a server that is down and one that hangs, keeping its request id', async () => {
  const down = `127.0.0.1:${await freePort()}`;
  const hung = await startFake(() => 'hang');
  const leader = await startFake(() => sent);
  const chat = client([down, hung.address, leader.address], { deadlineMs: 300 });

  await chat.sendMessage('bob', 'hi');

  expect(hung.calls).toHaveLength(1);
  expect(leader.calls[0]!.request.requestId).toBe(hung.calls[0]!.request.requestId);
  // Each write gets a fresh id of its own.
  await chat.sendMessage('bob', 'hi');
  expect(leader.calls[1]!.request.requestId).not.toBe(leader.calls[0]!.request.requestId);
});

test('any other status is final: no retry, and the error carries the code, its name and the details', async () => {
  const refusing = await startFake(() => ({ status: grpc.status.NOT_FOUND, details: 'no account named carol' }));
  const other = await startFake(() => sent);
  const chat = client([refusing.address, other.address]);

  const failure = await chat.sendMessage('carol', 'hi').catch((error: unknown) => error);

  expect(failure).toBeInstanceOf(ChatClientError);
  expect(failure).toMatchObject({ code: grpc.status.NOT_FOUND, codeName: 'NOT_FOUND', message: 'no account named carol' });
  expect(refusing.calls).toHaveLength(1);
  expect(other.calls).toHaveLength(0);
});

test('a last attempt that the budget cut short does not hide what an earlier server answered', async () => {
  // The first server hangs; the second answers that there is no leader; the third attempt, to the first
  // server again, gets only what is left of the budget and runs out. The caller hears the second answer.
  const hung = await startFake(() => 'hang');
  const leaderless = await startFake(() => ({ status: grpc.status.UNAVAILABLE, details: 'replica 1 is not the leader and no leader is known yet' }));
  const chat = client([hung.address, leaderless.address], { sessionToken: 'token-1', deadlineMs: 300, retryBudgetMs: 0 });

  const failure = await chat.sendMessage('bob', 'hi').then(
    () => undefined,
    (error: unknown) => error as ChatClientError,
  );

  expect(hung.calls.filter((call) => call.method === 'SendMessage')).toHaveLength(2);
  expect(leaderless.calls.filter((call) => call.method === 'SendMessage')).toHaveLength(1);
  expect(failure).toBeInstanceOf(ChatClientError);
  expect(failure!.code).toBe(grpc.status.UNAVAILABLE);
  expect(failure!.message).toMatch(/no leader is known yet \(tried /);
});

test('the retry budget bounds a call when no server answers', async () => {
  const down = `127.0.0.1:${await freePort()}`;
  const chat = client([down], { retryBudgetMs: 500, deadlineMs: 200 });
  const startedAtMs = Date.now();

  const failure = await chat.accountExists('alice').catch((error: unknown) => error);

  expect(failure).toMatchObject({ codeName: 'UNAVAILABLE' });
  expect(Date.now() - startedAtMs).toBeLessThan(3000);
});

test('a subscription that loses its stream resubscribes on the leader with include_queued, without duplicates', async () => {
  const leader = await startFake(
    () => sent,
    (call) => {
      // The leader replays m2, which the client already has, before the new m3.
      call.write(wireMessage('m2'));
      call.write(wireMessage('m3'));
    },
  );
  const follower = await startFake(
    () => sent,
    (call) => {
      call.write(wireMessage('m1'));
      call.write(wireMessage('m2'));
      call.emit('error', statusWithLeader(grpc.status.UNAVAILABLE, 'stepping down', leader.address));
    },
  );
  const chat = client([follower.address, leader.address], { sessionToken: 'token-2' });
  const received: ChatMessage[] = [];
  const repeated: string[] = [];
  const ends: unknown[] = [];
  const subscription = chat.subscribe(
    // A repeat is handed over separately, so that a caller whose acknowledgement failed can acknowledge it again.
    { includeQueued: false, onRepeat: (incoming) => repeated.push(incoming.id) },
    (incoming) => received.push(incoming),
    (error) => ends.push(error),
  );

  await waitFor('m3 arrives', () => received.some((incoming) => incoming.id === 'm3'));
  expect(received.map((incoming) => incoming.id)).toEqual(['m1', 'm2', 'm3']);
  expect(repeated).toEqual(['m2']);
  expect(follower.calls[0]).toMatchObject({ request: { includeQueued: false }, authorization: 'Bearer token-2' });
  expect(leader.calls[0]).toMatchObject({ request: { includeQueued: true }, authorization: 'Bearer token-2' });

  subscription.close();
  expect(ends).toEqual([undefined]);
});

test('a subscription outlasts an outage longer than the retry budget, and reports it once each way', async () => {
  // The server refuses the first eight subscriptions as a cluster without a leader would, then streams.
  let subscribeCalls = 0;
  const recovering = await startFake(
    () => sent,
    (call) => {
      subscribeCalls += 1;
      if (subscribeCalls <= 8) {
        call.emit('error', statusWithLeader(grpc.status.UNAVAILABLE, 'no leader yet'));
        return;
      }
      call.sendMetadata(new grpc.Metadata());
      call.write(wireMessage('after-the-outage'));
    },
  );
  // A retry budget far shorter than the outage: the old subscription gave up after it.
  const chat = client([recovering.address], { retryBudgetMs: 200 });
  const received: string[] = [];
  const changes: string[] = [];
  const ends: unknown[] = [];
  chat.subscribe(
    { includeQueued: false, onConnectionChange: (change) => changes.push(change) },
    (incoming) => received.push(incoming.id),
    (error) => ends.push(error),
  );

  await waitFor('the message after the outage arrives', () => received.includes('after-the-outage'), { timeoutMs: 30_000 });
  expect(subscribeCalls).toBe(9);
  expect(ends).toEqual([]);
  expect(changes).toEqual(['lost', 'restored']);
});

test('a subscription refused for good ends with the error and does not resubscribe', async () => {
  const refusing = await startFake(
    () => sent,
    (call) => {
      call.emit('error', statusWithLeader(grpc.status.UNAUTHENTICATED, 'the account was deleted'));
    },
  );
  const chat = client([refusing.address]);
  const ends: unknown[] = [];

  chat.subscribe({ includeQueued: false }, () => undefined, (error) => ends.push(error));

  await waitFor('the subscription ends', () => ends.length > 0);
  expect(ends[0]).toMatchObject({ codeName: 'UNAUTHENTICATED', message: 'the account was deleted' });
  expect(refusing.calls.filter((call) => call.method === 'Subscribe')).toHaveLength(1);
});
