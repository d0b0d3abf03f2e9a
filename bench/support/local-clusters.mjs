// Local clusters of real processes on loopback for the benchmarks: replichat replicas (`dist/cli/main.js
// server`, plaintext, each with its own SQLite file and fsync on every commit, the default) and etcd members
// (Debian's etcd-server, fsync on every member, its default). Both are driven through @grpc/grpc-js unary
// calls on one channel to the leader, so that the client side of a measurement has the same shape for both.
// Ports are picked free (port 0) and data lives in a temporary directory the caller removes.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, createWriteStream, mkdirSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { chatServiceClientConstructor } from '../../dist/api/proto.js';

export const CLI_PATH = new URL('../../dist/cli/main.js', import.meta.url).pathname;
const MAKE_DEV_CERTS = new URL('../../scripts/make-dev-certs.sh', import.meta.url).pathname;
const ETCD_PROTO_DIRECTORY = new URL('../../node_modules/etcd3/proto', import.meta.url).pathname;

/** A port that was free a moment ago; ports handed out earlier in this process are never handed out again. */
const portsHandedOut = new Set();
export async function freePort() {
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const { port: chosen } = server.address();
        server.close(() => resolve(chosen));
      });
    });
    if (!portsHandedOut.has(port)) {
      portsHandedOut.add(port);
      return port;
    }
  }
}

/** Polls `condition` every 20 ms until it returns a truthy value; fails after `timeoutMs`. */
export async function pollUntil(description, condition, timeoutMs = 30_000) {
  const giveUpAt = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting until ${description}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Peak resident memory of a running process in bytes, from the kernel's high-water mark (VmHWM). */
export function peakRssBytes(pid) {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((candidate) => candidate.startsWith('VmHWM:'));
  return Number(line.split(/\s+/)[1]) * 1024;
}

/** Clock ticks per second of /proc/PID/stat's CPU times (USER_HZ), asked of the system once. */
let clockTicksPerSecond;

/** CPU seconds (user and system) a running process has used so far, from /proc/PID/stat. */
export function cpuSeconds(pid) {
  clockTicksPerSecond ??= Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may hold spaces and parentheses, so the fields are counted from its closing one:
  // after it come the state (field 3), ..., utime (field 14) and stime (field 15).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clockTicksPerSecond;
}

/** The sizes of all files under `path`, added up (apparent sizes). */
export function directoryBytes(path) {
  let total = 0;
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    const child = join(path, entry.name);
    total += entry.isDirectory() ? directoryBytes(child) : statSync(child).size;
  }
  return total;
}

/** The version line of the installed etcd, or undefined when the binary is missing. */
export function etcdVersion() {
  const result = spawnSync('etcd', ['--version'], { encoding: 'utf8' });
  if (result.error !== undefined || result.status !== 0) return undefined;
  return result.stdout.split('\n')[0]?.trim();
}

/** The server's --help text, to learn which flags this build has (the configuration store is new). */
function serverHelp() {
  return spawnSync(process.execPath, [CLI_PATH, 'server', '--help'], { encoding: 'utf8' }).stdout ?? '';
}

/** Sorted latencies summarised: p50 and p99 in ms. */
export function latencySummary(latenciesMs) {
  const sorted = [...latenciesMs].sort((a, b) => a - b);
  // No latency at all (every write failed) is null, not a number.
  const at = (quantile) => sorted[Math.min(sorted.length - 1, Math.floor(quantile * sorted.length))] ?? null;
  return { p50Ms: at(0.5), p99Ms: at(0.99) };
}

/** The median of numbers (the mean of the middle two for an even count), nulls left out; null if none. */
export function median(values) {
  const sorted = values.filter((value) => value !== null).sort((a, b) => a - b);
  if (sorted.length === 0) return null;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Counts a failed write by its gRPC status code, keeping the first message of each code to say why. */
function countError(errorCodes, error) {
  const code = error?.code ?? 'unknown';
  const entry = (errorCodes[code] ??= { count: 0, first: String(error?.details ?? error?.message ?? error).slice(0, 200) });
  entry.count += 1;
}

/**
 * A closed loop: `concurrency` clients, each sending its next write as soon as its previous one is answered,
 * until `count` writes were sent. Failed writes are counted, not retried.
 */
export async function runClosedLoop({ concurrency, count, sendOne }) {
  const latenciesMs = [];
  const errorCodes = {};
  let next = 0;
  const startedAtMs = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const n = next++;
        const sentAtMs = performance.now();
        try {
          await sendOne(n);
          latenciesMs.push(performance.now() - sentAtMs);
        } catch (error) {
          countError(errorCodes, error);
        }
      }
    }),
  );
  const seconds = (performance.now() - startedAtMs) / 1000;
  return { writesPerSecond: latenciesMs.length / seconds, ...latencySummary(latenciesMs), acknowledged: latenciesMs.length, errorCodes };
}

