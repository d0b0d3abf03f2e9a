// Compares a replicated send with etcd on the same machine, in one invocation, interleaved:
// replichat with 1 replica, replichat with 3 replicas, and a 3-member etcd (Debian's etcd-server), all real
// processes on loopback, plaintext, with fsync on every member (the default of both).
//
//   npm run build && node bench/compare-etcd.mjs [rounds=3] [clients=1,8,64,256] [payloadBytes=100]
//
// The same workload for each system: a closed loop of N concurrent clients on one gRPC channel to the leader
// (@grpc/grpc-js unary calls), each sending its next write when its previous one is answered, with a
// payload of `payloadBytes` ASCII bytes: SendMessage (alice to bob, body = payload) for replichat, as
// bench/write-throughput.mjs does, and KV.Put (a new key per write, value = payload) for etcd.
// Each round starts every system afresh, in the order replichat-1, replichat-3, etcd-3 (A B C, A B C …),
// sends a warm-up of 200 writes at 8 clients, then measures each client count in turn. The summary gives,
// per client count and system, the medians over the rounds of writes/s, p50 and p99, and the ratios of the
// medians (replichat-3 / etcd-3 and replichat-3 / replichat-1 for throughput; etcd-3 / replichat-3 for the
// sequential p50). Bytes on disk per write and peak RSS per replica are measured after the last client
// count of each round: replichat's data directory after a clean stop (SQLite checkpoints its WAL on close),
// etcd's bbolt file plus the written part of its preallocated WAL; peak RSS is each process's VmHWM.
// After the closed loops, an open loop at half the best throughput of that run (writes started at a fixed
// rate for about 3 s, whatever the answers) gives p50 and p99 at half of saturation.
// Each closed loop also reports the CPU each process used during it, as a share of one core (user and
// system time over the loop's wall time): the benchmark's own process (the client) and every member. On
// two cores the shares add up to at most 2; a sum well below that says the run waits, not computes.
// BENCH_MESSAGES=1:500,8:2000,64:4000,256:5120 sets the writes per client count (these are the defaults);
// BENCH_KEEP=1 keeps the data directories and logs. BENCH_DATA_ROOT puts them elsewhere than the system's
// temporary directory: /dev/shm (tmpfs, where an fsync costs nothing) shows what the software costs without
// the disk. It is a diagnostic only: the issue's comparison is with fsync on a disk.
// The replichat clusters under test need a configuration store once the server has --configuration-store:
// each gets a one-member etcd of its own on other ports (configuration only), never the measured etcd.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  cpuSeconds,
  directoryBytes,
  etcdDataBytes,
  etcdVersion,
  loginSender,
  median,
  payload,
  peakRssBytes,
  runClosedLoop,
  runOpenLoop,
  startEtcd,
  startReplichat,
} from './support/local-clusters.mjs';

const rounds = Number(process.argv[2] ?? 3);
const clientCounts = (process.argv[3] ?? '1,8,64,256').split(',').map(Number);
const payloadBytes = Number(process.argv[4] ?? 100);
const DEFAULT_MESSAGES = { 1: 500, 8: 2000, 64: 4000, 256: 5120 };
const messagesPerClientCount = {
  ...DEFAULT_MESSAGES,
  ...Object.fromEntries((process.env.BENCH_MESSAGES ?? '').split(',').filter(Boolean).map((pair) => pair.split(':').map(Number))),
};
const WARM_UP_WRITES = 200;
const HALF_LOAD_SECONDS = 3;
if (![rounds, payloadBytes, ...clientCounts].every((value) => Number.isSafeInteger(value) && value > 0)) {
  console.error('usage: node bench/compare-etcd.mjs [rounds] [clients,clients,...] [payloadBytes]');
  process.exit(2);
}

const version = etcdVersion();
if (version === undefined) {
  console.error(
    'compare-etcd: the etcd binary was not found. It comes from the Debian package etcd-server, which ' +
      'scripts/install.sh installs (or: apt-get install -y etcd-server). Nothing was measured.',
  );
  process.exit(1);
}

