// Latency of SendMessage under a steady offered load: an open loop (writes started at a fixed rate for
// about 3 s each, whatever the answers) at each rate in turn, on one fresh local cluster of real processes
// (plaintext clients, mutual TLS between peers, an etcd of its own as the configuration store).
//
//   npm run build && node bench/open-loop.mjs [replicas=3] [rates=100,200,400,600] [payloadBytes=100]
//
// BENCH_DATA_ROOT puts the data directories elsewhere than the system's temporary directory: /dev/shm
// (tmpfs, where an fsync costs nothing) shows how much of the latency is the replicas' fsyncs queueing on
// the one disk they share here. Prints one line per rate: the rate reached, p50 and p99 in ms.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loginSender, payload, runClosedLoop, runOpenLoop, startReplichat } from './support/local-clusters.mjs';

const replicas = Number(process.argv[2] ?? 3);
const rates = (process.argv[3] ?? '100,200,400,600').split(',').map(Number);
const payloadBytes = Number(process.argv[4] ?? 100);
const SECONDS_PER_RATE = 3;
const WARM_UP_WRITES = 200;

const directory = mkdtempSync(join(process.env.BENCH_DATA_ROOT ?? tmpdir(), 'replichat-open-loop-'));
const cluster = await startReplichat({ directory, replicas, name: 'open-loop' });
try {
  const token = await loginSender(cluster, 'open-loop');
  let requestNumber = 0;
  const sendOne = (n) =>
    cluster.call('SendMessage', { requestId: `open-loop-${requestNumber++}`, recipient: 'bob', body: payload(n, payloadBytes) }, token);
  await runClosedLoop({ concurrency: 8, count: WARM_UP_WRITES, sendOne });
  for (const ratePerSecond of rates) {
    const result = await runOpenLoop({ ratePerSecond, count: Math.max(50, ratePerSecond * SECONDS_PER_RATE), sendOne });
    const failed = Object.values(result.errorCodes).reduce((sum, entry) => sum + entry.count, 0);
    const ms = (value) => (value === null ? 'none' : `${value.toFixed(2)} ms`);
    console.log(
      `${replicas} replicas, offered ${ratePerSecond}/s: ${Math.round(result.writesPerSecond)} writes/s, p50 ${ms(result.p50Ms)}, p99 ${ms(result.p99Ms)}` +
        (failed > 0 ? `, ${failed} failed ${JSON.stringify(result.errorCodes)}` : ''),
    );
  }
} finally {
  await cluster.stop();
  rmSync(directory, { recursive: true, force: true });
}
