/**
 * Operating errors: the expected ways a request can fail. Each has a stable code that clients and tests can
 * rely on; src/api/status-mapping.ts is the only place that turns a code into a gRPC status.
 * Programmer errors are not here: they are assertions (src/core/assert.ts) and crash the replica.
 */

/** The stable codes of every operating error. */
export type ChatErrorCode =
  | 'INVALID_ARGUMENT'
  | 'ALREADY_EXISTS'
  | 'NOT_FOUND'
  | 'UNAUTHENTICATED'
  | 'PERMISSION_DENIED'
  | 'RESOURCE_EXHAUSTED'
  | 'FAILED_PRECONDITION'
  | 'UNAVAILABLE';

/** Base class of every operating error; `code` never changes for a given failure. */
export class ChatError extends Error {
  constructor(
    readonly code: ChatErrorCode,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** The request is malformed or over a limit; retrying it unchanged fails the same way. */
export class InvalidArgumentError extends ChatError {
  constructor(message: string) {
    super('INVALID_ARGUMENT', message);
  }
}

export class AlreadyExistsError extends ChatError {
  constructor(message: string) {
    super('ALREADY_EXISTS', message);
  }
}

export class NotFoundError extends ChatError {
  constructor(message: string) {
    super('NOT_FOUND', message);
  }
}

/** No valid session, or a wrong username or password (deliberately indistinguishable). */
export class UnauthenticatedError extends ChatError {
  constructor(message = 'invalid username or password') {
    super('UNAUTHENTICATED', message);
  }
}

export class PermissionDeniedError extends ChatError {
  constructor(message: string) {
    super('PERMISSION_DENIED', message);
  }
}

/** A per-user or per-server quota is used up; retrying later may succeed, after `retryAfterMs` when given. */
export class ResourceExhaustedError extends ChatError {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super('RESOURCE_EXHAUSTED', message);
  }
}

/** The request cannot apply to the current state, such as a request id reused with other arguments. */
export class FailedPreconditionError extends ChatError {
  constructor(message: string) {
    super('FAILED_PRECONDITION', message);
  }
}

/** This replica cannot serve the request now; `leaderAddress` names where to go instead, when known. */
export class UnavailableError extends ChatError {
  constructor(
    message: string,
    readonly leaderAddress?: string,
  ) {
    super('UNAVAILABLE', message);
  }
}
