/**
 * Proves that the peer port trusts no one it cannot authenticate, and that no peer input can crash a
 * replica or change what it stores. Three real replicas on loopback, each with a certificate from a cluster
 * CA made by scripts/make-dev-certs.sh; the test plays the attacker with real gRPC over real TLS:
 * - without a client certificate, or with one from another CA, no call gets through at all;
 * - the dialing side refuses a server whose certificate is from another CA or names another cluster;
 * - a certificate without a replica identity is UNAUTHENTICATED; one issued for another cluster, or one
 *   whose holder claims another ordinal (in the envelope, the message or FetchSnapshot), is refused;
 * - FetchSnapshot is refused to a certificate of this cluster that is not a member;
 * - installSnapshot and append from a member that does not lead the current epoch are refused;
 * - a `join` whose address is a number gets INVALID_ARGUMENT that names the address;
 * - an epoch beyond 2^53 - 1 is refused;
 * - a bounded, seeded fuzz loop of malformed and oversized messages of every type from an authenticated
 *   member is refused one by one with INVALID_ARGUMENT;
 * - on the Stream method (binary frames), the same identities are refused, valid frames are taken, and the
 *   first bad frame (not a frame, no message, values out of range, another sender, a command that is not
 *   JSON or not a command, a leader-only message from a non-leader) ends the stream with a clear status;
 * and afterwards every replica still runs, a command of every kind a client can cause commits (so each
 * passes the followers' schema), and once stopped all state digests are equal.
 */
import * as grpc from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { computeStateDigest } from '../src/storage/state-digest.js';
import {
  createPeerServiceClient,
  peerServiceClientConstructor,
  type PeerServiceClient,
  peerServiceDefinition,
} from '../src/transport/peer-proto.js';
import type { PeerMessage } from '../src/core/replication/messages.js';
import { encodePeerMessage } from '../src/transport/peer-message-codec.js';
import { loadPeerTls, peerChannelCredentials, peerServerCredentials } from '../src/transport/tls-credentials.js';
import { RawChatClient } from './support/grpc-client.js';
import { MAKE_DEV_CERTS, makePeerCertificates, type PeerCertificates } from './support/peer-certificates.js';
import { awaitReady, freePort, type ServerProcess, startServer } from './support/processes.js';

const CLUSTER = 'peer-security';
const ADMIN_TOKEN = 'peer-security-admin-token-0123';
const ORDINALS = [0, 1, 2] as const;
/** Fuzzed messages in all, across the seven types; each is one Deliver call. */
const FUZZ_CALLS = 420;
const FUZZ_SEED = Number(process.env.PEER_FUZZ_SEED ?? 20261201);

let directory: string;
let certificates: PeerCertificates;
let rogue: PeerCertificates;
let peerPorts: number[];
let servers: ServerProcess[] = [];
const constructor = peerServiceClientConstructor();
const openClients: grpc.Client[] = [];

function peerAddress(ordinal: number): string {
  return `127.0.0.1:${peerPorts[ordinal]}`;
}

function client(ordinal: number, credentials: grpc.ChannelCredentials): PeerServiceClient {
  const created = createPeerServiceClient(peerAddress(ordinal), credentials, {}, constructor);
  openClients.push(created);
  return created;
}

/** Credentials presenting an arbitrary certificate and key, trusting the cluster CA. */
function credentialsFrom(certificatePath: string, keyPath: string): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(readFileSync(certificates.caPath), readFileSync(keyPath), readFileSync(certificatePath));
}

interface Outcome {
  readonly code: grpc.status;
  readonly details: string;
}

function deliver(
  target: PeerServiceClient,
  envelope: { clusterName?: string; fromOrdinal: number; payload: Buffer | string; fromClientAddress?: string },
): Promise<Outcome> {
  const request = {
    clusterName: envelope.clusterName ?? CLUSTER,
    fromOrdinal: envelope.fromOrdinal,
    payload: typeof envelope.payload === 'string' ? Buffer.from(envelope.payload, 'utf8') : envelope.payload,
    fromClientAddress: envelope.fromClientAddress ?? '',
  };
  return new Promise((resolve) => {
    (target as unknown as Record<string, Function>).Deliver!.call(
      target,
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + 5000 },
      (error: grpc.ServiceError | null) =>
        resolve(error === null ? { code: grpc.status.OK, details: '' } : { code: error.code, details: error.details }),
    );
  });
}

