/**
 * The binary encoding of peer messages (src/transport/peer-message-codec.ts) carries exactly what the JSON
 * encoding carries: every message type, with and without its optional fields, decodes to the object a
 * JSON payload of the same message parses to, and both pass the same schema to the same result. A frame
 * is also smaller than the JSON text of the same append.
 */
import type { PeerMessage } from '../src/core/replication/messages.js';
import { decodePeerFrame, encodePeerMessage } from '../src/transport/peer-message-codec.js';
import { createPeerFrameParser, createPeerPayloadParser } from '../src/transport/peer-message-schema.js';

const limits = { maxEntriesPerAppend: 512 };
const parseJson = createPeerPayloadParser(limits);
const parseFrame = createPeerFrameParser(limits);

const sendCommand = {
  kind: 'sendMessage',
  requestId: 'request-1',
  principal: `session:${'a'.repeat(32)}`,
  fingerprint: 'b'.repeat(64),
  timestampMs: 1_796_000_000_000,
  messageId: '0f0fa440-7b9b-4f17-a3e0-89e24fbfb0ee',
  sender: 'alice',
  recipient: 'bob',
  body: 'héllo, wörld: a body with non-ASCII text ✓',
  instant: true,
};
const configuration = { members: [{ ordinal: 0, address: 'chat-0.chat-peers:7001' }, { ordinal: 1, address: '127.0.0.1:7002' }], inSync: [0, 1] };

const messages: PeerMessage[] = [
  {
    type: 'append', from: 0, epoch: 7, prevIndex: 41, prevEpoch: 6,
    entries: [
      { index: 42, epoch: 7, command: { kind: 'configuration', configuration, timestampMs: 5 }, configuration },
      { index: 43, epoch: 7, command: sendCommand },
      { index: 44, epoch: 7, command: { kind: 'initializeCluster', clusterId: 'c-1', sessionSecretHex: 'c'.repeat(64), timestampMs: 6 }, initialize: true },
    ],
    commitIndex: 40, sentAtMs: 1234.5678, leaderIncarnation: 3, requestDigest: true,
  },
  { type: 'append', from: 2, epoch: 2 ** 53 - 1, prevIndex: 0, prevEpoch: 0, entries: [], commitIndex: 0, sentAtMs: 0, leaderIncarnation: 1, requestDigest: false },
  {
    type: 'appendReply', from: 1, epoch: 7, ok: true, matchIndex: 44, lastIndex: 44, lastEpoch: 7, incarnation: 9,
    storageId: '0f0fa440-7b9b-4f17-a3e0-89e24fbfb0ee', echoSentAtMs: 1234.5678, echoLeaderIncarnation: 3,
    carriedEntries: true, snapshotting: false, digest: { index: 44, value: 'd'.repeat(64) },
  },
  {
    type: 'appendReply', from: 1, epoch: 7, ok: false, matchIndex: 0, lastIndex: 0, lastEpoch: 0, incarnation: 1,
    storageId: 'abc', echoSentAtMs: 0, echoLeaderIncarnation: 0, carriedEntries: false, snapshotting: true,
  },
  { type: 'status', from: 0, epoch: 3, lastIndex: 10, lastEpoch: 3, leaderOrdinal: 0, replyWanted: true, sentAtMs: 99.5, askedAtMs: 0 },
  { type: 'status', from: 1, epoch: 0, lastIndex: 0, lastEpoch: 0, leaderOrdinal: null, replyWanted: false, sentAtMs: 1, askedAtMs: null },
  { type: 'join', from: 3, epoch: 4, address: '[::1]:7003', emptyLog: true },
  { type: 'installSnapshot', from: 0, epoch: 4, leaderLastIndex: 100 },
  { type: 'leave', from: 2, epoch: 4 },
  { type: 'handover', from: 0, epoch: 4 },
] as PeerMessage[];

describe('the binary peer message encoding', () => {
  test.each(messages.map((message, position) => [`${position}: ${message.type}`, message] as const))(
    '%s decodes to what it encoded, and passes the schema as its JSON does',
    (_name, message) => {
      const frame = encodePeerMessage(message);
      const decoded = decodePeerFrame(frame);
      expect(decoded).toEqual({ ok: true, value: message });
      const fromFrame = parseFrame(frame);
      const fromJson = parseJson(Buffer.from(JSON.stringify(message), 'utf8'));
      expect(fromJson.ok).toBe(true);
      expect(fromFrame).toEqual(fromJson);
    },
  );

  test('a leader\'s own note on a reply (digestVerified) never goes on the wire', () => {
    const reply = { ...messages[2]!, digestVerified: true } as PeerMessage;
    const decoded = decodePeerFrame(encodePeerMessage(reply));
    expect(decoded).toEqual({ ok: true, value: messages[2] });
    expect(decoded.ok && Object.keys(decoded.value as object)).not.toContain('digestVerified');
  });

  test('an append built from its range is refused: only entries go on the wire', () => {
    expect(() => encodePeerMessage({ ...messages[1]!, entryRange: { fromIndex: 1, toIndex: 2 } } as PeerMessage)).toThrow(/entries/);
  });

  test('an append of 64 sends is smaller as a frame than as JSON', () => {
    const append = {
      ...messages[1]!,
      prevIndex: 100,
      prevEpoch: 1,
      epoch: 1,
      entries: Array.from({ length: 64 }, (_, position) => ({ index: 101 + position, epoch: 1, command: sendCommand })),
    } as PeerMessage;
    expect(encodePeerMessage(append).length).toBeLessThan(Buffer.byteLength(JSON.stringify(append)));
    expect(parseFrame(encodePeerMessage(append))).toEqual(parseJson(Buffer.from(JSON.stringify(append))));
  });
});
