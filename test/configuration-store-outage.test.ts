/**
 * Proves what a replica promises while its configuration store is unreachable: steady-state writes go
 * on with the current in-sync set (only reconfiguration waits), and `/readyz`, the replica status and the
 * metric `replichat_configuration_store_reachable` say that the store is unreachable, then that it is back.
 * A real server process and a real etcd of its own, frozen with SIGSTOP (a store that answers nothing).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEtcd, type EtcdProcess } from './support/etcd-process.js';
import { RawChatClient } from './support/grpc-client.js';
import { type ServerProcess, startServer } from './support/processes.js';

const PASSWORD = 'correct horse battery staple';
let directory: string;
let etcd: EtcdProcess;
let server: ServerProcess;
let client: RawChatClient;

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-store-outage-'));
  etcd = await startEtcd();
  server = await startServer({
    dataDirectory: join(directory, 'data'),
    extraArguments: ['--configuration-store', 'etcd', '--etcd-endpoints', etcd.endpoint, '--store-timeout-ms', '500'],
  });
  client = new RawChatClient(server.address);
}, 60_000);

afterAll(async () => {
  client?.close();
  await server?.stop();
  await etcd?.stop();
  rmSync(directory, { recursive: true, force: true });
});

async function readyz(): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${server.metricsPort}/readyz`);
  return { status: response.status, body: await response.text() };
}

async function storeReachableMetric(): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text();
  const line = text.split('\n').find((candidate) => candidate.startsWith('replichat_configuration_store_reachable'));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const giveUpAt = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test('with the store frozen, writes are acknowledged and every view says the store is unreachable; then it recovers', async () => {
  expect((await readyz()).body).not.toContain('unreachable');
  await etcd.pause();
  try {
    const warning = await until('/readyz warns', async () => {
      const answer = await readyz();
      return answer.body.includes('configuration store is unreachable') ? answer : undefined;
    });
    // Still ready: the leader serves; the warning says what cannot happen meanwhile.
    expect(warning.status).toBe(200);
    expect(await storeReachableMetric()).toBe(0);
    const status = await client.ok('GetReplicaStatus', {});
    expect(status.configurationStoreReachable).toBe(false);
    // A write with the in-sync set as it is ({0}) needs no store.
    const created = await client.ok('CreateAccount', { requestId: 'create-during-outage', username: 'alice', password: PASSWORD });
    expect(created.username).toBe('alice');
  } finally {
    etcd.resume();
  }
  await until('the store is reachable again', async () => ((await storeReachableMetric()) === 1 ? true : undefined));
  expect((await readyz()).body).not.toContain('unreachable');
  const status = await client.ok('GetReplicaStatus', {});
  expect(status.configurationStoreReachable).toBe(true);
}, 90_000);