/**
 * Opens a Stream, writes `frames` (payloads already encoded) in order, ends it, and resolves with the
 * status the receiver ended it with.
 */
function stream(
  target: PeerServiceClient,
  fromOrdinal: number,
  frames: readonly Buffer[],
  options: { clusterName?: string; fromClientAddress?: string } = {},
): Promise<Outcome> {
  return new Promise((resolve) => {
    const call = (target as unknown as Record<string, Function>).Stream!.call(
      target,
      new grpc.Metadata(),
      { deadline: Date.now() + 5000 },
      (error: grpc.ServiceError | null) =>
        resolve(error === null ? { code: grpc.status.OK, details: '' } : { code: error.code, details: error.details }),
    ) as grpc.ClientWritableStream<unknown>;
    for (const payload of frames) {
      call.write({ clusterName: options.clusterName ?? CLUSTER, fromOrdinal, payload, fromClientAddress: options.fromClientAddress ?? '' });
    }
    call.end();
  });
}

function fetchSnapshot(target: PeerServiceClient, requesterOrdinal: number, epoch = 0): Promise<Outcome> {
  return new Promise((resolve) => {
    const stream = target.FetchSnapshot({ requesterOrdinal, epoch }, new grpc.Metadata(), { deadline: Date.now() + 5000 });
    stream.on('data', () => {
      stream.cancel();
      resolve({ code: grpc.status.OK, details: 'a snapshot chunk arrived' });
    });
    stream.on('error', (error: grpc.ServiceError) => resolve({ code: error.code, details: error.details }));
    stream.on('end', () => resolve({ code: grpc.status.OK, details: 'the stream ended' }));
  });
}

/** The leader and epoch as the replicas report them on the client port, once they agree. */
async function clusterView(): Promise<{ leader: number; epoch: number }> {
  const giveUpAt = Date.now() + 30_000;
  let last = '';
  while (Date.now() < giveUpAt) {
    const statuses = await Promise.all(
      servers.map(async (server) => {
        const raw = new RawChatClient(server.address);
        try {
          return (await raw.call('GetReplicaStatus', {})).response;
        } finally {
          raw.close();
        }
      }),
    );
    last = JSON.stringify(statuses.map((status) => [status?.role, status?.leaderOrdinal, status?.epoch]));
    const leaders = statuses.filter((status) => status?.role === 'leader');
    if (leaders.length === 1 && statuses.every((status) => status?.epoch === leaders[0]!.epoch)) {
      return { leader: Number(leaders[0]!.ordinal), epoch: Number(leaders[0]!.epoch) };
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`the replicas did not agree on a leader within 30 s: ${last}`);
}

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-peer-security-'));
  certificates = makePeerCertificates(join(directory, 'certs'), CLUSTER);
  rogue = makePeerCertificates(join(directory, 'rogue'), CLUSTER);
  peerPorts = await Promise.all(ORDINALS.map(() => freePort()));
  writeFileSync(join(directory, 'admin-token'), ADMIN_TOKEN, { mode: 0o600 });
  const peers = ORDINALS.map((ordinal) => `${ordinal}=${peerAddress(ordinal)}`).join(',');
  servers = await Promise.all(
    ORDINALS.map((ordinal) =>
      startServer({
        dataDirectory: join(directory, `replica-${ordinal}`),
        awaitReady: false,
        extraArguments: [
          '--ordinal', String(ordinal),
          '--peers', peers,
          '--peer-listen', peerAddress(ordinal),
          '--cluster-name', CLUSTER,
          // One cluster record for the three (processes.ts gives each data directory its own otherwise).
          '--etcd-prefix', `/peer-security-${process.pid}/`,
          '--admin-token-file', join(directory, 'admin-token'),
          ...certificates.serverArguments(ordinal),
        ],
      }),
    ),
  );
  await Promise.all(servers.map((server) => awaitReady(server.metricsPort, 30_000)));
}, 90_000);

afterAll(async () => {
  for (const opened of openClients) opened.close();
  await Promise.all(servers.map((server) => server.kill('SIGKILL')));
  rmSync(directory, { recursive: true, force: true });
});

