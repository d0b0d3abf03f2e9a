// Measures what one leader write costs in SQLite alone: the real ReplicaStore (dist/), a send of
// `bodyBytes` in its own savepoint inside one transaction, as ReplicaNode.applySubmitted does for a batch of
// one, with synchronous=FULL, under each page size and temp_store setting, interleaved over the rounds.
//
//   npm run build && node bench/sqlite-commit.mjs [writes=1000] [bodyBytes=100] [rounds=2] [pauseMs=0]
//
// pauseMs puts the thread to sleep for that long before each measured write, as a server idles between
// the sends of one client at a time; the same write measured after a pause shows what an idle CPU costs
// the next piece of work on this machine (caches gone cold, the virtual CPU woken up).
//
// Prints per setting the median over the rounds of each round's p50, p90 and p99 in ms. The data
// directory is under /var/tmp (the same disk as the benchmarks' clusters). The page size is chosen by
// creating the file before the store opens it (SQLite keeps the page size of an existing file); the
// temp_store setting is changed after the store opened, to measure the default against the one built in.
import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ReplicaStore } from '../dist/storage/replica-store.js';

const writes = Number(process.argv[2] ?? 1000);
const bodyBytes = Number(process.argv[3] ?? 100);
const rounds = Number(process.argv[4] ?? 2);
const pauseMs = Number(process.argv[5] ?? 0);
const sleeper = new Int32Array(new SharedArrayBuffer(4));
const SETTINGS = [
  { pageSize: 16384, tempStore: 'DEFAULT' },
  { pageSize: 16384, tempStore: 'MEMORY' },
  { pageSize: 8192, tempStore: 'MEMORY' },
  { pageSize: 4096, tempStore: 'MEMORY' },
];
const WARM_UP_WRITES = 500;

let timestampMs = 1_700_000_000_000;
function envelope(principal) {
  timestampMs += 1;
  return { requestId: randomUUID(), principal, fingerprint: randomUUID(), timestampMs };
}

function measure(directory, round, { pageSize, tempStore }) {
  const path = join(directory, `${pageSize}-${tempStore}-${round}.sqlite`);
  const creator = new Database(path);
  creator.pragma(`page_size = ${pageSize}`);
  creator.pragma('journal_mode = WAL');
  creator.close();
  const store = ReplicaStore.open(path);
  store.database.pragma(`temp_store = ${tempStore}`);
  const setUp = [
    { kind: 'initializeCluster', clusterId: 'bench', sessionSecretHex: 'ab'.repeat(32), timestampMs },
    ...['alice', 'bob'].map((username) => ({ kind: 'createAccount', ...envelope(`user:${username}`), username, passwordHash: `h-${username}` })),
  ];
  store.applyEntries(setUp.map((command, position) => ({ index: position + 1, epoch: 1, command })));
  const body = 'x'.repeat(bodyBytes);
  const send = () =>
    store.atomically(() =>
      store.appendAndApply(2, {
        kind: 'sendMessage', ...envelope('session:s'), messageId: randomUUID(), sender: 'alice', recipient: 'bob', body, instant: false,
      }),
    );
  for (let n = 0; n < WARM_UP_WRITES; n += 1) send();
  const timesMs = [];
  for (let n = 0; n < writes; n += 1) {
    if (pauseMs > 0) Atomics.wait(sleeper, 0, 0, pauseMs);
    const startedAt = process.hrtime.bigint();
    send();
    timesMs.push(Number(process.hrtime.bigint() - startedAt) / 1e6);
  }
  store.close();
  timesMs.sort((a, b) => a - b);
  const at = (quantile) => timesMs[Math.min(timesMs.length - 1, Math.floor(quantile * timesMs.length))];
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99) };
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const results = SETTINGS.map(() => []);
const directory = mkdtempSync('/var/tmp/replichat-sqlite-commit-');
try {
  for (let round = 0; round < rounds; round += 1) {
    SETTINGS.forEach((setting, position) => results[position].push(measure(directory, round, setting)));
  }
} finally {
  rmSync(directory, { recursive: true, force: true });
}
for (const [position, setting] of SETTINGS.entries()) {
  const summary = ['p50', 'p90', 'p99'].map((key) => `${key} ${median(results[position].map((result) => result[key])).toFixed(3)}`);
  console.log(`${pauseMs > 0 ? `after ${pauseMs} ms idle: ` : ''}page ${setting.pageSize} temp_store ${setting.tempStore.padEnd(7)} ${summary.join('  ')} ms`);
}
