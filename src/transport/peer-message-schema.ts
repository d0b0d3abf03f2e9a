/**
 * The schema of every peer message (src/core/replication/messages.ts) and of every command an appended
 * entry may carry (src/core/commands.ts), checked with zod before anything reaches the protocol core. A
 * message that fails is refused whole: nothing of it is logged, persisted or acted on.
 *
 * What the schema promises: every integer is a safe integer in its range, every string and array is
 * bounded, an address is host:port of at most 255 bytes, no object carries a key it does not declare, and
 * every message but an append fits in SMALL_PEER_MESSAGE_MAX_BYTES. What it cannot check (who leads which
 * epoch, whether an entry matches the log) stays with the peer server (identity) and the core (the store).
 */
import { z } from 'zod/v4';
import type { Command } from '../core/commands.js';
import {
  MESSAGE_ID_PATTERN,
  MESSAGE_IDS_PER_REQUEST_MAX,
  REQUEST_ID_PATTERN,
  USERNAME_PATTERN,
} from '../core/limits.js';
import type { PeerMessage } from '../core/replication/messages.js';
import { decodePeerFrame } from './peer-message-codec.js';

/** Every message but an append is a few hundred bytes; anything larger is refused before it is parsed. */
export const SMALL_PEER_MESSAGE_MAX_BYTES = 4 * 1024;
/** An append's bound: the gRPC frame limit of the peer port, so one frame is one message. */
export const APPEND_PEER_MESSAGE_MAX_BYTES = 64 * 1024 * 1024;
/** Ordinals as --ordinal accepts them. */
export const ORDINAL_MAX = 1000;
/** host:port as sent in `join` and in the envelope: at most this many UTF-8 bytes. */
export const PEER_ADDRESS_MAX_BYTES = 255;
/**
 * The largest message body any replica may be configured to accept (--message-max-bytes allows at most
 * 1 MiB). A follower checks against this ceiling, not its own limit, so that a leader configured with a
 * larger limit than a follower never stalls replication.
 */
export const MESSAGE_BODY_CEILING_BYTES = 1024 * 1024;
/** ReadMessages marks at most --page-size-max messages (at most 10,000) in one command. */
export const MARKED_MESSAGES_CEILING = 10_000;

export interface PeerMessageLimits {
  /** The most entries an append may carry (ReplicationTimings.maxEntriesPerAppend). */
  readonly maxEntriesPerAppend: number;
}

/** A whole number from 0 to 2^53 - 1: larger values lose precision in JSON and in SQLite's REAL fallback. */
const safeCount = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const ordinal = z.number().int().min(0).max(ORDINAL_MAX);
const epoch = safeCount;
const logIndex = safeCount;
/** Clock readings (performance.now() is fractional): finite, non-negative, below 2^53. */
const clockMs = z.number().finite().nonnegative().max(Number.MAX_SAFE_INTEGER);
const timestampMs = safeCount;
const hex = (length: number) => z.string().regex(new RegExp(`^[0-9a-f]{${length}}$`));

/** host:port where host is a host name, an IPv4 address or a bracketed IPv6 address; at most 255 bytes. */
export const peerAddressSchema = z
  .string()
  .refine((value) => Buffer.byteLength(value, 'utf8') <= PEER_ADDRESS_MAX_BYTES, {
    message: `must be at most ${PEER_ADDRESS_MAX_BYTES} bytes`,
  })
  .refine(
    (value) => {
      // Underscores are not DNS but do occur in container host names (compose's project_service_1).
      const match = /^(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?):(\d{1,5})$/.exec(value);
      return match !== null && Number(match[2]) >= 1 && Number(match[2]) <= 65535;
    },
    { message: 'must be host:port' },
  );

const member = z.object({ ordinal, address: peerAddressSchema }).strict();
const ordinalList = z.array(ordinal).max(ORDINAL_MAX + 1);
const configuration = z
  .object({
    members: z.array(member).max(ORDINAL_MAX + 1),
    inSync: ordinalList,
    removed: ordinalList.optional(),
  })
  .strict();

// -------------------------------------------------------------------------------------------------------
// Commands, as the log holds them. Field rules come from src/core/limits.ts, the same as the client API's.

const username = z.string().regex(USERNAME_PATTERN);
const messageId = z.string().regex(MESSAGE_ID_PATTERN);
const sessionId = hex(32);
/** One pattern rather than a union: a union tries each branch and builds an issue for each that fails. */
const principal = z.string().regex(/^(?:user:[A-Za-z0-9][A-Za-z0-9_.-]{0,31}|session:[0-9a-f]{32}|admin)$/);
/** `scrypt$N$r$p$salt$hash` (src/api/password-hashing.ts); bounded so that a hash cannot carry a payload. */
const passwordHash = z
  .string()
  .max(256)
  .regex(/^scrypt\$\d{1,10}\$\d{1,3}\$\d{1,3}\$[A-Za-z0-9+/=]{4,64}\$[A-Za-z0-9+/=]{4,128}$/);
