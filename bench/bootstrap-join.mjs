// Measures how long a new, empty replica takes to join a replica that already holds N messages: from the
// joiner's start until the leader reports it in sync (it bootstraps from a snapshot, then catches up), with
// the joiner's peak memory and the database's size. Real processes on loopback, plaintext clients, mutual
// TLS between peers, an etcd of its own as the configuration store (bench/support/server-flags.mjs), free
// ports.
//
//   npm run build && node bench/bootstrap-join.mjs [messages=100000] [bodyBytes=100]
//
// Replica 0's database is built offline (it would take far too long to send N messages): initializeCluster,
// a configuration entry (members 0 and 1, in-sync set {0}), accounts alice and bob, then N messages from alice
// to bob, all in epoch 1 and in one transaction, as the protocol would have logged them. It is marked
// restored_from_backup, as `replichat restore` marks a backup, so that replica 0, finding no record in the
// configuration store, creates the cluster on it (leader of epoch 2, alone in the in-sync set); replica 1
// then starts empty.
//
// Prints one JSON line: {messages, databaseBytes, bootstrapSeconds, joinerPeakRssMegabytes, ...}, where
// databaseBytes is the seeded file, bootstrapSeconds runs from spawning replica 1 until the leader's
// GetReplicaStatus lists it in the in-sync set, and joinerPeakRssMegabytes is replica 1's VmHWM (from
// /proc/<pid>/status) read just before it is stopped. The other fields explain those: caughtUpSeconds (the
// leader saw the joiner hold its whole log), snapshotInstallSeconds and snapshotsInstalled (from the joiner's
// log), seedSeconds, leaderPeakRssMegabytes. No write arrives during the measurement, so if the joiner has
// caught up but is still not in sync 20 s later (readmissionStalled: true; see the comment in the wait) one
// message is sent to let re-admission finish, and bootstrapSeconds includes the stall.
// BENCH_KEEP=1 keeps the data directory and the replicas' logs (replica-i.log) for reading afterwards.
import * as grpc from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { hashPassword } from '../dist/api/password-hashing.js';
import { chatServiceClientConstructor } from '../dist/api/proto.js';
import { ReplicaStore } from '../dist/storage/replica-store.js';
import { startBenchSetup } from './support/server-flags.mjs';

const messages = Number(process.argv[2] ?? 100_000);
const bodyBytes = Number(process.argv[3] ?? 100);
if (!Number.isSafeInteger(messages) || messages < 1 || !Number.isSafeInteger(bodyBytes) || bodyBytes < 1) {
  console.error('usage: node bench/bootstrap-join.mjs [messages] [bodyBytes]');
  process.exit(2);
}
const CLI_PATH = new URL('../dist/cli/main.js', import.meta.url).pathname;
const EPOCH = 1;
/** How long either phase may take before the benchmark gives up: a large database takes minutes. */
const PHASE_TIMEOUT_MS = 30 * 60 * 1000;
/** How long the joiner may hold the leader's whole log without being taken in sync before it counts as stalled. */
const STALL_MS = 20_000;
const ALICE_PASSWORD = 'password-for-alice';

/** A port that was free a moment ago. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function log(text) {
  process.stderr.write(`[bootstrap-join] ${text}\n`);
}

/** A fingerprint as the peer port checks it: 64 hex digits (the API's is a SHA-256 of the arguments). */
const fingerprint = (text) => createHash('sha256').update(text).digest('hex');

/** Builds replica 0's database; see the comment at the top. */
async function seed(path, members) {
  const hashes = { alice: await hashPassword(ALICE_PASSWORD), bob: await hashPassword('password-for-bob') };
  const body = 'x'.repeat(bodyBytes);
  const store = ReplicaStore.open(path);
  // Timestamps never run backwards and end about now, so that the cluster's next ones follow on.
  let timestampMs = Date.now() - messages - 10;
  const next = () => (timestampMs += 1);
  try {
    store.database.transaction(() => {
      store.appendAndApply(EPOCH, { kind: 'initializeCluster', clusterId: 'bench', sessionSecretHex: 'ab'.repeat(32), timestampMs: next() });
      store.appendAndApply(EPOCH, { kind: 'configuration', configuration: { members, inSync: [0] }, timestampMs: next() });
      for (const username of ['alice', 'bob']) {
        store.appendAndApply(EPOCH, {
          kind: 'createAccount', requestId: `seed-account-${username}`, principal: `user:${username}`,
          fingerprint: fingerprint(`seed-account-${username}`), timestampMs: next(), username, passwordHash: hashes[username],
        });
      }
      for (let n = 0; n < messages; n += 1) {
        store.appendAndApply(EPOCH, {
          kind: 'sendMessage', requestId: `seed-message-${n}`, principal: `session:${'0'.repeat(32)}`,
          fingerprint: fingerprint(`seed-message-${n}`), timestampMs: next(), messageId: `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`,
          sender: 'alice', recipient: 'bob', body: `${n} ${body}`.slice(0, bodyBytes), instant: false,
        });
      }
      store.database.prepare("INSERT INTO local_metadata (key, value) VALUES ('restored_from_backup', '1')").run();
    })();
  } finally {
    store.close();
  }
}

