/**
 * The configuration store of a namespace cluster: one real etcd (Debian's etcd-server) in the root
 * namespace, listening only on the bridge's address of that cluster's hosts (netns.ts `bridgeAddress`).
 * Every replica reaches it through its own veth and the bridge, the test process reaches it directly, and
 * no other cluster's hosts can (each cluster has its own bridge and subnet), so the standard ports 2379
 * and 2380 never collide between parallel runs.
 *
 * Why the bridge's side and not a host of its own: the partitions of the tests are made inside the
 * replicas' namespaces (`NetnsHosts.cut`), so whether a replica can reach the store is decided per replica
 * and per test, and the clients, which also live on the bridge's side, keep reaching every replica. The
 * test test/configuration-store-netns.test.ts says which side of each partition the store is on.
 *
 * test/support/etcd-process.ts starts etcd on loopback for the store's own tests; this one exists because
 * the replicas in namespaces cannot reach the root namespace's loopback.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';

export const ETCD_CLIENT_PORT = 2379;
const ETCD_PEER_PORT = 2380;
const ETCD_BINARY = process.env.ETCD_BINARY ?? 'etcd';
/** From spawn to a healthy answer; etcd 3.4 takes about a second to elect itself. */
const START_TIMEOUT_MS = 20_000;
const EXIT_TIMEOUT_MS = 5_000;

export interface BridgeEtcd {
  /** `http://BRIDGE:2379`, for `--etcd-endpoints`. */
  readonly endpoint: string;
  readonly address: string;
  readonly port: number;
  /** SIGSTOP: etcd holds its sockets and answers nothing. */
  pause(): void;
  resume(): void;
  /** SIGKILL, then waits for the exit. Idempotent. Leaves the data directory to the caller. */
  stop(): Promise<void>;
}

let unavailableReason: string | null | undefined;

/** Why etcd cannot run here (not installed), or undefined when it can. Checked once. */
export function etcdUnavailableReason(): string | undefined {
  if (unavailableReason === undefined) {
    const probe = spawnSync(ETCD_BINARY, ['--version'], { encoding: 'utf8' });
    unavailableReason =
      probe.error !== undefined || probe.status !== 0
        ? `cannot run ${ETCD_BINARY} (${probe.error?.message ?? probe.stderr.trim()}); install the Debian package etcd-server (bash scripts/install.sh)`
        : null;
  }
  return unavailableReason ?? undefined;
}

async function isHealthy(endpoint: string): Promise<boolean> {
  try {
    const response = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
    const body = (await response.json()) as { health?: string };
    return response.ok && body.health === 'true';
  } catch {
    return false;
  }
}

/** Starts etcd on `address` (the bridge's) with `dataDirectory`; resolves once it answers /health. */
export async function startEtcdOnBridge(address: string, dataDirectory: string, name: string): Promise<BridgeEtcd> {
  mkdirSync(dataDirectory, { recursive: true });
  const endpoint = `http://${address}:${ETCD_CLIENT_PORT}`;
  const peerUrl = `http://${address}:${ETCD_PEER_PORT}`;
  const child: ChildProcess = spawn(
    ETCD_BINARY,
    [
      '--name', name,
      '--data-dir', dataDirectory,
      '--listen-client-urls', endpoint,
      '--advertise-client-urls', endpoint,
      '--listen-peer-urls', peerUrl,
      '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', `${name}=${peerUrl}`,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', `replichat-${name}`,
      '--logger', 'zap',
      '--log-level', 'warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-8192);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const hasExited = (): boolean => child.exitCode !== null || child.signalCode !== null;
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (!hasExited()) child.kill('SIGKILL');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([exited, new Promise((resolve) => (timer = setTimeout(resolve, EXIT_TIMEOUT_MS)))]);
    clearTimeout(timer);
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!(await isHealthy(endpoint))) {
    if (hasExited() || Date.now() > deadline) {
      await stop();
      throw new Error(`etcd on ${endpoint} did not become healthy (${hasExited() ? `exited ${child.exitCode ?? child.signalCode}` : 'timed out'}):\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    endpoint,
    address,
    port: ETCD_CLIENT_PORT,
    pause: () => void child.kill('SIGSTOP'),
    resume: () => void child.kill('SIGCONT'),
    stop,
  };
}
