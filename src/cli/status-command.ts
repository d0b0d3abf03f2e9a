/**
 * `status`: asks every server in the list for its own view of the replication state, all at once and each
 * directly, and shows one row per server and a line on the leader, or on why the cluster has none. Each
 * server is asked without following a leader hint, because the point is to see every replica, including
 * the ones that are behind, confused or down.
 */
import type { Command } from 'commander';
import type { ChatClient } from './chat-client.js';
import { ChatClientError } from './chat-client-error.js';
import type { ReplicaStatus } from './chat-types.js';
import { runCommand } from './cli-context.js';
import { CliError } from './cli-error.js';
import { escapeForTerminal } from './output.js';

/** How long each server gets: a replica that takes longer than this is as good as down to an operator. */
export const STATUS_DEADLINE_MS = 2000;

/** What one server said: its status, or why it said nothing. */
export type ServerAnswer =
  | { readonly address: string; readonly status: ReplicaStatus }
  | { readonly address: string; readonly error: { readonly code: string; readonly message: string } };

/** The leader as the answers show it. */
export interface LeaderView {
  readonly ordinal: number;
  /** The address it was asked on, or the one a follower named; null when nobody knows it. */
  readonly address: string | null;
  readonly epoch: number;
  /** The leader's in-sync set, or the reporting follower's view of it when the leader did not answer. */
  readonly inSync: readonly number[];
  /** False when only followers name this leader: it is not in the list, or it did not answer. */
  readonly answered: boolean;
}

/** Everything `status` prints, worked out once for both the text and the JSON output. */
export interface ClusterView {
  readonly answers: readonly ServerAnswer[];
  readonly leader: LeaderView | null;
  /** The one-line summary printed below the table. */
  readonly summary: string;
  /** Why the command fails, or undefined when at least one server answered and a leader is known. */
  readonly failure: string | undefined;
}

interface AnsweredServer {
  readonly address: string;
  readonly status: ReplicaStatus;
}

function answered(answer: ServerAnswer): answer is AnsweredServer {
  return 'status' in answer;
}

/** Asks one server; a failure becomes an answer too, since a silent server is what an operator must see. */
async function askServer(client: ChatClient, address: string): Promise<ServerAnswer> {
  try {
    return { address, status: await client.replicaStatus(address, { deadlineMs: STATUS_DEADLINE_MS }) };
  } catch (error) {
    const failure = ChatClientError.fromCallError(error);
    return { address, error: { code: failure.codeName, message: failure.message } };
  }
}

function setText(ordinals: readonly number[]): string {
  return `{${ordinals.join(', ')}}`;
}

/**
 * The leader of the newest epoch that any answer shows: a replica that answered as leader, or the leader a
 * follower names. The newest epoch wins because a leader cut off from the others may still think it leads
 * at an older epoch; on a tie, a leader that answered itself wins over one that is only named.
 */
function findLeader(servers: readonly AnsweredServer[]): LeaderView | null {
  let best: LeaderView | null = null;
  const consider = (candidate: LeaderView): void => {
    if (best === null || candidate.epoch > best.epoch || (candidate.epoch === best.epoch && candidate.answered && !best.answered)) {
      best = candidate;
    }
  };
  for (const { address, status } of servers) {
    if (status.role === 'leader') {
      consider({ ordinal: status.ordinal, address, epoch: status.epoch, inSync: status.inSync, answered: true });
    } else if (status.leaderOrdinal !== null) {
      consider({
        ordinal: status.leaderOrdinal,
        address: status.leaderAddress === '' ? null : status.leaderAddress,
        epoch: status.epoch,
        inSync: status.inSync,
        answered: false,
      });
    }
  }
  return best;
}

/**
 * Why there is no leader, in the words of the most up-to-date replica that gave a reason: it is the one the
 * others would follow, so what it waits for is what the cluster waits for.
 */
