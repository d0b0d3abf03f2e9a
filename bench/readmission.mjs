// Measures re-admission under load: a 3-replica cluster of real processes on loopback (an etcd of its own as
// the configuration store, mutual TLS between peers), a steady stream of writes from WRITERS concurrent
// clients, and in each round one follower killed with SIGKILL, left down until the leader has taken it out
// of the in-sync set, then restarted. The time measured runs from the restarted replica's `serving` log line
// (read from its stdout as it is written) until the leader's GetReplicaStatus lists it in the in-sync set
// again; the status is polled every 10 ms, so the figure includes up to one poll and one status call.
// `node bench/readmission.mjs [rounds=6] [writers=4]`, after `npm run build`. Prints each round and a JSON
// summary with the median and the worst, and the write rate the stream kept up during the run.
import * as grpc from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { chatServiceClientConstructor } from '../dist/api/proto.js';
import { freeReplicaAddresses, startBenchSetup } from './support/server-flags.mjs';

const rounds = Number(process.argv[2] ?? 6);
const writers = Number(process.argv[3] ?? 4);
const directory = mkdtempSync(join(tmpdir(), 'replichat-readmission-'));
const setup = await startBenchSetup(directory);
const { clientAddress, peerAddress, peers } = await freeReplicaAddresses(3);
const processes = new Map();

/** Starts replica i; `serving` resolves with the bench's clock when its `serving` log line arrives. */
function start(i) {
  const child = spawn(process.execPath, [
    'dist/cli/main.js', 'server', '--ordinal', String(i), '--peers', peers,
    '--data-dir', join(directory, `replica-${i}`), '--listen', clientAddress(i),
    '--peer-listen', peerAddress(i), '--metrics-listen', '127.0.0.1:0', '--insecure',
    '--log-level', 'info', ...setup.serverFlags(i),
  ], { stdio: ['ignore', 'pipe', 'ignore'] });
  let buffered = '';
  const serving = new Promise((resolve) => {
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      buffered += chunk;
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        if (line.includes('"msg":"serving"')) resolve(performance.now());
      }
    });
  });
  processes.set(i, child);
  return { child, serving };
}

const Client = chatServiceClientConstructor();
const clients = [0, 1, 2].map((i) => new Client(clientAddress(i), grpc.credentials.createInsecure()));
function call(i, method, request, token, deadlineMs = 2000) {
  return new Promise((resolve, reject) => {
    const metadata = new grpc.Metadata();
    if (token) metadata.set('authorization', `Bearer ${token}`);
    clients[i][method](request, metadata, { deadline: Date.now() + deadlineMs }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}
const statuses = () => Promise.all([0, 1, 2].map((i) => call(i, 'GetReplicaStatus', {}, undefined, 500).catch(() => undefined)));
async function until(condition, deadlineMs, what) {
  const giveUpAt = Date.now() + deadlineMs;
  for (;;) {
    const value = await condition();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
const leaderStatus = async () => (await statuses()).find((status) => status?.role === 'leader');

let stopWriting = false;
let acknowledged = 0;
/** One writer: sends the next write as soon as the previous one is acknowledged, retrying on every server. */
async function writer(id, token) {
  for (let n = 0; !stopWriting; n += 1) {
    const requestId = `w${id}-${n}`;
    for (let attempt = 0; !stopWriting; attempt = (attempt + 1) % 3) {
      try {
        await call(attempt, 'SendMessage', { requestId, recipient: 'bob', body: requestId }, token);
        acknowledged += 1;
        break;
      } catch {
        // Not the leader or busy: the same request id on the next server.
      }
    }
  }
}

const results = [];
const writing = [];
try {
  for (const i of [0, 1, 2]) start(i);
  const first = await until(async () => {
    const leader = await leaderStatus();
    return leader !== undefined && leader.inSync.length === 3 ? leader : undefined;
  }, 60_000, 'three in-sync replicas');
  // scrypt on a loaded machine can take seconds.
  await call(first.ordinal, 'CreateAccount', { requestId: 'a', username: 'alice', password: 'password1' }, undefined, 20_000);
  await call(first.ordinal, 'CreateAccount', { requestId: 'b', username: 'bob', password: 'password1' }, undefined, 20_000);
  const { sessionToken } = await call(first.ordinal, 'Login', { requestId: 'l', username: 'alice', password: 'password1' }, undefined, 20_000);
  const startedAtMs = performance.now();
  for (let id = 0; id < writers; id += 1) writing.push(writer(id, sessionToken));
  for (let round = 1; round <= rounds; round += 1) {
    const leader = await until(async () => {
      const candidate = await leaderStatus();
      return candidate !== undefined && candidate.inSync.length === 3 ? candidate : undefined;
    }, 60_000, 'three in-sync replicas');
    // The two followers take turns.
    const victim = [0, 1, 2].filter((i) => i !== leader.ordinal)[round % 2];
    const killed = processes.get(victim);
    killed.kill('SIGKILL');
    if (killed.exitCode === null && killed.signalCode === null) await new Promise((resolve) => killed.once('exit', resolve));
    await until(async () => {
      const current = await leaderStatus();
      return current !== undefined && !current.inSync.includes(victim);
    }, 60_000, `the leader to take replica ${victim} out of the in-sync set`);
    const lagBefore = acknowledged;
    const restarted = start(victim);
    const servingAtMs = await restarted.serving;
    await until(async () => (await leaderStatus())?.inSync.includes(victim), 60_000, `replica ${victim} back in sync`);
    const readmissionMs = performance.now() - servingAtMs;
    results.push(readmissionMs);
    console.log(
      `round ${round}: replica ${victim} (leader ${leader.ordinal}) back in sync ${readmissionMs.toFixed(0)} ms after serving; ` +
        `${acknowledged - lagBefore} writes acknowledged since its restart`,
    );
  }
  const seconds = (performance.now() - startedAtMs) / 1000;
  const sorted = [...results].sort((a, b) => a - b);
  console.log(JSON.stringify({
    rounds,
    writers,
    medianMs: Math.round(sorted[Math.floor(sorted.length / 2)]),
    worstMs: Math.round(sorted[sorted.length - 1]),
    bestMs: Math.round(sorted[0]),
    writesPerSecond: Math.round(acknowledged / seconds),
  }));
} finally {
  stopWriting = true;
  await Promise.all(writing);
  for (const client of clients) client.close();
  for (const child of processes.values()) if (child.exitCode === null) child.kill('SIGTERM');
  await Promise.all([...processes.values()].map((child) => (child.exitCode !== null || child.signalCode !== null ? undefined : new Promise((resolve) => child.once('exit', resolve)))));
  await setup.stop();
  rmSync(directory, { recursive: true, force: true });
}
