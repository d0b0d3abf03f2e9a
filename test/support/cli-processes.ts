/**
 * Driving the built CLI (`dist/cli/main.js`) as child processes, for integration tests: one-shot commands
 * that run to completion, long-running ones (listen) whose output lines are awaited with a deadline, and
 * waiting for a condition by polling it with a deadline instead of sleeping for a guessed time.
 * Servers are started with startServer from processes.ts, alone or as a LoopbackCluster.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ChatClient } from '../../src/cli/chat-client.js';
import { CLI_PATH, freePort, type ServerProcess, startServer } from './processes.js';

export interface CliResult {
  /** The exit code, or null when a signal ended the process. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface CliOptions {
  /** Variables added to the clean environment of cliEnvironment(). */
  readonly env?: Readonly<Record<string, string>>;
  /** Written to stdin, which is then closed; without it stdin is closed at once. */
  readonly input?: string;
  /** The process is killed, and the run fails, after this long. */
  readonly timeoutMs?: number;
}

const CLI_TIMEOUT_MS = 30_000;

/**
 * The parent's environment without anything that would change how the CLI behaves: REPLICHAT_* settings
 * and the NODE_OPTIONS that jest needs but a child must not inherit.
 */
export function cliEnvironment(overrides: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv {
  const environment: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (name.startsWith('REPLICHAT_') || name === 'NODE_OPTIONS') continue;
    environment[name] = value;
  }
  return { ...environment, ...overrides };
}

function describeRun(args: readonly string[], stdout: string, stderr: string): string {
  return `replichat ${args.join(' ')}\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`;
}