function noLeaderReason(servers: readonly AnsweredServer[]): string {
  const reasoned = servers
    .filter(({ status }) => status.waitingReason !== '')
    .sort((left, right) => right.status.lastEpoch - left.status.lastEpoch || right.status.lastIndex - left.status.lastIndex);
  const [first] = reasoned;
  if (first === undefined) return 'no leader, and no replica said why';
  return `no leader: ${first.status.waitingReason} (reported by replica ${first.status.ordinal})`;
}

export function describeCluster(answers: readonly ServerAnswer[]): ClusterView {
  const servers = answers.filter(answered);
  const leader = findLeader(servers);
  if (servers.length === 0) {
    const summary = `no leader: ${answers.length === 1 ? 'the server did not answer' : `none of the ${answers.length} servers answered`}`;
    return { answers, leader: null, summary, failure: summary };
  }
  if (leader === null) {
    const summary = noLeaderReason(servers);
    return { answers, leader, summary, failure: summary };
  }
  const address = leader.address === null ? 'address unknown' : leader.address;
  // Only followers named this leader: either it was asked and failed, or it is missing from the list.
  const asked = answers.some((answer) => answer.address === leader.address);
  const absence = leader.answered ? '' : asked ? ', did not answer' : ', not in the server list';
  const summary =
    `leader: replica ${leader.ordinal} (${address}${absence}), ` +
    `epoch ${leader.epoch}, in-sync set ${setText(leader.inSync)}`;
  return { answers, leader, summary, failure: undefined };
}

/** Longer causes are cut, so that one row stays one line on a terminal; --json keeps the whole message. */
const CAUSE_LENGTH_MAX = 80;

/**
 * The part of a connection failure that tells an operator what to fix. grpc-js wraps it in boilerplate
 * (`No connection established. Last error: Error: connect ECONNREFUSED ... Resolution note: `), and a TLS
 * failure in an OpenSSL error string, whose reason (such as `wrong version number` from a plaintext server)
 * is the only readable part.
 */
function connectionCause(code: string, message: string): string {
  if (code === 'DEADLINE_EXCEEDED') return `no answer within ${STATUS_DEADLINE_MS / 1000} s`;
  const lastError = /Last error: (?:Error: )?([\s\S]*?)(?:\.?\s*Resolution note:[\s\S]*)?$/.exec(message)?.[1] ?? message;
  const tlsReason = /SSL routines:[^:]*:([^:]+)/.exec(lastError)?.[1];
  const cause = tlsReason === undefined ? (lastError.split('\n')[0] ?? '').trim() : `TLS: ${tlsReason}`;
  return cause.length > CAUSE_LENGTH_MAX ? `${cause.slice(0, CAUSE_LENGTH_MAX - 3)}...` : cause;
}

/** The last column of a row: what keeps a replica from being an ordinary follower, or why it did not answer. */
function noteOf(answer: ServerAnswer): string {
  if (!answered(answer)) {
    const { code, message } = answer.error;
    // Both codes mean that the server could not be reached in time, which the grpc-js message hides in noise.
    if (code === 'UNAVAILABLE' || code === 'DEADLINE_EXCEEDED') {
      const cause = connectionCause(code, message);
      return cause === '' ? `unreachable: ${code}` : `unreachable: ${code} (${cause})`;
    }
    return `${code}: ${message}`;
  }
  const notes: string[] = [];
  if (answer.status.snapshotting) {
    const { snapshotBytesReceived: received, snapshotBytesTotal: total, snapshotSeconds: seconds } = answer.status;
    const megabytes = (bytes: number): string => (bytes / 1_048_576).toFixed(1);
    notes.push(
      total > 0
        ? `snapshotting (${megabytes(received)} of ${megabytes(total)} MiB, ${Math.round(seconds)}s)`
        : `snapshotting (${Math.round(seconds)}s)`,
    );
  }
  if (answer.status.waitingReason !== '') notes.push(answer.status.waitingReason);
  return notes.join('; ');
}

