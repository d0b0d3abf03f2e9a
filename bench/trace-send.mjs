// Where a sequential send's time goes: one client sends N messages one at a time to a real cluster
// (`dist/cli/main.js server` processes on loopback, plaintext clients, fsync on every commit), measured
// from outside and from the servers' own timings (their /metrics histograms, read before and after).
//
//   npm run build && node bench/trace-send.mjs [replicas=3] [sends=300] [bodyBytes=100]
//
// Per send, as means over the N sends (histogram sums divided by the number of sends):
//   client          the client's round trip for SendMessage (median and p99 too)
//   server          the leader's handling time (replichat_rpc_duration_seconds{method="SendMessage"})
//   leaderCommit    the leader's SQLite transactions that append entries (replichat_sqlite_commit_seconds)
//   replication     from the leader's commit to every in-sync replica holding the entry
//                   (replichat_replication_round_trip_seconds; 0 with 1 replica)
//   followerCommit  each follower's SQLite transactions of appended entries, per send
// and what the differences leave: client - server (client library, gRPC framing, loopback, both event
// loops), server - leaderCommit - replication (validation, idempotency lookup, waiting for a group commit,
// building the answer), replication - followerCommit (the append and its reply on the wire, decoding, the
// follower's and leader's event loops, any wait for a timer). Two floors are measured on the same machine:
// a gRPC round trip to the leader that does no disk work (GetReplicaStatus), and a one-row SQLite commit
// with synchronous=FULL in this process. Prints a table and one JSON line.
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { latencySummary, loginSender, payload, startReplichat } from './support/local-clusters.mjs';

const replicas = Number(process.argv[2] ?? 3);
const sends = Number(process.argv[3] ?? 300);
const bodyBytes = Number(process.argv[4] ?? 100);
if (![replicas, sends, bodyBytes].every((value) => Number.isSafeInteger(value) && value > 0)) {
  console.error('usage: node bench/trace-send.mjs [replicas] [sends] [bodyBytes]');
  process.exit(2);
}
const FLOOR_SAMPLES = 200;

/** Histogram sums and counts of one replica's /metrics, keyed by metric name and labels. */
async function scrape(url) {
  const text = await (await fetch(url)).text();
  const values = new Map();
  for (const line of text.split('\n')) {
    const match = /^(replichat_\w+_(?:sum|count))(\{[^}]*\})? ([0-9.eE+-]+)$/.exec(line);
    if (match !== null) values.set(`${match[1]}${match[2] ?? ''}`, Number(match[3]));
  }
  return values;
}

function delta(before, after, key) {
  return (after.get(key) ?? 0) - (before.get(key) ?? 0);
}

/** The median one-row commit of SQLite with WAL and synchronous=FULL, in `directory`. */
function sqliteCommitFloorMs(directory) {
  const database = new Database(join(directory, 'floor.sqlite'));
  database.pragma('journal_mode = WAL');
  database.pragma('synchronous = FULL');
  database.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
  const insert = database.prepare('INSERT INTO t (body) VALUES (?)');
  const timesMs = [];
  for (let n = 0; n < FLOOR_SAMPLES; n += 1) {
    const startedAtMs = performance.now();
    insert.run(payload(n, bodyBytes));
    timesMs.push(performance.now() - startedAtMs);
  }
  database.close();
  return latencySummary(timesMs).p50Ms;
}

