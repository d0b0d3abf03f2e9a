// Measures the bytes on disk per message: N messages with a body of B bytes (default 10,000 of 1,024 bytes)
// sent through SendMessage into one real replica (a `dist/cli/main.js server` process, plaintext on
// loopback, 16 concurrent clients), then the replica is stopped cleanly (closing the database checkpoints
// the WAL into the database file) and the files of its data directory are added up.
//
//   npm run build && node bench/disk-per-message.mjs [messages=10000] [bodyBytes=1024]
//
// Prints one JSON line: bytesPerMessage is the data directory's size divided by N; marginalBytesPerMessage
// leaves out the size of an empty cluster (a first replica set up the same way, with the accounts and a
// session but no message, stopped the same way), and
// tables is the share of each table and index (SQLite's dbstat, pages times page size, divided by N).
// Bodies are random base64 text, so that nothing could be gained from their content. The log keeps its
// newest --log-retention-entries (default 100,000) entries, so for N below that every send is in the log.
import Database from 'better-sqlite3';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { directoryBytes, loginSender, runClosedLoop, startReplichat } from './support/local-clusters.mjs';

const messages = Number(process.argv[2] ?? 10_000);
const bodyBytes = Number(process.argv[3] ?? 1024);
if (!Number.isSafeInteger(messages) || messages < 1 || !Number.isSafeInteger(bodyBytes) || bodyBytes < 1) {
  console.error('usage: node bench/disk-per-message.mjs [messages] [bodyBytes]');
  process.exit(2);
}
const CONCURRENCY = 16;

function log(text) {
  process.stderr.write(`[disk-per-message] ${text}\n`);
}

function body() {
  return randomBytes(bodyBytes).toString('base64').slice(0, bodyBytes);
}

const directory = mkdtempSync(join(tmpdir(), 'replichat-disk-'));
try {
  // A first cluster with the accounts and a session only, stopped cleanly: the empty cluster's files.
  const empty = await startReplichat({ directory, replicas: 1, name: 'disk-empty' });
  await loginSender(empty, 'disk');
  await empty.stop();
  const emptyBytes = directoryBytes(empty.processes[0].dataDirectory);

  // A second cluster, set up the same way, then the N messages.
  const cluster = await startReplichat({ directory, replicas: 1, name: 'disk' });
  const token = await loginSender(cluster, 'disk');
  const dataDirectory = cluster.processes[0].dataDirectory;
  const sent = await runClosedLoop({
    concurrency: CONCURRENCY,
    count: messages,
    // Request ids are UUIDs, as the CLI makes them.
    sendOne: () => cluster.call('SendMessage', { requestId: randomUUID(), recipient: 'bob', body: body() }, token),
  });
  await cluster.stop();
  if (sent.acknowledged !== messages) throw new Error(`only ${sent.acknowledged} of ${messages} sends succeeded: ${JSON.stringify(sent.errorCodes)}`);
  const totalBytes = directoryBytes(dataDirectory);
  log(`${messages} messages of ${bodyBytes} bytes at ${sent.writesPerSecond.toFixed(0)} writes/s; files: ${readdirSync(dataDirectory).join(', ')}`);

  const database = new Database(join(dataDirectory, 'replichat.sqlite'), { readonly: true });
  const pageSize = database.pragma('page_size', { simple: true });
  const rows = database.prepare('SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name ORDER BY bytes DESC').all();
  const freePages = database.pragma('freelist_count', { simple: true });
  database.close();
  const tables = Object.fromEntries(rows.filter((row) => row.bytes / messages >= 1).map((row) => [row.name, Math.round(row.bytes / messages)]));
  console.log(
    JSON.stringify({
      messages,
      bodyBytes,
      pageSize,
      totalBytes,
      emptyBytes,
      bytesPerMessage: Math.round(totalBytes / messages),
      marginalBytesPerMessage: Math.round((totalBytes - emptyBytes) / messages),
      freePages,
      tables,
    }),
  );
} finally {
  if (process.env.BENCH_KEEP === '1') log(`kept ${directory}`);
  else rmSync(directory, { recursive: true, force: true });
}
