/**
 * The sending side of the peer transport (src/transport/peer-sender.ts), against real gRPC servers on
 * loopback with mutual TLS: messages go out on one stream, in the order they were sent, as binary frames
 * the peer server's own parser accepts; a receiver that ends the stream with an error gets the next
 * messages on a new stream; and a peer of the previous version, which answers UNIMPLEMENTED to Stream, is
 * sent the same messages as JSON Deliver calls; and a peer address where nothing answers (packets to an
 * address a restarted container no longer has) gets a fresh channel, which dials again, within seconds.
 */
import * as grpc from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { PeerMessage } from '../src/core/replication/messages.js';
import { createPeerFrameParser, createPeerPayloadParser } from '../src/transport/peer-message-schema.js';
import { peerServiceDefinition } from '../src/transport/peer-proto.js';
import { PeerSender } from '../src/transport/peer-sender.js';
import { loadPeerTls, peerChannelCredentials, peerServerCredentials } from '../src/transport/tls-credentials.js';
import { makePeerCertificates, type PeerCertificates } from './support/peer-certificates.js';

const CLUSTER = 'peer-sender';
const limits = { maxEntriesPerAppend: 512 };
let directory: string;
let certificates: PeerCertificates;
const servers: grpc.Server[] = [];
const senders: PeerSender[] = [];

interface Envelope {
  payload: Buffer;
  fromOrdinal: number;
}

interface Received {
  readonly method: 'Stream' | 'Deliver';
  readonly message: PeerMessage;
  /** Which stream it came on: 1 for the first stream the server accepted, and so on. */
  readonly streamNumber: number;
}

/**
 * A PeerService of replica 1 that records what arrives. `streamKnown: false` plays a replica of the previous
 * version (no Stream method); `failStreamAfter` ends each stream with INVALID_ARGUMENT after that many frames.
 */
async function receiver(options: { streamKnown: boolean; failStreamAfter?: number }): Promise<{ address: string; received: Received[] }> {
  const received: Received[] = [];
  const parseFrame = createPeerFrameParser(limits);
  const parseJson = createPeerPayloadParser(limits);
  let streams = 0;
  const server = new grpc.Server();
  const handlers: grpc.UntypedServiceImplementation = {
    Deliver(call: grpc.ServerUnaryCall<Envelope, unknown>, callback: grpc.sendUnaryData<unknown>) {
      const checked = parseJson(call.request.payload);
      if (!checked.ok) return callback({ code: grpc.status.INVALID_ARGUMENT, details: checked.problem });
      received.push({ method: 'Deliver', message: checked.message, streamNumber: 0 });
      return callback(null, {});
    },
    FetchSnapshot(call: grpc.ServerWritableStream<unknown, unknown>) {
      call.emit('error', { code: grpc.status.UNIMPLEMENTED });
    },
    GetStatus(_call: unknown, callback: grpc.sendUnaryData<unknown>) {
      callback(null, { json: '{}' });
    },
  };
  if (options.streamKnown) {
    handlers.Stream = (call: grpc.ServerReadableStream<Envelope, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      streams += 1;
      const streamNumber = streams;
      let frames = 0;
      call.sendMetadata(new grpc.Metadata());
      call.on('data', (envelope: Envelope) => {
        const checked = parseFrame(envelope.payload);
        if (!checked.ok) throw new Error(`the sender wrote a frame the parser refuses: ${checked.problem}`);
        received.push({ method: 'Stream', message: checked.message, streamNumber });
        frames += 1;
        if (frames === options.failStreamAfter) {
          call.removeAllListeners('data');
          callback({ code: grpc.status.INVALID_ARGUMENT, details: 'refused on purpose' });
        }
      });
      call.on('end', () => callback(null, {}));
    };
  }
  // A server without Stream answers UNIMPLEMENTED to it, as the previous version's does.
  const definition = Object.fromEntries(
    Object.entries(peerServiceDefinition()).filter(([name]) => options.streamKnown || name !== 'Stream'),
  ) as grpc.ServiceDefinition;
  server.addService(definition, handlers);
  const files = { caPath: certificates.caPath, certificatePath: certificates.certificatePath(1), keyPath: certificates.keyPath(1) };
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', peerServerCredentials(loadPeerTls(files, CLUSTER, 1)), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  servers.push(server);
  return { address: `127.0.0.1:${port}`, received };
}

