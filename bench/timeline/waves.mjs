// C clients send N messages in a closed loop to a 3-replica cluster whose dist/ was instrumented by
// bench/timeline/instrument-dist.sh, and the merged timestamps are cut into waves: with C of at most 32
// the loop settles into rounds in which the leader takes the C writes, applies and commits them as one
// batch, replicates it, and answers all of them, after which the clients send the next C. Prints the
// median of each phase of a wave. A batch holds at most 32 writes (MAX_WRITES_PER_BATCH in
// src/node/replica-node.ts), so with more clients the batches overlap and the waves cannot be cut; the
// table in NOTEBOOK §20 was made at 64 clients on the build before that limit.
//
//   npm run build && bash bench/timeline/instrument-dist.sh && node bench/timeline/waves.mjs [clients=32] [sends=10000]
//
// The hooks write a line per event (about 70 per wave at 64 clients), which adds to what they measure.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loginSender, median, payload, runClosedLoop, startReplichat } from '../support/local-clusters.mjs';

const clients = Number(process.argv[2] ?? 32);
const sends = Number(process.argv[3] ?? 10_000);
const directory = mkdtempSync(join(tmpdir(), 'replichat-waves-'));
process.env.RC_TRACE = directory;
const cluster = await startReplichat({ directory, replicas: 3, name: 'waves' });
const token = await loginSender(cluster, 'waves');
const loop = await runClosedLoop({
  concurrency: clients,
  count: sends,
  sendOne: (n) => cluster.call('SendMessage', { requestId: `waves-${n}`, recipient: 'bob', body: payload(n, 100) }, token),
});
const writesPerSecond = Math.round(loop.writesPerSecond);
if (Object.keys(loop.errorCodes).length > 0) console.log(`failed writes: ${JSON.stringify(loop.errorCodes)}`);
await cluster.stop();
const events = readdirSync(directory)
  .filter((name) => name.startsWith('trace-'))
  .flatMap((name) => readFileSync(join(directory, name), 'utf8').split('\n'))
  .filter((line) => line.startsWith('T '))
  .map((line) => {
    const [, pid, at, ...what] = line.split(' ');
    return { pid, atMs: Number(at), what: what.join(' ') };
  })
  .sort((a, b) => a.atMs - b.atMs);
rmSync(directory, { recursive: true, force: true });
if (events.length === 0) throw new Error('the servers wrote no timestamps: run bench/timeline/instrument-dist.sh after npm run build');
const leader = events.find((event) => event.what === 'rpc-start SendMessage').pid;

// A wave starts at the leader's first SendMessage after an acknowledgement and ends at its next
// acknowledgement. Waves with more than one batch or one acknowledgement are skipped: their phases overlap.
const phases = new Map();
const record = (name, valueMs) => {
  if (!phases.has(name)) phases.set(name, []);
  phases.get(name).push(valueMs);
};
let wave = null;
let previous = null;
let skipped = 0;
let batchSizes = [];
for (const event of events) {
  if (event.pid === leader && event.what === 'rpc-start SendMessage' && (wave === null || wave.ack !== undefined)) {
    if (wave !== null) finish(wave, event.atMs);
    previous = wave;
    wave = { startMs: event.atMs, applies: [], appendSends: [], followers: new Map(), replies: [] };
    continue;
  }
  if (wave === null) continue;
  if (event.pid === leader) {
    if (event.what.startsWith('apply-start ') && event.what !== 'apply-start 0') wave.applies.push({ atMs: event.atMs, size: Number(event.what.split(' ')[1]) });
    else if (event.what.startsWith('carryOut msgs=') && !event.what.startsWith('carryOut msgs=0') && wave.applies.length === 1 && wave.committedMs === undefined) wave.committedMs = event.atMs;
    else if (event.what === 'send append' && wave.committedMs !== undefined) wave.appendSends.push(event.atMs);
    else if (event.what === 'deliver appendReply' && wave.committedMs !== undefined) wave.replies.push(event.atMs);
    else if (event.what.startsWith('ack ') && wave.committedMs !== undefined) wave.ack ??= event.atMs;
  } else if (wave.committedMs !== undefined) {
    const follower = wave.followers.get(event.pid) ?? {};
    if (event.what === 'deliver append' && follower.receivedMs === undefined) follower.receivedMs = event.atMs;
    if (event.what === 'send appendReply' && follower.receivedMs !== undefined && follower.repliedMs === undefined) follower.repliedMs = event.atMs;
    wave.followers.set(event.pid, follower);
  }
}

function finish(done, nextStartMs) {
  const slower = [...done.followers.values()].filter((follower) => follower.repliedMs !== undefined).sort((a, b) => b.repliedMs - a.repliedMs)[0];
  if (done.applies.length !== 1 || done.committedMs === undefined || done.appendSends.length < 2 || slower === undefined || done.ack === undefined) {
    skipped += 1;
    return;
  }
  const reply = done.replies.find((atMs) => atMs >= slower.repliedMs) ?? done.ack;
  batchSizes.push(done.applies[0].size);
  record('leader: the wave\'s requests, to the batch', done.applies[0].atMs - done.startMs);
  record('leader: apply and commit the batch', done.committedMs - done.applies[0].atMs);
  record('leader: appends built and sent', done.appendSends[1] - done.committedMs);
  record('wire: append to the slower follower, and its check', slower.receivedMs - done.appendSends[1]);
  record('follower: apply, commit and reply (the slower)', slower.repliedMs - slower.receivedMs);
  record('wire: its reply to the leader', reply - slower.repliedMs);
  record('leader: reply to acknowledgement', done.ack - reply);
  record('replication: commit to acknowledgement', done.ack - done.committedMs);
  record('answers, the client, and its next requests', nextStartMs - done.ack);
  record('wave', nextStartMs - done.startMs);
}

console.log(`${clients} clients, ${sends} sends: ${writesPerSecond} writes/s; ${batchSizes.length} waves measured (median batch ${median(batchSizes)}), ${skipped} skipped`);
if (batchSizes.length === 0) console.log('no wave had a single batch: with more than 32 clients the batches overlap; try 32 clients or fewer');
for (const [name, values] of phases) console.log(`${median(values).toFixed(2).padStart(8)} ms  ${name}`);
