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

const root = protobuf.loadSync(join(PROTO_ROOT, 'replichat/v1/peer.proto')).resolveAll();
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

const TYPE_BY_FIELD: ReadonlyMap<string, PeerMessage['type']> = new Map(
  Object.entries(FIELD_BY_TYPE).map(([type, field]) => [field, type as PeerMessage['type']]),
);

/**
 * The fields each message type declares in peer.proto, in the names the JSON encoding uses: the decoder
 * copies exactly these, so the proto is the one list of what a message carries.
 */
const FIELD_NAMES_BY_TYPE = new Map(
  [...TYPE_BY_FIELD].map(([field, type]) => {
    const messageType = frameType.fields[field]!.resolvedType as protobuf.Type;
    return [type, messageType.fieldsArray.map((declared) => declared.name)] as const;
  }),
);

type Decoded = Record<string, unknown>;

/** Encodes one message. An append must carry its entries (the driver fills them in before sending). */
export function encodePeerMessage(message: PeerMessage): Buffer {
  let body: unknown = message;
  if (message.type === 'append') {
    assert(message.entryRange === undefined, 'an append is sent with its entries, not their range');
    body = {
      ...message,
      entries: message.entries.map((entry) => ({
        index: entry.index,
        epoch: entry.epoch,
        command: Buffer.from(JSON.stringify(entry.command), 'utf8'),
      })),
    };
  }
  // A plain object is encoded as it is (fromObject's conversions are not needed for values of the right
  // types). The encoder reads only the fields the frame declares, so `type` and a leader's own
  // `digestVerified` note never go on the wire, and it leaves out optional fields that are null.
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
  const type = frame.message === undefined ? undefined : TYPE_BY_FIELD.get(frame.message);
  if (type === undefined) return { ok: false, problem: 'the frame carries no message' };
  const body = frame[frame.message!] as Decoded;
  const value: Decoded = { type };
  // An absent optional field or message decodes as null or not at all; JSON holds null for status's
  // nullable fields and leaves a reply's digest out.
  for (const name of FIELD_NAMES_BY_TYPE.get(type)!) value[name] = body[name] ?? null;
  if (type === 'appendReply') {
    const digest = value.digest as { index: number; value: string } | null;
    if (digest === null) delete value.digest;
    else value.digest = { index: digest.index, value: digest.value };
  }
  if (type === 'append') {
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
    value.entries = entries;
  }
  return { ok: true, value };
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
