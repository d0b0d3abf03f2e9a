/**
 * The container image, run for real. The image is built with podman from the Dockerfile (on a base image
 * assembled locally with debootstrap and this machine's Node 20, since no image registry is reachable),
 * and scripts/container-cluster.sh starts, on one podman network (netavark with aardvark-dns): an etcd as
 * the configuration store, three replicas whose DNS names are the StatefulSet's
 * (chat-N.chat-peers.default.svc.cluster.local, host name chat-N, so each replica takes its ordinal from its
 * host name as in a pod), with client TLS and peer mutual TLS from scripts/make-dev-certs.sh, a read-only
 * root file system and no capabilities; and a fourth container from the same image that runs the CLI, with
 * REPLICHAT_SERVERS listing the three client addresses, which it resolves from its hosts file (rewritten with
 * the replicas' addresses whenever one starts; aardvark-dns stalled lookups after a kill, NOTEBOOK.md §15).
 * Every command below runs in that CLI container
 * (`podman exec`, as `kubectl exec chat-cli -- replichat ...`). It proves:
 *
 *   a. the image runs the server as a non-root user under tini as PID 1, and chat works: two users register,
 *      one sends, the other reads the messages back;
 *   b. the leader container (found with `replichat status --json`) is killed with SIGKILL, and the CLI's next
 *      send succeeds (the CLI retries across servers until a new leader answers); the killed replica is
 *      started again on its data directory and returns to the in-sync set;
 *   c. a rolling update: each replica in turn (highest ordinal first, as a StatefulSet does) gets SIGTERM
 *      through `podman stop`, exits cleanly (exit code 0, so tini forwarded the signal and the server did not
 *      need a SIGKILL), is started again and is awaited back in the in-sync set before the next one, while a
 *      writer in the CLI container sends continuously with the CLI's client library. Every acknowledged
 *      message is then read back exactly once, and nothing is read twice.
 *
 * The write gaps of the rolling update are measured and printed (prefix [container]); the test asserts
 * correctness only, never speed. If podman cannot run here, the test fails: it never skips.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const REPOSITORY = fileURLToPath(new URL('..', import.meta.url));
/** Names unique to this run, so that runs in parallel never collide; the pid lets a later run clean up. */
const PREFIX = `replichat-ct-${process.pid}`;
const IMAGE = 'localhost/replichat:container-test';
const CLI_CONTAINER = `${PREFIX}-cli`;
const REPLICAS = [0, 1, 2] as const;
const ALICE = { username: 'alice', password: 'alice-password', sessionFile: '/tmp/alice.json' };
const BOB = { username: 'bob', password: 'bob-password', sessionFile: '/tmp/bob.json' };
/** The base images and the image build take minutes on a fresh machine (debootstrap, better-sqlite3). */
const CLUSTER_UP_TIMEOUT_MS = 900_000;
/** Election, a status round and removal of a dead leader take about 1.5 s; a restart a few seconds more. */
const HEALTHY_DEADLINE_MS = 120_000;
/** The writer pauses this long after each acknowledgement, to leave the two cores to the replicas. */
const WRITER_PAUSE_MS = 10;
/** Writes acknowledged before the first restart and after each, so every window has writes on both sides. */
const WRITES_BETWEEN_RESTARTS = 20;

interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to its end; rejects when it outlives `timeoutMs`. */
function run(command: string, args: readonly string[], options: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: REPOSITORY, env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timeoutMs = options.timeoutMs ?? 60_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

function describeResult(what: string, result: RunResult): string {
  return `${what} exited with ${result.code}\n--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}`;
}

async function podman(args: readonly string[], timeoutMs = 60_000): Promise<string> {
  const result = await run('podman', ['--runtime', 'runc', ...args], { timeoutMs });
  if (result.code !== 0) throw new Error(describeResult(`podman ${args.join(' ')}`, result));
  return result.stdout.trim();
}

/** `replichat ARGS` in the CLI container, as the given user (their session file), stdin from `input`. */
function cli(args: readonly string[], options: { user?: { sessionFile: string }; input?: string } = {}): Promise<RunResult> {
  const environment = options.user === undefined ? [] : ['-e', `REPLICHAT_SESSION_FILE=${options.user.sessionFile}`];
  return run('podman', ['exec', '-i', ...environment, CLI_CONTAINER, 'replichat', ...args], { input: options.input, timeoutMs: 60_000 });
}

async function cliOk(args: readonly string[], options: { user?: { sessionFile: string }; input?: string } = {}): Promise<string> {
  const result = await cli(args, options);
  if (result.code !== 0) throw new Error(describeResult(`replichat ${args.join(' ')}`, result));
  return result.stdout;
}

function replicaContainer(ordinal: number): string {
  return `${PREFIX}-chat-${ordinal}`;
}

/**
 * Starts a stopped replica's container again, and gives the CLI container its address, which a restarted
 * container may have changed (see refresh_cli_hosts in scripts/container-cluster.sh).
 */
async function startReplica(ordinal: number): Promise<void> {
  const result = await run('bash', ['scripts/container-cluster.sh', 'start', String(ordinal)], {
    env: { ...process.env, CLUSTER_PREFIX: PREFIX, STATE_DIR: stateDirectory },
  });
  if (result.code !== 0) throw new Error(describeResult(`container-cluster.sh start ${ordinal}`, result));
}

interface ClusterStatus {
  readonly health: 'healthy' | 'degraded' | 'no-leader';
  readonly leader: { readonly ordinal: number; readonly epoch: number; readonly inSync: number[]; readonly answered: boolean } | null;
}

/** `replichat status --json`; its exit code is the health (0, 3, 4), so any of those carries the document. */
async function clusterStatus(): Promise<ClusterStatus> {
  const result = await cli(['status', '--json']);
  try {
    return JSON.parse(result.stdout) as ClusterStatus;
  } catch {
    throw new Error(describeResult('replichat status --json', result));
  }
}

/** Polls `status` until `accept` holds, failing after `deadlineMs` with the last answer. */
async function awaitStatus(what: string, accept: (status: ClusterStatus) => boolean, deadlineMs = HEALTHY_DEADLINE_MS): Promise<ClusterStatus> {
  const giveUpAt = Date.now() + deadlineMs;
  let last: ClusterStatus | string = 'no answer yet';
  while (Date.now() < giveUpAt) {
    try {
      const status = await clusterStatus();
      if (accept(status)) return status;
      last = status;
    } catch (error) {
      last = String(error);
    }
    // Each status call is a process in the CLI container and takes a good part of a second by itself, so
    // the loop needs no pause of its own.
  }
  throw new Error(`${what}: not within ${deadlineMs} ms; last status: ${JSON.stringify(last)}`);
}

/** Every replica answered, a leader leads and every member is in its in-sync set. */
function fullyInSync(status: ClusterStatus): boolean {
  return status.health === 'healthy' && status.leader !== null && status.leader.answered && status.leader.inSync.length === REPLICAS.length;
}

/** Reads every unread message of `user`, page by page, oldest first. */
async function readAll(user: typeof BOB): Promise<string[]> {
  const bodies: string[] = [];
  for (;;) {
    const page = JSON.parse(await cliOk(['--json', 'read', '-n', '500'], { user })) as {
      messages: { body: string }[];
      remainingUnreadCount: number;
    };
    bodies.push(...page.messages.map((message) => message.body));
    if (page.remainingUnreadCount === 0 || page.messages.length === 0) return bodies;
  }
}

/** A writer's line per send: acknowledged with the message id, or failed with the reason. */
type WriterLine =
  | { readonly ready: true }
  | { readonly body: string; readonly id: string; readonly startedAtMs: number; readonly ackedAtMs: number }
  | { readonly body: string; readonly error: string; readonly startedAtMs: number; readonly failedAtMs: number };

type Acknowledged = Extract<WriterLine, { id: string }>;

/**
 * The continuous writer, run by Node inside the CLI container with the image's own client library (the one
 * the CLI uses, retries across servers included). It sends one message at a time until its stdin closes,
 * and prints one JSON line per send, so that gaps are measured from acknowledgements, not from process
 * start-ups of a CLI per message.
 */
const WRITER_SOURCE = `
const { ChatClient } = await import('/app/dist/cli/chat-client.js');
const client = new ChatClient({
  servers: process.env.REPLICHAT_SERVERS.split(','),
  tls: { caCertPath: process.env.REPLICHAT_CA_CERT },
});
await client.login(process.env.WRITER_USERNAME, process.env.WRITER_PASSWORD);
let stopping = false;
process.stdin.on('end', () => { stopping = true; });
process.stdin.resume();
const print = (line) => process.stdout.write(JSON.stringify(line) + '\\n');
print({ ready: true });
for (let count = 0; !stopping; count += 1) {
  const body = process.env.WRITER_PREFIX + count;
  const startedAtMs = Date.now();
  try {
    const message = await client.sendMessage(process.env.WRITER_RECIPIENT, body);
    print({ body, id: message.id, startedAtMs, ackedAtMs: Date.now() });
  } catch (error) {
    print({ body, error: String(error && error.message ? error.message : error), startedAtMs, failedAtMs: Date.now() });
  }
  await new Promise((resolve) => setTimeout(resolve, Number(process.env.WRITER_PAUSE_MS)));
}
client.close();
process.exit(0);
`;

class ContainerWriter {
  readonly lines: WriterLine[] = [];
  private readonly child: ChildProcess;
  private stderr = '';
  private readonly exited: Promise<number | null>;
  private readonly waiters = new Set<() => void>();

  constructor(prefix: string) {
    this.child = spawn(
      'podman',
      [
        'exec', '-i',
        '-e', `WRITER_USERNAME=${ALICE.username}`, '-e', `WRITER_PASSWORD=${ALICE.password}`,
        '-e', `WRITER_RECIPIENT=${BOB.username}`, '-e', `WRITER_PREFIX=${prefix}`, '-e', `WRITER_PAUSE_MS=${WRITER_PAUSE_MS}`,
        CLI_CONTAINER, 'node', '--input-type=module', '-e', WRITER_SOURCE,
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      this.lines.push(JSON.parse(line) as WriterLine);
      for (const wake of [...this.waiters]) wake();
    });
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) => this.child.once('close', (code) => {
      resolve(code);
      for (const wake of [...this.waiters]) wake();
    }));
  }

  acknowledged(): Acknowledged[] {
    return this.lines.filter((line): line is Acknowledged => 'id' in line);
  }

  /** Resolves once `count` sends in all have been acknowledged. */
  awaitAcknowledged(count: number, deadlineMs = HEALTHY_DEADLINE_MS): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.acknowledged().length >= count) {
          finish();
          resolve();
        } else if (this.child.exitCode !== null || this.child.signalCode !== null) {
          finish();
          reject(new Error(`the writer exited early: ${this.stderr}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`the writer had ${this.acknowledged().length} of ${count} acknowledgements after ${deadlineMs} ms: ${this.stderr}`));
      }, deadlineMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Closes its stdin and waits for it to finish the send in flight and exit. */
  async stop(): Promise<void> {
    this.child.stdin!.end();
    const code = await this.exited;
    if (code !== 0) throw new Error(`the writer exited with ${code}: ${this.stderr}`);
  }
}

/**
 * The longest time without an acknowledged write in [fromMs, toMs]: the largest distance between
 * consecutive acknowledgements among those whose interval overlaps the window.
 */
function longestWriteGapMs(acknowledged: readonly Acknowledged[], fromMs: number, toMs: number): number {
  const times = acknowledged.map((line) => line.ackedAtMs).sort((a, b) => a - b);
  let longest = 0;
  for (let index = 1; index < times.length; index += 1) {
    const previous = times[index - 1]!;
    const next = times[index]!;
    if (next > fromMs && previous < toMs) longest = Math.max(longest, next - previous);
  }
  return longest;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? NaN : sorted[Math.floor(sorted.length / 2)]!;
}

/** Removes the containers and networks of earlier runs whose process is gone (a run killed mid-way). */
async function removeLeftovers(): Promise<void> {
  const labels = await podman(['ps', '-a', '--format', '{{index .Labels "replichat.container-cluster"}}']);
  const networks = await podman(['network', 'ls', '--format', '{{.Name}}']);
  const prefixes = new Set(
    [...labels.split('\n'), ...networks.split('\n').map((name) => name.replace(/-net$/, ''))].filter((name) => /^replichat-ct-\d+$/.test(name)),
  );
  for (const prefix of prefixes) {
    const pid = Number(prefix.slice('replichat-ct-'.length));
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
    if (!alive || pid === process.pid) {
      await run('bash', ['scripts/container-cluster.sh', 'down'], { env: { ...process.env, CLUSTER_PREFIX: prefix }, timeoutMs: 120_000 });
    }
  }
}

function report(line: string): void {
  process.stderr.write(`[container] ${line}\n`);
}

const stateDirectory = mkdtempSync(join(tmpdir(), 'replichat-container-'));
let clusterUp = false;
/** Counted at the end of each test, so that afterAll prints the replicas' logs only after a failure. */
let testsPassed = 0;
const TEST_COUNT = 3;

beforeAll(async () => {
  // podman must work here; if it does not, every test fails with the reason (never a skip).
  await podman(['info', '--format', '{{.Host.OCIRuntime.Name}} {{.Host.NetworkBackend}}']);
  await removeLeftovers();
  const startedAtMs = Date.now();
  const up = await run('bash', ['scripts/container-cluster.sh', 'up'], {
    env: { ...process.env, CLUSTER_PREFIX: PREFIX, STATE_DIR: stateDirectory, IMAGE },
    timeoutMs: CLUSTER_UP_TIMEOUT_MS,
  });
  // Set before the check, so that afterAll shows the containers' state when `up` failed half-way.
  clusterUp = true;
  if (up.code !== 0) throw new Error(describeResult('scripts/container-cluster.sh up', up));
  report(`base images, image build and containers up in ${((Date.now() - startedAtMs) / 1000).toFixed(1)} s`);
  await awaitStatus('three replicas in sync after the first start', fullyInSync);
}, CLUSTER_UP_TIMEOUT_MS + HEALTHY_DEADLINE_MS);

afterAll(async () => {
  if (clusterUp && testsPassed < TEST_COUNT) {
    // The replicas' logs are the first thing to read when a test above failed.
    for (const container of [...REPLICAS.map(replicaContainer), `${PREFIX}-etcd`, CLI_CONTAINER]) {
      const state = await run('podman', [
        'inspect', '--format',
        '{{.State.Status}} exit code {{.State.ExitCode}}, OOM-killed {{.State.OOMKilled}}, started {{.State.StartedAt}}, finished {{.State.FinishedAt}} {{.State.Error}}',
        container,
      ]);
      const logs = await run('podman', ['logs', '--tail', '40', container]);
      report(`${container}: ${state.stdout.trim()}${state.stderr.trim()}\n${logs.stdout}${logs.stderr}`);
    }
  }
  await run('bash', ['scripts/container-cluster.sh', 'down'], {
    env: { ...process.env, CLUSTER_PREFIX: PREFIX, STATE_DIR: stateDirectory },
    timeoutMs: 120_000,
  });
}, 180_000);

describe('the replichat image on a podman network laid out like the StatefulSet', () => {
  test('a: replicas run as a non-root user under tini, and two users chat through the CLI container', async () => {
    for (const ordinal of REPLICAS) {
      const container = replicaContainer(ordinal);
      expect(await podman(['exec', container, 'id', '-u'])).toBe('10001');
      const pidOne = (await podman(['exec', container, 'cat', '/proc/1/cmdline'])).split('\0');
      expect(pidOne.slice(0, 4)).toEqual(['/usr/bin/tini', '--', 'replichat', 'server']);
    }

    await cliOk(['register', ALICE.username, '--password-stdin'], { user: ALICE, input: `${ALICE.password}\n` });
    await cliOk(['register', BOB.username, '--password-stdin'], { user: BOB, input: `${BOB.password}\n` });
    const firstId = (await cliOk(['send', BOB.username, 'hello from a container'], { user: ALICE })).trim();
    await cliOk(['send', BOB.username, 'second message'], { user: ALICE });
    expect(firstId).toMatch(/^[0-9a-f-]{36}$/);

    const read = JSON.parse(await cliOk(['--json', 'read'], { user: BOB })) as { messages: { id: string; sender: string; body: string }[] };
    expect(read.messages.map((message) => [message.sender, message.body])).toEqual([
      [ALICE.username, 'hello from a container'],
      [ALICE.username, 'second message'],
    ]);
    expect(read.messages[0]!.id).toBe(firstId);
    testsPassed += 1;
  }, 120_000);

  test('b: the leader container is killed with SIGKILL and the next send from the CLI succeeds', async () => {
    const before = await awaitStatus('a leader before the kill', fullyInSync);
    const killed = before.leader!.ordinal;
    await podman(['kill', '--signal', 'KILL', replicaContainer(killed)]);
    expect(await podman(['inspect', '--format', '{{.State.Running}}', replicaContainer(killed)])).toBe('false');
    try {
      const sendStartedAtMs = Date.now();
      // cliOk fails the test unless the send exits 0.
      const sentId = (await cliOk(['send', BOB.username, `after the leader ${killed} was killed`], { user: ALICE })).trim();
      const sendMs = Date.now() - sendStartedAtMs;
      expect(sentId).toMatch(/^[0-9a-f-]{36}$/);
      report(`send right after SIGKILL of leader ${killed}: succeeded after ${sendMs} ms (CLI start-up included)`);

      const after = await awaitStatus('a new leader', (status) => status.leader !== null && status.leader.answered && status.leader.ordinal !== killed);
      expect(after.leader!.epoch).toBeGreaterThan(before.leader!.epoch);
    } finally {
      // Like a pod restarted by the kubelet: the same container, its data directory, its DNS name. Also
      // after a failure above, so that the next test starts from three replicas.
      await startReplica(killed);
    }
    await awaitStatus(`replica ${killed} back in the in-sync set`, fullyInSync);
    const read = JSON.parse(await cliOk(['--json', 'read'], { user: BOB })) as { messages: { body: string }[] };
    expect(read.messages.map((message) => message.body)).toEqual([`after the leader ${killed} was killed`]);
    testsPassed += 1;
  }, 180_000);

  test('c: a rolling update with SIGTERM loses no acknowledged write and duplicates none', async () => {
    await awaitStatus('all in sync before the rolling update', fullyInSync);
    const writer = new ContainerWriter('rolling-');
    const windows: { ordinal: number; role: string; fromMs: number; toMs: number; stopMs: number; backMs: number }[] = [];
    try {
      await writer.awaitAcknowledged(WRITES_BETWEEN_RESTARTS);
      // A StatefulSet's rolling update goes from the highest ordinal down, one pod at a time.
      for (const ordinal of [...REPLICAS].reverse()) {
        const before = await clusterStatus();
        const role = before.leader?.ordinal === ordinal ? 'leader' : 'follower';
        const fromMs = Date.now();
        await podman(['stop', '--time', '30', replicaContainer(ordinal)], 60_000);
        const stopMs = Date.now() - fromMs;
        // Exit code 0: tini passed SIGTERM on and the server shut down by itself, not killed after the grace.
        expect(await podman(['inspect', '--format', '{{.State.ExitCode}}', replicaContainer(ordinal)])).toBe('0');
        await startReplica(ordinal);
        await awaitStatus(`replica ${ordinal} back in the in-sync set`, fullyInSync);
        const toMs = Date.now();
        windows.push({ ordinal, role, fromMs, toMs, stopMs, backMs: toMs - fromMs });
        await writer.awaitAcknowledged(writer.acknowledged().length + WRITES_BETWEEN_RESTARTS);
      }
    } finally {
      await writer.stop();
    }

    const acknowledged = writer.acknowledged();
    const failed = writer.lines.filter((line) => 'error' in line);
    const steadyGaps: number[] = [];
    const times = acknowledged.map((line) => line.ackedAtMs).sort((a, b) => a - b);
    for (let index = 1; index < times.length; index += 1) {
      const inWindow = windows.some((window) => times[index]! > window.fromMs && times[index - 1]! < window.toMs);
      if (!inWindow) steadyGaps.push(times[index]! - times[index - 1]!);
    }
    report(`rolling update: ${acknowledged.length} writes acknowledged, ${failed.length} failed (writer pauses ${WRITER_PAUSE_MS} ms after each)`);
    for (const window of windows) {
      report(
        `  replica ${window.ordinal} (${window.role}): longest write gap ${longestWriteGapMs(acknowledged, window.fromMs, window.toMs)} ms; ` +
          `SIGTERM to exit ${window.stopMs} ms, back in sync ${window.backMs} ms after SIGTERM`,
      );
    }
    report(`  outside the restarts: median gap ${median(steadyGaps)} ms, longest ${Math.max(0, ...steadyGaps)} ms`);
    for (const line of failed) report(`  failed send ${JSON.stringify(line)}`);

    const readBodies = (await readAll(BOB)).filter((body) => body.startsWith('rolling-'));
    const counts = new Map<string, number>();
    for (const body of readBodies) counts.set(body, (counts.get(body) ?? 0) + 1);
    expect([...counts].filter(([, count]) => count > 1)).toEqual([]);
    expect(acknowledged.filter((line) => !counts.has(line.body)).map((line) => line.body)).toEqual([]);
    // A body nobody sent would mean the read is not of this writer's messages at all.
    const attempted = new Set(writer.lines.flatMap((line) => ('body' in line ? [line.body] : [])));
    expect(readBodies.filter((body) => !attempted.has(body))).toEqual([]);
    expect(acknowledged.length).toBeGreaterThanOrEqual(WRITES_BETWEEN_RESTARTS * (REPLICAS.length + 1));
    testsPassed += 1;
  }, 420_000);
});
