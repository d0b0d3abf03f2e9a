/**
 * Real server processes for integration tests: the built `dist/cli/main.js server`, on a free loopback
 * port, with its JSON log lines captured. Readiness is awaited by watching for the `serving` log line,
 * never by sleeping.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { startEtcd, type EtcdProcess } from './etcd-process.js';
import { argumentValue, sharedPeerCertificates } from './peer-certificates.js';

export const CLI_PATH = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

/** A port that was free a moment ago (the OS picked it for a listener we closed). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

export interface ServerProcess {
  readonly process: ChildProcess;
  readonly address: string;
  readonly metricsPort: number;
  /** Every log line so far, parsed. */
  readonly logLines: Record<string, unknown>[];
  /** SIGTERM, then waits for the exit code. */
  stop(): Promise<number | null>;
  /** Sends a signal and waits for the process to end. */
  kill(signal: NodeJS.Signals): Promise<void>;
}

export interface StartServerOptions {
  readonly dataDirectory: string;
  readonly port?: number;
  readonly extraArguments?: readonly string[];
  readonly startTimeoutMs?: number;
  /** Serve clients over TLS with this certificate and key instead of plaintext. */
  readonly tls?: { readonly certificatePath: string; readonly keyPath: string };
  /** Wait until /readyz answers 200 (a leader is known), as well as for the `serving` line. Default true. */
  readonly awaitReady?: boolean;
}

/** Polls a replica's /readyz until it answers 200, failing after `deadlineMs`. */
export async function awaitReady(metricsPort: number, deadlineMs = 20_000): Promise<void> {
  const giveUpAt = Date.now() + deadlineMs;
  let lastAnswer = '';
  while (Date.now() < giveUpAt) {
    try {
      const response = await fetch(`http://127.0.0.1:${metricsPort}/readyz`);
      lastAnswer = await response.text();
      if (response.status === 200) return;
    } catch (error) {
      lastAnswer = String(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`replica not ready within ${deadlineMs} ms: ${lastAnswer}`);
}

let sharedEtcd: Promise<EtcdProcess> | undefined;

/**
 * One real etcd per test process, the configuration store of every server this process starts; it is
 * killed when the process exits (test/support/etcd-process.ts). Each data directory gets its own key
 * prefix, so independent servers never share a cluster record, unless a test passes --etcd-prefix to make
 * replicas one cluster.
 */
export function testEtcd(): Promise<EtcdProcess> {
  sharedEtcd ??= startEtcd({ keepsProcessAlive: false });
  return sharedEtcd;
}

/** The configuration-store flags for a server with this data directory. */
export async function configurationStoreArguments(dataDirectory: string, extraArguments: readonly string[]): Promise<string[]> {
  if (argumentValue(extraArguments, '--configuration-store') !== undefined) return [];
  const etcd = await testEtcd();
  const prefix = argumentValue(extraArguments, '--etcd-prefix') === undefined
    ? ['--etcd-prefix', `/test-${createHash('sha256').update(dataDirectory).digest('hex').slice(0, 16)}/`]
    : [];
  return ['--configuration-store', 'etcd', '--etcd-endpoints', etcd.endpoint, ...prefix];
}

/** Starts `replichat server` and resolves once it logs `serving`. */
export async function startServer(options: StartServerOptions): Promise<ServerProcess> {
  const port = options.port ?? (await freePort());
  const peerPort = await freePort();
  // The peer port is always mutual TLS: each server gets the certificate of its ordinal (0 unless the test
  // names one) from the cluster CA this test process shares, so that replicas started apart trust each other.
  const extraArguments = options.extraArguments ?? [];
  const ordinalArgument = argumentValue(extraArguments, '--ordinal');
  const peerCertificates = sharedPeerCertificates(argumentValue(extraArguments, '--cluster-name'));
  const storeArguments = await configurationStoreArguments(options.dataDirectory, extraArguments);
  const child = spawn(
    process.execPath,
    [
      CLI_PATH, 'server',
      '--data-dir', options.dataDirectory,
      '--listen', `127.0.0.1:${port}`,
      '--metrics-listen', '127.0.0.1:0',
      '--peer-listen', `127.0.0.1:${peerPort}`,
      ...(options.tls === undefined
        ? ['--insecure']
        : ['--tls-cert', options.tls.certificatePath, '--tls-key', options.tls.keyPath]),
      ...(ordinalArgument === undefined ? ['--ordinal', '0'] : []),
      ...peerCertificates.serverArguments(Number(ordinalArgument ?? 0)),
      ...storeArguments,
      // Test clusters hash passwords at 2^14 (a tenth of OWASP's cost) so that suites creating many accounts
      // fit the shared CI machine; test/session-keys.test.ts checks the production cost.
      ...(argumentValue(extraArguments, '--password-hash-cost-log2') === undefined ? ['--password-hash-cost-log2', '14'] : []),
      ...extraArguments,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const logLines: Record<string, unknown>[] = [];
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const serving = new Promise<number>((resolve, reject) => {
    let buffered = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let newline;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        try {
          const parsed = JSON.parse(line) as Record<string, unknown>;
          logLines.push(parsed);
          if (parsed.msg === 'serving') resolve(parsed.metricsPort as number);
        } catch {
          // A line that is not JSON is still kept out of the structured list; stderr shows crashes.
        }
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    void exited.then((code) => reject(new Error(`server exited with ${code} before serving: ${stderr}`)));
    const timer = setTimeout(
      () => reject(new Error(`server did not log 'serving' within ${options.startTimeoutMs ?? 20_000} ms`)),
      options.startTimeoutMs ?? 20_000,
    );
    timer.unref();
  });
  const metricsPort = await serving;
  if (options.awaitReady !== false) await awaitReady(metricsPort);
  return {
    process: child,
    address: `127.0.0.1:${port}`,
    metricsPort,
    logLines,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
    async kill(signal) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