function sender(): PeerSender {
  const files = { caPath: certificates.caPath, certificatePath: certificates.certificatePath(0), keyPath: certificates.keyPath(0) };
  const created = new PeerSender(CLUSTER, 0, '127.0.0.1:7000', peerChannelCredentials(loadPeerTls(files, CLUSTER, 0)));
  senders.push(created);
  return created;
}

function status(sentAtMs: number): PeerMessage {
  return { type: 'status', from: 0, epoch: 1, lastIndex: 5, lastEpoch: 1, leaderOrdinal: 0, replyWanted: false, sentAtMs, askedAtMs: null };
}

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const giveUpAt = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

beforeAll(() => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-peer-sender-'));
  certificates = makePeerCertificates(join(directory, 'certs'), CLUSTER);
});

afterAll(() => {
  for (const created of senders) created.close();
  for (const server of servers) server.forceShutdown();
  rmSync(directory, { recursive: true, force: true });
});

test('messages arrive on one stream, in order, as frames the peer server accepts', async () => {
  const peer = await receiver({ streamKnown: true });
  const sending = sender();
  const append: PeerMessage = {
    type: 'append', from: 0, epoch: 1, prevIndex: 0, prevEpoch: 0,
    entries: [{ index: 1, epoch: 1, command: { kind: 'initializeCluster', clusterId: 'c', sessionSecretHex: 'a'.repeat(64), timestampMs: 1 }, initialize: true }],
    commitIndex: 0, sentAtMs: 1, leaderIncarnation: 1, requestDigest: false,
  } as PeerMessage;
  sending.send(peer.address, append);
  for (let n = 2; n <= 200; n += 1) sending.send(peer.address, status(n));
  await until('200 messages', () => peer.received.length === 200);
  expect(peer.received[0]!.message).toEqual(append);
  expect(peer.received.map((item) => item.message.type === 'status' ? item.message.sentAtMs : 1)).toEqual(
    Array.from({ length: 200 }, (_, position) => position + 1),
  );
  expect(new Set(peer.received.map((item) => `${item.method} ${item.streamNumber}`))).toEqual(new Set(['Stream 1']));
  expect(sending.droppedMessages).toBe(0);
});

test('after the receiver ends a stream with an error, the next messages go on a new stream', async () => {
  const peer = await receiver({ streamKnown: true, failStreamAfter: 3 });
  const sending = sender();
  for (let n = 1; n <= 3; n += 1) sending.send(peer.address, status(n));
  await until('the first stream to be refused', () => peer.received.length === 3);
  // The refusal reaches the sender asynchronously; messages sent before it may be lost with the stream,
  // which the protocol repairs by retransmission. Send until one arrives on a second stream.
  let n = 4;
  await until('a message on a second stream', () => {
    sending.send(peer.address, status(n));
    n += 1;
    return peer.received.some((item) => item.streamNumber === 2);
  });
  expect(peer.received.slice(0, 3).map((item) => item.streamNumber)).toEqual([1, 1, 1]);
});

test('a peer of the previous version, without Stream, is sent the same messages as JSON Deliver calls', async () => {
  const peer = await receiver({ streamKnown: false });
  const sending = sender();
  let n = 1;
  await until('a Deliver call', () => {
    sending.send(peer.address, status(n));
    n += 1;
    return peer.received.length > 0;
  });
  const sentAfterwards = status(10_000);
  sending.send(peer.address, sentAfterwards);
  await until('the message sent after the fallback', () => peer.received.some((item) => item.message === sentAfterwards || (item.message.type === 'status' && item.message.sentAtMs === 10_000)));
  expect(peer.received.every((item) => item.method === 'Deliver')).toBe(true);
});

test('a stream that is never accepted is given up, and the failures get the channel replaced: it dials again', async () => {
  // A listener that accepts TCP connections and never answers, like an address whose packets vanish.
  const sockets: Socket[] = [];
  const silent: Server = createServer((socket) => void sockets.push(socket));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const address = `127.0.0.1:${(silent.address() as { port: number }).port}`;
  const sending = sender();
  let n = 1;
  try {
    // Without a deadline on acceptance the first stream would wait on its connection for grpc-js's 20 s
    // connect timeout, and nothing would fail in the meantime.
    await until('a second connection from a fresh channel', () => {
      sending.send(address, status(n));
      n += 1;
      return sockets.length >= 2;
    }, 15_000);
  } finally {
    for (const socket of sockets) socket.destroy();
    silent.close();
  }
  expect(sockets.length).toBeGreaterThanOrEqual(2);
}, 20_000);
