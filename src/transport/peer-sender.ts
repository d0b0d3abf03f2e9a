/**
 * Sends protocol messages to other replicas over gRPC, one channel per address. Messages go out on one
 * long-lived PeerService.Stream per peer, each a binary frame (peer-message-codec.ts): a frame costs a few
 * bytes of HTTP/2 framing, where a unary call costs a stream, headers, a deadline timer and an answer,
 * which made a one-way message take milliseconds on a quiet machine. Delivery is fire-and-forget, as the
 * protocol expects: a stream that fails loses what it carried, the next message opens a new one, and the
 * protocol repairs the loss by retransmission. What may wait in one peer's stream is bounded, so a dead,
 * paused or slow peer cannot make this replica buffer without limit; past the bound, messages are dropped.
 *
 * A peer that answers UNIMPLEMENTED to Stream runs an older version (a rolling update is under way): it is
 * sent JSON Deliver calls, as that version sends, until it is asked again a minute later.
 */
import * as grpc from '@grpc/grpc-js';
import type { PeerMessage } from '../core/replication/messages.js';
import { encodePeerMessage } from './peer-message-codec.js';
import { createPeerServiceClient, peerServiceClientConstructor } from './peer-proto.js';

/** Bytes of frames that may wait in one peer's stream; an append holds at most a few MiB. */
const MAX_BUFFERED_BYTES_PER_PEER = 32 * 1024 * 1024;
/** Frames that may wait in one peer's stream, whatever their size. */
const MAX_BUFFERED_FRAMES_PER_PEER = 4096;
/** Deliver calls to an older peer that may be outstanding at once. */
const MAX_INFLIGHT_CALLS_PER_PEER = 64;
const DELIVER_DEADLINE_MS = 2000;
/** A stream the receiver has not accepted within this time is cancelled, like a Deliver call past its deadline. */
const STREAM_ACCEPT_DEADLINE_MS = 2000;
/** A channel whose streams and calls have all failed for this long is replaced by a fresh one (see noteFailure). */
const CHANNEL_RENEWAL_AFTER_FAILING_MS = 5000;
/** How long a peer that does not know Stream is sent Deliver calls before Stream is tried again. */
const LEGACY_PEER_RECHECK_MS = 60_000;

interface Envelope {
  clusterName: string;
  fromOrdinal: number;
  payload: Buffer;
  fromClientAddress: string;
}

interface PeerClient extends grpc.Client {
  Deliver(
    request: Envelope,
    metadata: grpc.Metadata,
    options: Partial<grpc.CallOptions>,
    callback: (error: grpc.ServiceError | null) => void,
  ): grpc.ClientUnaryCall;
  Stream(
    metadata: grpc.Metadata,
    options: Partial<grpc.CallOptions>,
    callback: (error: grpc.ServiceError | null) => void,
  ): grpc.ClientWritableStream<Envelope>;
}

interface OpenStream {
  readonly call: grpc.ClientWritableStream<Envelope>;
  bufferedBytes: number;
  bufferedFrames: number;
}

interface PeerChannel {
  readonly client: PeerClient;
  stream: OpenStream | null;
  /** Until this time (Date.now()), the peer is sent Deliver calls: it did not know Stream. */
  legacyUntilMs: number;
  inflightCalls: number;
  /** When its streams and calls started failing without a success since; null while they succeed. */
  failingSinceMs: number | null;
}

export class PeerSender {
  private readonly channels = new Map<string, PeerChannel>();
  private readonly constructorForClients = peerServiceClientConstructor();
  private droppedMessagesCount = 0;

  constructor(
    private readonly clusterName: string,
    private readonly ordinal: number,
    private readonly clientAddress: string,
    /** Mutual TLS with this replica's cluster certificate (tls-credentials.ts peerChannelCredentials). */
    private readonly credentials: grpc.ChannelCredentials,
  ) {}

  /** Messages dropped because a peer had too much outstanding. */
  get droppedMessages(): number {
    return this.droppedMessagesCount;
  }

  send(address: string, message: PeerMessage): void {
    const channel = this.channelFor(address);
    if (Date.now() < channel.legacyUntilMs) {
      this.deliver(address, channel, message);
      return;
    }
    const stream = channel.stream ?? this.openStream(address, channel);
    const payload = encodePeerMessage(message);
    if (stream.bufferedFrames >= MAX_BUFFERED_FRAMES_PER_PEER || stream.bufferedBytes + payload.length > MAX_BUFFERED_BYTES_PER_PEER) {
      this.droppedMessagesCount += 1;
      return;
    }
    stream.bufferedBytes += payload.length;
    stream.bufferedFrames += 1;
    stream.call.write(this.envelope(payload), () => {
      stream.bufferedBytes -= payload.length;
      stream.bufferedFrames -= 1;
    });
  }