/** Starts one replica; its JSON log lines are kept for the snapshot's own timing. */
function startReplica(ordinal, ports, directory) {
  const peers = ports.map((port, index) => `${index}=127.0.0.1:${port.peer}`).join(',');
  const child = spawn(process.execPath, [
    CLI_PATH, 'server', '--ordinal', String(ordinal), '--peers', peers,
    '--data-dir', join(directory, `replica-${ordinal}`),
    '--listen', `127.0.0.1:${ports[ordinal].client}`, '--peer-listen', `127.0.0.1:${ports[ordinal].peer}`,
    '--metrics-listen', '127.0.0.1:0', '--insecure', ...setup.serverFlags(ordinal),
  ], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = [];
  let buffered = '';
  const logFile = createWriteStream(join(directory, `replica-${ordinal}.log`));
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk) => {
    logFile.write(chunk);
    buffered += chunk;
    let newline;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      try {
        lines.push(JSON.parse(buffered.slice(0, newline)));
      } catch {
        // Not a log line.
      }
      buffered = buffered.slice(newline + 1);
    }
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  return { child, lines, exited };
}

const Client = chatServiceClientConstructor();
function replicaStatus(client) {
  return new Promise((resolve) => {
    client.GetReplicaStatus({}, new grpc.Metadata(), { deadline: Date.now() + 1000 }, (error, response) =>
      resolve(error ? undefined : response),
    );
  });
}

/** Logs alice in and sends bob one message through the leader. */
async function nudge(client) {
  const call = (method, request, token) =>
    new Promise((resolve, reject) => {
      const metadata = new grpc.Metadata();
      if (token) metadata.set('authorization', `Bearer ${token}`);
      client[method](request, metadata, { deadline: Date.now() + 10_000 }, (error, response) => (error ? reject(error) : resolve(response)));
    });
  const { sessionToken } = await call('Login', { requestId: 'bench-nudge-login', username: 'alice', password: ALICE_PASSWORD });
  await call('SendMessage', { requestId: 'bench-nudge-send', recipient: 'bob', body: 'nudge' }, sessionToken);
}

