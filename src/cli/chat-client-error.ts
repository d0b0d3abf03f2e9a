/**
 * The one error type that ChatClient rejects with. It carries the gRPC status as a number and as a name, so
 * that a caller can branch on the code while a person reads `NOT_FOUND: no account named carol`.
 */
import * as grpc from '@grpc/grpc-js';

/** Status names by number, taken from grpc-js so that they always match the wire codes. */
const STATUS_NAME_BY_CODE: ReadonlyMap<number, string> = new Map(
  Object.entries(grpc.status)
    .filter((entry): entry is [string, number] => typeof entry[1] === 'number')
    .map(([name, code]) => [code, name]),
);

/** The name of a gRPC status code, such as 'NOT_FOUND' for 5. */
export function statusName(code: number): string {
  return STATUS_NAME_BY_CODE.get(code) ?? `STATUS_${code}`;
}

export class ChatClientError extends Error {
  override name = 'ChatClientError';
  /** The name of `code`, such as 'NOT_FOUND'. */
  readonly codeName: string;

  constructor(
    /** The gRPC status code, a value of grpc.status. */
    readonly code: number,
    message: string,
    /** The status metadata the server sent, when there was a server answer at all. */
    readonly metadata?: grpc.Metadata,
  ) {
    super(message);
    this.codeName = statusName(code);
  }

  /** Converts whatever a grpc-js call failed with; anything that is not a status counts as UNKNOWN. */
  static fromCallError(error: unknown): ChatClientError {
    if (error instanceof ChatClientError) return error;
    if (isServiceError(error)) {
      return new ChatClientError(error.code, error.details || error.message, error.metadata);
    }
    return new ChatClientError(grpc.status.UNKNOWN, error instanceof Error ? error.message : String(error));
  }
}

/** True for the error objects grpc-js rejects calls with: they carry a numeric status code. */
export function isServiceError(error: unknown): error is grpc.ServiceError {
  return error instanceof Error && typeof (error as Partial<grpc.ServiceError>).code === 'number';
}
