// Measures what a batch of sends costs in SQLite alone, on a follower (ReplicaStore.applyEntries, as an
// append is persisted) and on a leader (appendAndApply per send in one transaction, as applySubmitted
// does), with the real ReplicaStore (dist/) and synchronous=FULL, under three choices of ids: random
// message and request ids (UUID version 4), time-ordered message ids only (version 7, as the server
// makes them), and both time-ordered (as the CLI makes request ids too). A random id lands on a random
// page of its unique index, and each page a commit dirties is written to the WAL and fsynced.
//
//   npm run build && node bench/apply-batch.mjs [batches=250] [batchSize=64] [rounds=3]
//
// Each round measures every choice in a fresh database under /var/tmp (the benchmarks' disk), interleaved;
// prints per choice the median over the rounds of each round's median batch time in ms.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { v7 as uuidVersion7 } from 'uuid';
import { ReplicaStore } from '../dist/storage/replica-store.js';
import { median } from './support/local-clusters.mjs';

const batches = Number(process.argv[2] ?? 250);
const batchSize = Number(process.argv[3] ?? 64);
const rounds = Number(process.argv[4] ?? 3);
const WARM_UP_BATCHES = 50;
const CHOICES = [
  { name: 'random ids', messageId: randomUUID, requestId: randomUUID },
  { name: 'time-ordered message ids', messageId: uuidVersion7, requestId: randomUUID },
  { name: 'time-ordered message and request ids', messageId: uuidVersion7, requestId: uuidVersion7 },
];

function measure(directory, round, choice) {
  const store = ReplicaStore.open(join(directory, `${round}-${CHOICES.indexOf(choice)}.sqlite`));
  let timestampMs = 1_700_000_000_000;
  const envelope = (principal) => ({ requestId: choice.requestId(), principal, fingerprint: 'ab'.repeat(32), timestampMs: ++timestampMs });
  const setUp = [
    { kind: 'initializeCluster', clusterId: 'bench', sessionSecretHex: 'ab'.repeat(32), timestampMs },
    ...['alice', 'bob'].map((username) => ({ kind: 'createAccount', ...envelope(`user:${username}`), username, passwordHash: `h-${username}` })),
  ];
  store.applyEntries(setUp.map((command, position) => ({ index: position + 1, epoch: 1, command })));
  const send = () => ({
    kind: 'sendMessage', ...envelope(`session:${'c'.repeat(32)}`), messageId: choice.messageId(), sender: 'alice', recipient: 'bob',
    body: `a message of about a hundred bytes, as in bench/compare-etcd.mjs ${timestampMs}`, instant: false,
  });
  const followerMs = [];
  const leaderMs = [];
  for (let batch = 0; batch < WARM_UP_BATCHES + batches; batch += 1) {
    const entries = Array.from({ length: batchSize }, (_, position) => ({ index: store.lastIndex + 1 + position, epoch: 1, command: send() }));
    let startedAt = performance.now();
    store.applyEntries(entries);
    if (batch >= WARM_UP_BATCHES) followerMs.push(performance.now() - startedAt);
    const commands = Array.from({ length: batchSize }, send);
    startedAt = performance.now();
    store.atomically(() => {
      for (const command of commands) store.appendAndApply(1, command);
    });
    if (batch >= WARM_UP_BATCHES) leaderMs.push(performance.now() - startedAt);
  }
  store.close();
  return { follower: median(followerMs), leader: median(leaderMs) };
}

const directory = mkdtempSync('/var/tmp/replichat-apply-batch-');
const results = CHOICES.map(() => []);
try {
  for (let round = 0; round < rounds; round += 1) {
    CHOICES.forEach((choice, position) => results[position].push(measure(directory, round, choice)));
  }
} finally {
  rmSync(directory, { recursive: true, force: true });
}
for (const [position, choice] of CHOICES.entries()) {
  const follower = median(results[position].map((result) => result.follower)).toFixed(2);
  const leader = median(results[position].map((result) => result.leader)).toFixed(2);
  console.log(`${choice.name.padEnd(38)} batch of ${batchSize}: follower ${follower} ms, leader ${leader} ms`);
}
