/**
 * How commands are stored in `command_log`: without the values that the same transaction writes to the
 * replicated tables, so that a message's body and a client write's envelope are on disk once (migration 3).
 * A client command's entry leaves out its envelope (requestId, principal, fingerprint, timestampMs: the
 * `requests` row at the same log index holds them); a send's entry also leaves out each of messageId,
 * sender, body and instant that its `messages` row (sequence = log index) holds with the same value. The
 * recipient stays, because the row holds the account's own spelling of the name, which may differ in case.
 * Reading joins the rows back in. Triggers write the values back into the entry before either row is
 * deleted, so an entry always reads back as the command that was appended, whatever the log's retention.
 */
import { assert } from '../core/assert.js';
import { type Command, type CommandResult, isClientCommand, type StoredMessage } from '../core/commands.js';

const ENVELOPE_KEYS = ['requestId', 'principal', 'fingerprint', 'timestampMs'] as const;
/** The fields of a send in the order the chat service builds them, after the envelope. */
const SEND_KEYS = ['messageId', 'sender', 'recipient', 'body', 'instant'] as const;

/** A log row read together with the rows it may refer to; the joined columns are null when absent. */
export interface LogRow {
  readonly index: number;
  readonly epoch: number;
  readonly command: string;
  readonly request_id: string | null;
  readonly principal: string | null;
  readonly fingerprint: string | null;
  readonly created_at_ms: number | null;
  readonly message_id: string | null;
  readonly sender: string | null;
  readonly body: string | null;
  readonly instant: number | null;
}

/** The SELECT list and FROM clause that read LogRows (`l` is command_log). */
export const LOG_ROW_SELECT = `SELECT l.log_index AS "index", l.epoch, l.command,
    r.request_id, r.principal, r.fingerprint, r.created_at_ms, m.id AS message_id, m.sender, m.body, m.instant
  FROM command_log AS l
  LEFT JOIN requests AS r ON r.log_index = l.log_index
  LEFT JOIN messages AS m ON m.sequence = l.log_index`;

/**
 * The command with its keys in one fixed order: kind, the envelope, a send's fields, then any others in
 * their own order. It is the order the chat service builds client commands in, so the text is unchanged
 * for them; it makes the log chain independent of how an object was put together (read back, decoded).
 */
export function canonicalCommand(command: Command): Command {
  if (!isClientCommand(command)) return command;
  const fields = command as unknown as Record<string, unknown>;
  const ordered: Record<string, unknown> = { kind: command.kind };
  for (const key of ENVELOPE_KEYS) ordered[key] = fields[key];
  if (command.kind === 'sendMessage') for (const key of SEND_KEYS) ordered[key] = fields[key];
  for (const [key, value] of Object.entries(fields)) if (!(key in ordered)) ordered[key] = value;
  return ordered as unknown as Command;
}

/** The keys canonicalCommand puts first, in its order: for a send, and for any other client command. */
const CANONICAL_SEND_KEYS: readonly string[] = ['kind', ...ENVELOPE_KEYS, ...SEND_KEYS];
const CANONICAL_CLIENT_KEYS: readonly string[] = ['kind', ...ENVELOPE_KEYS];

/**
 * True when canonicalCommand(command) would have the same keys as the command, in the same order, so that
 * both serialise to the same JSON. That is so when the command's own keys begin with the keys
 * canonicalCommand puts first, in its order (no integer-like key can come before them then), and no later
 * key is one that Object.prototype has, which canonicalCommand's `key in ordered` would skip.
 */
function isInCanonicalOrder(command: Command): boolean {
  if (!isClientCommand(command)) return true;
  const keys = Object.keys(command);
  const first = command.kind === 'sendMessage' ? CANONICAL_SEND_KEYS : CANONICAL_CLIENT_KEYS;
  if (keys.length < first.length) return false;
  for (let position = 0; position < first.length; position += 1) if (keys[position] !== first[position]) return false;
  for (let position = first.length; position < keys.length; position += 1) if (keys[position]! in Object.prototype) return false;
  return true;
}

/**
 * The text the log chain hashes for a command. A command already in canonical order (the chat service
 * builds them so, and the peer schema parses them into it) is serialised as it is, without building a copy.
 */
export function commandChainText(command: Command): string {
  return JSON.stringify(isInCanonicalOrder(command) ? command : canonicalCommand(command));
}

/**
 * The text stored in command_log for a command just applied with `result` (ChatState.apply has written
 * its request row and, for a send, its message row in the same transaction).
 */
export function storedCommandText(command: Command, result: CommandResult): string {
  if (!isClientCommand(command)) return JSON.stringify(command);
  const fields = command as unknown as Record<string, unknown>;
  const message = command.kind === 'sendMessage' ? (result as CommandResult<'sendMessage'>).message : undefined;
  // The kept keys are copied in the command's own order, into a new object: the same JSON as copying the
  // whole command and deleting the others, without the deletions that make an object slow to serialise.
  const stored: Record<string, unknown> = {};
  for (const key of Object.keys(fields)) {
    if (!leftOutOfStoredText(key, command, message)) stored[key] = fields[key];
  }
  return JSON.stringify(stored);
}

/** Whether a client command's key is left out of its log text: see the top of this file. */
function leftOutOfStoredText(key: string, command: Command, message: StoredMessage | undefined): boolean {
  if ((ENVELOPE_KEYS as readonly string[]).includes(key)) return true;
  if (message === undefined || command.kind !== 'sendMessage') return false;
  switch (key) {
    case 'messageId':
      return message.id === command.messageId;
    case 'sender':
      return message.sender === command.sender;
    case 'body':
      return message.body === command.body;
    case 'instant':
      return message.instant === command.instant;
    default:
      return false;
  }
}

/** The command a log row holds, with the values it refers to joined back in. */
export function decodeLogRow(row: LogRow): Command {
  const stored = JSON.parse(row.command) as Record<string, unknown>;
  if (!isClientCommand(stored as unknown as Command)) return stored as unknown as Command;
  const command: Record<string, unknown> = { ...stored };
  const fromRow = (key: string, value: string | number | boolean | null): void => {
    if (key in stored) return;
    assert(value !== null, `log entry ${row.index} refers to a row that is gone (${key})`);
    command[key] = value;
  };
  fromRow('requestId', row.request_id);
  fromRow('principal', row.principal);
  fromRow('fingerprint', row.fingerprint);
  fromRow('timestampMs', row.created_at_ms);
  if (stored.kind === 'sendMessage') {
    fromRow('messageId', row.message_id);
    fromRow('sender', row.sender);
    fromRow('body', row.body);
    fromRow('instant', row.instant === null ? null : row.instant === 1);
  }
  return canonicalCommand(command as unknown as Command);
}
