/**
 * `replichat status` end to end: a real single-replica server (which leads) and an address where nothing
 * listens, each asked directly. The live one must show as the in-sync leader and the dead one as an error
 * row, with exit code 3 (degraded: a listed server is down) and a warning on stderr; with only the dead
 * address the command exits 4 (no leader) and says why on stderr, while --json still prints exactly one
 * document. The rows and verdicts of a larger cluster (lag, in-sync membership, not fully redundant, an
 * unreachable configuration store, the reason there is no leader) are checked on made-up answers, which a
 * single real replica cannot produce; test/cli-operations.test.ts checks the exit codes on a real cluster.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ReplicaStatus } from '../src/cli/chat-types.js';
import { describeCluster, formatCluster, type ServerAnswer } from '../src/cli/status-command.js';
import { type CliResult, runCli, spawnCli } from './support/cli-processes.js';
import { freePort, type ServerProcess, startServer } from './support/processes.js';

interface StatusDocument {
  servers: ({ address: string; status: ReplicaStatus } | { address: string; error: { code: string; message: string } })[];
  leader: { ordinal: number; address: string | null; epoch: number; inSync: number[]; answered: boolean } | null;
  reason?: string;
}

let directory: string;
let server: ServerProcess | undefined;
let deadAddress: string;

/** Runs `status` against `servers` in plaintext, with a session file that does not exist. */
function status(servers: readonly string[], extraArguments: readonly string[] = []): Promise<CliResult> {
  return runCli(['status', ...extraArguments], {
    env: {
      REPLICHAT_SERVERS: servers.join(','),
      REPLICHAT_INSECURE: '1',
      REPLICHAT_SESSION_FILE: join(directory, 'no-session.json'),
    },
  });
}

/** The table's cells by row, split on the runs of spaces that separate the columns. */
function tableRows(stdout: string): string[][] {
  const lines = stdout.split('\n');
  return lines.slice(0, lines.indexOf('')).map((line) => line.split(/ {2,}/));
}

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-status-'));
  server = await startServer({ dataDirectory: join(directory, 'data') });
  // A port that was free a moment ago has nothing listening on it, so connecting is refused at once.
  deadAddress = `127.0.0.1:${await freePort()}`;
});

afterAll(async () => {
  if (server !== undefined) expect(await server.stop()).toBe(0);
  rmSync(directory, { recursive: true, force: true });
});

test('--json shows the live replica as the in-sync leader and the dead address as an error', async () => {
  const result = await status([server!.address, deadAddress], ['--json']);
  expect(result.code).toBe(3);
  const document = JSON.parse(result.stdout) as StatusDocument;
  expect(document.servers).toHaveLength(2);
  const [live, dead] = document.servers;
  expect(live).toMatchObject({ address: server!.address, status: { ordinal: 0, role: 'leader', inSync: [0], leaderOrdinal: 0 } });
  expect(dead).toMatchObject({ address: deadAddress, error: { code: 'UNAVAILABLE' } });
  expect(document.leader).toMatchObject({ ordinal: 0, address: server!.address, inSync: [0], answered: true });
  expect(document.reason).toBeUndefined();
  expect(document).toMatchObject({ health: 'degraded', warnings: [expect.stringContaining(`the replica at ${deadAddress} did not answer`)] });

  // Alone, the single replica is a healthy cluster.
  const alone = await status([server!.address], ['--json']);
  expect(alone.code).toBe(0);
  expect(JSON.parse(alone.stdout)).toMatchObject({ health: 'healthy', warnings: [] });
});

test('the table has a leader row, an error row and the leader summary; the warning goes to stderr', async () => {
  const result = await status([server!.address, deadAddress]);
  expect(result.code).toBe(3);
  expect(result.stderr).toContain(`replichat: warning: the replica at ${deadAddress} did not answer`);
  const [header, live, dead] = tableRows(result.stdout);
  expect(header).toEqual(['ADDRESS', 'ORDINAL', 'ROLE', 'EPOCH', 'LAST INDEX', 'COMMIT INDEX', 'LAG', 'IN-SYNC', 'NOTE']);
  // The leader's row has no lag, so its LAG cell is blank and the split yields one cell fewer.
  expect(live).toEqual([server!.address, '0', 'leader', expect.stringMatching(/^\d+$/), expect.stringMatching(/^\d+$/), expect.stringMatching(/^\d+$/), 'yes']);
  expect(dead).toEqual([deadAddress, '-', '-', '-', '-', '-', '-', '-', `unreachable: UNAVAILABLE (connection refused by ${deadAddress} (no server listens there))`]);
  expect(result.stdout).toMatch(new RegExp(`\\nleader: replica 0 \\(${server!.address}\\), epoch \\d+, in-sync set \\{0\\}\\n$`));
});

