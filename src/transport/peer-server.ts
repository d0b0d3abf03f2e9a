/**
 * The server side of PeerService: turns Deliver calls into protocol messages for the replica, serves
 * snapshots, and answers status requests. The port is mutual TLS (tls-credentials.ts), and every call is
 * checked here before anything reaches the core:
 * - the caller's certificate names a replica of this cluster (UNAUTHENTICATED otherwise);
 * - every sender the call claims (the envelope's `from_ordinal`, the message's `from`, FetchSnapshot's
 *   `requester_ordinal`) is that replica (PERMISSION_DENIED otherwise);
 * - the message passes its schema (peer-message-schema.ts: INVALID_ARGUMENT otherwise);
 * - a message only a leader sends comes from the leader of its epoch, when this replica knows it;
 * - snapshots go only to members.
 * A refused call is answered with a status and logged (at most a few lines per second); it is never
 * handed on, so it can neither crash the replica nor persist anything.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { PeerMessage } from '../core/replication/messages.js';
import type { SnapshotFile } from '../storage/snapshot.js';
import { identityFromCertificate, type PeerIdentity } from './peer-identity.js';
import {
  createPeerFrameParser,
  createPeerPayloadParser,
  LEADER_MESSAGE_TYPES,
  type PeerMessageLimits,
  type PeerPayloadCheck,
  peerAddressSchema,
} from './peer-message-schema.js';
import type { FetchSnapshotCall } from './peer-proto.js';
import { serveSnapshot } from './snapshot-transfer.js';

/** What the peer service needs from the replica. The node driver implements it. */
export interface PeerHandler {
  onPeerMessage(message: PeerMessage, fromClientAddress: string): void;
  /** The replica's current epoch; a snapshot request from a newer epoch is refused (we are stale). */
  currentEpoch(): number;
  /** Whether `ordinal` is a member now, as this replica last read the configuration store. */
  isMember(ordinal: number): boolean;
  /** The ordinal that leads `epoch`, when this replica knows that epoch's record; undefined otherwise. */
  leaderOfEpoch(epoch: number): number | undefined;
  createSnapshot(): Promise<SnapshotFile>;
  /** A snapshot was served: sent whole, cancelled by the receiver, or failed. */
  snapshotServed(outcome: 'sent' | 'cancelled' | 'failed', sizeBytes: number): void;
  statusJson(): string;
}

export interface PeerServiceOptions {
  readonly limits: PeerMessageLimits;
  readonly logger: Pick<Logger, 'warn'>;
}

/** Snapshots served at once; each holds a file and a stream, so they are few. */
const MAX_CONCURRENT_SNAPSHOTS = 2;
/** Refusals logged per second at most, so that a flood of bad calls cannot flood the log. */
const REFUSALS_LOGGED_PER_SECOND = 10;
const CLUSTER_NAME_MAX_LENGTH = 64;

interface Envelope {
  clusterName: unknown;
  fromOrdinal: unknown;
  payload: unknown;
  fromClientAddress: unknown;
}

class Refusal extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