const directory = mkdtempSync(join(tmpdir(), 'replichat-trace-'));
let cluster;
try {
  const commitFloorMs = sqliteCommitFloorMs(directory);
  cluster = await startReplichat({ directory, replicas, name: 'trace' });
  const token = await loginSender(cluster, 'trace');
  const leader = cluster.processes[cluster.leaderOrdinal];
  const followers = cluster.processes.filter((replica) => replica !== leader);

  const grpcTimesMs = [];
  for (let n = 0; n < FLOOR_SAMPLES; n += 1) {
    const startedAtMs = performance.now();
    await cluster.call('GetReplicaStatus', {});
    grpcTimesMs.push(performance.now() - startedAtMs);
  }
  const grpcFloorMs = latencySummary(grpcTimesMs).p50Ms;

  // A few sends first, so that connections, prepared statements and the JIT are warm.
  for (let n = 0; n < 20; n += 1) await cluster.call('SendMessage', { requestId: `trace-warm-${n}`, recipient: 'bob', body: payload(n, bodyBytes) }, token);

  const before = await Promise.all(cluster.processes.map((replica) => scrape(replica.metricsUrl)));
  const clientTimesMs = [];
  for (let n = 0; n < sends; n += 1) {
    const startedAtMs = performance.now();
    await cluster.call('SendMessage', { requestId: `trace-${n}`, recipient: 'bob', body: payload(n, bodyBytes) }, token);
    clientTimesMs.push(performance.now() - startedAtMs);
  }
  const after = await Promise.all(cluster.processes.map((replica) => scrape(replica.metricsUrl)));

  const leaderBefore = before[cluster.processes.indexOf(leader)];
  const leaderAfter = after[cluster.processes.indexOf(leader)];
  const perSendMs = (sumSeconds) => (sumSeconds * 1000) / sends;
  const rpcKey = 'replichat_rpc_duration_seconds_sum{method="SendMessage"}';
  const rpcCount = delta(leaderBefore, leaderAfter, 'replichat_rpc_duration_seconds_count{method="SendMessage"}');
  const clientMeanMs = clientTimesMs.reduce((sum, value) => sum + value, 0) / sends;
  const serverMs = perSendMs(delta(leaderBefore, leaderAfter, rpcKey));
  const leaderCommitMs = perSendMs(delta(leaderBefore, leaderAfter, 'replichat_sqlite_commit_seconds_sum'));
  const leaderCommits = delta(leaderBefore, leaderAfter, 'replichat_sqlite_commit_seconds_count');
  const replicationMs = perSendMs(delta(leaderBefore, leaderAfter, 'replichat_replication_round_trip_seconds_sum'));
  const followerCommitMs = followers.map((follower) => {
    const index = cluster.processes.indexOf(follower);
    return perSendMs(delta(before[index], after[index], 'replichat_sqlite_commit_seconds_sum'));
  });
  const followerCommits = followers.map((follower) => {
    const index = cluster.processes.indexOf(follower);
    return delta(before[index], after[index], 'replichat_sqlite_commit_seconds_count');
  });
  // The slower follower decides when the leader has heard from every in-sync replica.
  const slowestFollowerCommitMs = followerCommitMs.length === 0 ? 0 : Math.max(...followerCommitMs);
  const client = latencySummary(clientTimesMs);
  const result = {
    replicas,
    sends,
    bodyBytes,
    rpcCount,
    floors: { grpcRoundTripMs: grpcFloorMs, sqliteCommitMs: commitFloorMs },
    client: { meanMs: clientMeanMs, p50Ms: client.p50Ms, p99Ms: client.p99Ms },
    perSendMeanMs: {
      clientOutsideServer: clientMeanMs - serverMs,
      server: serverMs,
      serverOutsideCommitAndReplication: serverMs - leaderCommitMs - replicationMs,
      leaderCommit: leaderCommitMs,
      replication: replicationMs,
      replicationOutsideFollowerCommit: replicationMs - slowestFollowerCommitMs,
      followerCommit: followerCommitMs,
    },
    commitsPerSend: { leader: leaderCommits / sends, followers: followerCommits.map((count) => count / sends) },
  };
  const ms = (value) => `${value.toFixed(2)} ms`;
  console.log(
    [
      `${replicas} replica(s), ${sends} sequential sends of ${bodyBytes} bytes (means per send)`,
      `  client round trip          ${ms(clientMeanMs)} (p50 ${ms(client.p50Ms)}, p99 ${ms(client.p99Ms)})`,
      `    outside the server       ${ms(result.perSendMeanMs.clientOutsideServer)}   (floor: a gRPC round trip without disk work, p50 ${ms(grpcFloorMs)})`,
      `    leader handling          ${ms(serverMs)}`,
      `      leader commit          ${ms(leaderCommitMs)}   (${(leaderCommits / sends).toFixed(2)} commits per send; floor: one SQLite commit, p50 ${ms(commitFloorMs)})`,
      `      replication            ${ms(replicationMs)}   (leader commit to every in-sync replica holding it)`,
      ...followerCommitMs.map((value, index) => `        follower commit      ${ms(value)}   (replica ${followers[index].ordinal}, ${(followerCommits[index] / sends).toFixed(2)} commits per send)`),
      ...(replicas > 1 ? [`        wire, queues, loops  ${ms(result.perSendMeanMs.replicationOutsideFollowerCommit)}   (replication minus the slower follower's commit)`] : []),
      `      the rest of handling   ${ms(result.perSendMeanMs.serverOutsideCommitAndReplication)}   (validation, lookups, waiting for a group commit, the answer)`,
    ].join('\n'),
  );
  console.log(JSON.stringify(result));
} finally {
  await cluster?.stop();
  rmSync(directory, { recursive: true, force: true });
}
