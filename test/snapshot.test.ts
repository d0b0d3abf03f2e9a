/**
 * Proves the snapshot mechanism on real SQLite files and a real gRPC server on 127.0.0.1:
 * - a snapshot taken while the same connection keeps writing (a write after every backup step) holds
 *   exactly the state of replaying the source's log up to the snapshot's last index, and none of the
 *   per-replica local_metadata, not even in free pages;
 * - a transfer in 4 KiB chunks yields a byte-identical, checksum-verified file, and the server honours
 *   flow control (no write before 'drain' once a write was refused) and stops when the client cancels;
 * - a stream that ends early, fails, loses its server, stalls past the deadline, carries a flipped byte,
 *   lacks its header or overshoots its size is refused, leaves no temporary file, and leaves the database
 *   it was meant to replace byte-for-byte unchanged;
 * - swapInSnapshot replaces a database whose rows were still only in its WAL (as a crash leaves it) or that
 *   SQLite cannot read, leaving exactly the snapshot's state, and a swap that fails before its rename
 *   leaves the old database whole and self-contained;
 * - cleanUpTempSnapshots deletes leftover snapshot files and nothing else.
 */
import * as grpc from '@grpc/grpc-js';
import {
  copyFileSync,
  createReadStream,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { ReplicaStore } from '../src/storage/replica-store.js';
import {
  cleanUpTempSnapshots,
  createSnapshot,
  hashFile,
  receiveSnapshotToTemp,
  SnapshotError,
  type SnapshotFile,
  swapInSnapshot,
} from '../src/storage/snapshot.js';
import {
  createPeerServiceClient,
  type FetchSnapshotCall,
  peerServiceDefinition,
  type PeerServiceClient,
  type ReceivedSnapshotChunk,
} from '../src/transport/peer-proto.js';
import { fetchSnapshot, serveSnapshot, type ServeSnapshotOutcome } from '../src/transport/snapshot-transfer.js';
import { EnvelopeSequence, uuid } from './support/storage-commands.js';

const CHUNK_BYTES = 4096;
const REQUEST = { requesterOrdinal: 1, epoch: 1 };
/** A per-replica value in every populated store's local_metadata, which no snapshot may carry. */
const LOCAL_MARKER = 'only-on-the-source-replica';

let directory: string;
const stoppers: (() => void)[] = [];
const envelopes = new EnvelopeSequence();
const envelope = (principal: string) => envelopes.envelope(principal);

function sendMessage(store: ReplicaStore, epoch = 1, bodyBytes = 500): void {
  const sender = envelopes.count % 2 === 0 ? 'alice' : 'carol';
  store.appendAndApply(epoch, {
    kind: 'sendMessage', ...envelope('session:x'), messageId: uuid(envelopes.count), sender, recipient: 'bob',
    body: `${envelopes.count} `.padEnd(bodyBytes, 'x'), instant: false,
  });
}

/** A store with the cluster initialized, three accounts and `messageCount` messages of about 1 KB each. */
function populatedStore(path: string, messageCount: number, options: { checkpoints?: boolean } = {}): ReplicaStore {
  const store = ReplicaStore.open(path);
  if (options.checkpoints === false) store.database.pragma('wal_autocheckpoint = 0');
  store.appendAndApply(1, { kind: 'initializeCluster', clusterId: 'c', sessionSecretHex: 'ab'.repeat(32), timestampMs: envelopes.timestampMs });
  for (const username of ['alice', 'bob', 'carol']) {
    store.appendAndApply(1, { kind: 'createAccount', ...envelope(`user:${username}`), username, passwordHash: `h-${username}` });
  }
  for (let n = 0; n < messageCount; n += 1) sendMessage(store, 1, 1000);
  store.database.prepare('INSERT INTO local_metadata (key, value) VALUES (?, ?)').run('marker', LOCAL_MARKER);
  return store;
}

/** The digest of the database at `path`, read by opening and closing it. */
function digestOf(path: string): string {
  const store = ReplicaStore.open(path);
  try {
    return store.stateDigest();
  } finally {
    store.close();
  }
}

function headerOf(snapshot: SnapshotFile) {
  const { lastIndex, lastEpoch, sizeBytes, sha256Hex } = snapshot;
  return { lastIndex, lastEpoch, sizeBytes, sha256Hex };
}

function temporaryFiles(path: string): string[] {
  return readdirSync(path).filter((name) => name.startsWith('snapshot-'));
}

interface PeerServer {
  readonly server: grpc.Server;
  readonly client: PeerServiceClient;
}

/** A PeerService on 127.0.0.1 whose FetchSnapshot is `handler`; the other methods are not served here. */
async function startPeerServer(handler: (call: FetchSnapshotCall) => void): Promise<PeerServer> {
  const server = new grpc.Server();
  const unimplemented = (_call: unknown, callback: grpc.sendUnaryData<unknown>): void =>
    callback({ code: grpc.status.UNIMPLEMENTED, details: 'not served in this test' });
  server.addService(peerServiceDefinition(), {
    Deliver: unimplemented,
    GetStatus: unimplemented,
    FetchSnapshot: handler,
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, boundPort) =>
      error ? reject(error) : resolve(boundPort),
    );
  });
  const client = createPeerServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  stoppers.push(() => {
    client.close();
    server.forceShutdown();
  });
  return { server, client };
}

