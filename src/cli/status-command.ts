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
import { type CliContext, runCommand } from './cli-context.js';
import { SilentExit } from './cli-error.js';
import { positiveInteger } from './option-parsers.js';
import { escapeForTerminal, formatTimestamp } from './output.js';

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
  /** Why the cluster has no leader, or undefined when a leader is known. */
  readonly failure: string | undefined;
  readonly health: Health;
  /** What keeps a cluster with a leader from being fully redundant; empty when it is. */
  readonly warnings: readonly string[];
  /** Members of the configuration that were not in the server list, so that none goes unmentioned. */
  readonly unasked: readonly UnaskedMember[];
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

/** The cluster's health, which is also the exit code's meaning. */
export type Health = 'healthy' | 'degraded' | 'no-leader';

/** Exit codes of `status`, like `etcdctl endpoint health`: scripts and probes branch on them. */
export const STATUS_EXIT_CODES: Readonly<Record<Health, number>> = { healthy: 0, degraded: 3, 'no-leader': 4 };

/** One member of the leader's configuration that no answer came from, because it was not asked. */
interface UnaskedMember {
  readonly ordinal: number;
  readonly inSync: boolean;
}

/** The warnings of a cluster that has a leader: whatever keeps it from surviving one more failure. */
function warningsWithLeader(answers: readonly ServerAnswer[], leader: LeaderView, members: readonly number[]): string[] {
  const warnings: string[] = [];
  const answeredOrdinals = new Set(answers.filter(answered).map(({ status }) => status.ordinal));
  for (const answer of answers) {
    if (!answered(answer)) warnings.push(`the replica at ${answer.address} did not answer (${noteOf(answer)})`);
  }
  if (!leader.answered) warnings.push(`the leader, replica ${leader.ordinal}, did not answer; only followers name it`);
  const outOfSync = members.filter((ordinal) => !leader.inSync.includes(ordinal));
  if (outOfSync.length > 0) {
    const survivable = leader.inSync.length - 1;
    warnings.push(
      `not fully redundant: the in-sync set is ${setText(leader.inSync)} of members ${setText(members)}, so ` +
        (survivable === 0
          ? `losing replica ${leader.inSync[0] ?? '?'} would stop writes`
          : `the cluster survives ${survivable} failure${survivable === 1 ? '' : 's'} instead of ${members.length - 1}`) +
        ` (${outOfSync.map((ordinal) => `replica ${ordinal}: ${answeredOrdinals.has(ordinal) ? 'catching up' : 'down or not asked'}`).join(', ')})`,
    );
  }
  for (const { status } of answers.filter(answered)) {
    if (status.configurationStoreReachable === false) {
      warnings.push(
        `replica ${status.ordinal} cannot reach the configuration store (${status.configurationStore}): ` +
          'it cannot take over or change the in-sync set',
      );
    }
  }
  return warnings;
}

export function describeCluster(answers: readonly ServerAnswer[]): ClusterView {
  const servers = answers.filter(answered);
  const leader = findLeader(servers);
  if (servers.length === 0) {
    const summary = `no leader: ${answers.length === 1 ? 'the server did not answer' : `none of the ${answers.length} servers answered`}`;
    return { answers, leader: null, summary, failure: summary, health: 'no-leader', warnings: [], unasked: [] };
  }
  if (leader === null) {
    const summary = noLeaderReason(servers);
    return { answers, leader, summary, failure: summary, health: 'no-leader', warnings: [], unasked: [] };
  }
  const address = leader.address === null ? 'address unknown' : leader.address;
  // Only followers named this leader: either it was asked and failed, or it is missing from the list.
  const asked = answers.some((answer) => answer.address === leader.address);
  const absence = leader.answered ? '' : asked ? ', did not answer' : ', not in the server list';
  const summary =
    `leader: replica ${leader.ordinal} (${address}${absence}), ` +
    `epoch ${leader.epoch}, in-sync set ${setText(leader.inSync)}`;
  const leaderStatus = servers.find(({ status }) => status.role === 'leader' && status.ordinal === leader.ordinal)?.status;
  const members = leaderStatus?.members ?? [...new Set(servers.flatMap(({ status }) => status.members))].sort((a, b) => a - b);
  const askedOrdinals = new Set(servers.map(({ status }) => status.ordinal));
  const unasked = members
    .filter((ordinal) => !askedOrdinals.has(ordinal) && !answers.some((answer) => !answered(answer)))
    .map((ordinal) => ({ ordinal, inSync: leader.inSync.includes(ordinal) }));
  const warnings = warningsWithLeader(answers, leader, members);
  return {
    answers,
    leader,
    summary,
    failure: undefined,
    health: warnings.length === 0 ? 'healthy' : 'degraded',
    warnings,
    unasked,
  };
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
  const unaskedRows = view.unasked.map(({ ordinal, inSync }) => [
    '(not in --servers)', String(ordinal), '-', '-', '-', '-', '-', inSync ? 'yes' : 'no', 'a member that was not asked: add its address to --servers',
  ]);
  const rows = [[...HEADER], ...view.answers.map((answer) => rowOf(answer, view).map(escapeForTerminal)), ...unaskedRows];
  const widths = HEADER.map((_heading, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const lines = rows.map((row) =>
    row
      .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!)))
      .join('  ')
      .trimEnd(),
  );
  return [...lines, '', escapeForTerminal(view.summary)];
}