function log(text) {
  process.stderr.write(`[compare-etcd] ${text}\n`);
}

/** Milliseconds for a line of text; null (every write failed) shows as a dash. */
function ms(value) {
  return value === null ? '-' : `${value.toFixed(2)} ms`;
}

function rounded(value) {
  return value === null ? null : Number(value.toFixed(2));
}

/**
 * The CPU each process used since `before`, as a share of one core over the wall time since then, to two
 * decimals: the benchmark's own process (the client) and each member.
 */
function cpuSharesSince(before, members) {
  const wallSeconds = (performance.now() - before.wallMs) / 1000;
  const client = process.cpuUsage(before.client);
  const share = (seconds) => Number((seconds / wallSeconds).toFixed(2));
  return {
    client: share((client.user + client.system) / 1e6),
    members: members.map((member, position) => share(cpuSeconds(member.child.pid) - before.members[position])),
  };
}

/** Each system under test; BENCH_SYSTEMS=replichat-3,etcd-3 runs only those (the ratios need all three). */
const SYSTEMS = [
  { name: 'replichat-1', kind: 'replichat', replicas: 1 },
  { name: 'replichat-3', kind: 'replichat', replicas: 3 },
  { name: 'etcd-3', kind: 'etcd', replicas: 3 },
].filter((system) => process.env.BENCH_SYSTEMS === undefined || process.env.BENCH_SYSTEMS.split(',').includes(system.name));

async function startSystem(system, directory, round) {
  const name = `bench-${system.name}-r${round}`;
  if (system.kind === 'etcd') {
    const cluster = await startEtcd({ directory, members: system.replicas, name });
    return {
      send: (n) => cluster.put(`bench/${n}`, payload(n, payloadBytes)),
      members: cluster.processes,
      dataBytes: (member) => etcdDataBytes(member.dataDirectory),
      stop: () => cluster.stop(),
    };
  }
  const cluster = await startReplichat({ directory, replicas: system.replicas, name });
  const token = await loginSender(cluster, name);
  let requestNumber = 0;
  return {
    // Each write has its own request id, like a new message from a real client.
    send: (n) => cluster.call('SendMessage', { requestId: `${name}-${requestNumber++}`, recipient: 'bob', body: payload(n, payloadBytes) }, token),
    members: cluster.processes,
    dataBytes: (member) => directoryBytes(member.dataDirectory),
    stop: () => cluster.stop(),
  };
}

const directory = mkdtempSync(join(process.env.BENCH_DATA_ROOT ?? tmpdir(), 'replichat-compare-etcd-'));
const results = []; // { round, system, clients, writesPerSecond, p50Ms, p99Ms, errors, cpuShares: { client, members } }
const halfLoad = []; // { round, system, ratePerSecond, p50Ms, p99Ms, errors }
const resources = []; // { round, system, bytesPerWrite: [per member], peakRssMegabytes: [per member] }
let running;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const member of running?.members ?? []) member.child.kill('SIGKILL');
    process.exit(130);
  });
}