describe('who may connect', () => {
  test('a plaintext client, a client without a certificate and one with another CA\'s certificate get nothing through', async () => {
    const status = JSON.stringify({ type: 'status', from: 1, epoch: 0, lastIndex: 0, lastEpoch: 0, leaderOrdinal: null, replyWanted: false, sentAtMs: 1, askedAtMs: null });
    const attempts = {
      plaintext: client(0, grpc.credentials.createInsecure()),
      'no certificate': client(0, grpc.credentials.createSsl(readFileSync(certificates.caPath))),
      'another CA': client(0, credentialsFrom(rogue.certificatePath(1), rogue.keyPath(1))),
    };
    for (const [name, attacker] of Object.entries(attempts)) {
      const outcome = await deliver(attacker, { fromOrdinal: 1, payload: status });
      expect([name, grpc.status[outcome.code]]).toEqual([name, 'UNAVAILABLE']);
      const snapshot = await fetchSnapshot(attacker, 1);
      expect([name, grpc.status[snapshot.code]]).toEqual([name, 'UNAVAILABLE']);
      const streamed = await stream(attacker, 1, [encodePeerMessage(JSON.parse(status) as PeerMessage)]);
      expect([name, grpc.status[streamed.code]]).toEqual([name, 'UNAVAILABLE']);
    }
  });

  test('a certificate of the cluster CA without a replica identity is UNAUTHENTICATED', async () => {
    const noIdentity = join(directory, 'no-identity');
    mkdirSync(noIdentity);
    execFileSync('bash', [
      '-c',
      `openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=replica-1 -keyout "$1/key.pem" -out "$1/csr.pem" 2>/dev/null &&
       openssl x509 -req -in "$1/csr.pem" -CA "$2/peer-ca.pem" -CAkey "$2/peer-ca-key.pem" -CAcreateserial -days 1 \
         -extfile <(printf 'subjectAltName=DNS:chat-1,IP:127.0.0.1\\nextendedKeyUsage=clientAuth,serverAuth') -out "$1/cert.pem" 2>/dev/null`,
      'make', noIdentity, certificates.directory,
    ]);
    const attacker = client(0, credentialsFrom(join(noIdentity, 'cert.pem'), join(noIdentity, 'key.pem')));
    const outcome = await deliver(attacker, { fromOrdinal: 1, payload: '{}' });
    expect(grpc.status[outcome.code]).toBe('UNAUTHENTICATED');
    expect(outcome.details).toContain('names no replica');
    expect(grpc.status[(await fetchSnapshot(attacker, 1)).code]).toBe('UNAUTHENTICATED');
    expect(grpc.status[(await stream(attacker, 1, [Buffer.alloc(0)])).code]).toBe('UNAUTHENTICATED');
  });

  test('a certificate issued by the same CA for another cluster is PERMISSION_DENIED', async () => {
    const other = join(directory, 'other-cluster');
    mkdirSync(other);
    for (const file of ['peer-ca.pem', 'peer-ca-key.pem']) copyFileSync(join(certificates.directory, file), join(other, file));
    execFileSync('bash', [MAKE_DEV_CERTS, 'peer', other, '1'], { env: { ...process.env, CLUSTER_NAME: 'another-cluster' }, stdio: 'ignore' });
    const attacker = client(0, credentialsFrom(join(other, 'peer-1.pem'), join(other, 'peer-1-key.pem')));
    const outcome = await deliver(attacker, { fromOrdinal: 1, payload: '{}' });
    expect(grpc.status[outcome.code]).toBe('PERMISSION_DENIED');
    expect(outcome.details).toContain('another-cluster');
    const streamed = await stream(attacker, 1, [Buffer.alloc(0)]);
    expect([grpc.status[streamed.code], streamed.details]).toEqual(['PERMISSION_DENIED', outcome.details]);
  });
});