/**
 * An open loop: writes start at a fixed rate whatever the answers, `count` in all, so that latency is seen
 * at a given load rather than at whatever load the system lets through. Failed writes are counted.
 */
export async function runOpenLoop({ ratePerSecond, count, sendOne }) {
  const latenciesMs = [];
  const errorCodes = {};
  const pending = [];
  const startedAtMs = performance.now();
  let started = 0;
  while (started < count) {
    const due = Math.min(count, Math.floor(((performance.now() - startedAtMs) / 1000) * ratePerSecond) + 1);
    for (; started < due; started += 1) {
      const sentAtMs = performance.now();
      pending.push(
        sendOne(started).then(
          () => latenciesMs.push(performance.now() - sentAtMs),
          (error) => countError(errorCodes, error),
        ),
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await Promise.all(pending);
  const seconds = (performance.now() - startedAtMs) / 1000;
  return { writesPerSecond: latenciesMs.length / seconds, ...latencySummary(latenciesMs), acknowledged: latenciesMs.length, errorCodes };
}

/** A payload of exactly `bytes` ASCII characters that starts with the write's number. */
export function payload(n, bytes) {
  const prefix = `message ${n} `;
  return (prefix + 'x'.repeat(Math.max(0, bytes - prefix.length))).slice(0, bytes);
}

/** Starts a child process whose output goes to `logPath`; `exited` settles when it ends. */
function startProcess(command, args, logPath) {
  const log = createWriteStream(logPath);
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
  return { child, exited, logPath };
}

async function stopProcesses(processes, signal) {
  for (const process of processes) if (process.child.exitCode === null && process.child.signalCode === null) process.child.kill(signal);
  const hardStop = setTimeout(() => {
    for (const process of processes) if (process.child.exitCode === null) process.child.kill('SIGKILL');
  }, 15_000);
  await Promise.all(processes.map((process) => process.exited));
  clearTimeout(hardStop);
}

// -------------------------------------------------------------------------------------------------------
// etcd

let etcdPackage;
function etcdServices() {
  etcdPackage ??= grpc.loadPackageDefinition(
    protoLoader.loadSync('rpc.proto', { includeDirs: [ETCD_PROTO_DIRECTORY], keepCase: true, longs: String, defaults: true }),
  ).etcdserverpb;
  return etcdPackage;
}

function unary(client, method, request, metadata = new grpc.Metadata(), deadlineMs = 30_000) {
  return new Promise((resolve, reject) =>
    client[method](request, metadata, { deadline: Date.now() + deadlineMs }, (error, response) => (error ? reject(error) : resolve(response))),
  );
}

/**
 * Starts an etcd cluster of `members` members in `directory` (one data directory each) and waits until it
 * has a leader. Returns its client URLs, a KV client on the leader, and stop(), which ends the members with
 * SIGTERM.
 */
export async function startEtcd({ directory, members, name }) {
  const ports = [];
  for (let index = 0; index < members; index += 1) ports.push({ client: await freePort(), peer: await freePort() });
  const memberName = (index) => `${name}-${index}`;
  const initialCluster = ports.map((port, index) => `${memberName(index)}=http://127.0.0.1:${port.peer}`).join(',');
  const processes = ports.map((port, index) => {
    const dataDirectory = join(directory, `${name}-member-${index}`);
    mkdirSync(dataDirectory, { recursive: true });
    const member = startProcess('etcd', [
      '--name', memberName(index), '--data-dir', dataDirectory,
      '--listen-client-urls', `http://127.0.0.1:${port.client}`, '--advertise-client-urls', `http://127.0.0.1:${port.client}`,
      '--listen-peer-urls', `http://127.0.0.1:${port.peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${port.peer}`,
      '--initial-cluster', initialCluster, '--initial-cluster-state', 'new', '--initial-cluster-token', `${name}-${process.pid}`,
      '--logger', 'zap', '--log-level', 'warn',
    ], join(directory, `${name}-member-${index}.log`));
    return { ...member, dataDirectory, clientAddress: `127.0.0.1:${port.client}` };
  });
  const { KV, Maintenance } = etcdServices();
  const credentials = grpc.credentials.createInsecure();
  const maintenanceClients = processes.map((member) => new Maintenance(member.clientAddress, credentials));
  try {
    // The leader is the member whose own id is the leader id every member reports.
    const leaderIndex = await pollUntil(`etcd ${name} has a leader`, async () => {
      const exited = processes.find((member) => member.child.exitCode !== null);
      if (exited !== undefined) throw new Error(`etcd member exited early; see ${exited.logPath}`);
      const statuses = await Promise.all(maintenanceClients.map((client) => unary(client, 'Status', {}, undefined, 1000).catch(() => undefined)));
      if (statuses.some((status) => status === undefined || status.leader === '0')) return undefined;
      const index = statuses.findIndex((status) => status.header.member_id === status.leader);
      return index >= 0 ? index + 1 : undefined;
    }) - 1;
    const leader = processes[leaderIndex];
    const kv = new KV(leader.clientAddress, credentials);
    await pollUntil(`etcd ${name} accepts a put`, () =>
      unary(kv, 'Put', { key: Buffer.from('bench/ready'), value: Buffer.from('1') }, undefined, 2000).then(() => true, () => false),
    );
    return {
      processes,
      endpoints: processes.map((member) => `http://${member.clientAddress}`),
      leaderIndex,
      /** One Put of `value` under `key` on the leader. */
      put: (key, value) => unary(kv, 'Put', { key: Buffer.from(key), value: Buffer.from(value) }),
      async stop() {
        kv.close();
        await stopProcesses(processes, 'SIGTERM');
      },
    };
  } finally {
    for (const client of maintenanceClients) client.close();
  }
}

/**
 * Bytes etcd keeps for its data in `dataDirectory`: the bbolt database plus the bytes actually written to
 * its write-ahead log. etcd preallocates each WAL segment at 64 MiB, so the file size says nothing; the
 * written part ends at the last non-zero byte of the last segment.
 */
export function etcdDataBytes(dataDirectory) {
  let total = 0;
  const snapDirectory = join(dataDirectory, 'member', 'snap');
  for (const name of readdirSync(snapDirectory)) total += statSync(join(snapDirectory, name)).size;
  const walDirectory = join(dataDirectory, 'member', 'wal');
  const segments = readdirSync(walDirectory).filter((name) => name.endsWith('.wal')).sort();
  segments.forEach((segment, index) => {
    const path = join(walDirectory, segment);
    total += index < segments.length - 1 ? statSync(path).size : writtenBytes(path);
  });
  return total;
}

function writtenBytes(path) {
  const descriptor = openSync(path, 'r');
  try {
    const buffer = Buffer.alloc(1 << 20);
    let lastNonZero = -1;
    for (let position = 0; ; position += buffer.length) {
      const read = readSync(descriptor, buffer, 0, buffer.length, position);
      if (read === 0) break;
      for (let offset = read - 1; offset >= 0; offset -= 1) {
        if (buffer[offset] !== 0) {
          lastNonZero = position + offset;
          break;
        }
      }
    }
    return lastNonZero + 1;
  } finally {
    closeSync(descriptor);
  }
}

// -------------------------------------------------------------------------------------------------------
// replichat

const ChatClient = chatServiceClientConstructor();

/** Peer certificates for `replicas` replicas of cluster `name`, made by scripts/make-dev-certs.sh in `path`. */
function makePeerCertificates(path, replicas, name) {
  const made = spawnSync('bash', [MAKE_DEV_CERTS, path], {
    encoding: 'utf8',
    env: { ...process.env, REPLICAS: String(replicas), CLUSTER_NAME: name },
  });
  if (made.status !== 0) throw new Error(`scripts/make-dev-certs.sh failed: ${made.stderr}`);
  return (ordinal) => [
    '--peer-ca', join(path, 'peer-ca.pem'), '--peer-cert', join(path, `peer-${ordinal}.pem`), '--peer-key', join(path, `peer-${ordinal}-key.pem`),
  ];
}

/**
 * Starts a replichat cluster of `replicas` replicas in `directory` and waits until a leader has all of them
 * in its in-sync set. When this build has the configuration store (`--configuration-store`), a one-member
 * etcd of its own is started for it first: its load is the cluster's configuration only, and it is never
 * the etcd being measured. When the peer port needs mutual TLS (`--peer-ca`), peer certificates are made
 * with scripts/make-dev-certs.sh; clients stay plaintext (`--insecure`). Returns a client call on the
 * leader, the replica processes (each with its metrics address) and stop(), which ends the replicas with
 * SIGINT (the database closes cleanly, so its WAL is checkpointed) and then the configuration etcd.
 * `extraArguments` go to every server after its own flags, `nodeArguments` to node before the script
 * (for example `--cpu-prof`).
 */
export async function startReplichat({ directory, replicas, name, logLevel = 'warn', extraArguments = [], nodeArguments = [] }) {
  const help = serverHelp();
  const usesConfigurationStore = help.includes('--configuration-store');
  const peerTlsFlags = help.includes('--peer-ca') ? makePeerCertificates(join(directory, `${name}-certificates`), replicas, name) : () => [];
  const configurationEtcd = usesConfigurationStore
    ? await startEtcd({ directory, members: 1, name: `${name}-configuration` })
    : undefined;
  const ports = [];
  for (let ordinal = 0; ordinal < replicas; ordinal += 1) {
    ports.push({ client: await freePort(), peer: await freePort(), metrics: await freePort() });
  }
  const peers = ports.map((port, ordinal) => `${ordinal}=127.0.0.1:${port.peer}`).join(',');
  const processes = ports.map((port, ordinal) => {
    const dataDirectory = join(directory, `${name}-replica-${ordinal}`);
    const replica = startProcess(process.execPath, [
      ...nodeArguments, CLI_PATH, 'server', '--ordinal', String(ordinal), '--peers', peers, '--data-dir', dataDirectory,
      '--listen', `127.0.0.1:${port.client}`, '--peer-listen', `127.0.0.1:${port.peer}`,
      '--metrics-listen', `127.0.0.1:${port.metrics}`, '--insecure', '--log-level', logLevel, '--cluster-name', name,
      ...peerTlsFlags(ordinal),
      ...(configurationEtcd === undefined
        ? []
        : ['--configuration-store', 'etcd', '--etcd-endpoints', configurationEtcd.endpoints.join(',')]),
      ...extraArguments,
    ], join(directory, `${name}-replica-${ordinal}.log`));
    return { ...replica, dataDirectory, clientAddress: `127.0.0.1:${port.client}`, metricsUrl: `http://127.0.0.1:${port.metrics}/metrics`, ordinal };
  });
  const credentials = grpc.credentials.createInsecure();
  const clients = processes.map((replica) => new ChatClient(replica.clientAddress, credentials));
  const call = (client, method, request, token, deadlineMs = 30_000) => {
    const metadata = new grpc.Metadata();
    if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
    return unary(client, method, request, metadata, deadlineMs);
  };
  const stop = async () => {
    for (const client of clients) client.close();
    await stopProcesses(processes, 'SIGINT');
    await configurationEtcd?.stop();
  };
  try {
    const leaderOrdinal = await pollUntil(`replichat ${name} has a leader with ${replicas} in-sync replicas`, async () => {
      const exited = processes.find((replica) => replica.child.exitCode !== null);
      if (exited !== undefined) throw new Error(`replica ${exited.ordinal} exited early; see ${exited.logPath}`);
      const statuses = await Promise.all(clients.map((client) => call(client, 'GetReplicaStatus', {}, undefined, 1000).catch(() => undefined)));
      const leader = statuses.find((status) => status?.role === 'leader' && status.inSync.length === replicas);
      return leader === undefined ? undefined : { ordinal: leader.ordinal };
    });
    const leaderClient = clients[leaderOrdinal.ordinal];
    return {
      processes,
      configurationEtcd,
      leaderOrdinal: leaderOrdinal.ordinal,
      /** A unary call on the leader, with a bearer token when given. */
      call: (method, request, token) => call(leaderClient, method, request, token),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Creates alice and bob on a started replichat cluster and logs alice in; returns her session token. */
export async function loginSender(cluster, prefix) {
  await cluster.call('CreateAccount', { requestId: `${prefix}-a`, username: 'alice', password: 'password1' });
  await cluster.call('CreateAccount', { requestId: `${prefix}-b`, username: 'bob', password: 'password1' });
  const { sessionToken } = await cluster.call('Login', { requestId: `${prefix}-l`, username: 'alice', password: 'password1' });
  return sessionToken;
}