/** Sends the header and the first `chunkCount` data chunks of `snapshot`, as a server that then stops would. */
async function serveFirstChunks(call: FetchSnapshotCall, snapshot: SnapshotFile, chunkCount: number): Promise<void> {
  call.write({ header: headerOf(snapshot) });
  let written = 0;
  for await (const data of createReadStream(snapshot.path, { highWaterMark: CHUNK_BYTES }) as AsyncIterable<Buffer>) {
    if (written === chunkCount) break;
    call.write({ data });
    written += 1;
  }
}

beforeEach(() => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-snapshot-'));
});
afterEach(() => {
  for (const stop of stoppers.splice(0)) stop();
  rmSync(directory, { recursive: true, force: true });
});

test('a snapshot taken while writes continue equals a replay of the log up to its last index', async () => {
  // Enough messages for the file to span well over 40 pages (about 1.5 KB each on 16 KiB pages), so that
  // the copy takes more than 20 steps of 2 pages.
  const source = populatedStore(join(directory, 'source.sqlite'), 600);
  const lastIndexBefore = source.lastIndex;
  let writesDuringBackup = 0;
  const snapshot = await createSnapshot(source.database, join(directory, 'outgoing'), {
    pagesPerStep: 2,
    onBackupStep: () => {
      // Each write changes pages the backup has already copied (page 1 at least) and adds pages it has not
      // reached yet; the later ones are in epoch 2, so that the snapshot's epoch is checked too.
      sendMessage(source, writesDuringBackup < 20 ? 1 : 2);
      writesDuringBackup += 1;
    },
  });
  const sourceDigestAtSnapshot = source.stateDigest();
  expect(writesDuringBackup).toBeGreaterThan(20);
  // Every write made between steps reached the copy, so it corresponds to the source after the last step.
  expect(snapshot.lastIndex).toBe(lastIndexBefore + writesDuringBackup);
  expect(snapshot.lastEpoch).toBe(2);
  expect(readdirSync(join(directory, 'outgoing'))).toEqual([basename(snapshot.path)]);
  expect(await hashFile(snapshot.path)).toEqual({ sizeBytes: snapshot.sizeBytes, sha256Hex: snapshot.sha256Hex });

  // Writes after the snapshot must not be in it.
  sendMessage(source, 2);
  expect(source.lastIndex).toBe(snapshot.lastIndex + 1);

  const installedPath = join(directory, 'installed', 'replichat.sqlite');
  const tempPath = await receiveSnapshotToTemp(
    join(directory, 'installed'),
    headerOf(snapshot),
    createReadStream(snapshot.path, { highWaterMark: 8192 }),
  );
  await swapInSnapshot(tempPath, installedPath);
  const installed = ReplicaStore.open(installedPath);
  const replay = ReplicaStore.open(join(directory, 'replay.sqlite'));
  for (const entry of source.entries(1, snapshot.lastIndex)) replay.applyEntry(entry);

  expect(installed.lastIndex).toBe(snapshot.lastIndex);
  expect(installed.lastEpoch).toBe(2);
  expect(installed.stateDigest()).toBe(replay.stateDigest());
  expect(installed.stateDigest()).toBe(sourceDigestAtSnapshot);
  expect(installed.entries(1, 100_000)).toEqual(source.entries(1, snapshot.lastIndex));
  expect(installed.database.pragma('integrity_check', { simple: true })).toBe('ok');
  expect(installed.database.prepare('SELECT count(*) AS count FROM local_metadata').get()).toEqual({ count: 0 });
  expect(source.database.prepare('SELECT count(*) AS count FROM local_metadata').get()).toEqual({ count: 1 });
  // Not even in free pages: the cleared row was overwritten, not just unlinked.
  expect(readFileSync(snapshot.path).includes(LOCAL_MARKER)).toBe(false);
  source.database.pragma('wal_checkpoint(TRUNCATE)');
  expect(readFileSync(join(directory, 'source.sqlite')).includes(LOCAL_MARKER)).toBe(true);

  await snapshot.remove();
  expect(readdirSync(join(directory, 'outgoing'))).toEqual([]);
  for (const store of [source, installed, replay]) store.close();
});

