// One client sends N messages one at a time to a 3-replica cluster whose dist/ was instrumented by
// bench/timeline/instrument-dist.sh, then merges the client's and the servers' timestamps into one
// timeline and prints the median of each step (bench/timeline/timeline.py).
//
//   npm run build && bash bench/timeline/instrument-dist.sh && node bench/timeline/sequential.mjs [sends=300]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loginSender, payload, startReplichat } from '../support/local-clusters.mjs';

const sends = Number(process.argv[2] ?? 300);
const directory = mkdtempSync(join(tmpdir(), 'replichat-timeline-'));
process.env.RC_TRACE = directory;
const cluster = await startReplichat({ directory, replicas: 3, name: 'timeline' });
const token = await loginSender(cluster, 'timeline');
const clientLines = [];
for (let n = 0; n < sends; n += 1) {
  clientLines.push(`T client ${(performance.timeOrigin + performance.now()).toFixed(3)} client-send`);
  await cluster.call('SendMessage', { requestId: `timeline-${n}`, recipient: 'bob', body: payload(n, 100) }, token);
}
clientLines.push(`T client ${(performance.timeOrigin + performance.now()).toFixed(3)} client-send`);
await cluster.stop();
const serverLines = readdirSync(directory)
  .filter((name) => name.startsWith('trace-'))
  .flatMap((name) => readFileSync(join(directory, name), 'utf8').split('\n').filter((line) => line.startsWith('T ')));
if (serverLines.length === 0) throw new Error('the servers wrote no timestamps: run bench/timeline/instrument-dist.sh after npm run build');
const timeline = join(directory, 'timeline.txt');
writeFileSync(timeline, [...serverLines, ...clientLines].join('\n') + '\n');
process.stdout.write(execFileSync('python3', [fileURLToPath(new URL('timeline.py', import.meta.url)), timeline], { encoding: 'utf8' }));
console.log(`timeline: ${timeline}`);
