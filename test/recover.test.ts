/**
 * Proves the operator's last resort (`replichat recover`, the ForceLeadership RPC): when every member of the
 * recorded in-sync set is gone, the cluster waits (nobody else may lead: they may lack acknowledged writes),
 * `recover --trust N` without --yes changes nothing, and with --yes replica N leads alone and takes writes.
 * Real processes on loopback, a real etcd, SIGKILL, the real CLI.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LoopbackCluster, runCli } from './support/cli-processes.js';

const ADMIN_TOKEN = 'recover-test-admin-token-0123456789';
const PASSWORD = 'correct horse battery staple';
let directory: string;
let cluster: LoopbackCluster;
let adminTokenFile: string;

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-recover-'));
  adminTokenFile = join(directory, 'admin-token');
  writeFileSync(adminTokenFile, `${ADMIN_TOKEN}\n`, { mode: 0o600 });
  cluster = await LoopbackCluster.start(directory, 2, ['--admin-token-file', adminTokenFile]);
}, 120_000);

afterAll(async () => {
  await cluster?.killAll();
  rmSync(directory, { recursive: true, force: true });
});

function cli(args: readonly string[], input?: string) {
  return runCli(args, {
    env: {
      REPLICHAT_SERVERS: cluster.addresses.join(','),
      REPLICHAT_INSECURE: '1',
      REPLICHAT_SESSION_FILE: join(directory, 'session.json'),
      REPLICHAT_ADMIN_TOKEN_FILE: adminTokenFile,
    },
    ...(input === undefined ? {} : { input }),
  });
}

/** Polls `probe` until it gives a value, failing after `timeoutMs`. */
async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const giveUpAt = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function status(ordinal: number): Promise<Record<string, unknown> | undefined> {
  const result = await cli(['--json', '--servers', cluster.addresses[ordinal]!, 'status']);
  try {
    const parsed = JSON.parse(result.stdout) as { servers?: { status?: Record<string, unknown> }[] };
    return parsed.servers?.[0]?.status;
  } catch {
    return undefined;
  }
}

test('with the only in-sync replica gone, recover --trust names the survivor leader, and nothing before --yes', async () => {
  // Both in sync first, then replica 1 dies: the leader (0) drops it and acknowledges alone.
  await waitFor('both replicas in sync', async () => {
    const leader = await status(0);
    return Array.isArray(leader?.inSync) && (leader.inSync as number[]).length === 2 ? true : undefined;
  }, 60_000);
  await cluster.kill(1);
  await waitFor('replica 1 out of the in-sync set', async () => {
    const leader = await status(0);
    return Array.isArray(leader?.inSync) && (leader.inSync as number[]).join(',') === '0' ? true : undefined;
  }, 30_000);
  const registered = await cli(['register', 'alice', '--password-stdin'], `${PASSWORD}\n`);
  expect(registered.code).toBe(0);

  // Now 0 is gone for good and 1 comes back: it must not lead by itself.
  await cluster.kill(0);
  await cluster.startReplica(1, { awaitReady: false });
  const waiting = await waitFor('replica 1 says why it waits', async () => {
    const survivor = await status(1);
    return typeof survivor?.waitingReason === 'string' && survivor.waitingReason.includes('in-sync set') ? survivor : undefined;
  }, 30_000);
  expect(waiting.role).toBe('follower');

  const dryRun = await cli(['recover', '--trust', '1']);
  expect(dryRun.code).toBe(0);
  expect(dryRun.stdout).toContain('Nothing was changed');
  expect((await status(1))?.role).toBe('follower');

  const forced = await cli(['recover', '--trust', '1', '--yes']);
  if (forced.code !== 0) throw new Error(`recover failed: ${forced.stdout} ${forced.stderr}`);
  expect(forced.code).toBe(0);
  const leading = await waitFor('replica 1 leads', async () => {
    const survivor = await status(1);
    return survivor?.role === 'leader' ? survivor : undefined;
  }, 30_000);
  expect(leading.inSync).toEqual([1]);
  // It takes writes again: a new account on the recovered cluster.
  const afterRecovery = await cli(['--servers', cluster.addresses[1]!, 'register', 'bob', '--password-stdin'], `${PASSWORD}\n`);
  expect(afterRecovery.code).toBe(0);
}, 180_000);