const envelope = {
  requestId: z.string().regex(REQUEST_ID_PATTERN),
  principal,
  fingerprint: hex(64),
  timestampMs,
};
const messageIds = (maximum: number) => z.array(messageId).min(1).max(maximum);

const commandSchema = z.discriminatedUnion('kind', [
  z
    .object({
      kind: z.literal('initializeCluster'),
      clusterId: z.string().min(1).max(64).regex(/^[A-Za-z0-9_-]+$/),
      sessionSecretHex: hex(64),
      timestampMs,
    })
    .strict(),
  z.object({ kind: z.literal('configuration'), configuration, timestampMs }).strict(),
  z.object({ kind: z.literal('createAccount'), ...envelope, username, passwordHash }).strict(),
  z
    .object({ kind: z.literal('login'), ...envelope, username, sessionId, expiresAtMs: timestampMs })
    .strict(),
  z.object({ kind: z.literal('logout'), ...envelope, username, sessionId }).strict(),
  z
    .object({
      kind: z.literal('sendMessage'),
      ...envelope,
      messageId,
      sender: username,
      recipient: username,
      body: z
        .string()
        .min(1)
        .refine((body) => Buffer.byteLength(body, 'utf8') <= MESSAGE_BODY_CEILING_BYTES, {
          message: `must be at most ${MESSAGE_BODY_CEILING_BYTES} bytes`,
        }),
      instant: z.boolean(),
    })
    .strict(),
  z
    .object({
      kind: z.literal('markDelivered'),
      ...envelope,
      reason: z.enum(['read', 'acknowledge']),
      username,
      // ReadMessages with nothing unread marks nothing, so the list may be empty.
      messageIds: z.array(messageId).max(MARKED_MESSAGES_CEILING),
    })
    .strict(),
  z
    .object({ kind: z.literal('deleteMessages'), ...envelope, username, messageIds: messageIds(MESSAGE_IDS_PER_REQUEST_MAX) })
    .strict(),
  z.object({ kind: z.literal('deleteAccount'), ...envelope, username }).strict(),
  z
    .object({ kind: z.literal('upgradePasswordHash'), ...envelope, username, previousHash: passwordHash, passwordHash })
    .strict(),
  z
    .object({
      kind: z.literal('rotateSessionKey'),
      ...envelope,
      keyId: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
      secretHex: hex(64),
      previousKeysRetireAtMs: timestampMs,
    })
    .strict(),
]);

/** The schema of one command as the log and an append carry it. */
export const COMMAND_SCHEMA: z.ZodType<Command> = commandSchema as unknown as z.ZodType<Command>;

// -------------------------------------------------------------------------------------------------------
// Messages.

function wireEntry() {
  return z
    .object({
      index: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
      epoch,
      configuration: configuration.optional(),
      initialize: z.literal(true).optional(),
      command: commandSchema.optional(),
    })
    .strict();
}

