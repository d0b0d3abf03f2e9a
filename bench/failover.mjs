// Measures failover: a 3-replica cluster of real processes on loopback, a client writing continuously
// (one write at a time, retrying with the same request id on the next server), the leader killed with
// SIGKILL, and the time from the kill to the first write acknowledged after it. The killed replica is
// restarted and the next round waits until all three are in sync again.
// `node bench/failover.mjs [rounds]` (default 20), after `npm run build`. Prints each round and a JSON
// summary with the median and the worst. The replicas use an etcd of their own as the configuration store
// and mutual TLS on the peer port (bench/support/server-flags.mjs).
import * as grpc from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chatServiceClientConstructor } from '../dist/api/proto.js';
import { freeReplicaAddresses, startBenchSetup } from './support/server-flags.mjs';

const rounds = Number(process.argv[2] ?? 20);
const directory = mkdtempSync(join(tmpdir(), 'replichat-failover-'));
const { clientAddress, peerAddress, peers } = await freeReplicaAddresses(3);
const processes = new Map();
const setup = await startBenchSetup(directory);

function start(i) {
  const child = spawn(process.execPath, [
    'dist/cli/main.js', 'server', '--ordinal', String(i), '--peers', peers,
    '--data-dir', join(directory, `replica-${i}`), '--listen', clientAddress(i),
    '--peer-listen', peerAddress(i), '--metrics-listen', '127.0.0.1:0', '--insecure',
    '--log-level', 'warn', ...setup.serverFlags(i),
  ], { stdio: 'ignore' });
  processes.set(i, child);
  return child;
}

const Client = chatServiceClientConstructor();
const clients = [0, 1, 2].map((i) => new Client(clientAddress(i), grpc.credentials.createInsecure()));
function call(i, method, request, token, deadlineMs = 1000) {
  return new Promise((resolve, reject) => {
    const metadata = new grpc.Metadata();
    if (token) metadata.set('authorization', `Bearer ${token}`);
    clients[i][method](request, metadata, { deadline: Date.now() + deadlineMs }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}
async function statuses() {
  return Promise.all([0, 1, 2].map((i) => call(i, 'GetReplicaStatus', {}, undefined, 300).catch(() => undefined)));
}
async function until(condition, deadlineMs, what) {
  const giveUpAt = Date.now() + deadlineMs;
  for (;;) {
    const value = await condition();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
async function allInSync() {
  return until(async () => {
    const all = await statuses();
    const leader = all.find((status) => status?.role === 'leader');
    return leader !== undefined && leader.inSync.length === 3 && all.every((status) => status !== undefined) ? leader : undefined;
  }, 30_000, 'three in-sync replicas');
}
/** Writes once, trying every server until one acknowledges; the same request id on every attempt. */
async function write(requestId, token) {
  for (;;) {
    for (const i of [0, 1, 2]) {
      try {
        return await call(i, 'SendMessage', { requestId, recipient: 'bob', body: requestId }, token);
      } catch {
        // Not the leader, down, or in the middle of a failover: try the next one.
      }
    }
  }
}

const results = [];
try {
  for (const i of [0, 1, 2]) start(i);
  await allInSync();
  const leaderIndex = (await statuses()).findIndex((status) => status?.role === 'leader');
  // scrypt on a loaded machine can take longer than the 1 s a write in the measurement gets.
  await call(leaderIndex, 'CreateAccount', { requestId: 'a', username: 'alice', password: 'password1' }, undefined, 10_000);
  await call(leaderIndex, 'CreateAccount', { requestId: 'b', username: 'bob', password: 'password1' }, undefined, 10_000);
  const { sessionToken } = await call(leaderIndex, 'Login', { requestId: 'l', username: 'alice', password: 'password1' }, undefined, 10_000);
  let sequence = 0;
  for (let round = 1; round <= rounds; round += 1) {
    const leader = await allInSync();
    await write(`warm-${round}`, sessionToken);
    const killedAt = performance.now();
    processes.get(leader.ordinal).kill('SIGKILL');
    await write(`after-${round}-${sequence++}`, sessionToken);
    const failoverMs = performance.now() - killedAt;
    results.push(failoverMs);
    console.log(`round ${round}: killed leader ${leader.ordinal}, next write acknowledged after ${failoverMs.toFixed(0)} ms`);
    const killed = processes.get(leader.ordinal);
    if (killed.exitCode === null && killed.signalCode === null) await new Promise((resolve) => killed.once('exit', resolve));
    start(leader.ordinal);
  }
  const sorted = [...results].sort((a, b) => a - b);
  console.log(JSON.stringify({ rounds, medianMs: Math.round(sorted[Math.floor(sorted.length / 2)]), worstMs: Math.round(sorted[sorted.length - 1]), bestMs: Math.round(sorted[0]) }));
} finally {
  for (const client of clients) client.close();
  for (const child of processes.values()) if (child.exitCode === null) child.kill('SIGTERM');
  await Promise.all([...processes.values()].map((child) => (child.exitCode !== null || child.signalCode !== null ? undefined : new Promise((resolve) => child.once('exit', resolve)))));
  await setup.stop();
  rmSync(directory, { recursive: true, force: true });
}