test('a transfer over gRPC in 4 KiB chunks yields a byte-identical, verified file', async () => {
  const source = populatedStore(join(directory, 'source.sqlite'), 100);
  const snapshot = await createSnapshot(source.database, join(directory, 'sender'));
  const sourceDigest = source.stateDigest();
  source.close();
  const snapshotBytes = readFileSync(snapshot.path);
  let served: Promise<ServeSnapshotOutcome> | undefined;
  const { client } = await startPeerServer((call) => {
    served = serveSnapshot(call, snapshot, { chunkBytes: CHUNK_BYTES, removeWhenDone: true });
  });

  const receiverDirectory = join(directory, 'receiver');
  const progress: number[] = [];
  const fetched = await fetchSnapshot(client, REQUEST, receiverDirectory, {
    deadlineMs: 30_000,
    onProgress: (bytesReceived, sizeBytes) => {
      expect(sizeBytes).toBe(snapshot.sizeBytes);
      progress.push(bytesReceived);
    },
  });

  expect(fetched.header).toEqual(headerOf(snapshot));
  expect(progress).toHaveLength(Math.ceil(snapshot.sizeBytes / CHUNK_BYTES));
  expect(progress.length).toBeGreaterThan(50);
  expect(progress.at(-1)).toBe(snapshot.sizeBytes);
  expect(readFileSync(fetched.tempPath).equals(snapshotBytes)).toBe(true);
  expect(await hashFile(fetched.tempPath)).toEqual({ sizeBytes: snapshot.sizeBytes, sha256Hex: snapshot.sha256Hex });
  expect(await served).toBe('sent');
  expect(readdirSync(join(directory, 'sender'))).toEqual([]);

  const databasePath = join(receiverDirectory, 'replichat.sqlite');
  await swapInSnapshot(fetched.tempPath, databasePath);
  expect(readdirSync(receiverDirectory)).toEqual(['replichat.sqlite']);
  expect(digestOf(databasePath)).toBe(sourceDigest);
});

/**
 * Serves `snapshot` with the call's write wrapped (in the test only) to report when a write first meets
 * flow control (write returns false) and to count writes made before the 'drain' that must follow.
 */