/** Polls `condition` every 20 ms until it returns a value; fails after `timeoutMs`. */
async function pollUntil(description, condition, timeoutMs = PHASE_TIMEOUT_MS) {
  const giveUpAt = Date.now() + timeoutMs;
  for (;;) {
    const exited = replicas.find((replica) => replica.child.exitCode !== null || replica.child.signalCode !== null);
    if (exited !== undefined) throw new Error(`a replica exited (${exited.child.exitCode ?? exited.child.signalCode}) before ${description}`);
    const value = await condition();
    if (value) return value;
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting until ${description}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Peak resident memory of a process in MiB, from the kernel's high-water mark. */
function peakRssMegabytes(pid) {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((candidate) => candidate.startsWith('VmHWM:'));
  return Math.round(Number(line.split(/\s+/)[1]) / 1024);
}

const directory = mkdtempSync(join(tmpdir(), 'replichat-bootstrap-'));
const setup = await startBenchSetup(directory, 2);
const replicas = [];
const clients = [];
// Interrupted, the benchmark stops its replicas rather than leaving them running.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const replica of replicas) replica.child.kill('SIGKILL');
    process.exit(130);
  });
}
try {
  const ports = [];
  const taken = new Set();
  const distinctFreePort = async () => {
    for (;;) {
      const port = await freePort();
      if (!taken.has(port)) return taken.add(port), port;
    }
  };
  for (let ordinal = 0; ordinal < 2; ordinal += 1) ports.push({ client: await distinctFreePort(), peer: await distinctFreePort() });
  const members = ports.map((port, ordinal) => ({ ordinal, address: `127.0.0.1:${port.peer}` }));
  const databasePath = join(directory, 'replica-0', 'replichat.sqlite');

  const seedStartedAtMs = performance.now();
  await seed(databasePath, members);
  const seedSeconds = (performance.now() - seedStartedAtMs) / 1000;
  const databaseBytes = statSync(databasePath).size;
  log(`seeded ${messages} messages in ${seedSeconds.toFixed(1)} s: ${(databaseBytes / 2 ** 20).toFixed(1)} MiB`);

  replicas.push(startReplica(0, ports, directory));
  const leaderClient = new Client(`127.0.0.1:${ports[0].client}`, grpc.credentials.createInsecure());
  clients.push(leaderClient);
  const leaderStartedAtMs = performance.now();
  try {
    await pollUntil('replica 0 leads', async () => (await replicaStatus(leaderClient))?.role === 'leader');
  } catch (error) {
    // Today a replica that creates the cluster from a restored database appends a second initializeCluster
    // entry, which the state machine refuses, and exits with 70; its next start leads normally. Until that
    // is fixed, start it once more (this happens before the measured join).
    if (replicas[0].child.exitCode !== 70) throw error;
    log('replica 0 exited with 70 while creating the cluster from its restored database; starting it again');
    replicas[0] = startReplica(0, ports, directory);
    await pollUntil('replica 0 leads', async () => (await replicaStatus(leaderClient))?.role === 'leader');
  }
  const leaderSeconds = (performance.now() - leaderStartedAtMs) / 1000;
  log(`replica 0 leads ${leaderSeconds.toFixed(1)} s after its start`);

  const joinStartedAtMs = performance.now();
  replicas.push(startReplica(1, ports, directory));
  const joinerClient = new Client(`127.0.0.1:${ports[1].client}`, grpc.credentials.createInsecure());
  clients.push(joinerClient);
  let lastReportAtMs = performance.now();
  let caughtUpAtMs;
  let nudgedAtMs;
  await pollUntil('the leader reports replica 1 in sync', async () => {
    const leader = await replicaStatus(leaderClient);
    if (leader?.inSync?.includes(1)) return true;
    const follower = leader?.followers?.find((candidate) => candidate.ordinal === 1);
    if (leader !== undefined && follower?.matchIndex === leader.lastIndex) caughtUpAtMs ??= performance.now();
    if (caughtUpAtMs !== undefined && nudgedAtMs === undefined && performance.now() - caughtUpAtMs > STALL_MS) {
      // The joiner holds the whole log but was not taken into the in-sync set: the leader asks for its
      // digest once per index, so a lost request or answer is never repeated while no write arrives. One
      // write moves the index on, so that the figures can be completed; the output says it happened.
      nudgedAtMs = performance.now();
      log(`the joiner caught up ${((caughtUpAtMs - joinStartedAtMs) / 1000).toFixed(1)} s after its start but is not in sync ` +
        `${STALL_MS / 1000} s later; sending one message to move the leader's log on`);
      await nudge(leaderClient);
    }
    if (performance.now() - lastReportAtMs > 10_000) {
      // A long run says where it is, so that a stall is told apart from slowness.
      lastReportAtMs = performance.now();
      const joiner = await replicaStatus(joinerClient);
      log(
        `${((lastReportAtMs - joinStartedAtMs) / 1000).toFixed(0)} s: leader last index ${leader?.lastIndex}, ` +
          `joiner match index ${follower?.matchIndex}, joiner snapshotting ${joiner?.snapshotting} ` +
          `(${joiner?.snapshotBytesReceived} of ${joiner?.snapshotBytesTotal} bytes)`,
      );
    }
    return false;
  });
  const bootstrapSeconds = (performance.now() - joinStartedAtMs) / 1000;
  const joinerPeakRssMegabytes = peakRssMegabytes(replicas[1].child.pid);
  const leaderPeakRssMegabytes = peakRssMegabytes(replicas[0].child.pid);
  const installed = replicas[1].lines.find((line) => line.msg === 'installed a snapshot');
  const snapshots = replicas[1].lines.filter((line) => line.msg === 'installed a snapshot').length;
  console.log(
    JSON.stringify({
      messages,
      databaseBytes,
      bootstrapSeconds: Number(bootstrapSeconds.toFixed(2)),
      joinerPeakRssMegabytes,
      // For reading the figures above: how they came about.
      caughtUpSeconds: caughtUpAtMs === undefined ? null : Number(((caughtUpAtMs - joinStartedAtMs) / 1000).toFixed(2)),
      readmissionStalled: nudgedAtMs !== undefined,
      bodyBytes,
      seedSeconds: Number(seedSeconds.toFixed(1)),
      leaderElectedSeconds: Number(leaderSeconds.toFixed(2)),
      snapshotInstallSeconds: installed === undefined ? null : Number(installed.durationSeconds.toFixed(2)),
      snapshotsInstalled: snapshots,
      leaderPeakRssMegabytes,
    }),
  );
} finally {
  for (const client of clients) client.close();
  for (const replica of replicas) if (replica.child.exitCode === null) replica.child.kill('SIGTERM');
  await Promise.all(replicas.map((replica) => replica.exited));
  await setup.stop();
  if (process.env.BENCH_KEEP === '1') log(`kept ${directory}`);
  else rmSync(directory, { recursive: true, force: true });
}