describe('whom a replica dials', () => {
  /** A PeerService on loopback presenting `files`' certificate; GetStatus answers '{}'. */
  async function fakePeer(files: { caPath: string; certificatePath: string; keyPath: string }, clusterName: string): Promise<{ port: number; server: grpc.Server }> {
    const server = new grpc.Server();
    const refuse = (_call: unknown, callback: grpc.sendUnaryData<unknown>): void => callback({ code: grpc.status.UNIMPLEMENTED });
    server.addService(peerServiceDefinition(), {
      Deliver: refuse,
      FetchSnapshot: refuse,
      GetStatus: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => callback(null, { json: '{}' }),
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', peerServerCredentials(loadPeerTls(files, clusterName, 1)), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    return { port, server };
  }

  function getStatus(port: number): Promise<grpc.status> {
    const dialer = peerChannelCredentials(
      loadPeerTls({ caPath: certificates.caPath, certificatePath: certificates.certificatePath(0), keyPath: certificates.keyPath(0) }, CLUSTER, 0),
    );
    const target = createPeerServiceClient(`127.0.0.1:${port}`, dialer, {}, constructor);
    openClients.push(target);
    return new Promise((resolve) => {
      (target as unknown as Record<string, Function>).GetStatus!.call(target, {}, new grpc.Metadata(), { deadline: Date.now() + 5000 },
        (error: grpc.ServiceError | null) => resolve(error === null ? grpc.status.OK : error.code));
    });
  }

  test('a server with another CA\'s certificate, or one naming another cluster, is refused; a replica of this cluster is not', async () => {
    const otherCluster = join(directory, 'dialed-other-cluster');
    mkdirSync(otherCluster);
    for (const file of ['peer-ca.pem', 'peer-ca-key.pem']) copyFileSync(join(certificates.directory, file), join(otherCluster, file));
    execFileSync('bash', [MAKE_DEV_CERTS, 'peer', otherCluster, '1'], { env: { ...process.env, CLUSTER_NAME: 'another-cluster' }, stdio: 'ignore' });
    const peers = {
      'another CA': await fakePeer({ caPath: rogue.caPath, certificatePath: rogue.certificatePath(1), keyPath: rogue.keyPath(1) }, CLUSTER),
      'another cluster': await fakePeer(
        { caPath: join(otherCluster, 'peer-ca.pem'), certificatePath: join(otherCluster, 'peer-1.pem'), keyPath: join(otherCluster, 'peer-1-key.pem') },
        'another-cluster',
      ),
      'this cluster': await fakePeer({ caPath: certificates.caPath, certificatePath: certificates.certificatePath(1), keyPath: certificates.keyPath(1) }, CLUSTER),
    };
    try {
      const outcomes = Object.fromEntries(
        await Promise.all(Object.entries(peers).map(async ([name, peer]) => [name, grpc.status[await getStatus(peer.port)]] as const)),
      );
      expect(outcomes).toEqual({ 'another CA': 'UNAVAILABLE', 'another cluster': 'UNAVAILABLE', 'this cluster': 'OK' });
    } finally {
      for (const peer of Object.values(peers)) peer.server.forceShutdown();
    }
  });
});

/** One valid message of every type from `from` in `epoch`: what the fuzz loop breaks, one fault at a time. */
function validMessages(from: number, epoch: number): Record<string, Record<string, unknown>> {
  return {
    append: { type: 'append', from, epoch, prevIndex: 0, prevEpoch: 0, entries: [], commitIndex: 0, sentAtMs: 12.5, leaderIncarnation: 1, requestDigest: false },
    appendReply: {
      type: 'appendReply', from, epoch, ok: true, matchIndex: 0, lastIndex: 0, lastEpoch: 0, incarnation: 1, storageId: '0f0fa440-7b9b-4f17-a3e0-89e24fbfb0ee',
      echoSentAtMs: 12.5, echoLeaderIncarnation: 1, carriedEntries: false, snapshotting: false,
    },
    status: { type: 'status', from, epoch, lastIndex: 0, lastEpoch: 0, leaderOrdinal: null, replyWanted: false, sentAtMs: 3.25, askedAtMs: null },
    join: { type: 'join', from, epoch, address: '127.0.0.1:1', emptyLog: true },
    installSnapshot: { type: 'installSnapshot', from, epoch, leaderLastIndex: 0 },
    leave: { type: 'leave', from, epoch },
    handover: { type: 'handover', from, epoch },
  };
}

describe('who may claim what', () => {
  test('a member claiming another ordinal, in the envelope or in the message, is refused; so is FetchSnapshot for another', async () => {
    const { leader } = await clusterView();
    const holder = ORDINALS.find((ordinal) => ordinal !== leader)!;
    const impersonated = ORDINALS.find((ordinal) => ordinal !== leader && ordinal !== holder)!;
    const attacker = client(leader, certificates.clientCredentials(holder));
    for (const message of Object.values(validMessages(impersonated, 0))) {
      const inEnvelope = await deliver(attacker, { fromOrdinal: impersonated, payload: JSON.stringify(message) });
      expect([message.type, grpc.status[inEnvelope.code]]).toEqual([message.type, 'PERMISSION_DENIED']);
      expect(inEnvelope.details).toContain('from_ordinal');
      // The message itself passes the schema (the check of `from` comes after it), and is refused for its sender.
      const inMessage = await deliver(attacker, { fromOrdinal: holder, payload: JSON.stringify(message) });
      expect([message.type, grpc.status[inMessage.code], inMessage.details]).toEqual([
        message.type,
        'PERMISSION_DENIED',
        `from ${impersonated} is not the certificate's replica ${holder}`,
      ]);
    }
    const snapshot = await fetchSnapshot(attacker, impersonated);
    expect(grpc.status[snapshot.code]).toBe('PERMISSION_DENIED');
    expect(snapshot.details).toContain('requester_ordinal');
  });

  test('FetchSnapshot is refused to a certificate of this cluster that is not a member; a member gets one', async () => {
    const { leader } = await clusterView();
    const outsider = client(leader, certificates.clientCredentials(7));
    const refused = await fetchSnapshot(outsider, 7);
    expect(grpc.status[refused.code]).toBe('PERMISSION_DENIED');
    expect(refused.details).toContain('not a member');
    const member = ORDINALS.find((ordinal) => ordinal !== leader)!;
    const served = await fetchSnapshot(client(leader, certificates.clientCredentials(member)), member);
    expect(grpc.status[served.code]).toBe('OK');
  });

  test('installSnapshot and append from a member that does not lead the current epoch are refused', async () => {
    const { leader, epoch } = await clusterView();
    const [target, impostor] = ORDINALS.filter((ordinal) => ordinal !== leader) as [number, number];
    const attacker = client(target, certificates.clientCredentials(impostor));
    for (const type of ['installSnapshot', 'append', 'handover']) {
      const message = validMessages(impostor, epoch)[type]!;
      const outcome = await deliver(attacker, { fromOrdinal: impostor, payload: JSON.stringify(message) });
      expect([type, grpc.status[outcome.code]]).toEqual([type, 'PERMISSION_DENIED']);
      expect(outcome.details).toContain(`replica ${leader} leads that epoch`);
    }
  });

  test('a join whose address is a number gets a clear INVALID_ARGUMENT, from an outsider as from a member', async () => {
    const { leader } = await clusterView();
    for (const ordinal of [7, ORDINALS.find((candidate) => candidate !== leader)!]) {
      const joiner = client(leader, certificates.clientCredentials(ordinal));
      const message = { type: 'join', from: ordinal, epoch: 0, address: 12345, emptyLog: true };
      const outcome = await deliver(joiner, { fromOrdinal: ordinal, payload: JSON.stringify(message) });
      expect(grpc.status[outcome.code]).toBe('INVALID_ARGUMENT');
      expect(outcome.details).toMatch(/^address: /);
    }
  });

  test('an epoch beyond a safe integer is refused, in every type', async () => {
    const { leader } = await clusterView();
    const member = ORDINALS.find((ordinal) => ordinal !== leader)!;
    const attacker = client(leader, certificates.clientCredentials(member));
    for (const epoch of [2 ** 53, 1e308, -1, 1.5]) {
      for (const message of Object.values(validMessages(member, 0))) {
        const outcome = await deliver(attacker, { fromOrdinal: member, payload: JSON.stringify({ ...message, epoch }) });
        expect([message.type, epoch, grpc.status[outcome.code]]).toEqual([message.type, epoch, 'INVALID_ARGUMENT']);
        expect(outcome.details).toContain('epoch');
      }
    }
  });
});

/** A small seeded generator, so that a failing run can be replayed with PEER_FUZZ_SEED. */
function generator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let value = Math.imul(state ^ (state >>> 15), 1 | state);
    value ^= value + Math.imul(value ^ (value >>> 7), 61 | value);
    return ((value ^ (value >>> 14)) >>> 0) / 4294967296;
  };
}

