// Measures acknowledged writes per second and latency of SendMessage on a local cluster of real
// processes on loopback (plaintext clients; mutual TLS between peers; an etcd of its own as the
// configuration store, bench/support/server-flags.mjs):
// `node bench/write-throughput.mjs [replicas] [concurrency] [messages]`.
// Run `npm run build` first. Prints one JSON line with the median and p99 latency and the throughput.
import * as grpc from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chatServiceClientConstructor } from '../dist/api/proto.js';
import { freeReplicaAddresses, startBenchSetup } from './support/server-flags.mjs';

const replicas = Number(process.argv[2] ?? 3);
const concurrency = Number(process.argv[3] ?? 64);
const messages = Number(process.argv[4] ?? 5000);
const directory = mkdtempSync(join(tmpdir(), 'replichat-bench-'));
const { clientAddress, peerAddress, peers } = await freeReplicaAddresses(replicas);
const setup = await startBenchSetup(directory, replicas);
const processes = [];
for (let i = 0; i < replicas; i += 1) {
  processes.push(
    spawn(process.execPath, [...(process.env.PROFILE_DIRECTORY && i === Number(process.env.PROFILE_REPLICA ?? 0) ? ['--cpu-prof', `--cpu-prof-dir=${process.env.PROFILE_DIRECTORY}`] : []),
      'dist/cli/main.js', 'server', '--ordinal', String(i), '--peers', peers,
      '--data-dir', join(directory, `replica-${i}`), '--listen', clientAddress(i),
      '--peer-listen', peerAddress(i), '--metrics-listen', '127.0.0.1:0', '--insecure',
      '--log-level', 'warn', ...setup.serverFlags(i),
    ], { stdio: 'ignore' }),
  );
}
const Client = chatServiceClientConstructor();
const client = new Client(clientAddress(0), grpc.credentials.createInsecure());
const call = (method, request, token) =>
  new Promise((resolve, reject) => {
    const metadata = new grpc.Metadata();
    if (token) metadata.set('authorization', `Bearer ${token}`);
    client[method](request, metadata, { deadline: Date.now() + 10_000 }, (error, response) => (error ? reject(error) : resolve(response)));
  });
async function untilReady() {
  const giveUpAt = Date.now() + 20_000;
  for (;;) {
    try {
      const status = await call('GetReplicaStatus', {});
      if (status.role === 'leader' && status.inSync.length === replicas) return;
    } catch (error) {
      if (Date.now() > giveUpAt) throw error;
    }
    if (Date.now() > giveUpAt) throw new Error('cluster not ready');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
try {
  await untilReady();
  await call('CreateAccount', { requestId: 'a', username: 'alice', password: 'password1' });
  await call('CreateAccount', { requestId: 'b', username: 'bob', password: 'password1' });
  const { sessionToken } = await call('Login', { requestId: 'l', username: 'alice', password: 'password1' });
  const latenciesMs = [];
  let next = 0;
  const startedAt = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < messages) {
        const n = next++;
        const sentAt = performance.now();
        await call('SendMessage', { requestId: `m${n}`, recipient: 'bob', body: `message ${n}` }, sessionToken);
        latenciesMs.push(performance.now() - sentAt);
      }
    }),
  );
  const seconds = (performance.now() - startedAt) / 1000;
  latenciesMs.sort((a, b) => a - b);
  const at = (q) => latenciesMs[Math.min(latenciesMs.length - 1, Math.floor(q * latenciesMs.length))].toFixed(2);
  console.log(JSON.stringify({ replicas, concurrency, messages, writesPerSecond: Math.round(messages / seconds), medianMs: at(0.5), p99Ms: at(0.99) }));
} finally {
  client.close();
  for (const child of processes) child.kill('SIGINT');
  await Promise.all(processes.map((child) => new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)))));
  await setup.stop();
  rmSync(directory, { recursive: true, force: true });
}