  private envelope(payload: Buffer): Envelope {
    return { clusterName: this.clusterName, fromOrdinal: this.ordinal, payload, fromClientAddress: this.clientAddress };
  }

  private openStream(address: string, channel: PeerChannel): OpenStream {
    const call = channel.client.Stream(new grpc.Metadata(), {}, (error) => {
      if (channel.stream?.call === call) channel.stream = null;
      // The receiver ended the stream on purpose (it is stopping): the next message opens a new one.
      if (error === null) return;
      if (error.code === grpc.status.UNIMPLEMENTED) channel.legacyUntilMs = Date.now() + LEGACY_PEER_RECHECK_MS;
      this.noteFailure(address, channel);
    });
    // The receiver sends its headers as soon as it accepts the stream: that is this peer's success signal.
    // A stream not accepted in time is given up: the channel may be dialling an address the peer no longer
    // has (packets to it vanish, so the attempt neither connects nor fails), and only failures that add up
    // get the channel replaced and the name resolved again (noteFailure).
    const acceptTimer = setTimeout(() => call.cancel(), STREAM_ACCEPT_DEADLINE_MS);
    acceptTimer.unref();
    call.on('metadata', () => {
      clearTimeout(acceptTimer);
      channel.failingSinceMs = null;
    });
    call.on('status', () => clearTimeout(acceptTimer));
    const stream: OpenStream = { call, bufferedBytes: 0, bufferedFrames: 0 };
    channel.stream = stream;
    return stream;
  }

  /** A unary JSON call, for a peer of an older version that does not know Stream. */
  private deliver(address: string, channel: PeerChannel, message: PeerMessage): void {
    if (channel.inflightCalls >= MAX_INFLIGHT_CALLS_PER_PEER) {
      this.droppedMessagesCount += 1;
      return;
    }
    channel.inflightCalls += 1;
    channel.client.Deliver(
      this.envelope(Buffer.from(JSON.stringify(message), 'utf8')),
      new grpc.Metadata(),
      { deadline: Date.now() + DELIVER_DEADLINE_MS },
      (error) => {
        channel.inflightCalls -= 1;
        if (error === null) channel.failingSinceMs = null;
        else this.noteFailure(address, channel);
      },
    );
  }

  /**
   * A channel that has failed for a while may be stuck on an address the name no longer has (a restarted
   * container or pod comes back elsewhere, and packets to the old address just vanish): a fresh channel
   * resolves the name again from scratch.
   */
  private noteFailure(address: string, channel: PeerChannel): void {
    channel.failingSinceMs ??= Date.now();
    if (Date.now() - channel.failingSinceMs > CHANNEL_RENEWAL_AFTER_FAILING_MS && this.channels.get(address) === channel) {
      this.channels.delete(address);
      channel.stream?.call.cancel();
      channel.client.close();
    }
  }

  /** The client for other calls (snapshots) to the replica at `address`. */
  clientFor(address: string): grpc.Client {
    return this.channelFor(address).client;
  }

  private channelFor(address: string): PeerChannel {
    let channel = this.channels.get(address);
    if (channel === undefined) {
      const client = createPeerServiceClient(address, this.credentials, {
        // Channelz statistics are never read here (see server.ts).
        'grpc.enable_channelz': 0,
        // Peer messages carry batches of entries; a snapshot chunk is at most 4 MiB.
        'grpc.max_send_message_length': 64 * 1024 * 1024,
        'grpc.max_receive_message_length': 64 * 1024 * 1024,
        // Reconnect quickly after a peer restarts: failover time depends on it.
        'grpc.initial_reconnect_backoff_ms': 100,
        'grpc.max_reconnect_backoff_ms': 1000,
        // A restarted pod or container comes back at a new address under the same name: look the name up
        // again within a second, not grpc-js's default 30 s, or the leader keeps dialling the old address.
        'grpc.dns_min_time_between_resolutions_ms': 1000,
        // A stream lives as long as its connection: pings find a connection whose peer vanished (a
        // partition, a pod gone without a reset) within seconds, which ends the stream, so that the next
        // message opens a new one and, after CHANNEL_RENEWAL_AFTER_FAILING_MS, a fresh channel.
        'grpc.keepalive_time_ms': 2000,
        'grpc.keepalive_timeout_ms': 2000,
      }, this.constructorForClients) as unknown as PeerClient;
      channel = { client, stream: null, legacyUntilMs: 0, inflightCalls: 0, failingSinceMs: null };
      this.channels.set(address, channel);
    }
    return channel;
  }

  close(): void {
    for (const channel of this.channels.values()) {
      channel.stream?.call.end();
      channel.client.close();
    }
    this.channels.clear();
  }
}