const BAD_INTEGERS = [-1, 1.5, 2 ** 53, 1e308, '7', null, true, {}, [], 'x'.repeat(5000)];
/** Clock readings may be fractional, so 1.5 is not a fault there. */
const BAD_CLOCKS = BAD_INTEGERS.filter((value) => value !== 1.5);
const BAD_BOOLEANS = [null, 0, 1, 'true', {}, []];
const BAD_ADDRESSES = [12345, null, '', 'no-port', `${'a'.repeat(300)}:1`, 'host:99999', 'host:0', ['h:1'], 'ho st:1', { host: 'h' }];
const VALID_ENTRY = {
  index: 1,
  epoch: 0,
  command: {
    kind: 'sendMessage', requestId: 'r1', principal: 'session:0123456789abcdef0123456789abcdef', fingerprint: 'a'.repeat(64),
    timestampMs: 1, messageId: '01234567-89ab-cdef-0123-456789abcdef', sender: 'mallory', recipient: 'alice', body: 'hi', instant: false,
  },
};
const BAD_ENTRIES = [
  null,
  'entries',
  {},
  [{}],
  [{ ...VALID_ENTRY, index: 2 }],
  [{ ...VALID_ENTRY, epoch: Number.MAX_SAFE_INTEGER }],
  [{ ...VALID_ENTRY, command: { ...VALID_ENTRY.command, kind: 'becomeAdmin' } }],
  [{ ...VALID_ENTRY, command: { ...VALID_ENTRY.command, body: 5 } }],
  [{ ...VALID_ENTRY, command: { ...VALID_ENTRY.command, sender: '../../etc' } }],
  [{ ...VALID_ENTRY, command: { ...VALID_ENTRY.command, extra: 'field' } }],
  [{ ...VALID_ENTRY, command: { ...VALID_ENTRY.command, body: 'x'.repeat(1024 * 1024 + 1) } }],
  [{ ...VALID_ENTRY, configuration: { members: [{ ordinal: 7, address: 12345 }], inSync: [7] } }],
  Array.from({ length: 513 }, (_, position) => ({ ...VALID_ENTRY, index: position + 1 })),
];