/** The --json document: each server's raw status or error, the leader, the health and its warnings. */
export function clusterJson(view: ClusterView): unknown {
  return {
    servers: view.answers,
    leader: view.leader,
    health: view.health,
    warnings: view.warnings,
    unaskedMembers: view.unasked,
    ...(view.failure === undefined ? {} : { reason: view.failure }),
  };
}

/** Asks every server once and describes what they said. */
async function survey(client: ChatClient, addresses: readonly string[]): Promise<ClusterView> {
  return describeCluster(await Promise.all(addresses.map((address) => askServer(client, address))));
}

/** Prints one round: the table or the document, then the warnings or the reason on stderr. */
function report(context: CliContext, view: ClusterView, options: { watching: boolean }): void {
  if (options.watching && context.settings.json) context.output.jsonLine({ atMs: Date.now(), ...(clusterJson(view) as object) });
  else context.output.result(clusterJson(view), () => formatCluster(view));
  for (const warning of view.warnings) context.output.notice(`replichat: warning: ${escapeForTerminal(warning)}`);
  if (view.failure !== undefined) context.output.notice(`replichat: ${escapeForTerminal(view.failure)}`);
}

const EPOCH_HELP = `An epoch is a leadership term. The configuration store hands them out in order (1, 2, 3 ...): each
replica that becomes leader takes the next one, so the epoch goes up by one at every failover or handover.
Replicas that show the same epoch agree on who leads; a replica with an older epoch has not heard of the
newest leader yet.`;

interface StatusOptions {
  readonly watch?: boolean;
  readonly interval: number;
}

export function addStatusCommand(program: Command): void {
  program
    .command('status')
    .description("show every replica's role, epoch, log position, lag and in-sync membership, and warn of trouble")
    .option('-w, --watch', 'ask again every --interval seconds until Ctrl-C')
    .option('--interval <seconds>', 'seconds between rounds with --watch', positiveInteger, 2)
    .addHelpText(
      'after',
      `
Asks every server of --servers at once, each directly (no leader redirect, no session needed), and gives
each ${STATUS_DEADLINE_MS / 1000} s to answer. One row per server: ordinal, role, EPOCH, last and commit index, LAG (entries
behind the leader; '-' when the leader did not answer), IN-SYNC (whether the replica is in the leader's
in-sync set, or in its own latest configuration when no leader answered), and NOTE (why it waits for a
leader, a snapshot being installed, or why it did not answer). Members of the leader's configuration that
are not in --servers get a row too. The line below names the leader, or what the cluster waits for.

${EPOCH_HELP}

Warnings go to stderr: a replica that did not answer, a member outside the in-sync set (the cluster then
survives fewer failures; with one in-sync replica left, losing it stops writes), a replica that cannot reach
the configuration store. README.md ("Runbook") says what to do about each.

Exit codes, like \`etcdctl endpoint health\`:
  0  healthy: a leader answered, every member is in sync, every server answered
  3  degraded: a leader is known, but a warning applies (not fully redundant, or a replica is down)
  4  no leader: writes are impossible until one is elected; the reason is printed
With --watch, the code of the last round.

With --json: {"servers": [{"address", "status": {...}} or {"address", "error": {"code", "message"}}],
"leader": {"ordinal", "address", "epoch", "inSync", "answered"} or null, "health": "healthy" | "degraded" |
"no-leader", "warnings": [...], "unaskedMembers": [{"ordinal", "inSync"}], "reason" (only without a
leader)}; with --watch one such document per line, with "atMs".`,
    )
    .action(async (options: StatusOptions, command: Command) => {
      await runCommand(command, async (context) => {
        const session = await context.optionalSession();
        // A server listed twice would only be asked twice.
        const addresses = [...new Set(context.serversFor(session))];
        const client = context.client(undefined, addresses, session);
        let view = await survey(client, addresses);
        if (options.watch === true) {
          let stopped = false;
          let wake: () => void = () => undefined;
          const stop = (): void => {
            stopped = true;
            wake();
          };
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
          try {
            for (;;) {
              // On a terminal each round replaces the last, as \`watch\` does.
              if (!context.settings.json && process.stdout.isTTY === true) process.stdout.write('\u001b[2J\u001b[H');
              if (!context.settings.json) context.output.line(`${formatTimestamp(Date.now())}  (every ${options.interval} s; Ctrl-C stops)`);
              report(context, view, { watching: true });
              await new Promise<void>((resolve) => {
                const timer = setTimeout(resolve, options.interval * 1000);
                wake = () => {
                  clearTimeout(timer);
                  resolve();
                };
              });
              if (stopped) break;
              view = await survey(client, addresses);
            }
          } finally {
            process.off('SIGINT', stop);
            process.off('SIGTERM', stop);
          }
        } else {
          report(context, view, { watching: false });
        }
        const exitCode = STATUS_EXIT_CODES[view.health];
        // Everything is printed already; the code alone tells scripts the verdict.
        if (exitCode !== 0) throw new SilentExit(exitCode);
      });
    });
}