export function peerServiceHandlers(
  clusterName: string,
  handler: PeerHandler,
  options: PeerServiceOptions,
): grpc.UntypedServiceImplementation {
  const parsePayload = createPeerPayloadParser(options.limits);
  const parseFrame = createPeerFrameParser(options.limits);
  /** The last from_client_address found valid; see deliver. */
  let lastCheckedAddress = '';
  let snapshotsInProgress = 0;
  let refusalsThisSecond = 0;
  let currentSecond = 0;

  const logRefusal = (method: string, peer: string, refusal: Refusal): void => {
    const second = Math.floor(Date.now() / 1000);
    if (second !== currentSecond) {
      currentSecond = second;
      refusalsThisSecond = 0;
    }
    refusalsThisSecond += 1;
    if (refusalsThisSecond > REFUSALS_LOGGED_PER_SECOND) return;
    options.logger.warn(
      { method, peer, code: grpc.status[refusal.code], reason: refusal.message },
      'refused a peer call',
    );
  };

  /** The verified identity of the caller; refuses a caller without a certificate naming this cluster. */
  const authenticate = (call: Pick<grpc.ServerUnaryCall<unknown, unknown>, 'getAuthContext'>): PeerIdentity => {
    const identity = identityFromCertificate(call.getAuthContext()?.sslPeerCertificate);
    if (typeof identity === 'string') throw new Refusal(grpc.status.UNAUTHENTICATED, identity);
    if (identity.clusterName !== clusterName) {
      throw new Refusal(
        grpc.status.PERMISSION_DENIED,
        `the certificate was issued for cluster ${identity.clusterName}, not ${clusterName}`,
      );
    }
    return identity;
  };

  const claimed = (identity: PeerIdentity, field: string, value: unknown): void => {
    if (value !== identity.ordinal) {
      throw new Refusal(
        grpc.status.PERMISSION_DENIED,
        `${field} ${JSON.stringify(value)} is not the certificate's replica ${identity.ordinal}`,
      );
    }
  };

  /** Checks one envelope from the authenticated `identity` and hands its message to the replica. */
  const deliver = (identity: PeerIdentity, request: Envelope, parse: (payload: Buffer) => PeerPayloadCheck): void => {
    if (typeof request.clusterName !== 'string' || request.clusterName.length > CLUSTER_NAME_MAX_LENGTH) {
      throw new Refusal(grpc.status.INVALID_ARGUMENT, 'cluster_name is not a cluster name');
    }
    if (request.clusterName !== clusterName) {
      throw new Refusal(
        grpc.status.FAILED_PRECONDITION,
        `this replica belongs to cluster ${clusterName}, not ${request.clusterName.slice(0, CLUSTER_NAME_MAX_LENGTH)}`,
      );
    }
    claimed(identity, 'from_ordinal', request.fromOrdinal);
    const fromClientAddress = request.fromClientAddress;
    if (
      typeof fromClientAddress !== 'string' ||
      (fromClientAddress !== '' && fromClientAddress !== lastCheckedAddress && !peerAddressSchema.safeParse(fromClientAddress).success)
    ) {
      throw new Refusal(grpc.status.INVALID_ARGUMENT, 'from_client_address must be empty or host:port of at most 255 bytes');
    }
    // Every frame of a stream carries the same address: checking it once is enough.
    lastCheckedAddress = fromClientAddress;
    if (!Buffer.isBuffer(request.payload)) throw new Refusal(grpc.status.INVALID_ARGUMENT, 'the payload is missing');
    const checked = parse(request.payload);
    if (!checked.ok) throw new Refusal(grpc.status.INVALID_ARGUMENT, checked.problem);
    const message = checked.message;
    claimed(identity, 'from', message.from);
    if (LEADER_MESSAGE_TYPES.has(message.type)) {
      const leader = handler.leaderOfEpoch(message.epoch);
      if (leader !== undefined && leader !== message.from) {
        throw new Refusal(
          grpc.status.PERMISSION_DENIED,
          `${message.type} in epoch ${message.epoch} from replica ${message.from}, but replica ${leader} leads that epoch`,
        );
      }
    }
    handler.onPeerMessage(message, fromClientAddress);
  };

  return {
    Deliver(call: grpc.ServerUnaryCall<Envelope, unknown>, callback: grpc.sendUnaryData<unknown>) {
      try {
        deliver(authenticate(call), call.request, parsePayload);
      } catch (error) {
        if (!(error instanceof Refusal)) throw error;
        logRefusal('Deliver', call.getPeer(), error);
        return callback({ code: error.code, details: error.message });
      }
      return callback(null, {});
    },

    /**
     * One sender's frames, in order. The caller is authenticated once: a connection's certificate does not
     * change. The first frame that fails a check ends the stream with the status Deliver would answer, and
     * nothing after it is read; the sender opens a new stream for its next message.
     */
    Stream(call: grpc.ServerReadableStream<Envelope, unknown>, callback: grpc.sendUnaryData<unknown>) {
      let identity: PeerIdentity;
      try {
        identity = authenticate(call);
      } catch (error) {
        if (!(error instanceof Refusal)) throw error;
        logRefusal('Stream', call.getPeer(), error);
        return callback({ code: error.code, details: error.message });
      }
      let ended = false;
      const end = (status: Partial<grpc.StatusObject> | null): void => {
        if (ended) return;
        ended = true;
        call.removeAllListeners('data');
        if (status === null) callback(null, {});
        else callback(status);
      };
      call.on('data', (request: Envelope) => {
        if (ended) return;
        try {
          deliver(identity, request, parseFrame);
        } catch (error) {
          if (!(error instanceof Refusal)) throw error;
          logRefusal('Stream', call.getPeer(), error);
          end({ code: error.code, details: error.message });
        }
      });
      call.on('end', () => end(null));
      call.on('error', () => end(null));
      // Headers now tell the sender the stream was accepted (its sign that this peer answers again).
      call.sendMetadata(new grpc.Metadata());
      return undefined;
    },

    FetchSnapshot(call: FetchSnapshotCall) {
      try {
        const identity = authenticate(call);
        claimed(identity, 'requester_ordinal', call.request.requesterOrdinal);
        if (!handler.isMember(identity.ordinal)) {
          throw new Refusal(grpc.status.PERMISSION_DENIED, `replica ${identity.ordinal} is not a member: no snapshot`);
        }
        const epoch = call.request.epoch;
        if (typeof epoch !== 'number' || !Number.isSafeInteger(epoch) || epoch < 0) {
          throw new Refusal(grpc.status.INVALID_ARGUMENT, 'epoch must be a non-negative safe integer');
        }
        if (epoch > handler.currentEpoch()) {
          throw new Refusal(
            grpc.status.FAILED_PRECONDITION,
            `this replica is in epoch ${handler.currentEpoch()}, older than the requester's ${epoch}`,
          );
        }
        if (snapshotsInProgress >= MAX_CONCURRENT_SNAPSHOTS) {
          throw new Refusal(grpc.status.RESOURCE_EXHAUSTED, 'too many snapshots in progress; retry later');
        }
      } catch (error) {
        if (!(error instanceof Refusal)) throw error;
        logRefusal('FetchSnapshot', call.getPeer(), error);
        call.emit('error', { code: error.code, details: error.message });
        return;
      }
      snapshotsInProgress += 1;
      handler
        .createSnapshot()
        .then(async (snapshot) => {
          const outcome = await serveSnapshot(call, snapshot, { removeWhenDone: true });
          handler.snapshotServed(outcome, snapshot.sizeBytes);
        })
        .catch((error: unknown) => {
          call.emit('error', { code: grpc.status.UNAVAILABLE, details: `taking a snapshot failed: ${String(error)}` });
        })
        .finally(() => {
          snapshotsInProgress -= 1;
        });
    },

    GetStatus(call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) {
      try {
        authenticate(call);
      } catch (error) {
        if (!(error instanceof Refusal)) throw error;
        logRefusal('GetStatus', call.getPeer(), error);
        return callback({ code: error.code, details: error.message });
      }
      return callback(null, { json: handler.statusJson() });
    },
  };
}