/** How to break each field: values its schema refuses. */
function badValuesFor(field: string): readonly unknown[] {
  if (field === 'type') return ['becomeLeader', '', 5, null];
  if (field === 'address') return BAD_ADDRESSES;
  if (field === 'entries') return BAD_ENTRIES;
  if (['ok', 'requestDigest', 'replyWanted', 'carriedEntries', 'snapshotting', 'emptyLog'].includes(field)) return BAD_BOOLEANS;
  if (field === 'leaderOrdinal') return BAD_INTEGERS.filter((value) => value !== null);
  if (field === 'askedAtMs') return BAD_CLOCKS.filter((value) => value !== null);
  if (['sentAtMs', 'echoSentAtMs'].includes(field)) return BAD_CLOCKS;
  if (field === 'storageId') return ['', 'f'.repeat(65), 'not hex!', 5, null];
  return BAD_INTEGERS;
}

describe('malformed input from an authenticated member', () => {
  test(`${FUZZ_CALLS} malformed or oversized messages of every type are each refused with INVALID_ARGUMENT (seed ${FUZZ_SEED})`, async () => {
    const { leader, epoch } = await clusterView();
    const member = ORDINALS.find((ordinal) => ordinal !== leader)!;
    const targets = ORDINALS.map((ordinal) => client(ordinal, certificates.clientCredentials(member === ordinal ? leader : member)));
    const random = generator(FUZZ_SEED);
    const pick = <T>(values: readonly T[]): T => values[Math.floor(random() * values.length)]!;
    const refusedTypes = new Set<string>();
    for (let call = 0; call < FUZZ_CALLS; call += 1) {
      const targetOrdinal = pick(ORDINALS);
      const sender = targetOrdinal === member ? leader : member;
      const base = validMessages(sender, epoch);
      const type = pick(Object.keys(base));
      const message: Record<string, unknown> = { ...base[type]! };
      const fault = random();
      let payload: string;
      if (fault < 0.6) {
        const field = pick(Object.keys(message).filter((key) => key !== 'from'));
        message[field] = pick(badValuesFor(field));
        payload = JSON.stringify(message);
      } else if (fault < 0.7) {
        delete message[pick(Object.keys(message).filter((key) => key !== 'type'))];
        payload = JSON.stringify(message);
      } else if (fault < 0.8) {
        // An undeclared field: small ones are refused by the schema, large ones by the size limit first.
        message[pick(['digestVerified', 'configuration', 'isLeader', 'padding'])] = random() < 0.5 ? true : 'p'.repeat(5000);
        payload = JSON.stringify(message);
      } else if (fault < 0.9) {
        payload = pick(['', 'null', '[]', '"status"', '{', JSON.stringify(message).slice(0, -1), '\u0000\u0001', '1e999']);
      } else {
        // Oversized: every type but append is at most 4 KiB.
        const types = Object.keys(base).filter((candidate) => candidate !== 'append');
        const oversized = { ...base[pick(types)]!, padding: 'p'.repeat(4096 + Math.floor(random() * 100_000)) };
        payload = JSON.stringify(oversized);
      }
      const outcome = await deliver(targets[targetOrdinal]!, { fromOrdinal: sender, payload });
      if (outcome.code !== grpc.status.INVALID_ARGUMENT) {
        throw new Error(`call ${call} (seed ${FUZZ_SEED}) to replica ${targetOrdinal} was not refused as malformed: ${grpc.status[outcome.code]} ${outcome.details}; payload ${payload.slice(0, 300)}`);
      }
      refusedTypes.add(type);
    }
    expect([...refusedTypes].sort()).toEqual(['append', 'appendReply', 'handover', 'installSnapshot', 'join', 'leave', 'status']);
    // Each replica logged refusals (at most ten a second), with the method and the reason.
    for (const server of servers) {
      const logged = server.logLines.filter((line) => line.msg === 'refused a peer call');
      expect(logged.length).toBeGreaterThan(0);
      expect(logged[logged.length - 1]).toMatchObject({ method: 'Deliver', code: 'INVALID_ARGUMENT' });
    }
  }, 120_000);

  test('an envelope whose client address is not host:port is refused', async () => {
    const { leader } = await clusterView();
    const member = ORDINALS.find((ordinal) => ordinal !== leader)!;
    const attacker = client(leader, certificates.clientCredentials(member));
    const message = validMessages(member, 0).status!;
    for (const address of ['evil', `${'a'.repeat(300)}:443`, 'phish.example:99999']) {
      const outcome = await deliver(attacker, { fromOrdinal: member, payload: JSON.stringify(message), fromClientAddress: address });
      expect(grpc.status[outcome.code]).toBe('INVALID_ARGUMENT');
      expect(outcome.details).toContain('from_client_address');
    }
  });
});

