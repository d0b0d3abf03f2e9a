/**
 * Reading what the user types. On a terminal, one readline interface serves both ordinary questions and
 * hidden ones (passwords): it writes through an output that can be muted, so that the typed characters are
 * not echoed, and it keeps no history of hidden answers. Off a terminal (a pipe or a file), stdin is read
 * as plain data: the first line for --password-stdin, or everything for a message body.
 */
import { createInterface, type Interface } from 'node:readline';
import { Writable } from 'node:stream';

/** Forwards to a terminal unless muted; readline cannot echo a password through it while it is muted. */
class MutableOutput extends Writable {
  muted = false;
  private readonly forwardResize = (): void => {
    this.emit('resize');
  };

  constructor(private readonly target: NodeJS.WriteStream) {
    super();
    // readline redraws the line on resize, and needs the terminal's width for that.
    target.on('resize', this.forwardResize);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (!this.muted) this.target.write(chunk);
    callback();
  }

  get columns(): number {
    return this.target.columns ?? 80;
  }

  get rows(): number {
    return this.target.rows ?? 24;
  }

  get isTTY(): boolean {
    return this.target.isTTY === true;
  }

  detach(): void {
    this.target.off('resize', this.forwardResize);
  }
}

export interface TerminalInputOptions {
  /** How many entered lines the up arrow can recall; 0 for none. Hidden answers are never kept. */
  readonly historySize?: number;
}

export class TerminalInput {
  readonly readline: Interface;
  /** True on a terminal, where line editing and hidden input work. */
  readonly isTerminal: boolean;
  private readonly output: MutableOutput;
  /**
   * Lines that arrived while nobody was asking. Piped input arrives all at once, long before the questions
   * that want it (the chat asks for a password only after the server said whether the account exists), and
   * readline drops a line that nobody listens for.
   */
  private readonly waitingLines: string[] = [];
  private pendingAnswer: ((line: string | undefined) => void) | undefined;
  private interruptedByUser = false;
  private closedForGood = false;

  constructor(
    input: NodeJS.ReadStream,
    private readonly target: NodeJS.WriteStream,
    options: TerminalInputOptions = {},
  ) {
    this.output = new MutableOutput(target);
    this.isTerminal = input.isTTY === true && target.isTTY === true;
    this.readline = createInterface({
      input,
      output: this.output,
      terminal: this.isTerminal,
      historySize: options.historySize ?? 0,
    });
    this.readline.on('line', (line: string) => {
      const answer = this.pendingAnswer;
      this.pendingAnswer = undefined;
      if (answer === undefined) this.waitingLines.push(line);
      else answer(line);
    });
    // Ctrl-C in raw mode reaches readline, not the process; it ends the input like Ctrl-D, and callers
    // tell the two apart with `interrupted` to exit with 130 as an interrupted program does.
    this.readline.on('SIGINT', () => {
      this.interruptedByUser = true;
      this.readline.close();
    });
    this.readline.on('close', () => {
      this.closedForGood = true;
      this.output.muted = false;
      this.output.detach();
      const answer = this.pendingAnswer;
      this.pendingAnswer = undefined;
      answer?.(undefined);
    });
  }

  /** True once Ctrl-C ended the input. */
  get interrupted(): boolean {
    return this.interruptedByUser;
  }

  /** True once the input ended; lines it delivered before may still be waiting to be asked for. */
  get closed(): boolean {
    return this.closedForGood;
  }

  /** True while a question waits for its answer, with its prompt on the screen. */
  get asking(): boolean {
    return this.pendingAnswer !== undefined;
  }

  /** Asks a question; resolves with the answer, or undefined when the input ended (Ctrl-D, Ctrl-C, EOF). */
  ask(prompt: string): Promise<string | undefined> {
    return this.question(prompt, false);
  }

  /** Asks for a secret without echoing it. */
  askHidden(prompt: string): Promise<string | undefined> {
    return this.question(prompt, true);
  }

  /** Writes text to the terminal output, outside any question. */
  write(text: string): void {
    this.target.write(text);
  }

  close(): void {
    if (!this.closedForGood) this.readline.close();
  }

  private question(prompt: string, hidden: boolean): Promise<string | undefined> {
    const muting = hidden && this.isTerminal;
    if (muting) {
      this.target.write(prompt);
      this.output.muted = true;
      this.readline.setPrompt('');
    } else {
      this.readline.setPrompt(prompt);
    }
    if (this.waitingLines.length > 0 || this.closedForGood) {
      // The answer is already here: show the prompt as a transcript would, without waiting.
      const line = this.waitingLines.shift();
      if (!muting && !this.isTerminal) this.target.write(prompt);
      return Promise.resolve(this.answered(line, muting));
    }
    return new Promise((resolve) => {
      this.pendingAnswer = (line) => resolve(this.answered(line, muting));
      this.readline.prompt();
    });
  }

  private answered(line: string | undefined, muted: boolean): string | undefined {
    if (muted) {
      this.output.muted = false;
      // The Enter key was not echoed either, so the next output would land on the prompt's line.
      this.target.write('\n');
      if (line !== undefined) this.forgetLastHistoryEntry(line);
    }
    return line;
  }

  /**
   * readline records every entered line for the up arrow, a hidden answer included, and has no option to
   * skip one line; removing it from the history list is the only way to keep a password out of reach.
   */
  private forgetLastHistoryEntry(answer: string): void {
    const history = (this.readline as unknown as { history?: unknown }).history;
    if (Array.isArray(history) && history[0] === answer) history.shift();
  }
}

/** The first line of a non-terminal input, without its line ending; undefined when the input is empty. */
export function readFirstLine(input: NodeJS.ReadStream): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const stop = (): void => {
      input.off('data', onData);
      input.off('end', onEnd);
      input.off('error', onError);
      // Pausing lets the process exit although the rest of the input was never read.
      input.pause();
    };
    const onData = (chunk: string): void => {
      buffered += chunk;
      const newline = buffered.indexOf('\n');
      if (newline === -1) return;
      stop();
      resolve(buffered.slice(0, newline).replace(/\r$/, ''));
    };
    const onEnd = (): void => {
      stop();
      resolve(buffered === '' ? undefined : buffered.replace(/\r$/, ''));
    };
    const onError = (error: Error): void => {
      stop();
      reject(error);
    };
    // Decoding as a stream keeps a character that is split across two chunks whole.
    input.setEncoding('utf8');
    input.on('data', onData);
    input.once('end', onEnd);
    input.once('error', onError);
  });
}

/** Everything on a non-terminal input, as text. */
export async function readAll(input: NodeJS.ReadStream): Promise<string> {
  input.setEncoding('utf8');
  let text = '';
  for await (const chunk of input) text += chunk as string;
  return text;
}