function messageSchema(limits: PeerMessageLimits) {
  const append = z
    .object({
      type: z.literal('append'),
      from: ordinal,
      epoch,
      prevIndex: logIndex,
      prevEpoch: epoch,
      entries: z.array(wireEntry()).max(limits.maxEntriesPerAppend),
      entryRange: z.object({ fromIndex: logIndex, toIndex: logIndex }).strict().optional(),
      commitIndex: logIndex,
      sentAtMs: clockMs,
      leaderIncarnation: safeCount,
      requestDigest: z.boolean(),
    })
    .strict();
  /** The entries follow (prevIndex, prevEpoch) one by one, in epochs no newer than the leader's own. */
  const appendConsistency = (message: z.infer<typeof append>, context: z.RefinementCtx): void => {
    message.entries.forEach((entry, position) => {
      if (entry.index !== message.prevIndex + 1 + position) {
        context.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['entries', position, 'index'],
          message: 'entries must follow prevIndex without gaps',
        });
      }
      if (entry.epoch > message.epoch) {
        context.addIssue({
          code: z.ZodIssueCode.custom,
          path: ['entries', position, 'epoch'],
          message: "an entry cannot be newer than the leader's epoch",
        });
      }
    });
    if (message.prevEpoch > message.epoch) {
      context.addIssue({ code: z.ZodIssueCode.custom, path: ['prevEpoch'], message: 'prevEpoch cannot be newer than epoch' });
    }
  };
  const appendReply = z
    .object({
      type: z.literal('appendReply'),
      from: ordinal,
      epoch,
      ok: z.boolean(),
      matchIndex: logIndex,
      lastIndex: logIndex,
      lastEpoch: epoch,
      incarnation: safeCount,
      storageId: z.string().regex(/^[0-9a-f-]{1,64}$/),
      echoSentAtMs: clockMs,
      echoLeaderIncarnation: safeCount,
      carriedEntries: z.boolean(),
      snapshotting: z.boolean(),
      digest: z.object({ index: logIndex, value: z.string().regex(/^[0-9a-f]{16,128}$/) }).strict().optional(),
      // `digestVerified` is set by the receiving leader's driver; a sender that claims it is refused.
    })
    .strict();
  const status = z
    .object({
      type: z.literal('status'),
      from: ordinal,
      epoch,
      lastIndex: logIndex,
      lastEpoch: epoch,
      leaderOrdinal: ordinal.nullable(),
      replyWanted: z.boolean(),
      sentAtMs: clockMs,
      askedAtMs: clockMs.nullable(),
    })
    .strict();
  const join = z
    .object({ type: z.literal('join'), from: ordinal, epoch, address: peerAddressSchema, emptyLog: z.boolean() })
    .strict();
  const installSnapshot = z
    .object({ type: z.literal('installSnapshot'), from: ordinal, epoch, leaderLastIndex: logIndex })
    .strict();
  const leave = z.object({ type: z.literal('leave'), from: ordinal, epoch }).strict();
  const handover = z.object({ type: z.literal('handover'), from: ordinal, epoch }).strict();
  return z
    .discriminatedUnion('type', [append, appendReply, status, join, installSnapshot, leave, handover])
    .superRefine((message, context) => {
      if (message.type === 'append') appendConsistency(message, context);
    });
}

/** The message types a peer may send, for logs and metrics. */
export const PEER_MESSAGE_TYPES = ['append', 'appendReply', 'status', 'join', 'installSnapshot', 'leave', 'handover'] as const;

/** Messages only the leader of their epoch sends: the receiver checks the sender leads that epoch. */
export const LEADER_MESSAGE_TYPES: ReadonlySet<string> = new Set(['append', 'installSnapshot', 'handover']);

export type PeerPayloadCheck =
  | { readonly ok: true; readonly message: PeerMessage }
  | { readonly ok: false; readonly problem: string };

/** Builds the checker of JSON payloads (Deliver) for one replica's limits; cheap to call once at start. */
export function createPeerPayloadParser(limits: PeerMessageLimits): (payload: Buffer) => PeerPayloadCheck {
  return createParser(limits, (payload) => {
    try {
      return { ok: true, value: JSON.parse(payload.toString('utf8')) as unknown };
    } catch {
      return { ok: false, problem: 'the payload is not JSON' };
    }
  });
}

/** Builds the checker of binary frames (Stream, peer-message-codec.ts): the same checks as for JSON. */
export function createPeerFrameParser(limits: PeerMessageLimits): (payload: Buffer) => PeerPayloadCheck {
  return createParser(limits, decodePeerFrame);
}

function createParser(
  limits: PeerMessageLimits,
  decode: (payload: Buffer) => { ok: true; value: unknown } | { ok: false; problem: string },
): (payload: Buffer) => PeerPayloadCheck {
  const schema = messageSchema(limits);
  return (payload) => {
    if (payload.length > APPEND_PEER_MESSAGE_MAX_BYTES) {
      return { ok: false, problem: `the payload is ${payload.length} bytes, more than ${APPEND_PEER_MESSAGE_MAX_BYTES}` };
    }
    const decoded = decode(payload);
    if (!decoded.ok) return decoded;
    const value = decoded.value;
    // The size rule needs the type, and the type needs decoding: a large non-append was decoded once
    // (bounded by the frame limit above) and is refused here before any schema work.
    const type = typeof value === 'object' && value !== null ? (value as { type?: unknown }).type : undefined;
    if (type !== 'append' && payload.length > SMALL_PEER_MESSAGE_MAX_BYTES) {
      return {
        ok: false,
        problem: `a ${typeof type === 'string' ? type.slice(0, 32) : 'message'} of ${payload.length} bytes is larger than ${SMALL_PEER_MESSAGE_MAX_BYTES}`,
      };
    }
    const result = schema.safeParse(value);
    if (!result.success) return { ok: false, problem: describeIssues(result.error) };
    return { ok: true, message: result.data as unknown as PeerMessage };
  };
}

/** The first few issues, path and message, short enough for a status detail and a log line. */
function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.length === 0 ? 'message' : issue.path.join('.')}: ${issue.message}`)
    .join('; ')
    .slice(0, 400);
}