const HEADER = ['ADDRESS', 'ORDINAL', 'ROLE', 'EPOCH', 'LAST INDEX', 'COMMIT INDEX', 'LAG', 'IN-SYNC', 'NOTE'] as const;

function rowOf(answer: ServerAnswer, view: ClusterView): string[] {
  if (!answered(answer)) return [answer.address, '-', '-', '-', '-', '-', '-', '-', noteOf(answer)];
  const { status } = answer;
  const leader = view.leader?.answered === true ? view.leader : null;
  const isLeaderRow = leader !== null && leader.address === answer.address;
  const leaderAnswer = leader === null ? undefined : view.answers.find((other) => other.address === leader.address);
  const lag =
    isLeaderRow
      ? ''
      : leaderAnswer !== undefined && answered(leaderAnswer)
        ? String(leaderAnswer.status.lastIndex - status.lastIndex)
        : '-';
  const inSyncSet = leader === null ? status.inSync : leader.inSync;
  return [
    answer.address,
    String(status.ordinal),
    status.role,
    String(status.epoch),
    String(status.lastIndex),
    String(status.commitIndex),
    lag,
    inSyncSet.includes(status.ordinal) ? 'yes' : 'no',
    noteOf(answer),
  ];
}

/** The table and the summary, columns aligned; text from servers is escaped before it reaches a terminal. */
export function formatCluster(view: ClusterView): string[] {
  const rows = [[...HEADER], ...view.answers.map((answer) => rowOf(answer, view).map(escapeForTerminal))];
  const widths = HEADER.map((_heading, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const lines = rows.map((row) =>
    row
      .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!)))
      .join('  ')
      .trimEnd(),
  );
  return [...lines, '', escapeForTerminal(view.summary)];
}

/** The --json document: each server's raw status or error, and the leader. */
export function clusterJson(view: ClusterView): unknown {
  return {
    servers: view.answers,
    leader: view.leader,
    ...(view.failure === undefined ? {} : { reason: view.failure }),
  };
}

/** The root command, whose options hold the global --json. */
function rootOf(command: Command): Command {
  let root = command;
  while (root.parent !== null) root = root.parent;
  return root;
}

export function addStatusCommand(program: Command): void {
  program
    .command('status')
    .description("show every replica's role, epoch, log position, lag and in-sync membership")
    .addHelpText(
      'after',
      `
Asks every server of --servers at once, each directly (no leader redirect, no session needed), and gives
each ${STATUS_DEADLINE_MS / 1000} s to answer. One row per server: ordinal, role, epoch, last and commit index, LAG (entries
behind the leader; '-' when the leader did not answer), IN-SYNC (whether the replica is in the leader's
in-sync set, or in its own latest configuration when no leader answered), and NOTE (why it waits for a
leader, a snapshot being installed, or why it did not answer). The line below names the leader, or what the
cluster waits for when there is none.

With --json: {"servers": [{"address", "status": {...}} or {"address", "error": {"code", "message"}}],
"leader": {"ordinal", "address", "epoch", "inSync", "answered"} or null, "reason" (only on failure)}.

Exit code 0 when a server answered and a leader is known, else 1 with the reason on stderr.`,
    )
    .action(async (_options: unknown, command: Command) => {
      await runCommand(command, async (context) => {
        // A server listed twice would only be asked twice.
        const addresses = [...new Set(context.serversFor(await context.optionalSession()))];
        const client = context.client(undefined, addresses);
        const answers = await Promise.all(addresses.map((address) => askServer(client, address)));
        const view = describeCluster(answers);
        context.output.result(clusterJson(view), () => formatCluster(view));
        if (view.failure !== undefined) {
          // The document printed above already carries the failure; main.ts would add an error document to
          // stdout in --json mode, and scripts expect one document, so it is told to report on stderr only.
          rootOf(command).setOptionValue('json', false);
          throw new CliError(view.failure, view.answers.some(answered) ? 'NO_LEADER' : 'NO_ANSWER');
        }
      });
    });
}
