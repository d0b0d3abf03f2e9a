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
    /** True when no other server and no retry can succeed either (see ConnectionFailure). */
    readonly hopeless = false,
  ) {
    super(message);
    this.codeName = statusName(code);
  }

  /**
   * Converts whatever a grpc-js call failed with; anything that is not a status counts as UNKNOWN. A
   * connection failure is put in plain words (see explainConnectionFailure).
   */
  static fromCallError(error: unknown): ChatClientError {
    if (error instanceof ChatClientError) return error;
    if (isServiceError(error)) {
      const details = error.details || error.message;
      // grpc-js words its own deadline as `Deadline exceeded after 0.918s,LB pick: 0.001s,remote_addr=...`.
      if (error.code === grpc.status.DEADLINE_EXCEEDED && /^Deadline exceeded/.test(details)) {
        return new ChatClientError(error.code, 'the server did not answer in time', error.metadata);
      }
      const failure = error.code === grpc.status.UNAVAILABLE ? explainConnectionFailure(details) : undefined;
      return failure === undefined
        ? new ChatClientError(error.code, details, error.metadata)
        : new ChatClientError(error.code, failure.message, error.metadata, failure.hopeless);
    }
    return new ChatClientError(grpc.status.UNKNOWN, error instanceof Error ? error.message : String(error));
  }
}

/** What a connection failure means for a person, and whether trying again or elsewhere can help. */
export interface ConnectionFailure {
  readonly message: string;
  /** True when every server would fail the same way (a TLS mismatch), so retrying only wastes time. */
  readonly hopeless: boolean;
}

const CA_HINT =
  'give the CA that signed the servers\' certificates with --ca-cert or REPLICHAT_CA_CERT ' +
  '(for `npm run cluster:local`: .local-cluster/certs/ca.pem)';

/**
 * Turns grpc-js's text for a failed connection (`No connection established. Last error: Error: connect
 * ECONNREFUSED 127.0.0.1:50051. Resolution note: `) into a sentence with the cause, and a hint where the
 * user can fix it. Returns undefined for an UNAVAILABLE that a server sent on purpose (a follower's
 * refusal), whose details are already meant for people.
 */
export function explainConnectionFailure(details: string): ConnectionFailure | undefined {
  const lastError = /Last error: (?:Error: )?([\s\S]*?)(?:\.?\s*Resolution note:[\s\S]*)?$/.exec(details)?.[1]?.trim();
  const resolution = /^Name resolution failed for target (?:dns:)?(\S+)/.exec(details);
  if (resolution !== null) return { message: `cannot resolve the host name of ${resolution[1]}`, hopeless: false };
  if (lastError === undefined) return undefined;
  if (/certificate|altnames|self.signed|issuer/i.test(lastError)) {
    const cause = lastError.split('\n')[0]!;
    return { message: `cannot verify the server's TLS certificate (${cause}): ${CA_HINT}`, hopeless: true };
  }
  if (/wrong version number|packet length too long|http request/i.test(lastError)) {
    return { message: 'the server does not speak TLS (it may run with --insecure); connect to a TLS server instead', hopeless: true };
  }
  const refused = /connect ECONNREFUSED (\S+)/.exec(lastError);
  if (refused !== null) return { message: `connection refused by ${refused[1]!.replace(/\.$/, '')} (no server listens there)`, hopeless: false };
  if (/^Failed to connect/.test(lastError)) {
    return { message: 'could not connect (a TLS server asked in plaintext? leave out --insecure)', hopeless: false };
  }
  const timedOut = /(ETIMEDOUT|EHOSTUNREACH|ENETUNREACH)/.exec(lastError);
  if (timedOut !== null) return { message: `the server cannot be reached (${timedOut[1]})`, hopeless: false };
  return { message: `cannot connect: ${lastError.split('\n')[0]}`, hopeless: false };
}

/** True for the error objects grpc-js rejects calls with: they carry a numeric status code. */
export function isServiceError(error: unknown): error is grpc.ServiceError {
  return error instanceof Error && typeof (error as Partial<grpc.ServiceError>).code === 'number';
}
