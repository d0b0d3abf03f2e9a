/**
 * Simulated machines for integration tests: network namespaces with their own addresses and loopback,
 * joined by a bridge, with StatefulSet-style names (chat-0.chat-peers, chat-0, ...) in each host's own
 * /etc/hosts. The plumbing lives in scripts/netns-hosts.sh so that humans can build the same network by
 * hand; this module runs it and starts processes inside the hosts.
 *
 * A process started with `spawnIn` has the pid of the command itself, not of a wrapper: `ip netns exec`
 * enters the namespace and then execs the command in place (it forks only in `ip -batch` mode), so
 * `child.pid` is the replica's pid and `child.kill('SIGKILL')` kills the replica. test/netns-hosts.test.ts
 * checks this.
 */
import { type ChildProcess, type SpawnOptions, execFile, execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const NETNS_SCRIPT_PATH = fileURLToPath(new URL('../../scripts/netns-hosts.sh', import.meta.url));

/** How long one run of the script may take; `up` waits for links itself, which takes well under a second. */
const SCRIPT_TIMEOUT_MS = 30_000;
/** How long `destroy` waits for a killed child to report its exit before tearing the network down anyway. */
const CHILD_EXIT_TIMEOUT_MS = 5_000;

let unavailableReason: string | null | undefined;

/**
 * Why these tests cannot run here, or undefined when they can: they need Linux, root, a working `ip netns`,
 * and the right to create network and mount namespaces (a container without CAP_SYS_ADMIN has none).
 * Checked once; creates nothing that outlives the check.
 */
export function netnsUnavailableReason(): string | undefined {
  if (unavailableReason === undefined) unavailableReason = findUnavailableReason() ?? null;
  return unavailableReason ?? undefined;
}

/** True when network-namespace tests can run; see `netnsUnavailableReason` for the message to skip with. */
export function netnsAvailable(): boolean {
  return netnsUnavailableReason() === undefined;
}

/**
 * `describe` for a suite that needs network namespaces (and whatever else `extraReason` finds missing, such
 * as etcd). Where they cannot run, the suite is skipped with a warning on a developer's machine, but in CI
 * (CI=true) it fails with the reason instead: a CI run that silently skipped the integration suites would
 * report green while proving nothing.
 */
export function describeOnNetns(name: string, body: () => void, extraReason?: () => string | undefined): void {
  const reason = netnsUnavailableReason() ?? extraReason?.();
  if (reason === undefined) {
    describe(name, body);
  } else if (process.env.CI === 'true') {
    describe(name, () => {
      test('can run here (CI requires the network-namespace suites to run, not to skip)', () => {
        throw new Error(`${name}: cannot run: ${reason}`);
      });
    });
  } else {
    console.warn(`skipping "${name}": ${reason}`);
    describe.skip(name, body);
  }
}

function findUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux, this is ${process.platform}`;
  if (process.getuid?.() !== 0) return 'network namespaces, veth pairs and bridges need root';
  for (const [command, args] of [
    ['ip', ['netns', 'list']],
    ['unshare', ['--net', '--mount', 'true']],
    ['flock', ['--version']],
    // nftables makes the selective partitions of `cut`.
    ['nft', ['--version']],
  ] as const) {
    try {
      execFileSync(command, args, { stdio: 'pipe', timeout: SCRIPT_TIMEOUT_MS });
    } catch (error) {
      const stderr = (error as { stderr?: Buffer }).stderr?.toString('utf8').trim();
      return `\`${command} ${args.join(' ')}\` failed: ${stderr || (error as Error).message}`;
    }
  }
  return undefined;
}

export interface RunResult {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** True when the command was killed because it outlived its timeout. */
  readonly timedOut: boolean;
}

export interface NetnsHosts {
  readonly prefix: string;
  readonly count: number;
  /** The network namespace of host i, `PREFIX-i`. */
  namespace(index: number): string;
  /** Host i's IPv4 address; the root namespace (this test process) can reach it too, through the bridge. */
  address(index: number): string;
  /** Host i's stable DNS name, `chat-i.chat-peers`, which resolves inside every host (not in the root namespace). */
  hostName(index: number): string;
  /** Starts `command args` inside host i; the child's pid is the command's own (see the module comment). */
  spawnIn(index: number, command: string, args: readonly string[], options?: SpawnOptions): ChildProcess;
  /** Runs a short command inside host i and collects its output; killed with SIGKILL after `timeoutMs`. */
  runIn(index: number, command: string, args: readonly string[], timeoutMs?: number): Promise<RunResult>;
  /**
   * The bridge's own address on the hosts' network: the root namespace (this test process, and anything
   * it runs, such as the configuration store's etcd) as the hosts see it.
   */
  readonly bridgeAddress: string;
  /**
   * Drops, inside host i, every packet to or from the given addresses (both directions), and, for each
   * `{ address, port }`, every TCP packet to that port or from it: a selective partition that leaves host i
   * reachable from everyone else (the root namespace's clients included). Replaces any earlier `cut` of
   * host i; `uncut` lifts it. Uses nftables in host i's own namespace, so no other host is touched.
   */
  cut(index: number, drop: { readonly addresses?: readonly string[]; readonly ports?: readonly { address: string; port: number }[] }): Promise<void>;
  /** Lifts `cut` of host i (a no-op when there is none). */
  uncut(index: number): Promise<void>;
  /** Cuts host i off the bridge: its packets go nowhere and nobody's reach it, until `heal`. */
  partition(index: number): Promise<void>;
  /** Reconnects host i; resolves once the bridge forwards its traffic again. */
  heal(index: number): Promise<void>;
  /** Kills every process started here, then removes the namespaces, bridge and hosts files. Idempotent. */
  destroy(): Promise<void>;
}

