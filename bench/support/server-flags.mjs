// What every benchmark that starts `replichat server` processes needs since the replication protocol is
// founded on a configuration store and the peer port is always mutual TLS: a real etcd of its own (Debian's
// `etcd` binary, one member, on free loopback ports, in a temporary directory), a fresh key prefix so that
// runs never meet, and peer certificates made by scripts/make-dev-certs.sh. The lines are those of
// test/support/etcd-process.ts, cut down to what a benchmark needs.
//
//   const setup = await startBenchSetup(directory);   // etcd + certificates under `directory`
//   spawn(node, [CLI, 'server', ...flags, ...setup.serverFlags(ordinal)]);
//   await setup.stop();                                // SIGKILL etcd (the directory is the caller's)
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';

const MAKE_DEV_CERTS = new URL('../../scripts/make-dev-certs.sh', import.meta.url).pathname;

/** Distinct ports that were free a moment ago (bound to port 0 together, then released). */
export async function freePorts(count) {
  const servers = await Promise.all(
    Array.from({ length: count }, () => new Promise((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve(server));
    })),
  );
  const ports = servers.map((server) => server.address().port);
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

/**
 * Loopback addresses for `replicas` replicas on ports the system chose as free, rather than ports picked at
 * random: a random one could be taken by a connection's local port, and a server failing to listen there
 * shows only as a cluster that never gets ready. Returns each replica's client and peer address, and the
 * `--peers` list.
 */
export async function freeReplicaAddresses(replicas) {
  const ports = await freePorts(2 * replicas);
  const clientAddress = (i) => `127.0.0.1:${ports[2 * i]}`;
  const peerAddress = (i) => `127.0.0.1:${ports[2 * i + 1]}`;
  const peers = Array.from({ length: replicas }, (_, i) => `${i}=${peerAddress(i)}`).join(',');
  return { clientAddress, peerAddress, peers };
}

function etcdHealthy(endpoint) {
  return new Promise((resolve) => {
    const probe = request(`${endpoint}/health`, { timeout: 1000 }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => resolve(response.statusCode === 200 && body.includes('"health":"true"')));
      response.on('error', () => resolve(false));
    });
    probe.on('timeout', () => probe.destroy());
    probe.on('error', () => resolve(false));
    probe.end();
  });
}

/** Starts a one-member etcd in `directory`/etcd and resolves once it answers /health. */
async function startEtcd(directory) {
  const [clientPort, peerPort] = await freePorts(2);
  const endpoint = `http://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const child = spawn('etcd', [
    '--name', 'bench', '--data-dir', join(directory, 'etcd'),
    '--listen-client-urls', endpoint, '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
    '--initial-cluster', `bench=${peerUrl}`, '--initial-cluster-state', 'new',
    '--logger', 'zap', '--log-level', 'error',
  ], { stdio: 'ignore' });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  // A benchmark that ends without calling stop() (an exception, process.exit) takes its etcd with it.
  process.once('exit', () => child.kill('SIGKILL'));
  const giveUpAt = Date.now() + 30_000;
  while (!(await etcdHealthy(endpoint))) {
    if (child.exitCode !== null) throw new Error(`etcd exited during start (code ${child.exitCode}); is Debian's etcd-server installed?`);
    if (Date.now() > giveUpAt) throw new Error(`etcd did not answer ${endpoint}/health within 30 s`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { endpoint, child, exited };
}

/**
 * Starts etcd and makes peer certificates for `replicas` replicas (cluster name `replichat`, the server's
 * default) under `directory`. `serverFlags(ordinal)` are the flags replica `ordinal` needs on top of the
 * benchmark's own; `stop()` kills etcd.
 */
export async function startBenchSetup(directory, replicas = 3) {
  mkdirSync(directory, { recursive: true });
  const certificates = join(directory, 'certificates');
  const made = spawnSync('bash', [MAKE_DEV_CERTS, certificates], {
    encoding: 'utf8',
    env: { ...process.env, REPLICAS: String(replicas), CLUSTER_NAME: 'replichat' },
  });
  if (made.status !== 0) throw new Error(`scripts/make-dev-certs.sh failed: ${made.stderr}`);
  const etcd = await startEtcd(directory);
  const prefix = `/bench-${randomBytes(6).toString('hex')}/`;
  return {
    etcdEndpoint: etcd.endpoint,
    prefix,
    serverFlags: (ordinal) => [
      '--configuration-store', 'etcd', '--etcd-endpoints', etcd.endpoint, '--etcd-prefix', prefix,
      '--peer-ca', join(certificates, 'peer-ca.pem'),
      '--peer-cert', join(certificates, `peer-${ordinal}.pem`),
      '--peer-key', join(certificates, `peer-${ordinal}-key.pem`),
    ],
    async stop() {
      if (etcd.child.exitCode === null && etcd.child.signalCode === null) etcd.child.kill('SIGKILL');
      await etcd.exited;
    },
  };
}
