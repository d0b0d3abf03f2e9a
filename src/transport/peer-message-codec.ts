/**
 * The binary encoding of peer messages for PeerService.Stream: one PeerMessageFrame (proto/replichat/v1/
 * peer.proto) per message, encoded and decoded with protobufjs. It replaces JSON on the replication path
 * because a frame of doubles and booleans costs less to build and to read than a JSON text of the same
 * fields, and the leader builds one per follower for every batch of writes.
 *
 * Decoding only turns bytes into the plain object a JSON message would have been; it checks nothing but
 * the frame's structure. The caller checks the object with the same schema as a JSON message
 * (peer-message-schema.ts), so both encodings promise exactly the same.
 */
import protobuf from 'protobufjs';
import { join } from 'node:path';
import { assert } from '../core/assert.js';
import type { PeerMessage } from '../core/replication/messages.js';
import type { WireEntry } from '../core/replication/types.js';
import { PROTO_ROOT } from '../api/proto.js';

const root = protobuf.loadSync(join(PROTO_ROOT, 'replichat/v1/peer.proto'));
const frameType = root.lookupType('replichat.v1.PeerMessageFrame');

/** Which member of the frame's oneof carries each message type. */
const FIELD_BY_TYPE = {
  append: 'append',
  appendReply: 'appendReply',
  status: 'status',
  join: 'join',
  installSnapshot: 'installSnapshot',
  leave: 'leave',
  handover: 'handover',
} as const satisfies Record<PeerMessage['type'], string>;

type Decoded = Record<string, unknown>;

/** Encodes one message. An append must carry its entries (the driver fills them in before sending). */
export function encodePeerMessage(message: PeerMessage): Buffer {
  let body: Decoded;
  switch (message.type) {
    case 'append': {
      assert(message.entryRange === undefined, 'an append is sent with its entries, not their range');
      body = {
        from: message.from,
        epoch: message.epoch,
        prevIndex: message.prevIndex,
        prevEpoch: message.prevEpoch,
        entries: message.entries.map((entry) => ({
          index: entry.index,
          epoch: entry.epoch,
          command: Buffer.from(JSON.stringify(entry.command), 'utf8'),
        })),
        commitIndex: message.commitIndex,
        sentAtMs: message.sentAtMs,
        leaderIncarnation: message.leaderIncarnation,
        requestDigest: message.requestDigest,
      };
      break;
    }
    case 'status': {
      const { type: _type, leaderOrdinal, askedAtMs, ...rest } = message;
      body = { ...rest, ...(leaderOrdinal === null ? {} : { leaderOrdinal }), ...(askedAtMs === null ? {} : { askedAtMs }) };
      break;
    }
    default:
      // The encoder reads only the fields the frame declares, so `type` and a leader's own
      // `digestVerified` note never go on the wire.
      body = message as unknown as Decoded;
  }
  // A plain object is encoded as it is: fromObject's conversions are not needed for values of the right types.
  return Buffer.from(frameType.encode({ [FIELD_BY_TYPE[message.type]]: body }).finish());
}

/**
 * Decodes one frame into the object a JSON message of the same content would parse to, or a sentence
 * saying why it cannot. The result is unchecked: it goes through the peer message schema next.
 */
export function decodePeerFrame(payload: Uint8Array): { ok: true; value: unknown } | { ok: false; problem: string } {
  let frame: protobuf.Message & { message?: string } & Record<string, unknown>;
  try {
    frame = frameType.decode(payload) as typeof frame;
  } catch (error) {
    return { ok: false, problem: `the payload is not a PeerMessageFrame: ${error instanceof Error ? error.message : String(error)}`.slice(0, 200) };
  }
  // protobufjs names the member of the oneof that is set; a frame with none carries no message.
  const field = frame.message;
  const type = (Object.keys(FIELD_BY_TYPE) as PeerMessage['type'][]).find((name) => FIELD_BY_TYPE[name] === field);
  if (type === undefined) return { ok: false, problem: 'the frame carries no message' };
  const body = frame[field!] as Decoded;
  switch (type) {
    case 'append': {
      const entries: unknown[] = [];
      for (const entry of body.entries as { index: number; epoch: number; command: Uint8Array }[]) {
        let command: unknown;
        try {
          command = JSON.parse(Buffer.from(entry.command.buffer, entry.command.byteOffset, entry.command.byteLength).toString('utf8'));
        } catch {
          return { ok: false, problem: `the command of entry ${entry.index} is not JSON` };
        }
        entries.push(wireEntry(entry.index, entry.epoch, command));
      }
      return {
        ok: true,
        value: {
          type,
          from: body.from,
          epoch: body.epoch,
          prevIndex: body.prevIndex,
          prevEpoch: body.prevEpoch,
          entries,
          commitIndex: body.commitIndex,
          sentAtMs: body.sentAtMs,
          leaderIncarnation: body.leaderIncarnation,
          requestDigest: body.requestDigest,
        },
      };
    }
    case 'appendReply': {
      const digest = body.digest as { index: number; value: string } | null | undefined;
      return {
        ok: true,
        value: {
          type,
          from: body.from,
          epoch: body.epoch,
          ok: body.ok,
          matchIndex: body.matchIndex,
          lastIndex: body.lastIndex,
          lastEpoch: body.lastEpoch,
          incarnation: body.incarnation,
          storageId: body.storageId,
          echoSentAtMs: body.echoSentAtMs,
          echoLeaderIncarnation: body.echoLeaderIncarnation,
          carriedEntries: body.carriedEntries,
          snapshotting: body.snapshotting,
          ...(digest === null || digest === undefined ? {} : { digest: { index: digest.index, value: digest.value } }),
        },
      };
    }
    case 'status':
      return {
        ok: true,
        value: {
          type,
          from: body.from,
          epoch: body.epoch,
          lastIndex: body.lastIndex,
          lastEpoch: body.lastEpoch,
          leaderOrdinal: present(body, 'leaderOrdinal') ? body.leaderOrdinal : null,
          replyWanted: body.replyWanted,
          sentAtMs: body.sentAtMs,
          askedAtMs: present(body, 'askedAtMs') ? body.askedAtMs : null,
        },
      };
    case 'join':
      return { ok: true, value: { type, from: body.from, epoch: body.epoch, address: body.address, emptyLog: body.emptyLog } };
    case 'installSnapshot':
      return { ok: true, value: { type, from: body.from, epoch: body.epoch, leaderLastIndex: body.leaderLastIndex } };
    case 'leave':
    case 'handover':
      return { ok: true, value: { type, from: body.from, epoch: body.epoch } };
  }
}

/** Whether a proto3 `optional` field was on the wire (protobufjs leaves an absent one unset or null). */
function present(body: Decoded, field: string): boolean {
  return Object.prototype.hasOwnProperty.call(body, field) && body[field] !== null && body[field] !== undefined;
}

/**
 * An entry as the JSON encoding carries it: the configuration and the initialize mark, which the leader
 * derives from the command (replica-node.ts prepareForSending), are derived the same way here.
 */
function wireEntry(index: number, epoch: number, command: unknown): WireEntry | Decoded {
  const kind = typeof command === 'object' && command !== null ? (command as { kind?: unknown }).kind : undefined;
  return {
    index,
    epoch,
    command,
    ...(kind === 'configuration' ? { configuration: (command as { configuration?: unknown }).configuration } : {}),
    ...(kind === 'initializeCluster' ? { initialize: true } : {}),
  };
}