async function runScript(...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('bash', [NETNS_SCRIPT_PATH, ...args], { timeout: SCRIPT_TIMEOUT_MS });
  return stdout;
}

function waitForExit(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Creates hosts PREFIX-0 .. PREFIX-(count-1), first removing leftovers of the same prefix from a crashed run.
 * PREFIX is 1-10 characters of [a-z0-9] starting with a letter; use one per test run (e.g. from the pid) so
 * that parallel runs never share, or tear down, each other's hosts.
 */
export async function createHosts(prefix: string, count: number): Promise<NetnsHosts> {
  const output = await runScript('up', prefix, String(count));
  const addresses = output
    .trim()
    .split('\n')
    .map((line) => line.split(' ')[1] ?? '');
  if (addresses.length !== count || addresses.some((address) => !/^\d+\.\d+\.\d+\.\d+$/.test(address))) {
    await runScript('down', prefix);
    throw new Error(`unexpected output from netns-hosts.sh up: ${output}`);
  }
  const children = new Set<ChildProcess>();
  let destroyed = false;

  function checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= count) {
      throw new RangeError(`host index ${index} is outside 0..${count - 1}`);
    }
  }

  // netns-hosts.sh gives the bridge .254 of the hosts' /24.
  const bridgeAddress = `${addresses[0]!.split('.').slice(0, 3).join('.')}.254`;

  /** The nftables table `cut` fills in a host; its own name, so that nothing else in the host is touched. */
  const CUT_TABLE = 'netnscut';

  /** Runs an nft script (on stdin) inside host i; rejects with nft's message when it fails. */
  function runNft(index: number, script: string): Promise<void> {
    const child = hosts.spawnIn(index, 'nft', ['-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.stdin!.end(script);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), SCRIPT_TIMEOUT_MS);
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.once('close', (exitCode) => {
        clearTimeout(timer);
        if (exitCode === 0) resolve();
        else reject(new Error(`nft in ${prefix}-${index} failed (${exitCode}): ${stderr.trim()}\n${script}`));
      });
    });
  }

  const hosts: NetnsHosts = {
    prefix,
    count,
    bridgeAddress,
    namespace(index) {
      checkIndex(index);
      return `${prefix}-${index}`;
    },
    address(index) {
      checkIndex(index);
      return addresses[index]!;
    },
    hostName(index) {
      checkIndex(index);
      return `chat-${index}.chat-peers`;
    },
    spawnIn(index, command, args, options = {}) {
      checkIndex(index);
      if (destroyed) throw new Error(`hosts ${prefix} were destroyed`);
      const child = spawn('ip', ['netns', 'exec', `${prefix}-${index}`, command, ...args], options);
      children.add(child);
      child.once('exit', () => children.delete(child));
      return child;
    },
    runIn(index, command, args, timeoutMs = 10_000) {
      const child = hosts.spawnIn(index, command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      return new Promise((resolve, reject) => {
        child.once('error', (error) => {
          clearTimeout(timer);
          reject(error);
        });
        // 'close' rather than 'exit', so that the output is complete.
        child.once('close', (exitCode, signal) => {
          clearTimeout(timer);
          resolve({ exitCode, signal, stdout, stderr, timedOut });
        });
      });
    },
    async cut(index, drop) {
      checkIndex(index);
      const addresses = drop.addresses ?? [];
      const ports = drop.ports ?? [];
      // `add table` then `delete table` makes the script idempotent: it replaces an earlier cut.
      const lines = [
        `add table inet ${CUT_TABLE}`,
        `delete table inet ${CUT_TABLE}`,
        `add table inet ${CUT_TABLE}`,
        `add chain inet ${CUT_TABLE} input { type filter hook input priority 0; policy accept; }`,
        `add chain inet ${CUT_TABLE} output { type filter hook output priority 0; policy accept; }`,
      ];
      if (addresses.length > 0) {
        lines.push(`add rule inet ${CUT_TABLE} input ip saddr { ${addresses.join(', ')} } drop`);
        lines.push(`add rule inet ${CUT_TABLE} output ip daddr { ${addresses.join(', ')} } drop`);
      }
      for (const { address, port } of ports) {
        lines.push(`add rule inet ${CUT_TABLE} input ip saddr ${address} tcp sport ${port} drop`);
        lines.push(`add rule inet ${CUT_TABLE} output ip daddr ${address} tcp dport ${port} drop`);
      }
      await runNft(index, `${lines.join('\n')}\n`);
    },
    async uncut(index) {
      checkIndex(index);
      await runNft(index, `add table inet ${CUT_TABLE}\ndelete table inet ${CUT_TABLE}\n`);
    },
    async partition(index) {
      checkIndex(index);
      await runScript('partition', prefix, String(index));
    },
    async heal(index) {
      checkIndex(index);
      await runScript('heal', prefix, String(index));
    },
    async destroy() {
      destroyed = true;
      // Our own children first, so that their 'exit' events arrive before the test ends; `down` would kill
      // them too (it kills whatever still runs in the namespaces), but without telling us.
      const running = [...children];
      for (const child of running) child.kill('SIGKILL');
      await Promise.all(running.map((child) => waitForExit(child, CHILD_EXIT_TIMEOUT_MS)));
      await runScript('down', prefix);
    },
  };
  return hosts;
}
