/**
 * The one place where errors become gRPC statuses. Operating errors (ChatError) keep their code and
 * message; an UnavailableError that knows the leader adds `replichat-leader` metadata. Anything else is a
 * bug: the client gets INTERNAL without internals, and the caller logs the error.
 */
import * as grpc from '@grpc/grpc-js';
import { ChatError, type ChatErrorCode, ResourceExhaustedError, UnavailableError } from '../core/errors.js';

/** Metadata key naming the address of the current leader, for a client that asked a follower. */
export const LEADER_METADATA_KEY = 'replichat-leader';
/** Trailing metadata of a RESOURCE_EXHAUSTED that knows when to retry: milliseconds, as a decimal string. */
export const RETRY_AFTER_METADATA_KEY = 'retry-after-ms';

const STATUS_BY_CODE: Record<ChatErrorCode, grpc.status> = {
  INVALID_ARGUMENT: grpc.status.INVALID_ARGUMENT,
  ALREADY_EXISTS: grpc.status.ALREADY_EXISTS,
  NOT_FOUND: grpc.status.NOT_FOUND,
  UNAUTHENTICATED: grpc.status.UNAUTHENTICATED,
  PERMISSION_DENIED: grpc.status.PERMISSION_DENIED,
  RESOURCE_EXHAUSTED: grpc.status.RESOURCE_EXHAUSTED,
  FAILED_PRECONDITION: grpc.status.FAILED_PRECONDITION,
  UNAVAILABLE: grpc.status.UNAVAILABLE,
};

/** Converts any thrown value into the status object grpc-js sends. */
export function toServiceError(error: unknown): Partial<grpc.StatusObject> & { code: grpc.status } {
  if (error instanceof ChatError) {
    const metadata = new grpc.Metadata();
    if (error instanceof UnavailableError && error.leaderAddress !== undefined) {
      metadata.set(LEADER_METADATA_KEY, error.leaderAddress);
    }
    if (error instanceof ResourceExhaustedError && error.retryAfterMs !== undefined) {
      metadata.set(RETRY_AFTER_METADATA_KEY, String(Math.ceil(error.retryAfterMs)));
    }
    return { code: STATUS_BY_CODE[error.code], details: error.message, metadata };
  }
  return { code: grpc.status.INTERNAL, details: 'internal error; the server logged the details' };
}
