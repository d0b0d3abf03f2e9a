/**
 * Proves that the hosts made by scripts/netns-hosts.sh (through test/support/netns.ts) are separate
 * machines as far as networking goes, so that later tests can run replicas on them. A tiny TCP echo server
 * runs in every host on the host's own address (host 1's also on its loopback) and answers with its host's
 * name; small `node -e` probes connect from the hosts and report who answered. They show that StatefulSet
 * names resolve inside every host, that a server is reached by name across the bridge but not through
 * another host's 127.0.0.1 (each namespace has its own loopback), that a partition cuts a host off in both directions within a bounded deadline and heal
 * restores it at once, that a selective `cut` drops exactly the traffic it names while the root namespace
 * still reaches the cut host, that `spawnIn` returns the command's own pid so SIGKILL reaches the real process,
 * and that destroying the hosts leaves no namespace, bridge, hosts file or process behind.
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { NETNS_SCRIPT_PATH, type NetnsHosts, createHosts, describeOnNetns } from './support/netns.js';

/** Unique per process (pids are unique among live processes) and short enough for interface names. */
const PREFIX = `rt${process.pid.toString(36)}`;
const HOST_COUNT = 3;
const ECHO_PORT = 7000;
/** How long a probe waits for a connection and its echo; a partitioned host never answers, so this bounds the wait. */
const PROBE_TIMEOUT_MS = 1_000;
/** How long a freshly started `node -e` in a host may take to print its first line. */
const START_TIMEOUT_MS = 10_000;

/**
 * Listens on every given address at ECHO_PORT; greets each connection with `NAME:` and then echoes, so that
 * a probe learns which host it reached. Prints `listening` when ready.
 */
function echoServerScript(name: string, addresses: readonly string[]): string {
  return `
    const net = require('node:net');
    const addresses = ${JSON.stringify(addresses)};
    let remaining = addresses.length;
    for (const address of addresses) {
      const server = net.createServer((socket) => {
        socket.on('error', () => socket.destroy());
        socket.write(${JSON.stringify(name)} + ':');
        socket.pipe(socket);
      });
      server.listen(${ECHO_PORT}, address, () => {
        remaining -= 1;
        if (remaining === 0) console.log('listening');
      });
    }
  `;
}

/**
 * Connects to target:ECHO_PORT, sends a token and prints one word: the name of the host whose echo server
 * answered, `timeout` when nothing came back within PROBE_TIMEOUT_MS, or the error code (ECONNREFUSED, ...).
 */
function probeScript(target: string): string {
  return `
    const net = require('node:net');
    const token = 'ping-' + process.pid;
    const finish = (outcome) => { console.log(outcome); process.exit(0); };
    const socket = net.connect(${ECHO_PORT}, ${JSON.stringify(target)}, () => socket.write(token));
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk;
      if (received.endsWith(':' + token)) finish(received.slice(0, -token.length - 1));
    });
    socket.on('error', (error) => finish(error.code));
    setTimeout(() => finish('timeout'), ${PROBE_TIMEOUT_MS});
  `;
}

/** Resolves with the child's first complete stdout line; rejects if it exits or stays silent too long. */
function firstLine(child: ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    let stderr = '';
    const timer = setTimeout(() => reject(new Error(`no output line within ${timeoutMs} ms: ${stderr}`)), timeoutMs);
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const newline = buffered.indexOf('\n');
      if (newline >= 0) {
        clearTimeout(timer);
        resolve(buffered.slice(0, newline));
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`exited (${code ?? signal}) before writing a line: ${stderr}`));
    });
  });
}

function namespaceNames(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name !== '');
}

