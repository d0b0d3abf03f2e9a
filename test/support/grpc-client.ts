/**
 * A thin promise wrapper over the generated ChatService client, for tests that need to send exactly the
 * bytes or fields they choose (the CLI's ChatClient adds retries and validation that would get in the way).
 */
import * as grpc from '@grpc/grpc-js';
import { chatServiceClientConstructor } from '../../src/api/proto.js';

export interface CallOutcome {
  readonly code: grpc.status;
  readonly details: string;
  readonly response: Record<string, unknown> | undefined;
}

const ClientConstructor = chatServiceClientConstructor();

export class RawChatClient {
  readonly client: grpc.Client & Record<string, Function>;

  constructor(address: string) {
    this.client = new ClientConstructor(address, grpc.credentials.createInsecure()) as grpc.Client &
      Record<string, Function>;
  }

  /** Calls a unary method and resolves with its status, never rejecting. */
  call(method: string, request: Record<string, unknown>, sessionToken?: string): Promise<CallOutcome> {
    const metadata = new grpc.Metadata();
    if (sessionToken !== undefined) metadata.set('authorization', `Bearer ${sessionToken}`);
    return new Promise((resolve) => {
      this.client[method]!.call(
        this.client,
        request,
        metadata,
        { deadline: Date.now() + 10_000 },
        (error: grpc.ServiceError | null, response: Record<string, unknown>) => {
          if (error) resolve({ code: error.code, details: error.details, response: undefined });
          else resolve({ code: grpc.status.OK, details: '', response });
        },
      );
    });
  }

  /** Like `call`, but throws unless the status is OK, and returns the response. */
  async ok(method: string, request: Record<string, unknown>, sessionToken?: string): Promise<Record<string, unknown>> {
    const outcome = await this.call(method, request, sessionToken);
    if (outcome.code !== grpc.status.OK) {
      throw new Error(`${method} failed with ${grpc.status[outcome.code]}: ${outcome.details}`);
    }
    return outcome.response!;
  }

  /** Creates an account and logs in; returns the session token. */
  async register(username: string, password = 'correct horse'): Promise<string> {
    await this.ok('CreateAccount', { requestId: `create-${username}`, username, password });
    const login = await this.ok('Login', { requestId: `login-${username}-${Date.now()}`, username, password });
    return login.sessionToken as string;
  }

  close(): void {
    this.client.close();
  }
}
