// Throughput with one replica down: a 3-replica cluster whose follower is killed with SIGKILL, so that
// the leader serves with 2 in sync while it keeps trying the third. It measures what a replica that does
// not answer costs the leader.
//
//   npm run build && node bench/degraded-throughput.mjs [rounds=3] [clients=64] [writes=6000]
//
// Each round starts a fresh cluster (plaintext clients, mutual TLS between peers, an etcd of its own as
// the configuration store), kills a follower, waits until the leader's in-sync set has dropped it, then
// writes 10,000 messages so that the dead follower's position falls out of the entries the leader keeps
// in memory (8,192), and then measures `writes` more in a closed loop of `clients`. Prints per round the
// writes/s and the leader's CPU as a share of one core, then the medians. PROFILE_DIRECTORY=DIR writes a
// CPU profile of every replica there (node --cpu-prof), for Chrome's profiler.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpuSeconds, loginSender, median, payload, pollUntil, runClosedLoop, startReplichat } from './support/local-clusters.mjs';

const rounds = Number(process.argv[2] ?? 3);
const clients = Number(process.argv[3] ?? 64);
const writes = Number(process.argv[4] ?? 6000);
const WRITES_PAST_THE_MEMORY = 10_000;

const results = [];
for (let round = 1; round <= rounds; round += 1) {
  const directory = mkdtempSync(join(tmpdir(), 'replichat-degraded-'));
  const cluster = await startReplichat({
    directory,
    replicas: 3,
    name: `degraded-${round}`,
    nodeArguments: process.env.PROFILE_DIRECTORY === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${process.env.PROFILE_DIRECTORY}`],
  });
  try {
    const token = await loginSender(cluster, `degraded-${round}`);
    let requestNumber = 0;
    const sendOne = (n) => cluster.call('SendMessage', { requestId: `degraded-${requestNumber++}`, recipient: 'bob', body: payload(n, 100) }, token);
    const leader = cluster.processes[cluster.leaderOrdinal];
    const victim = cluster.processes.find((replica) => replica.ordinal !== cluster.leaderOrdinal);
    victim.child.kill('SIGKILL');
    await pollUntil('the leader drops the killed follower from its in-sync set', async () => {
      const status = await cluster.call('GetReplicaStatus', {});
      return status.inSync.length === 2 ? true : undefined;
    });
    await runClosedLoop({ concurrency: clients, count: WRITES_PAST_THE_MEMORY, sendOne });
    const cpuBefore = cpuSeconds(leader.child.pid);
    const startedAtMs = performance.now();
    const measured = await runClosedLoop({ concurrency: clients, count: writes, sendOne });
    const leaderCpuShare = (cpuSeconds(leader.child.pid) - cpuBefore) / ((performance.now() - startedAtMs) / 1000);
    const failed = Object.values(measured.errorCodes).reduce((sum, entry) => sum + entry.count, 0);
    results.push({ writesPerSecond: measured.writesPerSecond, leaderCpuShare });
    console.log(
      `round ${round}: ${Math.round(measured.writesPerSecond)} writes/s, p50 ${measured.p50Ms.toFixed(2)} ms, p99 ${measured.p99Ms.toFixed(2)} ms, ` +
        `leader CPU ${leaderCpuShare.toFixed(2)}${failed > 0 ? `, ${failed} failed ${JSON.stringify(measured.errorCodes)}` : ''}`,
    );
  } finally {
    await cluster.stop();
    rmSync(directory, { recursive: true, force: true });
  }
}
console.log(
  `medians over ${rounds} rounds: ${Math.round(median(results.map((result) => result.writesPerSecond)))} writes/s, ` +
    `leader CPU ${median(results.map((result) => result.leaderCpuShare)).toFixed(2)} of a core`,
);