describe('the Stream method, with binary frames', () => {
  test('valid frames are taken, and the first bad frame ends the stream with the status Deliver would give', async () => {
    const { leader, epoch } = await clusterView();
    const member = ORDINALS.find((ordinal) => ordinal !== leader)!;
    const other = ORDINALS.find((ordinal) => ordinal !== leader && ordinal !== member)!;
    const target = client(leader, certificates.clientCredentials(member));
    const valid = (type: string): Buffer => encodePeerMessage(validMessages(member, epoch)[type] as unknown as PeerMessage);
    // Valid frames pass every check, and the stream ends cleanly when the sender ends it. (Statuses only:
    // a valid leave or reply would act on the cluster, and the last test compares its state.)
    expect(await stream(target, member, [valid('status'), valid('status'), valid('status')])).toEqual({
      code: grpc.status.OK,
      details: '',
    });
    const status = validMessages(member, epoch).status!;
    const refusals: [string, Buffer[], string, string][] = [
      ['random bytes', [valid('status'), Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])], 'INVALID_ARGUMENT', 'not a PeerMessageFrame'],
      ['an empty frame', [Buffer.alloc(0)], 'INVALID_ARGUMENT', 'carries no message'],
      ['an epoch beyond 2^53 - 1', [encodePeerMessage({ ...status, epoch: 2 ** 60 } as unknown as PeerMessage)], 'INVALID_ARGUMENT', 'epoch'],
      ['a negative index', [encodePeerMessage({ ...status, lastIndex: -1 } as unknown as PeerMessage)], 'INVALID_ARGUMENT', 'lastIndex'],
      ['a fractional epoch', [encodePeerMessage({ ...status, epoch: 1.5 } as unknown as PeerMessage)], 'INVALID_ARGUMENT', 'epoch'],
      ['another sender in the message', [encodePeerMessage({ ...status, from: other } as unknown as PeerMessage)], 'PERMISSION_DENIED', `from ${other}`],
      [
        'an append whose command is not JSON',
        [frameOfAppendWithCommand(member, epoch, Buffer.from('{not json', 'utf8'))],
        'INVALID_ARGUMENT',
        'not JSON',
      ],
      [
        'an append whose command is not a command',
        [frameOfAppendWithCommand(member, epoch, Buffer.from(JSON.stringify({ kind: 'dropTables' }), 'utf8'))],
        'INVALID_ARGUMENT',
        'entries.0.command',
      ],
    ];
    for (const [what, frames, code, detail] of refusals) {
      const outcome = await stream(target, member, frames);
      expect([what, grpc.status[outcome.code]]).toEqual([what, code]);
      expect(outcome.details).toContain(detail);
    }
    // The envelope is checked as Deliver checks it.
    expect(grpc.status[(await stream(target, other, [valid('status')])).code]).toBe('PERMISSION_DENIED');
    expect(grpc.status[(await stream(target, member, [valid('status')], { clusterName: 'elsewhere' })).code]).toBe('FAILED_PRECONDITION');
    expect(grpc.status[(await stream(target, member, [valid('status')], { fromClientAddress: 'evil' })).code]).toBe('INVALID_ARGUMENT');
    // An append from a member that does not lead the epoch is refused on a stream as in a call.
    const append = encodePeerMessage(validMessages(member, epoch).append as unknown as PeerMessage);
    expect(grpc.status[(await stream(target, member, [append])).code]).toBe('PERMISSION_DENIED');
    const logged = servers[leader]!.logLines.filter((line) => line.msg === 'refused a peer call' && line.method === 'Stream');
    expect(logged.length).toBeGreaterThan(0);
  });
});