try {
  log(`${version}; ${rounds} rounds of ${SYSTEMS.map((system) => system.name).join(', ')}; clients ${clientCounts.join(', ')}; payload ${payloadBytes} bytes`);
  for (let round = 1; round <= rounds; round += 1) {
    for (const system of SYSTEMS) {
      running = await startSystem(system, directory, round);
      let written = 0;
      const warmUp = await runClosedLoop({ concurrency: 8, count: WARM_UP_WRITES, sendOne: (n) => running.send(n) });
      written += warmUp.acknowledged;
      for (const clients of clientCounts) {
        const count = messagesPerClientCount[clients] ?? 20 * clients;
        const cpuBefore = { wallMs: performance.now(), client: process.cpuUsage(), members: running.members.map((member) => cpuSeconds(member.child.pid)) };
        const measured = await runClosedLoop({ concurrency: clients, count, sendOne: (n) => running.send(written + n) });
        const cpuShares = cpuSharesSince(cpuBefore, running.members);
        written += measured.acknowledged;
        const errors = Object.values(measured.errorCodes).reduce((sum, value) => sum + value.count, 0);
        results.push({ round, system: system.name, clients, writesPerSecond: measured.writesPerSecond, p50Ms: measured.p50Ms, p99Ms: measured.p99Ms, errors, cpuShares });
        log(
          `round ${round} ${system.name.padEnd(11)} ${String(clients).padStart(3)} clients: ${measured.writesPerSecond.toFixed(0).padStart(5)} writes/s, ` +
            `p50 ${ms(measured.p50Ms)}, p99 ${ms(measured.p99Ms)}; CPU client ${cpuShares.client}, members ${cpuShares.members.join(', ')}` +
            `${errors > 0 ? `, errors ${JSON.stringify(measured.errorCodes)}` : ''}`,
        );
      }
      // Half of saturation: an open loop at half the best throughput this run reached, for about 3 s.
      const saturation = Math.max(...results.filter((result) => result.round === round && result.system === system.name).map((result) => result.writesPerSecond));
      const halfRate = saturation / 2;
      const half = await runOpenLoop({ ratePerSecond: halfRate, count: Math.max(50, Math.round(halfRate * HALF_LOAD_SECONDS)), sendOne: (n) => running.send(written + n) });
      written += half.acknowledged;
      const halfErrors = Object.values(half.errorCodes).reduce((sum, value) => sum + value.count, 0);
      halfLoad.push({ round, system: system.name, ratePerSecond: halfRate, p50Ms: half.p50Ms, p99Ms: half.p99Ms, errors: halfErrors });
      log(
        `round ${round} ${system.name.padEnd(11)} open loop at ${halfRate.toFixed(0)} writes/s (half of ${saturation.toFixed(0)}): ` +
          `p50 ${ms(half.p50Ms)}, p99 ${ms(half.p99Ms)}${halfErrors > 0 ? `, errors ${JSON.stringify(half.errorCodes)}` : ''}`,
      );
      const peakRssMegabytes = running.members.map((member) => Math.round(peakRssBytes(member.child.pid) / 2 ** 20));
      await running.stop();
      const bytesPerWrite = running.members.map((member) => Math.round(running.dataBytes(member) / written));
      running = undefined;
      resources.push({ round, system: system.name, written, bytesPerWrite, peakRssMegabytes });
      log(`round ${round} ${system.name}: ${written} writes; bytes on disk per write ${bytesPerWrite.join(', ')}; peak RSS MiB ${peakRssMegabytes.join(', ')}`);
    }
  }

  // The summary: medians over the rounds, then the ratios of those medians.
  const medianOf = (system, clients, field) =>
    median(results.filter((result) => result.system === system && result.clients === clients).map((result) => result[field]));
  const summary = { etcd: version, rounds, payloadBytes, clients: {} };
  const lines = ['', `clients  ${SYSTEMS.map((system) => `${system.name.padEnd(30)}`).join('')}r3/etcd  r3/r1  etcd p50/r3 p50`];
  for (const clients of clientCounts) {
    const row = {};
    for (const system of SYSTEMS) {
      row[system.name] = {
        writesPerSecond: Math.round(medianOf(system.name, clients, 'writesPerSecond')),
        p50Ms: rounded(medianOf(system.name, clients, 'p50Ms')),
        p99Ms: rounded(medianOf(system.name, clients, 'p99Ms')),
        errors: results.filter((result) => result.system === system.name && result.clients === clients).reduce((sum, result) => sum + result.errors, 0),
      };
    }
    const ratio = (a, b) => (a === undefined || b === undefined || a === null || b === null || b === 0 ? null : rounded(a / b));
    row.ratios = {
      replichat3OverEtcd3: ratio(row['replichat-3']?.writesPerSecond, row['etcd-3']?.writesPerSecond),
      replichat3OverReplichat1: ratio(row['replichat-3']?.writesPerSecond, row['replichat-1']?.writesPerSecond),
      etcd3P50OverReplichat3P50: ratio(row['etcd-3']?.p50Ms, row['replichat-3']?.p50Ms),
    };
    summary.clients[clients] = row;
    lines.push(
      `${String(clients).padStart(7)}  ` +
        SYSTEMS.map((system) => {
          const cell = row[system.name];
          return `${`${cell.writesPerSecond}/s p50 ${cell.p50Ms} p99 ${cell.p99Ms}`.padEnd(30)}`;
        }).join('') +
        `${String(row.ratios.replichat3OverEtcd3).padEnd(9)}${String(row.ratios.replichat3OverReplichat1).padEnd(7)}${row.ratios.etcd3P50OverReplichat3P50}`,
    );
  }
  summary.cpuShares = {};
  lines.push('', 'CPU as a share of one core during each closed loop, medians over rounds: client | each member | sum');
  for (const clients of clientCounts) {
    summary.cpuShares[clients] = {};
    for (const system of SYSTEMS) {
      const mine = results.filter((result) => result.system === system.name && result.clients === clients).map((result) => result.cpuShares);
      const client = median(mine.map((shares) => shares.client));
      const members = mine[0].members.map((_, member) => median(mine.map((shares) => shares.members[member])));
      const sum = Number([client, ...members].reduce((total, value) => total + value, 0).toFixed(2));
      summary.cpuShares[clients][system.name] = { client, members, sum };
      lines.push(`${String(clients).padStart(7)}  ${system.name.padEnd(12)} ${String(client).padEnd(5)}| ${members.join(', ').padEnd(17)}| ${sum}`);
    }
  }
  summary.halfOfSaturation = {};
  lines.push('', 'open loop at half of saturation (half the best closed-loop throughput of the same run), medians over rounds:');
  for (const system of SYSTEMS) {
    const mine = halfLoad.filter((entry) => entry.system === system.name);
    const entry = {
      ratePerSecond: Math.round(median(mine.map((one) => one.ratePerSecond))),
      p50Ms: rounded(median(mine.map((one) => one.p50Ms))),
      p99Ms: rounded(median(mine.map((one) => one.p99Ms))),
      errors: mine.reduce((sum, one) => sum + one.errors, 0),
    };
    summary.halfOfSaturation[system.name] = entry;
    lines.push(`${system.name.padEnd(12)} ${entry.ratePerSecond} writes/s: p50 ${entry.p50Ms} ms, p99 ${entry.p99Ms} ms`);
  }
  summary.resources = {};
  lines.push('', 'per member, median over rounds: bytes on disk per write | peak RSS MiB');
  for (const system of SYSTEMS) {
    const mine = resources.filter((resource) => resource.system === system.name);
    const bytesPerWrite = mine[0].bytesPerWrite.map((_, member) => median(mine.map((resource) => resource.bytesPerWrite[member])));
    const peakRssMegabytes = mine[0].peakRssMegabytes.map((_, member) => median(mine.map((resource) => resource.peakRssMegabytes[member])));
    summary.resources[system.name] = { bytesPerWrite, peakRssMegabytes };
    lines.push(`${system.name.padEnd(12)} ${bytesPerWrite.join(', ').padEnd(24)}| ${peakRssMegabytes.join(', ')}`);
  }
  const totalErrors = [...results, ...halfLoad].reduce((sum, result) => sum + result.errors, 0);
  if (totalErrors > 0) lines.push('', `${totalErrors} writes failed (see the per-round lines above); they are not counted.`);
  console.log(lines.join('\n'));
  console.log(JSON.stringify(summary));
} finally {
  if (running !== undefined) await running.stop().catch(() => {});
  if (process.env.BENCH_KEEP === '1') log(`kept ${directory}`);
  else rmSync(directory, { recursive: true, force: true });
}
