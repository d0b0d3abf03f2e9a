/**
 * ChatClient's failover rules, against fake ChatService servers in this process whose answers the test
 * chooses: a follower that names the leader, a server that is down, one that hangs, one that refuses for
 * good. Proves that a write keeps its request id across servers, that only UNAVAILABLE-like failures are
 * retried, that the retry budget bounds a call, and that a subscription moves to the leader after losing its
 * stream and hands each message to the caller once.
 */
import * as grpc from '@grpc/grpc-js';
import { CHAT_SERVICE_NAME, loadChatPackageDefinition } from '../src/api/proto.js';
import { LEADER_METADATA_KEY } from '../src/api/status-mapping.js';
import { ChatClient, ChatClientError, type ChatMessage } from '../src/cli/chat-client.js';
import { waitFor } from './support/cli-processes.js';
import { freePort } from './support/processes.js';

type Wire = Record<string, unknown>;

interface RecordedCall {
  readonly method: string;
  readonly request: Wire;
  readonly authorization: unknown;
}

/** What a fake answers: a response, a status, or nothing at all (a hung server). */
type UnaryAnswer = { response: Wire } | { status: grpc.status; details: string; leader?: string } | 'hang';
type StreamAnswer = (call: grpc.ServerWritableStream<Wire, Wire>) => void;

interface FakeServer {
  readonly address: string;
  readonly calls: RecordedCall[];
  stop(): void;
}

const packageDefinition = loadChatPackageDefinition();
const servers: FakeServer[] = [];
const clients: ChatClient[] = [];

function statusWithLeader(status: grpc.status, details: string, leader?: string): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  if (leader !== undefined) metadata.set(LEADER_METADATA_KEY, leader);
  return { code: status, details, metadata };
}

/** Starts a fake whose unary methods answer with `unary(method, request, callNumber)` and whose Subscribe runs `subscribe`. */
async function startFake(
  unary: (method: string, request: Wire, callNumber: number) => UnaryAnswer,
  subscribe?: StreamAnswer,
): Promise<FakeServer> {
  const calls: RecordedCall[] = [];
  const service = packageDefinition[CHAT_SERVICE_NAME] as grpc.ServiceDefinition;
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of Object.keys(service)) {
    if (method === 'Subscribe') {
      handlers[method] = (call: grpc.ServerWritableStream<Wire, Wire>) => {
        calls.push({ method, request: call.request, authorization: call.metadata.get('authorization')[0] });
        subscribe?.(call);
      };
      continue;
    }
    handlers[method] = (call: grpc.ServerUnaryCall<Wire, Wire>, callback: grpc.sendUnaryData<Wire>) => {
      calls.push({ method, request: call.request, authorization: call.metadata.get('authorization')[0] });
      const answer = unary(method, call.request, calls.filter((recorded) => recorded.method === method).length);
      if (answer === 'hang') return;
      if ('response' in answer) callback(null, answer.response);
      else callback(statusWithLeader(answer.status, answer.details, answer.leader));
    };
  }
  const server = new grpc.Server();
  server.addService(service, handlers);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, boundPort) =>
      error ? reject(error) : resolve(boundPort),
    ),
  );
  const fake = { address: `127.0.0.1:${port}`, calls, stop: () => server.forceShutdown() };
  servers.push(fake);
  return fake;
}

function client(addresses: string[], options: Partial<ConstructorParameters<typeof ChatClient>[0]> = {}): ChatClient {
  const made = new ChatClient({ servers: addresses, tls: 'insecure', ...options });
  clients.push(made);
  return made;
}

function message(id: string, body = id): Wire {
  return { id, sender: 'alice', recipient: 'bob', body, sentAtMs: 1, delivered: false, instant: true };
}

const sent = { response: { message: message('00000000-0000-4000-8000-000000000001', 'hi') } };

afterEach(() => {
  for (const made of clients.splice(0)) made.close();
  for (const fake of servers.splice(0)) fake.stop();
});

test('a write follows the leader a follower names, with the same request id and the bearer token', async () => {
  const leader = await startFake(() => sent);
  const follower = await startFake(() => ({ status: grpc.status.UNAVAILABLE, details: 'not the leader', leader: leader.address }));
  const chat = client([follower.address], { sessionToken: 'token-1' });

  expect((await chat.sendMessage('bob', 'hi')).body).toBe('hi');

  const requestId = follower.calls[0]!.request.requestId;
  expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
  expect(leader.calls.map((call) => [call.method, call.request.requestId, call.authorization])).toEqual([
    ['SendMessage', requestId, 'Bearer token-1'],
  ]);
  // The next call, and the next process through the session file, start with the leader.
  expect(chat.preferredServers()[0]).toBe(leader.address);
  await chat.readMessages();
  expect(follower.calls).toHaveLength(1);
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
      call.write(message('m2'));
      call.write(message('m3'));
    },
  );
  const follower = await startFake(
    () => sent,
    (call) => {
      call.write(message('m1'));
      call.write(message('m2'));
      call.emit('error', statusWithLeader(grpc.status.UNAVAILABLE, 'stepping down', leader.address));
    },
  );
  const chat = client([follower.address], { sessionToken: 'token-2' });
  const received: ChatMessage[] = [];
  const ends: unknown[] = [];
  const subscription = chat.subscribe({ includeQueued: false }, (incoming) => received.push(incoming), (error) => ends.push(error));

  await waitFor('m3 arrives', () => received.some((incoming) => incoming.id === 'm3'));
  expect(received.map((incoming) => incoming.id)).toEqual(['m1', 'm2', 'm3']);
  expect(follower.calls[0]).toMatchObject({ request: { includeQueued: false }, authorization: 'Bearer token-2' });
  expect(leader.calls[0]).toMatchObject({ request: { includeQueued: true }, authorization: 'Bearer token-2' });

  subscription.close();
  expect(ends).toEqual([undefined]);
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