async function startFlowControlledServer(snapshot: SnapshotFile) {
  let blocked!: (chunksWritten: number) => void;
  const firstBlocked = new Promise<number>((resolve) => {
    blocked = resolve;
  });
  let served: Promise<ServeSnapshotOutcome> | undefined;
  const counts = { writesBeforeDrain: 0 };
  const { client } = await startPeerServer((call) => {
    const write = call.write.bind(call) as (chunk: unknown) => boolean;
    let chunksWritten = 0;
    let awaitingDrain = false;
    call.on('drain', () => {
      awaitingDrain = false;
    });
    call.write = ((chunk: unknown) => {
      if (awaitingDrain) counts.writesBeforeDrain += 1;
      chunksWritten += 1;
      const accepted = write(chunk);
      if (!accepted) {
        awaitingDrain = true;
        blocked(chunksWritten);
      }
      return accepted;
    }) as typeof call.write;
    served = serveSnapshot(call, snapshot, { chunkBytes: CHUNK_BYTES, removeWhenDone: true });
  });
  return { client, firstBlocked, counts, served: () => served };
}

/** Starts FetchSnapshot and pauses the stream after its header, as a client that stops reading. */
async function fetchAndPauseAfterHeader(client: PeerServiceClient) {
  const call = client.FetchSnapshot(REQUEST, new grpc.Metadata(), { deadline: Date.now() + 30_000 });
  const header = await new Promise<ReceivedSnapshotChunk>((resolve) => {
    call.once('data', (chunk: ReceivedSnapshotChunk) => {
      call.pause();
      resolve(chunk);
    });
  });
  expect(header.part).toBe('header');
  return call;
}

test('the server waits for a client that stops reading, and resumes when it reads again', async () => {
  // About 1 MB (1.5 KB a message): far more chunks than the transport buffers before it pushes back.
  const source = populatedStore(join(directory, 'source.sqlite'), 700);
  const snapshot = await createSnapshot(source.database, join(directory, 'sender'));
  source.close();
  const snapshotBytes = readFileSync(snapshot.path);
  const server = await startFlowControlledServer(snapshot);
  const call = await fetchAndPauseAfterHeader(server.client);

  // Flow control stops the server well before the end of the file: it does not buffer the whole snapshot.
  expect(await server.firstBlocked).toBeLessThan(snapshot.sizeBytes / CHUNK_BYTES / 2);
  const data: Buffer[] = [];
  const ended = new Promise<void>((resolve, reject) => {
    call.on('end', resolve);
    call.on('error', reject);
  });
  call.on('data', (chunk: ReceivedSnapshotChunk) => {
    if (chunk.part === 'data') data.push(chunk.data);
  });
  call.resume();
  await ended;
  expect(Buffer.concat(data).equals(snapshotBytes)).toBe(true);
  expect(await server.served()).toBe('sent');
  expect(server.counts.writesBeforeDrain).toBe(0);
  expect(readdirSync(join(directory, 'sender'))).toEqual([]);
});

test('a client that cancels while the server waits on flow control ends the serve and its file', async () => {
  const source = populatedStore(join(directory, 'source.sqlite'), 100);
  const snapshot = await createSnapshot(source.database, join(directory, 'sender'));
  source.close();
  const server = await startFlowControlledServer(snapshot);
  const call = await fetchAndPauseAfterHeader(server.client);
  await server.firstBlocked;

  const failed = new Promise<unknown>((resolve) => call.on('error', resolve));
  call.cancel();
  expect(await failed).toMatchObject({ code: grpc.status.CANCELLED });
  // A server waiting for 'drain' that never comes would hang here.
  expect(await server.served()).toBe('cancelled');
  expect(readdirSync(join(directory, 'sender'))).toEqual([]);
});

type CutOff = 'ends the stream early' | 'fails the call' | 'goes away' | 'stalls past the deadline';

