/**
 * Sends protocol messages to other replicas over gRPC (PeerService.Deliver), one client per address.
 * Delivery is fire-and-forget, as the protocol expects: a failed or timed-out call is a dropped message,
 * which the protocol repairs by retransmission. The number of calls in flight per peer is bounded, so a
 * dead or slow peer cannot make this replica buffer without limit; past the bound, messages are dropped.
 */
import * as grpc from '@grpc/grpc-js';
import { createPeerServiceClient, peerServiceClientConstructor } from './peer-proto.js';

/** Calls to one peer that may be outstanding at once. */
const MAX_INFLIGHT_CALLS_PER_PEER = 64;
const DELIVER_DEADLINE_MS = 2000;
/** A channel whose calls have all failed for this long is replaced by a fresh one (see send). */
const CHANNEL_RENEWAL_AFTER_FAILING_MS = 5000;

interface PeerChannel {
  readonly client: DeliverClient;
  inflightCalls: number;
  /** When its calls started failing without a success since; null while they succeed. */
  failingSinceMs: number | null;
}

interface DeliverClient extends grpc.Client {
  Deliver(
    request: { clusterName: string; fromOrdinal: number; payload: Buffer; fromClientAddress: string },
    metadata: grpc.Metadata,
    options: Partial<grpc.CallOptions>,
    callback: (error: grpc.ServiceError | null) => void,
  ): grpc.ClientUnaryCall;
}

export class PeerSender {
  private readonly clients = new Map<string, PeerChannel>();
  private readonly constructorForClients = peerServiceClientConstructor();
  private droppedMessagesCount = 0;

  constructor(
    private readonly clusterName: string,
    private readonly ordinal: number,
    private readonly clientAddress: string,
    /** Mutual TLS with this replica's cluster certificate (tls-credentials.ts peerChannelCredentials). */
    private readonly credentials: grpc.ChannelCredentials,
  ) {}

  /** Messages dropped because a peer had too many calls outstanding. */
  get droppedMessages(): number {
    return this.droppedMessagesCount;
  }

  send(address: string, message: unknown): void {
    const entry = this.entryFor(address);
    if (entry.inflightCalls >= MAX_INFLIGHT_CALLS_PER_PEER) {
      this.droppedMessagesCount += 1;
      return;
    }
    entry.inflightCalls += 1;
    entry.client.Deliver(
      {
        clusterName: this.clusterName,
        fromOrdinal: this.ordinal,
        payload: Buffer.from(JSON.stringify(message), 'utf8'),
        fromClientAddress: this.clientAddress,
      },
      new grpc.Metadata(),
      { deadline: Date.now() + DELIVER_DEADLINE_MS },
      (error: grpc.ServiceError | null) => {
        entry.inflightCalls -= 1;
        if (error === null) {
          entry.failingSinceMs = null;
          return;
        }
        entry.failingSinceMs ??= Date.now();
        // A channel that has failed for a while may be stuck on an address the name no longer has (a
        // restarted container or pod comes back elsewhere, and packets to the old address just vanish):
        // a fresh channel resolves the name again from scratch.
        if (Date.now() - entry.failingSinceMs > CHANNEL_RENEWAL_AFTER_FAILING_MS && this.clients.get(address) === entry) {
          this.clients.delete(address);
          entry.client.close();
        }
      },
    );
  }

  /** The client for other calls (snapshots) to the replica at `address`. */
  clientFor(address: string): grpc.Client {
    return this.entryFor(address).client;
  }

  private entryFor(address: string): PeerChannel {
    let entry = this.clients.get(address);
    if (entry === undefined) {
      const client = createPeerServiceClient(address, this.credentials, {
        // Peer messages carry batches of entries; a snapshot chunk is at most 4 MiB.
        'grpc.max_send_message_length': 64 * 1024 * 1024,
        'grpc.max_receive_message_length': 64 * 1024 * 1024,
        // Reconnect quickly after a peer restarts: failover time depends on it.
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 1000,
        // A restarted pod or container comes back at a new address under the same name: look the name up
        // again within a second, not grpc-js's default 30 s, or the leader keeps dialling the old address.
        'grpc.dns_min_time_between_resolutions_ms': 1000,
      }, this.constructorForClients) as unknown as DeliverClient;
      entry = { client, inflightCalls: 0, failingSinceMs: null };
      this.clients.set(address, entry);
    }
    return entry;
  }

  close(): void {
    for (const { client } of this.clients.values()) client.close();
    this.clients.clear();
  }
}
