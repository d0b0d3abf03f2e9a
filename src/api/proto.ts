/**
 * Loads the public API from proto/ at run time, for the server, the CLI and tests alike. Requests that are
 * not valid protobuf become a marked object instead of an exception inside grpc-js, so that the handler can
 * answer INVALID_ARGUMENT like for any other malformed request (grpc-js itself would answer INTERNAL).
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';

/** The directory holding the .proto files, found relative to this module in src/ and in dist/ alike. */
export const PROTO_ROOT = fileURLToPath(new URL('../../proto', import.meta.url));
export const CHAT_PROTO_FILE = 'replichat/v1/chat.proto';
export const CHAT_SERVICE_NAME = 'replichat.v1.ChatService';

/** Marks a request whose bytes did not decode; see the module comment. */
export const MALFORMED_REQUEST = Symbol('malformedRequest');

export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

export function loadChatPackageDefinition(): protoLoader.PackageDefinition {
  return protoLoader.loadSync(CHAT_PROTO_FILE, PROTO_LOADER_OPTIONS);
}

/** The ChatService definition with tolerant request decoding, for the server. */
export function chatServiceDefinitionForServer(
  packageDefinition: protoLoader.PackageDefinition,
): grpc.ServiceDefinition {
  const service = packageDefinition[CHAT_SERVICE_NAME] as grpc.ServiceDefinition;
  const tolerant: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(service)) {
    tolerant[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return method.requestDeserialize(bytes);
        } catch {
          return { [MALFORMED_REQUEST]: true };
        }
      },
    };
  }
  return tolerant as grpc.ServiceDefinition;
}

/** A client constructor for ChatService, for the CLI and tests. */
export function chatServiceClientConstructor(
  packageDefinition: protoLoader.PackageDefinition = loadChatPackageDefinition(),
): grpc.ServiceClientConstructor {
  return grpc.makeGenericClientConstructor(
    packageDefinition[CHAT_SERVICE_NAME] as grpc.ServiceDefinition,
    'ChatService',
  );
}