test.each<[CutOff, (error: unknown) => void]>([
  [
    'ends the stream early',
    (error) => {
      expect(error).toBeInstanceOf(SnapshotError);
      expect((error as Error).message).toMatch(/^snapshot stream ended after 32768 of \d+ bytes$/);
    },
  ],
  [
    'fails the call',
    (error) => expect(error).toMatchObject({ code: grpc.status.UNAVAILABLE, details: 'replica stopping' }),
  ],
  // grpc-js reports a server that shuts down mid-stream as CANCELLED (the stream is reset) or UNAVAILABLE.
  [
    'goes away',
    (error) => expect([grpc.status.CANCELLED, grpc.status.UNAVAILABLE]).toContain((error as grpc.ServiceError).code),
  ],
  ['stalls past the deadline', (error) => expect(error).toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED })],
])('a server that %s mid-transfer is refused and the database stays untouched', async (cutOff, checkError) => {
  const source = populatedStore(join(directory, 'source.sqlite'), 100);
  const snapshot = await createSnapshot(source.database, join(directory, 'sender'));
  source.close();

  // The receiver already has a database of its own, which a failed transfer must leave exactly as it was.
  const receiverDirectory = join(directory, 'receiver');
  const databasePath = join(receiverDirectory, 'replichat.sqlite');
  populatedStore(databasePath, 10).close();
  const databaseBefore = await hashFile(databasePath);
  const digestBefore = digestOf(databasePath);

  let clientHasData!: () => void;
  const clientHasDataPromise = new Promise<void>((resolve) => {
    clientHasData = resolve;
  });
  const peer: PeerServer | undefined = await startPeerServer((call) => {
    void (async () => {
      await serveFirstChunks(call, snapshot, 8);
      // Cut off only once the client has written data to its temporary file.
      await clientHasDataPromise;
      if (cutOff === 'ends the stream early') call.end();
      if (cutOff === 'fails the call') {
        call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'replica stopping' });
      }
      if (cutOff === 'goes away') peer?.server.forceShutdown();
    })();
  });

  const temporaryFileCounts: number[] = [];
  const outcome = await fetchSnapshot(peer.client, REQUEST, receiverDirectory, {
    deadlineMs: cutOff === 'stalls past the deadline' ? 2000 : 30_000,
    onProgress: () => {
      temporaryFileCounts.push(temporaryFiles(receiverDirectory).length);
      clientHasData();
    },
  }).then(
    () => undefined,
    (error: unknown) => error,
  );

  expect(outcome).toBeDefined();
  checkError(outcome);
  expect(temporaryFileCounts.length).toBeGreaterThan(0);
  expect(temporaryFileCounts.every((count) => count === 1)).toBe(true);
  expect(readdirSync(receiverDirectory)).toEqual(['replichat.sqlite']);
  expect(await hashFile(databasePath)).toEqual(databaseBefore);
  expect(digestOf(databasePath)).toBe(digestBefore);
});

test('a byte flipped in transit is caught by the checksum and nothing is kept', async () => {
  const source = populatedStore(join(directory, 'source.sqlite'), 100);
  const snapshot = await createSnapshot(source.database, join(directory, 'sender'));
  source.close();
  // The sender's file goes bad after it was hashed, so one data chunk carries a flipped byte.
  const file = await open(snapshot.path, 'r+');
  const position = Math.floor(snapshot.sizeBytes / 2);
  const byte = Buffer.alloc(1);
  await file.read(byte, 0, 1, position);
  byte[0] = (byte[0] ?? 0) ^ 0xff;
  await file.write(byte, 0, 1, position);
  await file.close();
  let served: Promise<ServeSnapshotOutcome> | undefined;
  const { client } = await startPeerServer((call) => {
    served = serveSnapshot(call, snapshot, { chunkBytes: CHUNK_BYTES });
  });

  const receiverDirectory = join(directory, 'receiver');
  await expect(fetchSnapshot(client, REQUEST, receiverDirectory, { deadlineMs: 30_000 })).rejects.toThrow(
    new RegExp(`snapshot checksum mismatch: received [0-9a-f]{64}, header announced ${snapshot.sha256Hex}`),
  );
  await served;
  expect(readdirSync(receiverDirectory)).toEqual([]);
});

