/**
 * The replica's view of the network: protocol messages out through PeerSender, snapshots in through
 * FetchSnapshot. It implements the PeerNetwork interface the node driver declares.
 */
import type * as grpc from '@grpc/grpc-js';
import type { PeerMessage } from '../core/replication/messages.js';
import type { PeerServiceClient } from './peer-proto.js';
import { PeerSender } from './peer-sender.js';
import { fetchSnapshot } from './snapshot-transfer.js';

/** A whole snapshot transfer must finish within this time; a larger database needs a larger value. */
const SNAPSHOT_DEADLINE_MS = 10 * 60 * 1000;

export class GrpcPeerNetwork {
  private readonly sender: PeerSender;

  /** `credentials`: mutual TLS with this replica's cluster certificate (tls-credentials.ts). */
  constructor(clusterName: string, ordinal: number, clientAddress: string, credentials: grpc.ChannelCredentials) {
    this.sender = new PeerSender(clusterName, ordinal, clientAddress, credentials);
  }

  get droppedMessages(): number {
    return this.sender.droppedMessages;
  }

  send(address: string, message: PeerMessage): void {
    this.sender.send(address, message);
  }

  async fetchSnapshot(
    address: string,
    request: { requesterOrdinal: number; epoch: number },
    directory: string,
    onProgress: (bytesReceived: number, sizeBytes: number) => void,
  ): Promise<{ tempPath: string; lastIndex: number }> {
    const client = this.sender.clientFor(address) as unknown as PeerServiceClient;
    const fetched = await fetchSnapshot(client, request, directory, { deadlineMs: SNAPSHOT_DEADLINE_MS, onProgress });
    return { tempPath: fetched.tempPath, lastIndex: fetched.header.lastIndex };
  }

  close(): void {
    this.sender.close();
  }
}