/** A CLI process that runs on (such as `listen`), with its output lines available as they come. */
export interface CliProcess {
  readonly process: ChildProcess;
  /** Resolves with the first stdout line that satisfies `predicate`, including lines already printed. */
  waitForLine(predicate: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** Resolves when the process has exited. */
  readonly exited: Promise<CliResult>;
  /** Sends a signal (SIGTERM unless told) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<CliResult>;
}

export function spawnCli(args: readonly string[], options: CliOptions = {}): CliProcess {
  const child = spawn(process.execPath, [CLI_PATH, ...args], {
    env: cliEnvironment(options.env),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const lines: string[] = [];
  const lineWaiters = new Set<() => void>();
  let partialLine = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    stdout += chunk;
    partialLine += chunk;
    let newline: number;
    while ((newline = partialLine.indexOf('\n')) >= 0) {
      lines.push(partialLine.slice(0, newline));
      partialLine = partialLine.slice(newline + 1);
    }
    for (const wake of [...lineWaiters]) wake();
  });
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<CliResult>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => {
      resolve({ code, signal, stdout, stderr });
      for (const wake of [...lineWaiters]) wake();
    });
  });
  child.stdin.end(options.input ?? '');

  return {
    process: child,
    exited,
    waitForLine(predicate, timeoutMs = CLI_TIMEOUT_MS) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = lines.find(predicate);
          if (found !== undefined) {
            finish();
            resolve(found);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            finish();
            reject(new Error(`the process exited without printing the line\n${describeRun(args, stdout, stderr)}`));
          }
        };
        const timer = setTimeout(() => {
          finish();
          reject(new Error(`no matching line within ${timeoutMs} ms\n${describeRun(args, stdout, stderr)}`));
        }, timeoutMs);
        const finish = (): void => {
          clearTimeout(timer);
          lineWaiters.delete(check);
        };
        lineWaiters.add(check);
        check();
      });
    },
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Runs a one-shot CLI command to completion; fails if it takes longer than the timeout. */
export async function runCli(args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  const running = spawnCli(args, options);
  const timeoutMs = options.timeoutMs ?? CLI_TIMEOUT_MS;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      running.process.kill('SIGKILL');
      reject(new Error(`the command did not exit within ${timeoutMs} ms: replichat ${args.join(' ')}`));
    }, timeoutMs);
  });
  try {
    return await Promise.race([running.exited, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` until it holds; fails with `description` when the deadline passes first. */
export async function waitFor(
  description: string,
  condition: () => boolean | Promise<boolean>,
  options: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  for (;;) {
    if (await condition()) return;
    if (Date.now() >= deadline) throw new Error(`timed out waiting until ${description}`);
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 50));
  }
}

/** Waits until the server at `address` answers an AccountExists call. */
export async function waitUntilAnswering(address: string, timeoutMs = 20_000): Promise<void> {
  // One short attempt per poll: the client's own retries would only hide the deadline.
  const client = new ChatClient({ servers: [address], tls: 'insecure', deadlineMs: 1000, maxAttempts: 1 });
  try {
    await waitFor(
      `${address} answers AccountExists`,
      () => client.accountExists('nobody').then(() => true, () => false),
      { timeoutMs },
    );
  } finally {
    client.close();
  }
}

/** The value of an unlabelled gauge or counter on a server's /metrics, or undefined when absent. */
export async function metricValue(metricsPort: number, name: string): Promise<number | undefined> {
  const response = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  const text = await response.text();
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

/**
 * A cluster of real replicas on loopback, each its own `replichat server` process with its own data
 * directory, on ports chosen once so that a replica restarted later comes back at the same addresses.
 * Replicas are started together (replica 0 founds the cluster once it sees the others) and can be killed
 * and started again one at a time, as an operator would.
 */
export class LoopbackCluster {
  private readonly running = new Map<number, ServerProcess>();

  private constructor(
    readonly directory: string,
    private readonly clientPorts: readonly number[],
    private readonly peerPorts: readonly number[],
    private readonly extraArguments: readonly string[],
    /** The cluster's own key prefix in the test etcd, so that its replicas share one record, and no other. */
    private readonly etcdPrefix: string,
  ) {}

  /** Starts `replicas` replicas under `directory` and resolves once every one knows a leader. */
  static async start(directory: string, replicas: number, extraArguments: readonly string[] = []): Promise<LoopbackCluster> {
    const clientPorts: number[] = [];
    const peerPorts: number[] = [];
    for (let ordinal = 0; ordinal < replicas; ordinal += 1) {
      clientPorts.push(await freePort());
      peerPorts.push(await freePort());
    }
    const cluster = new LoopbackCluster(directory, clientPorts, peerPorts, extraArguments, `/cli-${randomBytes(8).toString('hex')}/`);
    await Promise.all(clientPorts.map((_port, ordinal) => cluster.startReplica(ordinal)));
    return cluster;
  }

  /** The client address of every replica, in ordinal order. */
  get addresses(): string[] {
    return this.clientPorts.map((port) => `127.0.0.1:${port}`);
  }

  dataDirectory(ordinal: number): string {
    return join(this.directory, `replica-${ordinal}`);
  }

  /** The running process of a replica, or undefined when it is stopped. */
  replica(ordinal: number): ServerProcess | undefined {
    return this.running.get(ordinal);
  }

  /** Starts a stopped replica; with `awaitReady` (the default) resolves once it knows a leader. */
  async startReplica(ordinal: number, options: { awaitReady?: boolean } = {}): Promise<ServerProcess> {
    const peers = this.peerPorts.map((port, index) => `${index}=127.0.0.1:${port}`).join(',');
    const server = await startServer({
      dataDirectory: this.dataDirectory(ordinal),
      port: this.clientPorts[ordinal]!,
      awaitReady: options.awaitReady ?? true,
      extraArguments: [
        '--ordinal', String(ordinal),
        '--peers', peers,
        '--peer-listen', `127.0.0.1:${this.peerPorts[ordinal]!}`,
        '--etcd-prefix', this.etcdPrefix,
        ...this.extraArguments,
      ],
    });
    this.running.set(ordinal, server);
    return server;
  }

  /** Open subscriptions summed over the running replicas (only the leader holds any). */
  async subscriberCount(): Promise<number> {
    const counts = await Promise.all(
      [...this.running.values()].map(async (server) => (await metricValue(server.metricsPort, 'replichat_subscribers')) ?? 0),
    );
    return counts.reduce((sum, count) => sum + count, 0);
  }

  /** Kills a replica (SIGKILL unless told) and waits for its exit. */
  async kill(ordinal: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const server = this.running.get(ordinal);
    this.running.delete(ordinal);
    await server?.kill(signal);
  }

  /** Kills every running replica. */
  async killAll(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await Promise.all([...this.running.keys()].map((ordinal) => this.kill(ordinal, signal)));
  }
}
