/**
 * The interactive chat in a real pseudo-terminal: tmux runs `replichat chat` in a window 60 columns wide,
 * and the test types into it with `send-keys` and reads the screen with `capture-pane`, against a real
 * server. It proves that:
 * - `chat` resumes the stored session without asking for a password, and shows the unread message at
 *   login;
 * - while a line longer than the terminal is wide is being typed (it wraps over three rows), three
 *   incoming messages all appear on the screen, none overwritten, and the typed line stays intact below
 *   them;
 * - the typed line, sent afterwards, arrives whole, and every message shown was acknowledged (none is
 *   left for `read`).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChatMessage } from '../src/cli/chat-client.js';
import { cliEnvironment, runCli, waitFor } from './support/cli-processes.js';
import { CLI_PATH, type ServerProcess, startServer } from './support/processes.js';

const PASSWORD = 'terminal-password-1';
const COLUMNS = 60;
/** A tmux server of this test's own, so that parallel runs and the user's tmux never mix. */
const TMUX_SOCKET = `replichat-cli-terminal-${process.pid}`;

let directory: string;
let server: ServerProcess | undefined;

function tmux(...args: string[]): string {
  return execFileSync('tmux', ['-L', TMUX_SOCKET, ...args], { encoding: 'utf8' });
}

/** The whole screen and scrollback, with wrapped rows joined into the lines they were written as. */
function screen(): string {
  return tmux('capture-pane', '-p', '-J', '-S', '-', '-t', 'chat');
}

function environment(user: string): Record<string, string> {
  return { REPLICHAT_SERVERS: server!.address, REPLICHAT_INSECURE: '1', REPLICHAT_SESSION_FILE: join(directory, `${user}.json`) };
}

async function ok(user: string, args: readonly string[], input?: string): Promise<string> {
  const result = await runCli(args, { env: environment(user), ...(input === undefined ? {} : { input }) });
  if (result.code !== 0) throw new Error(`replichat ${args.join(' ')} exited with ${result.code}\n${result.stderr}`);
  return result.stdout;
}

beforeAll(async () => {
  directory = mkdtempSync(join(tmpdir(), 'replichat-cli-terminal-'));
  server = await startServer({ dataDirectory: join(directory, 'data') });
  await ok('alice', ['register', 'alice', '--password-stdin'], `${PASSWORD}\n`);
  await ok('bob', ['register', 'bob', '--password-stdin'], `${PASSWORD}\n`);
});

afterAll(async () => {
  try {
    tmux('kill-server');
  } catch {
    // No tmux server is left when the test failed before starting one.
  }
  if (server !== undefined) await server.stop();
  rmSync(directory, { recursive: true, force: true });
});

test('messages arriving while a wrapped line is typed are all seen, and the typed line survives', async () => {
  const unreadId = (await ok('alice', ['send', 'bob', 'sent while bob was away'])).trim();

  // tmux gives the command a clean environment of its own; a script carries the one the chat needs.
  const script = join(directory, 'chat.sh');
  const variables = { ...cliEnvironment(environment('bob')), TERM: 'xterm-256color' };
  const exports = Object.entries(variables)
    .filter(([name, value]) => value !== undefined && /^[A-Za-z_][A-Za-z0-9_]*$/.test(name))
    .map(([name, value]) => `export ${name}=${JSON.stringify(value)}`);
  writeFileSync(script, `#!/bin/sh\n${exports.join('\n')}\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(CLI_PATH)} chat\n`);
  chmodSync(script, 0o700);
  tmux('new-session', '-d', '-s', 'chat', '-x', String(COLUMNS), '-y', '40', script);

  // The stored session is resumed (no password prompt), and the unread message is shown at login.
  await waitFor('the chat prompt shows', () => /^bob> $/m.test(screen()), { timeoutMs: 15_000 });
  await waitFor('the unread message shows', () => screen().includes(`sent while bob was away (${unreadId})`));
  expect(screen()).not.toContain('Password');

  // 150 characters of typing that wrap over three rows of 60 columns, not yet sent.
  const typed = `@alice ${Array.from({ length: 30 }, (_unused, index) => `w${String(index).padStart(3, '0')}`).join(' ')}`;
  expect(`bob> ${typed}`.length).toBeGreaterThan(2 * COLUMNS);
  tmux('send-keys', '-t', 'chat', '-l', typed);
  await waitFor('the typed line shows', () => screen().includes(`bob> ${typed}`));

  const bodies = ['first incoming', 'second incoming', 'third incoming'];
  for (const body of bodies) await ok('alice', ['send', 'bob', body]);
  await waitFor('all three messages show', () => bodies.every((body) => screen().includes(`alice: ${body} (`)), { timeoutMs: 15_000 });

  const lines = screen().trimEnd().split('\n');
  for (const body of bodies) expect(lines.filter((line) => line.includes(`alice: ${body} (`))).toHaveLength(1);
  // The input is drawn again, whole, as the last line, below every message.
  expect(lines.at(-1)).toBe(`bob> ${typed}`);
  const lastMessageLine = Math.max(...bodies.map((body) => lines.findIndex((line) => line.includes(`alice: ${body} (`))));
  expect(lastMessageLine).toBe(lines.length - 2);

  tmux('send-keys', '-t', 'chat', 'Enter');
  await waitFor('the typed message is sent', () => screen().includes('Sent to alice'));
  const received = JSON.parse(await ok('alice', ['--json', 'read'])) as { messages: ChatMessage[] };
  expect(received.messages.map((message) => message.body)).toEqual([typed.slice('@alice '.length)]);
  // Everything bob's screen showed was acknowledged: nothing waits for `read`.
  expect(JSON.parse(await ok('bob', ['--json', 'read']))).toEqual({ messages: [], remainingUnreadCount: 0 });
});