test('a server that cannot read its snapshot ends the call with UNAVAILABLE', async () => {
  const source = populatedStore(join(directory, 'source.sqlite'), 5);
  const snapshot = await createSnapshot(source.database, join(directory, 'sender'));
  source.close();
  await snapshot.remove();
  let served: Promise<ServeSnapshotOutcome> | undefined;
  const { client } = await startPeerServer((call) => {
    served = serveSnapshot(call, snapshot);
  });
  const receiverDirectory = join(directory, 'receiver');
  await expect(fetchSnapshot(client, REQUEST, receiverDirectory, { deadlineMs: 30_000 })).rejects.toMatchObject({
    code: grpc.status.UNAVAILABLE,
    details: expect.stringMatching(/^sending the snapshot failed: ENOENT/),
  });
  expect(await served).toBe('failed');
  expect(readdirSync(receiverDirectory)).toEqual([]);
});

test.each<[string, (call: FetchSnapshotCall, snapshot: SnapshotFile) => void, RegExp]>([
  ['ends before its header', (call) => call.end(), /ended before its header/],
  ['starts with data', (call) => call.write({ data: Buffer.from('SQLite format 3\0') }), /did not start with a header/],
  [
    'sends a second header',
    (call, snapshot) => {
      call.write({ header: headerOf(snapshot) });
      call.write({ header: headerOf(snapshot) });
    },
    /chunk that is not data/,
  ],
  [
    'announces a malformed checksum',
    (call, snapshot) => call.write({ header: { ...headerOf(snapshot), sha256Hex: 'not hex' } }),
    /malformed sha256Hex/,
  ],
])('a stream that %s is refused', async (_name, misbehave, message) => {
  const source = populatedStore(join(directory, 'source.sqlite'), 5);
  const snapshot = await createSnapshot(source.database, join(directory, 'sender'));
  source.close();
  const { client } = await startPeerServer((call) => misbehave(call, snapshot));
  const receiverDirectory = join(directory, 'receiver');
  mkdirSync(receiverDirectory);
  const fetching = fetchSnapshot(client, REQUEST, receiverDirectory, { deadlineMs: 30_000 });
  await expect(fetching).rejects.toThrow(SnapshotError);
  await expect(fetching).rejects.toThrow(message);
  expect(readdirSync(receiverDirectory)).toEqual([]);
});

test('a stream with more bytes than its header announced is refused', async () => {
  const source = populatedStore(join(directory, 'source.sqlite'), 5);
  const snapshot = await createSnapshot(source.database, directory);
  source.close();
  const receiverDirectory = join(directory, 'receiver');
  const header = { ...headerOf(snapshot), sizeBytes: snapshot.sizeBytes - 1 };
  await expect(receiveSnapshotToTemp(receiverDirectory, header, createReadStream(snapshot.path))).rejects.toThrow(
    `snapshot stream carries more than the ${snapshot.sizeBytes - 1} bytes its header announced`,
  );
  expect(readdirSync(receiverDirectory)).toEqual([]);
});

