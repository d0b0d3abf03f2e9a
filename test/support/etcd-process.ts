/**
 * A real, single-member etcd for tests: Debian's `etcd` binary (package etcd-server 3.4, installed by
 * scripts/install.sh) started on free loopback ports with a fresh data directory under the system temp dir.
 *
 * Usage:
 *   const etcd = await startEtcd();          // resolves once etcd answers /health
 *   new EtcdConfigurationStore({ endpoints: [etcd.endpoint], ... });
 *   etcd.pause(); ... etcd.resume();         // SIGSTOP / SIGCONT: a store that hangs, then comes back
 *   await etcd.stop();                       // SIGKILL, wait for the exit, remove the data directory
 *   const secure = await startEtcd({ tls: true }); // https:// with client-certificate auth; see `tls`
 *
 * Each call starts its own etcd, so test files running in parallel never share one. Ports are found by
 * binding port 0 and releasing it; if another process takes the port in between, etcd exits at once and
 * the start is retried on new ports. etcd runs under a watchdog that kills it when this process ends, even
 * by SIGKILL, and then removes its temp directory: a test process that ends without stopping its etcd leaves
 * neither behind, unless the watchdog is killed with it.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnUnderWatchdog } from './watchdog.js';

/** PEM files of a TLS etcd: the CA that signed everything, and a client certificate etcd accepts. */
export interface EtcdTls {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

export interface EtcdProcess {
  /** The client URL, e.g. `http://127.0.0.1:40123` (`https://` with `tls`). */
  readonly endpoint: string;
  readonly dataDirectory: string;
  /** Set when started with `tls: true`. */
  readonly tls?: EtcdTls;
  readonly pid: number;
  /**
   * SIGSTOP: etcd keeps its sockets open but answers nothing, like a machine that froze. Resolves once
   * every thread of etcd is stopped, so that no request sent afterwards can still be answered.
   */
  pause(): Promise<void>;
  /** SIGCONT after `pause`. */
  resume(): void;
  /** SIGKILL (also when paused), wait for the exit, remove the data directory. Safe to call twice. */
  stop(): Promise<void>;
}

export interface StartEtcdOptions {
  /** False for an etcd shared by a whole test file: it then does not keep the process alive (default true). */
  readonly keepsProcessAlive?: boolean;
  /** How long to wait for etcd to answer /health; default 20 s (a loaded CI machine). */
  readonly startTimeoutMs?: number;
  /** Prefix of the temp directory, to tell whose it is. */
  readonly directoryPrefix?: string;
  /**
   * Serve clients over TLS only, with a throwaway CA made by openssl, and require a client certificate
   * signed by it (`--client-cert-auth`). Peers stay plaintext on loopback.
   */
  readonly tls?: boolean;
}

const ETCD_BINARY = process.env.ETCD_BINARY ?? 'etcd';
/**
 * etcd runs under the watchdog of watchdog.ts, so that no test can leave an etcd running or its directory
 * behind, however the test process ends. Signals for pause/resume go to etcd's own pid, not to the watchdog.
 */
/** Starts etcd and resolves once it answers; rejects with etcd's own output when it cannot start. */
export async function startEtcd(options: StartEtcdOptions = {}): Promise<EtcdProcess> {
  checkBinary();
  const attempts = 3;
  let lastError: unknown;
  for (let attempt = 1; attempt <= attempts; attempt += 1) {
    try {
      return await startOnce(options);
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError;
}

async function startOnce(options: StartEtcdOptions): Promise<EtcdProcess> {
  const startTimeoutMs = options.startTimeoutMs ?? 20_000;
  const rootDirectory = mkdtempSync(join(tmpdir(), options.directoryPrefix ?? 'replichat-etcd-'));
  const dataDirectory = join(rootDirectory, 'data');
  let tls: EtcdTls | undefined;
  try {
    tls = options.tls === true ? makeTlsFiles(join(rootDirectory, 'tls')) : undefined;
  } catch (error) {
    rmSync(rootDirectory, { recursive: true, force: true });
    throw error;
  }
  const [clientPort, peerPort] = await freePorts(2);
  const endpoint = `${tls === undefined ? 'http' : 'https'}://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const etcdArguments = [
    '--name', 'test',
    '--data-dir', dataDirectory,
    '--listen-client-urls', endpoint,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peerUrl,
    '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', `test=${peerUrl}`,
    '--initial-cluster-state', 'new',
    '--initial-cluster-token', `replichat-test-${process.pid}-${clientPort}`,
    '--logger', 'zap',
    '--log-level', 'warn',
    ...(tls === undefined
      ? []
      : ['--cert-file', join(rootDirectory, 'tls', 'server.crt'), '--key-file', join(rootDirectory, 'tls', 'server.key'),
         '--trusted-ca-file', tls.caFile, '--client-cert-auth']),
  ];
  const watchdog = spawnUnderWatchdog(ETCD_BINARY, etcdArguments, rootDirectory);
  // Keep the last few kilobytes of output to explain a failed start; the first line names etcd's pid.
  let output = '';
  let etcdPid: number | undefined;
  watchdog.stdout?.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-8192);
    const announced = /^pid (\d+)$/m.exec(output);
    if (etcdPid === undefined && announced !== null) etcdPid = Number(announced[1]);
  });
  watchdog.stderr?.on('data', (chunk: Buffer) => {
    output = (output + chunk.toString('utf8')).slice(-8192);
  });
  // A write to a watchdog that is gone must not crash this process.
  watchdog.stdin?.on('error', () => {});
  if (options.keepsProcessAlive === false) {
    // A store shared by a whole test file must not keep the test process alive once the tests are done;
    // the watchdog still kills etcd when this process ends.
    watchdog.unref();
    for (const stream of [watchdog.stdin, watchdog.stdout, watchdog.stderr]) (stream as unknown as { unref?: () => void } | null)?.unref?.();
  }
  let hasExited = false;
  const exited = new Promise<void>((resolve) => {
    watchdog.once('exit', () => {
      hasExited = true;
      resolve();
    });
  });
  const signal = (name: NodeJS.Signals): void => {
    if (etcdPid === undefined || hasExited) throw new Error(`etcd is not running; cannot send ${name}`);
    process.kill(etcdPid, name);
  };

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (!stopped) {
      stopped = true;
      if (!hasExited) {
        // SIGKILL ends a stopped (SIGSTOPped) process too. Closing stdin makes the watchdog do the same,
        // should etcd's pid not be known yet.
        if (etcdPid !== undefined) process.kill(etcdPid, 'SIGKILL');
        watchdog.stdin?.end();
      }
      await exited;
      rmSync(rootDirectory, { recursive: true, force: true });
    }
  };

  const deadline = Date.now() + startTimeoutMs;
  for (;;) {
    if (hasExited) {
      await stop();
      throw new Error(`etcd exited during start (exit code ${watchdog.exitCode}):\n${output}`);
    }
    if (etcdPid !== undefined && (await isHealthy(endpoint, tls))) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`etcd did not answer ${endpoint}/health within ${startTimeoutMs} ms:\n${output}`);
    }
    await delay(50);
  }
  return {
    endpoint,
    dataDirectory,
    ...(tls === undefined ? {} : { tls }),
    pid: etcdPid!,
    pause: async () => {
      signal('SIGSTOP');
      await awaitStopped(etcdPid!);
    },
    resume: () => signal('SIGCONT'),
    stop,
  };
}

/**
 * Resolves once every thread of process `pid` is stopped (state T in /proc/PID/task/TID/stat). A stop
 * signal is delivered asynchronously: a thread busy at that moment could otherwise answer one more request.
 */
async function awaitStopped(pid: number, timeoutMs = 5_000): Promise<void> {
  const giveUpAtMs = Date.now() + timeoutMs;
  for (;;) {
    const states = readdirSync(`/proc/${pid}/task`).map((thread) => {
      try {
        // The state follows the command name, which is in parentheses and may contain spaces.
        const stat = readFileSync(`/proc/${pid}/task/${thread}/stat`, 'utf8');
        return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      } catch {
        return 'gone';
      }
    });
    if (states.every((state) => state === 'T' || state === 't' || state === 'gone')) return;
    if (Date.now() > giveUpAtMs) throw new Error(`etcd (pid ${pid}) did not stop within ${timeoutMs} ms: thread states ${states.join('')}`);
    await delay(5);
  }
}

/** Whether etcd answers `GET /health` with `{"health":"true"}` (over TLS with the client certificate). */
function isHealthy(endpoint: string, tls: EtcdTls | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    const url = `${endpoint}/health`;
    const onResponse = (response: IncomingMessage): void => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        try {
          resolve(response.statusCode === 200 && (JSON.parse(body) as { health?: string }).health === 'true');
        } catch {
          resolve(false);
        }
      });
      response.on('error', () => resolve(false));
    };
    const request =
      tls === undefined
        ? httpRequest(url, { timeout: 1000 }, onResponse)
        : httpsRequest(
            url,
            { timeout: 1000, ca: readFileSync(tls.caFile), cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) },
            onResponse,
          );
    request.on('timeout', () => request.destroy());
    request.on('error', () => resolve(false));
    request.end();
  });
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA. */
function makeTlsFiles(directory: string): EtcdTls {
  mkdirSync(directory, { recursive: true });
  const file = (name: string): string => join(directory, name);
  const openssl = (...args: string[]): void => {
    const result = spawnSync('openssl', args, { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`openssl ${args[0]} failed: ${result.error?.message ?? result.stderr}`);
  };
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...key, '-keyout', file('ca.key'), '-out', file('ca.crt'), '-days', '1', '-subj', '/CN=replichat-test-etcd-ca');
  for (const [name, extensions] of [
    ['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth'],
    ['client', 'extendedKeyUsage=clientAuth'],
  ] as const) {
    writeFileSync(file(`${name}.ext`), `${extensions}\n`);
    openssl('req', ...key, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', `/CN=replichat-test-etcd-${name}`);
    openssl('x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.crt'), '-CAkey', file('ca.key'), '-CAcreateserial',
      '-out', file(`${name}.crt`), '-days', '1', '-extfile', file(`${name}.ext`));
  }
  return { caFile: file('ca.crt'), certFile: file('client.crt'), keyFile: file('client.key') };
}

function checkBinary(): void {
  const probe = spawnSync(ETCD_BINARY, ['--version'], { encoding: 'utf8' });
  if (probe.error !== undefined || probe.status !== 0) {
    throw new Error(
      `cannot run ${ETCD_BINARY} (${probe.error?.message ?? probe.stderr}); install the Debian packages etcd-server and etcd-client (bash scripts/install.sh)`,
    );
  }
}

/** Distinct ports that were free a moment ago (bound to port 0 together, then released). */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, () => new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve(server));
    })),
  );
  const ports = servers.map((server) => {
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    return address.port;
  });
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

/** The pause between two polls of /health; the wait itself is bounded by a deadline. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
