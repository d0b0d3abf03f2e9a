/**
 * Everything the CLI prints. Results go to stdout, as text for people or, with --json, as one JSON document
 * for scripts; notices, warnings and errors go to stderr, so that stdout stays parseable in both modes.
 * Text that other users wrote (message bodies) is escaped before it reaches a terminal, so that a message
 * cannot move the cursor, recolour the screen or fake a line of output.
 */
import { ChatClientError } from './chat-client-error.js';
import type { ChatMessage } from './chat-types.js';
import { CliError, EXIT_FAILURE } from './cli-error.js';
import { SessionFileError } from './session-file.js';

/** C0 and C1 control characters and DEL; a tab is harmless and kept. */
const CONTROL_CHARACTERS = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g;

/** Shows control characters as JSON escapes (a newline as \n), so that one message stays one line. */
export function escapeForTerminal(text: string): string {
  return text.replace(CONTROL_CHARACTERS, (character) => JSON.stringify(character).slice(1, -1));
}

function twoDigits(value: number): string {
  return String(value).padStart(2, '0');
}

/** Local time as `2025-11-25 20:22:05`: sortable, and what a person expects to read. */
export function formatTimestamp(timestampMs: number): string {
  const date = new Date(timestampMs);
  return (
    `${date.getFullYear()}-${twoDigits(date.getMonth() + 1)}-${twoDigits(date.getDate())} ` +
    `${twoDigits(date.getHours())}:${twoDigits(date.getMinutes())}:${twoDigits(date.getSeconds())}`
  );
}

/**
 * One message on one line: `[time] sender: body (id)`, or `[time] sender -> recipient: body (id)` where the
 * recipient is not obviously the reader, as in a history that holds messages in both directions.
 */
export function formatMessage(message: ChatMessage, options: { showRecipient?: boolean } = {}): string {
  const parties =
    options.showRecipient === true ? `${message.sender} -> ${message.recipient}` : message.sender;
  return `[${formatTimestamp(message.sentAtMs)}] ${parties}: ${escapeForTerminal(message.body)} (${message.id})`;
}

/** `1 unread message`, `3 unread messages`. */
export function countOf(count: number, singular: string, pluralForm = `${singular}s`): string {
  return `${count} ${count === 1 ? singular : pluralForm}`;
}

/** How an error is reported: a stable code for --json, the line for stderr, and the exit code. */
export interface ErrorReport {
  readonly code: string;
  readonly message: string;
  readonly line: string;
  readonly exitCode: number;
}

export function describeError(error: unknown): ErrorReport {
  if (error instanceof ChatClientError) {
    // The status name leads, because it is what a script or a person searches for.
    return { code: error.codeName, message: error.message, line: `${error.codeName}: ${error.message}`, exitCode: EXIT_FAILURE };
  }
  if (error instanceof CliError) {
    return { code: error.code, message: error.message, line: error.message, exitCode: error.exitCode };
  }
  if (error instanceof SessionFileError) {
    return { code: 'SESSION_FILE', message: error.message, line: error.message, exitCode: EXIT_FAILURE };
  }
  const message = error instanceof Error ? error.message : String(error);
  return { code: 'ERROR', message, line: message, exitCode: EXIT_FAILURE };
}

export class Output {
  constructor(
    readonly json: boolean,
    private readonly stdout: NodeJS.WritableStream = process.stdout,
    private readonly stderr: NodeJS.WritableStream = process.stderr,
  ) {}

  /**
   * The result of a one-shot command: `jsonValue` as one JSON document with --json, else the text lines.
   * The text may be a function, to skip building it when --json leaves it unused.
   */
  result(jsonValue: unknown, text: string | readonly string[] | (() => string | readonly string[])): void {
    if (this.json) {
      this.stdout.write(`${JSON.stringify(jsonValue)}\n`);
      return;
    }
    const lines = typeof text === 'function' ? text() : text;
    for (const line of typeof lines === 'string' ? [lines] : lines) this.stdout.write(`${line}\n`);
  }

  /** One JSON object on one line, for commands that stream results (NDJSON). */
  jsonLine(value: unknown): void {
    this.stdout.write(`${JSON.stringify(value)}\n`);
  }

  /** A line of text on stdout, in text mode only. */
  line(text: string): void {
    if (!this.json) this.stdout.write(`${text}\n`);
  }

  /** A remark for the person at the terminal, on stderr in both modes. */
  notice(text: string): void {
    this.stderr.write(`${text}\n`);
  }

  /**
   * A failure: one line `replichat: <reason>` on stderr, and with --json also the document
   * `{"error": {"code": ..., "message": ...}}` on stdout, so that a script always gets JSON.
   */
  failure(report: ErrorReport): void {
    this.stderr.write(`replichat: ${report.line}\n`);
    if (this.json) this.stdout.write(`${JSON.stringify({ error: { code: report.code, message: report.message } })}\n`);
  }
}