/** An append frame with one entry whose command bytes are `command`, which encodePeerMessage would never write. */
function frameOfAppendWithCommand(from: number, epoch: number, command: Buffer): Buffer {
  const valid = encodePeerMessage({
    type: 'append', from, epoch, prevIndex: 0, prevEpoch: 0,
    entries: [{ index: 1, epoch, command: { kind: 'placeholder' } }],
    commitIndex: 0, sentAtMs: 1, leaderIncarnation: 1, requestDigest: false,
  } as unknown as PeerMessage);
  const placeholder = Buffer.from(JSON.stringify({ kind: 'placeholder' }), 'utf8');
  const at = valid.indexOf(placeholder);
  expect(at).toBeGreaterThan(0);
  // Same length keeps every length prefix of the frame right.
  const padded = Buffer.concat([command, Buffer.alloc(Math.max(0, placeholder.length - command.length), 0x20)]).subarray(0, placeholder.length);
  return Buffer.concat([valid.subarray(0, at), padded, valid.subarray(at + placeholder.length)]);
}

describe('afterwards', () => {
  test('every replica still runs, every kind of client command commits, and once stopped all state digests are equal', async () => {
    for (const server of servers) expect(server.process.exitCode).toBeNull();
    const { leader } = await clusterView();
    // Refusals are logged: a follower that refused a real append (rather than catching up from a snapshot,
    // which the digests alone would not tell apart) would log one from here on.
    const refusals = (): number =>
      servers.reduce((count, server) => count + server.logLines.filter((line) => line.msg === 'refused a peer call').length, 0);
    const refusalsBefore = refusals();
    const raw = new RawChatClient(servers[leader]!.address);
    try {
      const password = 'after fuzz password';
      for (const username of ['afterfuzz', 'leaving']) {
        await raw.ok('CreateAccount', { requestId: `create-${username}`, username, password });
      }
      const token = (await raw.ok('Login', { requestId: 'login-afterfuzz', username: 'afterfuzz', password })).sessionToken as string;
      const leaving = (await raw.ok('Login', { requestId: 'login-leaving', username: 'leaving', password })).sessionToken as string;
      const sent = [];
      for (const body of ['one', 'two', 'three']) {
        sent.push(((await raw.ok('SendMessage', { requestId: `send-${body}`, recipient: 'afterfuzz', body }, leaving)).message as { id: string }).id);
      }
      await raw.ok('ReadMessages', { requestId: 'read-1', limit: 1 }, token);
      await raw.ok('AcknowledgeMessages', { requestId: 'ack-1', messageIds: [sent[1]] }, token);
      await raw.ok('DeleteMessages', { requestId: 'delete-1', messageIds: [sent[2]] }, token);
      await raw.ok('RotateSessionKey', { requestId: 'rotate-1' }, ADMIN_TOKEN);
      await raw.ok('Logout', { requestId: 'logout-afterfuzz' }, token);
      await raw.ok('DeleteAccount', { requestId: 'delete-leaving', password }, leaving);
    } finally {
      raw.close();
    }
    expect(refusals()).toBe(refusalsBefore);
    // Stop followers first, so that the leader does not fail over while the others stop.
    for (const ordinal of [...ORDINALS.filter((candidate) => candidate !== leader), leader]) {
      expect(await servers[ordinal]!.stop()).toBe(0);
    }
    const digests = ORDINALS.map((ordinal) => {
      const database = new Database(join(directory, `replica-${ordinal}`, 'replichat.sqlite'), { readonly: true, fileMustExist: true });
      try {
        const users = database.prepare('SELECT username FROM users').all() as { username: string }[];
        expect(users.map((row) => row.username)).toEqual(['afterfuzz']);
        return computeStateDigest(database);
      } finally {
        database.close();
      }
    });
    expect(new Set(digests).size).toBe(1);
  }, 60_000);
});