describeOnNetns('simulated hosts in network namespaces', () => {
  let hosts: NetnsHosts;

  /** What a probe from host `from` to `target` (a name or address) saw. */
  async function probe(from: number, target: string): Promise<string> {
    const result = await hosts.runIn(from, process.execPath, ['-e', probeScript(target)], PROBE_TIMEOUT_MS * 5);
    if (result.exitCode !== 0) throw new Error(`probe failed (${result.exitCode ?? result.signal}): ${result.stderr}`);
    return result.stdout.trim();
  }

  beforeAll(async () => {
    hosts = await createHosts(PREFIX, HOST_COUNT);
    // One echo server per host on the host's own address; host 1's also listens on its loopback, so that
    // host 0 finding nothing at 127.0.0.1 can only mean that each host has a loopback of its own.
    const servers = Array.from({ length: HOST_COUNT }, (_, index) => {
      const addresses = index === 1 ? [hosts.address(index), '127.0.0.1'] : [hosts.address(index)];
      return hosts.spawnIn(index, process.execPath, ['-e', echoServerScript(`chat-${index}`, addresses)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    });
    const firstLines = await Promise.all(servers.map((server) => firstLine(server, START_TIMEOUT_MS)));
    expect(firstLines).toEqual(servers.map(() => 'listening'));
  });

  afterAll(async () => {
    await hosts?.destroy();
  });

  test('every host has its own address and resolves every StatefulSet name to it', async () => {
    const addresses = Array.from({ length: HOST_COUNT }, (_, index) => hosts.address(index));
    expect(new Set(addresses).size).toBe(HOST_COUNT);
    const names = Array.from({ length: HOST_COUNT }, (_, index) => [hosts.hostName(index), `chat-${index}`]).flat();
    const lookupScript = `
      const dns = require('node:dns').promises;
      Promise.all(${JSON.stringify(names)}.map((name) => dns.lookup(name, { family: 4 }).then((found) => found.address)))
        .then((found) => console.log(JSON.stringify(found)));
    `;
    for (let from = 0; from < HOST_COUNT; from += 1) {
      const result = await hosts.runIn(from, process.execPath, ['-e', lookupScript]);
      expect(result.stderr).toBe('');
      expect(JSON.parse(result.stdout)).toEqual(addresses.flatMap((address) => [address, address]));
    }
  });

  test('a server in host 1 is reached from host 0 by name, and not through host 0 loopback', async () => {
    expect(await probe(0, hosts.hostName(1))).toBe('chat-1');
    expect(await probe(0, 'chat-1')).toBe('chat-1');
    expect(await probe(2, hosts.hostName(1))).toBe('chat-1');
    // Host 1 reaches its server through its own loopback, so that listener is real...
    expect(await probe(1, '127.0.0.1')).toBe('chat-1');
    // ...but host 0's 127.0.0.1 is host 0 alone, where nothing listens on loopback.
    expect(await probe(0, '127.0.0.1')).toBe('ECONNREFUSED');
  });

  test('the root namespace reaches every host through the bridge', async () => {
    // The test process itself is a client in later tests, so it must reach the replicas directly.
    for (let index = 0; index < HOST_COUNT; index += 1) {
      await new Promise<void>((resolve, reject) => {
        const socket = createConnection(ECHO_PORT, hosts.address(index), () => {
          socket.end();
          resolve();
        });
        socket.setTimeout(PROBE_TIMEOUT_MS, () => reject(new Error(`no connection to host ${index}`)));
        socket.once('error', reject);
      });
    }
  });

  test('a partition cuts host 1 off in both directions until heal', async () => {
    await hosts.partition(1);
    try {
      // With the link down nothing answers, so the connection attempt can only time out (or fail once ARP
      // gives up); either way it must not reach the server.
      expect(['timeout', 'EHOSTUNREACH']).toContain(await probe(0, hosts.hostName(1)));
      expect(['timeout', 'EHOSTUNREACH']).toContain(await probe(1, hosts.hostName(0)));
      // The other hosts still talk to each other.
      expect(await probe(0, hosts.hostName(2))).toBe('chat-2');
    } finally {
      await hosts.heal(1);
    }
    // heal returns once the bridge forwards again, so the first attempt must already succeed.
    expect(await probe(0, hosts.hostName(1))).toBe('chat-1');
    expect(await probe(1, hosts.hostName(0))).toBe('chat-0');
  });

  test('a cut drops host 0 and host 1 traffic both ways, and one port of the bridge, but nothing else', async () => {
    // Host 2's echo server stands in for a service on the bridge's side: the cut names its address and port.
    await hosts.cut(0, { addresses: [hosts.address(1)], ports: [{ address: hosts.address(2), port: ECHO_PORT }] });
    try {
      expect(await probe(0, hosts.hostName(1))).toBe('timeout');
      expect(await probe(1, hosts.hostName(0))).toBe('timeout');
      expect(await probe(0, hosts.hostName(2))).toBe('timeout');
      // Host 2 reaches host 0 (only connections to host 2's port were named), and host 1 reaches host 2.
      expect(await probe(2, hosts.hostName(0))).toBe('chat-0');
      expect(await probe(1, hosts.hostName(2))).toBe('chat-2');
      // The root namespace (where the tests' clients live) still reaches the cut host.
      await new Promise<void>((resolve, reject) => {
        const socket = createConnection(ECHO_PORT, hosts.address(0), () => {
          socket.end();
          resolve();
        });
        socket.setTimeout(PROBE_TIMEOUT_MS, () => reject(new Error('no connection to host 0 from the root namespace')));
        socket.once('error', reject);
      });
    } finally {
      await hosts.uncut(0);
    }
    expect(await probe(0, hosts.hostName(1))).toBe('chat-1');
    expect(await probe(1, hosts.hostName(0))).toBe('chat-0');
    expect(await probe(0, hosts.hostName(2))).toBe('chat-2');
  });

  test('spawnIn returns the command itself, so SIGKILL kills the real process and not only a wrapper', async () => {
    const reportScript = `
      const link = require('node:fs').readlinkSync('/proc/self/ns/net');
      console.log(JSON.stringify({ pid: process.pid, network: link }));
      setInterval(() => {}, 60_000);
    `;
    const child = hosts.spawnIn(2, process.execPath, ['-e', reportScript], { stdio: ['ignore', 'pipe', 'pipe'] });
    const report = JSON.parse(await firstLine(child, START_TIMEOUT_MS)) as { pid: number; network: string };
    expect(report.pid).toBe(child.pid);
    // /run/netns/NAME is a bind mount of the namespace, so its inode is the namespace's identity.
    expect(report.network).toBe(`net:[${statSync(`/run/netns/${hosts.namespace(2)}`).ino}]`);

    const exited = new Promise((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    expect(existsSync(`/proc/${report.pid}`)).toBe(false);
    const remaining = execFileSync('ip', ['netns', 'pids', hosts.namespace(2)], { encoding: 'utf8' })
      .split('\n')
      .filter((pid) => pid !== '' && Number(pid) === report.pid);
    expect(remaining).toEqual([]);
  });
});

describeOnNetns('creating and destroying hosts', () => {
  const prefix = `rd${process.pid.toString(36)}`;

  test('up over leftovers of a crashed run starts clean, and destroy leaves nothing behind', async () => {
    // A run that crashed leaves its hosts behind, with a process still inside; `up` must start over.
    const crashed = await createHosts(prefix, 2);
    const leftover = crashed.spawnIn(1, 'sleep', ['600'], { stdio: 'ignore' });
    const leftoverExited = new Promise((resolve) => leftover.once('exit', (_code, signal) => resolve(signal)));

    const hosts = await createHosts(prefix, 2);
    expect(await leftoverExited).toBe('SIGKILL');
    expect(namespaceNames().filter((name) => name.startsWith(`${prefix}-`)).sort()).toEqual([`${prefix}-0`, `${prefix}-1`]);

    const lingering = hosts.spawnIn(0, 'sleep', ['600'], { stdio: 'ignore' });
    const lingeringExited = new Promise((resolve) => lingering.once('exit', (_code, signal) => resolve(signal)));
    await hosts.destroy();
    expect(await lingeringExited).toBe('SIGKILL');

    expect(namespaceNames().filter((name) => name.startsWith(`${prefix}-`))).toEqual([]);
    expect(existsSync(`/sys/class/net/${prefix}-br`)).toBe(false);
    expect(existsSync(`/sys/class/net/${prefix}-v0`)).toBe(false);
    expect(existsSync(`/etc/netns/${prefix}-0`)).toBe(false);
    // Destroying twice is harmless, so afterAll hooks may always call it.
    await hosts.destroy();
  });

  afterAll(async () => {
    // Only reached with leftovers when the test failed part-way.
    execFileSync('bash', [NETNS_SCRIPT_PATH, 'down', prefix]);
  });
});