test('with no server answering, status exits 4 and gives one reason line', async () => {
  const text = await status([deadAddress]);
  expect(text.code).toBe(4);
  expect(text.stdout).toContain('unreachable: UNAVAILABLE');
  expect(text.stderr).toContain('replichat: no leader: the server did not answer\n');

  // The document still describes every server, and it stays the only thing on stdout.
  const json = await status([deadAddress], ['--json']);
  expect(json.code).toBe(4);
  const document = JSON.parse(json.stdout) as StatusDocument;
  expect(document).toMatchObject({ servers: [{ address: deadAddress, error: { code: 'UNAVAILABLE' } }], leader: null });
  expect(document.reason).toBe('no leader: the server did not answer');
  expect(json.stderr).toContain('replichat: no leader: the server did not answer\n');
});

test('status --help describes the command, what an epoch is, and the exit codes', async () => {
  const result = await runCli(['status', '--help']);
  expect(result.code).toBe(0);
  expect(result.stdout).toContain("show every replica's role");
  expect(result.stdout).toContain('An epoch is a leadership term');
  expect(result.stdout).toMatch(/3 +degraded/);
  expect(result.stdout).toMatch(/4 +no leader/);
  expect(result.stdout).toContain('With --json');
});

test('--watch asks again every interval until SIGTERM, one JSON document per round', async () => {
  const watching = spawnCli(['--json', 'status', '--watch', '--interval', '1'], {
    env: { REPLICHAT_SERVERS: server!.address, REPLICHAT_INSECURE: '1', REPLICHAT_SESSION_FILE: join(directory, 'no-session.json') },
  });
  let rounds = 0;
  await watching.waitForLine(() => (rounds += 1) >= 2, 15_000);
  const result = await watching.stop('SIGTERM');
  expect(result.code).toBe(0);
  const documents = result.stdout.trim().split('\n').map((line) => JSON.parse(line) as { atMs: number; health: string });
  expect(documents.length).toBeGreaterThanOrEqual(2);
  expect(documents.every((document) => document.health === 'healthy')).toBe(true);
  expect(documents[1]!.atMs).toBeGreaterThan(documents[0]!.atMs);
});

/** A replica's status with ordinary values, changed by `fields`. */
function replica(fields: Partial<ReplicaStatus> & Pick<ReplicaStatus, 'ordinal'>): ReplicaStatus {
  return {
    role: 'follower',
    epoch: 2049,
    leaderOrdinal: 1,
    leaderAddress: '10.0.0.2:50051',
    lastIndex: 100,
    lastEpoch: 2049,
    commitIndex: 100,
    members: [0, 1, 2],
    inSync: [0, 1, 2],
    leaseValid: true,
    snapshotting: false,
    waitingReason: '',
    followers: [],
    clientAddress: '',
    snapshotSeconds: 0,
    snapshotBytesReceived: 0,
    snapshotBytesTotal: 0,
    configurationStore: '',
    configurationStoreReachable: null,
    ...fields,
  };
}

test('followers show their lag behind the leader and whether the leader counts them in sync', () => {
  const answers: ServerAnswer[] = [
    { address: '10.0.0.1:50051', status: replica({ ordinal: 0, lastIndex: 90, snapshotting: true, snapshotSeconds: 12.4 }) },
    { address: '10.0.0.2:50051', status: replica({ ordinal: 1, role: 'leader', lastIndex: 120, inSync: [1, 2] }) },
    { address: '10.0.0.3:50051', status: replica({ ordinal: 2, lastIndex: 117 }) },
  ];
  const view = describeCluster(answers);
  expect(view.failure).toBeUndefined();
  // Replica 0 is outside the in-sync set {1, 2}: one more failure is all the cluster survives.
  expect(view.health).toBe('degraded');
  expect(view.warnings).toEqual([
    'not fully redundant: the in-sync set is {1, 2} of members {0, 1, 2}, so the cluster survives 1 failure instead of 2 (replica 0: catching up)',
  ]);
  const lines = formatCluster(view);
  expect(lines.map((line) => line.split(/ {2,}/))).toEqual([
    ['ADDRESS', 'ORDINAL', 'ROLE', 'EPOCH', 'LAST INDEX', 'COMMIT INDEX', 'LAG', 'IN-SYNC', 'NOTE'],
    ['10.0.0.1:50051', '0', 'follower', '2049', '90', '100', '30', 'no', 'snapshotting (12s)'],
    ['10.0.0.2:50051', '1', 'leader', '2049', '120', '100', 'yes'],
    ['10.0.0.3:50051', '2', 'follower', '2049', '117', '100', '3', 'yes'],
    [''],
    ['leader: replica 1 (10.0.0.2:50051), epoch 2049, in-sync set {1, 2}'],
  ]);
});

