/**
 * Loads the replica-to-replica API (proto/replichat/v1/peer.proto) at run time, with the same loader
 * options as the public API (camelCase fields, int64 as JS numbers, `oneofs: true`), and names the shapes
 * its messages have in JavaScript so that the peer transport is typed.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PROTO_LOADER_OPTIONS } from '../api/proto.js';

export const PEER_PROTO_FILE = 'replichat/v1/peer.proto';
export const PEER_SERVICE_NAME = 'replichat.v1.PeerService';

export interface FetchSnapshotRequestMessage {
  readonly requesterOrdinal: number;
  /** The requester's current epoch; a sender in an older epoch refuses. */
  readonly epoch: number;
}

export interface SnapshotHeaderMessage {
  readonly lastIndex: number;
  readonly lastEpoch: number;
  readonly sizeBytes: number;
  readonly sha256Hex: string;
}

/** A SnapshotChunk as a server writes it: exactly one member of the `part` oneof. */
export type SnapshotChunkMessage = { readonly header: SnapshotHeaderMessage } | { readonly data: Buffer };

/** A SnapshotChunk as a client receives it: `oneofs: true` names the member that is set in `part`. */
export type ReceivedSnapshotChunk =
  | { readonly part: 'header'; readonly header: SnapshotHeaderMessage }
  | { readonly part: 'data'; readonly data: Buffer }
  | { readonly part?: undefined };

/** The server side of one FetchSnapshot call. */
export type FetchSnapshotCall = grpc.ServerWritableStream<FetchSnapshotRequestMessage, SnapshotChunkMessage>;

/** A PeerService client, typed for the methods the transport calls. */
export interface PeerServiceClient extends grpc.Client {
  FetchSnapshot(
    request: FetchSnapshotRequestMessage,
    metadata: grpc.Metadata,
    options: Partial<grpc.CallOptions>,
  ): grpc.ClientReadableStream<ReceivedSnapshotChunk>;
}

export function loadPeerPackageDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync(PEER_PROTO_FILE, PROTO_LOADER_OPTIONS);
}

/** The PeerService definition, for `server.addService`. */
export function peerServiceDefinition(
  packageDefinition: protoLoader.PackageDefinition = loadPeerPackageDefinition(),
): grpc.ServiceDefinition {
  return packageDefinition[PEER_SERVICE_NAME] as grpc.ServiceDefinition;
}

/** A client constructor for PeerService. */
export function peerServiceClientConstructor(
  packageDefinition: protoLoader.PackageDefinition = loadPeerPackageDefinition(),
): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(peerServiceDefinition(packageDefinition), 'PeerService');
}

/** A PeerService client for the replica at `address` (host:port). */
export function createPeerServiceClient(
  address: string,
  credentials: grpc.ChannelCredentials,
  options: grpc.ClientOptions = {},
  constructor: grpc.ServiceClientConstructor = peerServiceClientConstructor(),
): PeerServiceClient {
  return new constructor(address, credentials, options) as unknown as PeerServiceClient;
}
