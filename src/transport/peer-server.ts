/**
 * The server side of PeerService: turns Deliver calls into protocol messages for the replica, serves
 * snapshots, and answers status requests. Bad input (another cluster, undecodable JSON, a message of no
 * known type) is refused with a gRPC status and never reaches the protocol core.
 */
import * as grpc from '@grpc/grpc-js';
import type { PeerMessage } from '../core/replication/messages.js';
import type { SnapshotFile } from '../storage/snapshot.js';
import type { FetchSnapshotCall } from './peer-proto.js';
import { serveSnapshot } from './snapshot-transfer.js';

/** What the peer service needs from the replica. The node driver implements it. */
export interface PeerHandler {
  onPeerMessage(message: PeerMessage, fromClientAddress: string): void;
  /** The replica's current epoch; a snapshot request from a newer epoch is refused (we are stale). */
  currentEpoch(): number;
  createSnapshot(): Promise<SnapshotFile>;
  /** A snapshot was served: sent whole, cancelled by the receiver, or failed. */
  snapshotServed(outcome: 'sent' | 'cancelled' | 'failed', sizeBytes: number): void;
  statusJson(): string;
}

const MESSAGE_TYPES = new Set(['append', 'appendReply', 'status', 'installSnapshot', 'join']);
/** Snapshots served at once; each holds a file and a stream, so they are few. */
const MAX_CONCURRENT_SNAPSHOTS = 2;

function isPeerMessage(value: unknown): value is PeerMessage {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as { type?: unknown; from?: unknown; epoch?: unknown };
  return (
    typeof candidate.type === 'string' &&
    MESSAGE_TYPES.has(candidate.type) &&
    Number.isInteger(candidate.from) &&
    Number.isInteger(candidate.epoch)
  );
}

export function peerServiceHandlers(clusterName: string, handler: PeerHandler): grpc.UntypedServiceImplementation {
  let snapshotsInProgress = 0;
  return {
    Deliver(
      call: grpc.ServerUnaryCall<{ clusterName: string; fromOrdinal: number; payload: Buffer; fromClientAddress: string }, unknown>,
      callback: grpc.sendUnaryData<unknown>,
    ) {
      const request = call.request;
      if (request.clusterName !== clusterName) {
        return callback({
          code: grpc.status.FAILED_PRECONDITION,
          details: `this replica belongs to cluster ${clusterName}, not ${request.clusterName}`,
        });
      }
      let message: unknown;
      try {
        message = JSON.parse(request.payload.toString('utf8'));
      } catch {
        return callback({ code: grpc.status.INVALID_ARGUMENT, details: 'the payload is not JSON' });
      }
      if (!isPeerMessage(message) || message.from !== request.fromOrdinal) {
        return callback({ code: grpc.status.INVALID_ARGUMENT, details: 'the payload is not a protocol message' });
      }
      handler.onPeerMessage(message, request.fromClientAddress);
      return callback(null, {});
    },

    FetchSnapshot(call: FetchSnapshotCall) {
      if (call.request.epoch > handler.currentEpoch()) {
        call.emit('error', {
          code: grpc.status.FAILED_PRECONDITION,
          details: `this replica is in epoch ${handler.currentEpoch()}, older than the requester's ${call.request.epoch}`,
        });
        return;
      }
      if (snapshotsInProgress >= MAX_CONCURRENT_SNAPSHOTS) {
        call.emit('error', { code: grpc.status.RESOURCE_EXHAUSTED, details: 'too many snapshots in progress; retry later' });
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

    GetStatus(_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) {
      return callback(null, { json: handler.statusJson() });
    },
  };
}
