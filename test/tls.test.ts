/**
 * Proves that passwords travel only inside TLS: a server started with a certificate from a throwaway CA
 * (scripts/make-dev-certs.sh) serves the CLI that trusts that CA, refuses a plaintext client, and a client
 * that does not trust the CA cannot talk to it. Real processes, real certificates, real sockets.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
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
