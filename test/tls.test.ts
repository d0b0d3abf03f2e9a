/**
 * Proves that passwords travel only inside TLS: a server started with a certificate from a throwaway CA
 * (scripts/make-dev-certs.sh) serves the CLI that trusts that CA, refuses a plaintext client, and a client
 * that does not trust the CA cannot talk to it. The suite list is modern: a TLS 1.2 client that offers only
 * CBC suites with SHA-1 MACs is refused, while one offering an AEAD suite is served. Real processes, real
 * certificates, real sockets.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from './support/cli-processes.js';
import { type ServerProcess, startServer } from './support/processes.js';

let directory: string;
let server: ServerProcess;

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-tls-'));
  execFileSync('bash', ['scripts/make-dev-certs.sh', join(directory, 'certs')]);
  server = await startServer({
    dataDirectory: join(directory, 'data'),
    tls: { certificatePath: join(directory, 'certs', 'server.pem'), keyPath: join(directory, 'certs', 'server-key.pem') },
  });
});

afterAll(async () => {
  expect(await server.stop()).toBe(0);
  rmSync(directory, { recursive: true, force: true });
});

test('a client that trusts the CA registers and logs in over TLS, without the plaintext warning', async () => {
  const environment = {
    REPLICHAT_SERVERS: server.address,
    REPLICHAT_CA_CERT: join(directory, 'certs', 'ca.pem'),
    REPLICHAT_SESSION_FILE: join(directory, 'alice.json'),
  };
  const registered = await runCli(['register', 'alice', '--password-stdin'], { env: environment, input: 'tls password\n' });
  expect(registered.code).toBe(0);
  expect(registered.stderr).not.toContain('plaintext');
  const status = await runCli(['--json', 'status'], { env: environment });
  expect(status.code).toBe(0);
});

test('a plaintext client cannot talk to a TLS server', async () => {
  const result = await runCli(['--insecure', '--json', 'login', 'alice', '--password-stdin'], {
    env: { REPLICHAT_SERVERS: server.address, REPLICHAT_SESSION_FILE: join(directory, 'nobody.json') },
    input: 'tls password\n',
    timeoutMs: 30_000,
  });
  expect(result.code).toBe(1);
  expect(result.stderr).toMatch(/plaintext/);
  expect(result.stderr).toContain('UNAVAILABLE');
});

test('a client that does not trust the CA is refused', async () => {
  // The system roots do not include the throwaway CA, so the handshake fails.
  const result = await runCli(['--json', 'login', 'alice', '--password-stdin'], {
    env: { REPLICHAT_SERVERS: server.address, REPLICHAT_SESSION_FILE: join(directory, 'other.json') },
    input: 'tls password\n',
    timeoutMs: 30_000,
  });
  expect(result.code).toBe(1);
  expect(result.stderr).toContain('UNAVAILABLE');
});

/** Whether a TLS 1.2 handshake offering only `ciphers` completes; the server's answer is the outcome. */
function handshake(ciphers: string): Promise<{ ok: boolean; cipher?: string; error?: string }> {
  const [host, port] = [server.address.slice(0, server.address.lastIndexOf(':')), Number(server.address.split(':').pop())];
  return new Promise((resolve) => {
    const socket = connect({
      host,
      port,
      ca: readFileSync(join(directory, 'certs', 'ca.pem')),
      servername: 'localhost',
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      ciphers,
      ALPNProtocols: ['h2'],
    });
    socket.once('secureConnect', () => {
      resolve({ ok: true, cipher: socket.getCipher().name });
      socket.destroy();
    });
    socket.once('error', (error) => resolve({ ok: false, error: error.message }));
  });
}

test('TLS 1.2 with only CBC-SHA1 suites is refused; with an AEAD suite it is served', async () => {
  const cbc = await handshake('ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:AES128-SHA:AES256-SHA');
  expect(cbc.ok).toBe(false);
  expect(cbc.error).toMatch(/handshake failure|no shared cipher|alert/i);
  const aead = await handshake('ECDHE-ECDSA-AES128-GCM-SHA256');
  expect(aead).toEqual({ ok: true, cipher: 'ECDHE-ECDSA-AES128-GCM-SHA256' });
});
