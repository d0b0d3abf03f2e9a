/**
 * A tiny DNS server over UDP for tests of how the client copes with name lookups: it answers A queries for
 * the names it is told, each after a chosen delay, answers AAAA queries with no address, stays silent for
 * names it is told to ignore, and answers NXDOMAIN for any other name. A process sees it through the real
 * C library resolver (getaddrinfo, which Node's dns.lookup and so grpc-js use) when started by
 * `resolvingThrough`: in a mount namespace of its own whose /etc/resolv.conf names this server. It stands
 * in for a cluster's DNS (CoreDNS, podman's aardvark-dns); it does not prove how those behave.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** An address for `name`, given after `delayMs`; or 'silent': queries for it are never answered. */
export type DnsAnswer = { readonly address: string; readonly delayMs?: number } | 'silent';

export interface FakeDnsServer {
  /** The local address it listens on, at port 53. */
  readonly address: string;
  /** How `name` (without the trailing dot) is answered from now on. */
  answer(name: string, answer: DnsAnswer): void;
  /** Spawns `node args` whose name lookups all go to this server (see the module comment). */
  spawnNode(args: readonly string[], env: NodeJS.ProcessEnv): ChildProcess;
  stop(): Promise<void>;
}

const TYPE_A = 1;
const TYPE_AAAA = 28;

/** The question of a query: the name (lower case, no trailing dot), its type, and where the question ends. */
function parseQuestion(query: Buffer): { name: string; type: number; end: number } | undefined {
  if (query.length < 12 || query.readUInt16BE(4) !== 1) return undefined;
  const labels: string[] = [];
  let offset = 12;
  while (offset < query.length) {
    const length = query[offset]!;
    if (length === 0) break;
    // Compression pointers never occur in a question a resolver sends.
    if (length > 63) return undefined;
    labels.push(query.toString('ascii', offset + 1, offset + 1 + length).toLowerCase());
    offset += 1 + length;
  }
  if (offset + 5 > query.length) return undefined;
  return { name: labels.join('.'), type: query.readUInt16BE(offset + 1), end: offset + 5 };
}

/** The response to `query`: its question, and an A record for `ipv4` when one is given. */
function response(query: Buffer, questionEnd: number, responseCode: number, ipv4?: string): Buffer {
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2);
  // QR, AA and RD set, RA set, and the response code.
  header.writeUInt16BE(0x8580 | responseCode, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(ipv4 === undefined ? 0 : 1, 6);
  const question = query.subarray(12, questionEnd);
  if (ipv4 === undefined) return Buffer.concat([header, question]);
  const record = Buffer.alloc(16);
  // A pointer to the name in the question, type A, class IN, TTL 0 (never cached), four bytes of address.
  record.writeUInt16BE(0xc00c, 0);
  record.writeUInt16BE(TYPE_A, 2);
  record.writeUInt16BE(1, 4);
  record.writeUInt32BE(0, 6);
  record.writeUInt16BE(4, 10);
  ipv4.split('.').forEach((octet, index) => record.writeUInt8(Number(octet), 12 + index));
  return Buffer.concat([header, question, record]);
}

/** Starts the server on `address`:53 (any 127.x.y.z; needs root for port 53). */
export async function startFakeDnsServer(address: string): Promise<FakeDnsServer> {
  const answers = new Map<string, DnsAnswer>();
  const timers = new Set<NodeJS.Timeout>();
  const socket = createSocket('udp4');
  socket.on('message', (query, sender) => {
    const question = parseQuestion(query);
    if (question === undefined) return;
    const answer = answers.get(question.name);
    if (answer === 'silent') return;
    const send = (): void => {
      if (answer === undefined) socket.send(response(query, question.end, 3), sender.port, sender.address);
      else socket.send(response(query, question.end, 0, question.type === TYPE_A ? answer.address : undefined), sender.port, sender.address);
    };
    const delayMs = answer === undefined || question.type === TYPE_AAAA ? 0 : (answer.delayMs ?? 0);
    if (delayMs === 0) return send();
    const timer = setTimeout(() => {
      timers.delete(timer);
      send();
    }, delayMs);
    timers.add(timer);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(53, address, () => resolve());
  });
  const directory = mkdtempSync(join(tmpdir(), 'replichat-fake-dns-'));
  const resolvConf = join(directory, 'resolv.conf');
  // Long enough a timeout that glibc waits for a delayed answer instead of asking again.
  writeFileSync(resolvConf, `nameserver ${address}\noptions timeout:30 attempts:1\n`);
  return {
    address,
    answer(name, answer) {
      answers.set(name.toLowerCase(), answer);
    },
    spawnNode(args, env) {
      // A private mount namespace (unshare's default propagation is private), so that the bind mount over
      // /etc/resolv.conf is seen by this child only.
      const script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"';
      return spawn('unshare', ['--mount', 'sh', '-c', script, resolvConf, process.execPath, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    },
    async stop() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      await new Promise<void>((resolve) => socket.close(() => resolve()));
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