test('without a leader, rows fall back on their own configuration and the summary says what is awaited', () => {
  const waiting = 'waiting for replica 2 of the newest in-sync set {1, 2}: only they may hold the newest acknowledged writes';
  const answers: ServerAnswer[] = [
    { address: '10.0.0.1:50051', status: replica({ ordinal: 0, leaderOrdinal: null, lastIndex: 80, lastEpoch: 1024, inSync: [0, 1, 2], waitingReason: 'this replica is not eligible to lead: it may lack acknowledged writes' }) },
    { address: '10.0.0.2:50051', status: replica({ ordinal: 1, leaderOrdinal: null, inSync: [1, 2], waitingReason: waiting }) },
    { address: '10.0.0.3:50051', error: { code: 'DEADLINE_EXCEEDED', message: 'Deadline exceeded' } },
  ];
  const view = describeCluster(answers);
  expect(view.leader).toBeNull();
  expect(view.health).toBe('no-leader');
  expect(view.failure).toBe(`no leader: ${waiting} (reported by replica 1)`);
  const rows = formatCluster(view).map((line) => line.split(/ {2,}/));
  expect(rows[1]).toEqual(['10.0.0.1:50051', '0', 'follower', '2049', '80', '100', '-', 'yes', expect.stringContaining('not eligible')]);
  expect(rows[2]).toEqual(['10.0.0.2:50051', '1', 'follower', '2049', '100', '100', '-', 'yes', waiting]);
  expect(rows[3]).toEqual(['10.0.0.3:50051', '-', '-', '-', '-', '-', '-', '-', 'unreachable: DEADLINE_EXCEEDED (no answer within 2 s)']);
});

test('a leader that only followers name is known, but its row has no status and lag is unknown', () => {
  const answers: ServerAnswer[] = [
    { address: '10.0.0.1:50051', status: replica({ ordinal: 0 }) },
    { address: '10.0.0.2:50051', error: { code: 'UNAVAILABLE', message: 'No connection established. Last error: Error: connect ECONNREFUSED 10.0.0.2:50051. Resolution note: ' } },
  ];
  const view = describeCluster(answers);
  expect(view.failure).toBeUndefined();
  expect(view.leader).toEqual({ ordinal: 1, address: '10.0.0.2:50051', epoch: 2049, inSync: [0, 1, 2], answered: false });
  const lines = formatCluster(view);
  expect(lines[1]!.split(/ {2,}/)).toEqual(['10.0.0.1:50051', '0', 'follower', '2049', '100', '100', '-', 'yes']);
  expect(lines[2]).toMatch(/unreachable: UNAVAILABLE \(connect ECONNREFUSED 10\.0\.0\.2:50051\)$/);
  expect(lines.at(-1)).toBe('leader: replica 1 (10.0.0.2:50051, did not answer), epoch 2049, in-sync set {0, 1, 2}');
});

test('a fully in-sync cluster is healthy, one in-sync replica left is a warning, and so is an unreachable store', () => {
  const leader = (fields: Partial<ReplicaStatus> = {}): ReplicaStatus => replica({ ordinal: 1, role: 'leader', ...fields });
  const healthy = describeCluster([
    { address: '10.0.0.1:50051', status: replica({ ordinal: 0 }) },
    { address: '10.0.0.2:50051', status: leader() },
    { address: '10.0.0.3:50051', status: replica({ ordinal: 2 }) },
  ]);
  expect(healthy).toMatchObject({ health: 'healthy', warnings: [] });

  const alone = describeCluster([{ address: '10.0.0.2:50051', status: leader({ inSync: [1] }) }]);
  expect(alone.health).toBe('degraded');
  expect(alone.warnings[0]).toContain('losing replica 1 would stop writes');
  // Members that were not asked still get a row, so that none goes unmentioned.
  expect(formatCluster(alone).filter((line) => line.startsWith('(not in --servers)'))).toHaveLength(2);

  const storeDown = describeCluster([
    { address: '10.0.0.1:50051', status: replica({ ordinal: 0, configurationStore: 'etcd http://10.0.0.9:2379', configurationStoreReachable: false }) },
    { address: '10.0.0.2:50051', status: leader({ configurationStore: 'etcd http://10.0.0.9:2379', configurationStoreReachable: true }) },
    { address: '10.0.0.3:50051', status: replica({ ordinal: 2 }) },
  ]);
  expect(storeDown.health).toBe('degraded');
  expect(storeDown.warnings).toEqual([
    'replica 0 cannot reach the configuration store (etcd http://10.0.0.9:2379): it cannot take over or change the in-sync set',
  ]);
});