test('swapInSnapshot replaces a database whose committed rows are still only in its WAL', async () => {
  const source = populatedStore(join(directory, 'source.sqlite'), 50);
  const snapshot = await createSnapshot(source.database, join(directory, 'sender'));
  const sourceDigest = source.stateDigest();
  source.close();

  // The old database's rows live only in its WAL, as a crash leaves them: with automatic checkpoints off,
  // its files are copied while it is still open.
  const crashed = populatedStore(join(directory, 'crashed.sqlite'), 30, { checkpoints: false });
  const oldDigest = crashed.stateDigest();
  const receiverDirectory = join(directory, 'receiver');
  mkdirSync(receiverDirectory);
  const databasePath = join(receiverDirectory, 'replichat.sqlite');
  copyFileSync(join(directory, 'crashed.sqlite'), databasePath);
  copyFileSync(join(directory, 'crashed.sqlite-wal'), `${databasePath}-wal`);
  crashed.close();
  expect(statSync(`${databasePath}-wal`).size).toBeGreaterThan(0);
  // Sanity check of the setup: the WAL is what holds the old state.
  copyFileSync(databasePath, join(directory, 'probe.sqlite'));
  copyFileSync(`${databasePath}-wal`, join(directory, 'probe.sqlite-wal'));
  expect(digestOf(join(directory, 'probe.sqlite'))).toBe(oldDigest);

  // A swap that fails before its rename (here the snapshot file is missing) has already folded the old WAL
  // into the old database: what is left at the path is one complete file, so no old WAL can ever be
  // replayed into the new file.
  const missingPath = join(receiverDirectory, `snapshot-incoming-${'0'.repeat(32)}.sqlite`);
  await expect(swapInSnapshot(missingPath, databasePath)).rejects.toMatchObject({ code: 'ENOENT' });
  expect(readdirSync(receiverDirectory)).toEqual(['replichat.sqlite']);
  expect(digestOf(databasePath)).toBe(oldDigest);

  const tempPath = await receiveSnapshotToTemp(receiverDirectory, headerOf(snapshot), createReadStream(snapshot.path));
  await swapInSnapshot(tempPath, databasePath);

  expect(readdirSync(receiverDirectory)).toEqual(['replichat.sqlite']);
  const installed = ReplicaStore.open(databasePath);
  expect(installed.stateDigest()).toBe(sourceDigest);
  expect(installed.lastIndex).toBe(snapshot.lastIndex);
  expect(installed.database.pragma('integrity_check', { simple: true })).toBe('ok');
  installed.close();
});

test('swapInSnapshot replaces a database SQLite cannot read, dropping its journal files', async () => {
  const source = populatedStore(join(directory, 'source.sqlite'), 5);
  const snapshot = await createSnapshot(source.database, join(directory, 'sender'));
  const sourceDigest = source.stateDigest();
  source.close();
  const receiverDirectory = join(directory, 'receiver');
  mkdirSync(receiverDirectory);
  const databasePath = join(receiverDirectory, 'replichat.sqlite');
  writeFileSync(databasePath, Buffer.alloc(8192, 7));
  writeFileSync(`${databasePath}-wal`, Buffer.alloc(8192, 9));

  const tempPath = await receiveSnapshotToTemp(receiverDirectory, headerOf(snapshot), createReadStream(snapshot.path));
  await swapInSnapshot(tempPath, databasePath);

  expect(readdirSync(receiverDirectory)).toEqual(['replichat.sqlite']);
  expect(digestOf(databasePath)).toBe(sourceDigest);
});

test('cleanUpTempSnapshots deletes leftover snapshot files and nothing else', async () => {
  const leftovers = [
    `snapshot-incoming-${'a'.repeat(32)}.sqlite`,
    `snapshot-outgoing-${'b'.repeat(32)}.sqlite`,
    `snapshot-outgoing-${'b'.repeat(32)}.sqlite-wal`,
  ];
  const kept = ['replichat.sqlite', 'replichat.sqlite-wal', 'snapshot-notes.txt'];
  for (const name of [...leftovers, ...kept]) writeFileSync(join(directory, name), 'x');
  expect(await cleanUpTempSnapshots(directory)).toEqual([...leftovers].sort());
  expect(readdirSync(directory).sort()).toEqual([...kept].sort());
  expect(await cleanUpTempSnapshots(join(directory, 'missing'))).toEqual([]);
});
