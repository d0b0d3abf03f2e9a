/**
 * A fake ChatService server in the test process whose answers the test chooses, for tests of the client's
 * own rules (failover, retries, name lookups). It records every call it gets. It is a stand-in: it proves
 * nothing about the real server, whose behaviour the integration tests check.
 */
import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import { CHAT_SERVICE_NAME, loadChatPackageDefinition } from '../../src/api/proto.js';
import { LEADER_METADATA_KEY } from '../../src/api/status-mapping.js';

export type Wire = Record<string, unknown>;

export interface RecordedCall {
  readonly method: string;
  readonly request: Wire;
  readonly authorization: unknown;
}

/** What a fake answers: a response, a status, or nothing at all (a hung server). */
export type UnaryAnswer = { response: Wire } | { status: grpc.status; details: string; leader?: string } | 'hang';
export type StreamAnswer = (call: grpc.ServerWritableStream<Wire, Wire>) => void;

export interface FakeServer {
  /** host:port, as a client would be given it. */
  readonly address: string;
  readonly port: number;
  readonly calls: RecordedCall[];
  stop(): void;
}

export interface FakeServerOptions {
  readonly subscribe?: StreamAnswer;
  readonly credentials?: grpc.ServerCredentials;
  /** The local address to listen on: 127.0.0.1 unless told. */
  readonly host?: string;
  /** The port to listen on: any free one unless told. */
  readonly port?: number;
}

let packageDefinition: protoLoader.PackageDefinition | undefined;

/** The status a fake sends: `details`, and the leader it names in the metadata, if any. */
export function statusWithLeader(status: grpc.status, details: string, leader?: string): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  if (leader !== undefined) metadata.set(LEADER_METADATA_KEY, leader);
  return { code: status, details, metadata };
}

/** Starts a fake whose unary methods answer with `unary(method, request, callNumber)` and whose Subscribe runs `subscribe`. */
export async function startFakeChatServer(
  unary: (method: string, request: Wire, callNumber: number) => UnaryAnswer,
  options: FakeServerOptions = {},
): Promise<FakeServer> {
  packageDefinition ??= loadChatPackageDefinition();
  const calls: RecordedCall[] = [];
  const service = packageDefinition[CHAT_SERVICE_NAME] as grpc.ServiceDefinition;
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of Object.keys(service)) {
    if (method === 'Subscribe') {
      handlers[method] = (call: grpc.ServerWritableStream<Wire, Wire>) => {
        calls.push({ method, request: call.request, authorization: call.metadata.get('authorization')[0] });
        options.subscribe?.(call);
      };
      continue;
    }
    handlers[method] = (call: grpc.ServerUnaryCall<Wire, Wire>, callback: grpc.sendUnaryData<Wire>) => {
      calls.push({ method, request: call.request, authorization: call.metadata.get('authorization')[0] });
      const answer = unary(method, call.request, calls.filter((recorded) => recorded.method === method).length);
      if (answer === 'hang') return;
      if ('response' in answer) callback(null, answer.response);
      else callback(statusWithLeader(answer.status, answer.details, answer.leader));
    };
  }
  const server = new grpc.Server();
  server.addService(service, handlers);
  const host = options.host ?? '127.0.0.1';
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${options.port ?? 0}`, options.credentials ?? grpc.ServerCredentials.createInsecure(), (error, boundPort) =>
      error ? reject(error) : resolve(boundPort),
    ),
  );
  return { address: `${host}:${port}`, port, calls, stop: () => server.forceShutdown() };
}

/** A chat message as the server sends it. */
export function wireMessage(id: string, body = id): Wire {
  return { id, sender: 'alice', recipient: 'bob', body, sentAtMs: 1, delivered: false, instant: true };
}
