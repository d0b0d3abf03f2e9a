/**
 * ChatClient against servers found by name, with every lookup answered by a DNS server in this test
 * (support/fake-dns-server.ts) through the C library's resolver, as in a pod or a container. The client
 * runs in a child process of its own (a mount namespace whose /etc/resolv.conf names that server), from
 * dist/, and talks to fake ChatService servers in this process (support/fake-chat-server.ts). Proves that:
 *
 *   a. a server that comes back at a new address under the same name (a replaced pod or container) is
 *      reached by the same long-lived client's next call, within its retry budget. grpc-js looks a name up
 *      again at most every 30 s unless told otherwise, and the containers' rolling update lost a send to it;
 *   b. when every lookup takes longer than one attempt's deadline (a DNS server that stalls after a
 *      container is removed, and a dead server's name that is never answered), a call still succeeds
 *      within its budget, because the client looks up every server's name at once instead of one after
 *      another as its attempts run out of time (the containers' SIGKILL test failed that way).
 *
 * Root is needed (port 53, unshare); without it the tests fail, never skip.
 */
import { type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { type FakeServer, startFakeChatServer, wireMessage } from './support/fake-chat-server.js';
import { type FakeDnsServer, startFakeDnsServer } from './support/fake-dns-server.js';

const CHAT_CLIENT_URL = new URL('../dist/cli/chat-client.js', import.meta.url).href;
/** Loopback addresses of this run's own (127/8 is all local on Linux), so that parallel runs never collide. */
const NETWORK = `127.53.${(process.pid % 250) + 1}`;
const DNS_ADDRESS = `${NETWORK}.53`;
const FIRST_HOST = `${NETWORK}.2`;
const SECOND_HOST = `${NETWORK}.3`;
/** How long the child may take to start and answer one command, beyond the client's own retry budget. */
const CHILD_SLACK_MS = 20_000;

/**
 * The client process: one ChatClient for its whole life, as the interactive chat and the rolling-update
 * writer keep one. Each line `send` on stdin sends a message; each result is one JSON line on stdout.
 */
const CLIENT_SOURCE = `
const { ChatClient } = await import(process.env.CHAT_CLIENT_URL);
const client = new ChatClient({
  servers: JSON.parse(process.env.SERVERS),
  tls: 'insecure',
  sessionToken: 'token',
  deadlineMs: Number(process.env.DEADLINE_MS),
  retryBudgetMs: Number(process.env.RETRY_BUDGET_MS),
});
const { createInterface } = await import('node:readline');
for await (const line of createInterface({ input: process.stdin })) {
  if (line !== 'send') continue;
  const startedAtMs = Date.now();
  try {
    const message = await client.sendMessage('bob', 'hi');
    console.log(JSON.stringify({ ok: true, id: message.id, elapsedMs: Date.now() - startedAtMs }));
  } catch (error) {
    console.log(JSON.stringify({ ok: false, error: error.message, elapsedMs: Date.now() - startedAtMs }));
  }
}
client.close();
`;

type SendResult = { readonly ok: true; readonly id: string; readonly elapsedMs: number } | { readonly ok: false; readonly error: string; readonly elapsedMs: number };

class ClientProcess {
  private readonly child: ChildProcess;
  private readonly results: SendResult[] = [];
  private readonly waiters: (() => void)[] = [];
  private stderr = '';

  constructor(dns: FakeDnsServer, servers: readonly string[], deadlineMs: number, retryBudgetMs: number) {
    this.child = dns.spawnNode(['--input-type=module', '-e', CLIENT_SOURCE], {
      ...process.env,
      CHAT_CLIENT_URL,
      SERVERS: JSON.stringify(servers),
      DEADLINE_MS: String(deadlineMs),
      RETRY_BUDGET_MS: String(retryBudgetMs),
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.results.push(JSON.parse(line) as SendResult);
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.child.once('close', () => {
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  /** Sends one message through the client and resolves with its result. */
  async send(timeoutMs: number): Promise<SendResult> {
    const index = this.results.length;
    this.child.stdin!.write('send\n');
    const giveUpAtMs = Date.now() + timeoutMs;
    while (this.results.length <= index) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`the client process exited: ${this.stderr}`);
      if (Date.now() >= giveUpAtMs) throw new Error(`no result from the client process within ${timeoutMs} ms: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, giveUpAtMs - Date.now());
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.results[index]!;
  }

  stop(): void {
    this.child.stdin!.end();
    this.child.kill('SIGKILL');
  }
}

const sent = { response: { message: wireMessage('00000000-0000-4000-8000-000000000001', 'hi') } };
let dns: FakeDnsServer;
const servers: FakeServer[] = [];
const clients: ClientProcess[] = [];

beforeAll(async () => {
  dns = await startFakeDnsServer(DNS_ADDRESS);
});

afterAll(async () => {
  await dns.stop();
});

afterEach(() => {
  for (const client of clients.splice(0)) client.stop();
  for (const server of servers.splice(0)) server.stop();
});

async function fake(host: string, port?: number): Promise<FakeServer> {
  const server = await startFakeChatServer(() => sent, { host, port });
  servers.push(server);
  return server;
}

function clientProcess(servers: readonly string[], deadlineMs: number, retryBudgetMs: number): ClientProcess {
  const client = new ClientProcess(dns, servers, deadlineMs, retryBudgetMs);
  clients.push(client);
  return client;
}

test('a: a server back at a new address under the same name is reached by the next call of the same client', async () => {
  const name = 'moving.replichat.test';
  dns.answer(name, { address: FIRST_HOST });
  const first = await fake(FIRST_HOST);
  const retryBudgetMs = 8_000;
  const client = clientProcess([`${name}:${first.port}`], 2_000, retryBudgetMs);
  expect(await client.send(retryBudgetMs + CHILD_SLACK_MS)).toMatchObject({ ok: true });
  expect(first.calls.map((call) => call.method)).toEqual(['SendMessage']);

  // The pod is replaced: the old address refuses connections, the name now points at the new one.
  first.stop();
  dns.answer(name, { address: SECOND_HOST });
  const second = await fake(SECOND_HOST, first.port);

  expect(await client.send(retryBudgetMs + CHILD_SLACK_MS)).toMatchObject({ ok: true });
  expect(second.calls.map((call) => call.method)).toEqual(['SendMessage']);
  expect(first.calls).toHaveLength(1);
}, 60_000);

test('b: when every lookup outlasts an attempt, a call still succeeds because all names are looked up at once', async () => {
  // The old leader's name is never answered; the new leader's takes longer than one attempt's deadline.
  dns.answer('gone.replichat.test', 'silent');
  dns.answer('leader.replichat.test', { address: FIRST_HOST, delayMs: 4_000 });
  const leader = await fake(FIRST_HOST);
  const deadlineMs = 3_000;
  const retryBudgetMs = 7_000;
  // The dead server first, as a session file that remembered the old leader would have it.
  const client = clientProcess([`gone.replichat.test:${leader.port}`, `leader.replichat.test:${leader.port}`], deadlineMs, retryBudgetMs);

  const result = await client.send(retryBudgetMs + CHILD_SLACK_MS);

  expect(result).toMatchObject({ ok: true });
  expect(leader.calls.map((call) => call.method)).toEqual(['SendMessage']);
}, 60_000);
