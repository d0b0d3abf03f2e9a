/**
 * `replichat server`: runs a replica. The server parses its own flags (and its own --help), so everything
 * after the word `server` is handed over untouched; main.ts finds that word before commander sees the
 * arguments, because commander would otherwise take flags such as --insecure and --help as the client's.
 * The server code is imported only here, on demand, so that client commands never load it.
 */
import type { Command } from 'commander';

/** Client options that take a value, which may stand before the word `server` on the command line. */
const GLOBAL_OPTIONS_WITH_VALUE: ReadonlySet<string> = new Set(['--servers', '--ca-cert', '--session-file', '--profile']);
const GLOBAL_FLAGS: ReadonlySet<string> = new Set(['--insecure', '--json']);

/**
 * The arguments after `server` when the command line runs the server (`replichat [global options] server
 * ...`), else undefined.
 */
export function serverArguments(argv: readonly string[]): string[] | undefined {
  for (let index = 0; index < argv.length; index += 1) {
    const argument = argv[index]!;
    if (argument === 'server') return argv.slice(index + 1);
    // `help server` shows the server's own help, which lists its flags; commander's would not.
    if (argument === 'help' && argv[index + 1] === 'server') return ['--help'];
    if (GLOBAL_OPTIONS_WITH_VALUE.has(argument)) {
      index += 1;
      continue;
    }
    if (GLOBAL_FLAGS.has(argument) || GLOBAL_OPTIONS_WITH_VALUE.has(argument.split('=')[0]!)) continue;
    return undefined;
  }
  return undefined;
}

export async function runServerCommand(argv: readonly string[]): Promise<void> {
  const { runServer } = await import('../node/server-main.js');
  await runServer(argv);
}

/**
 * Lists `server` in the help. Its action is a fallback: main.ts hands `server` command lines (and
 * `help server`) to the server before commander parses them.
 */
export function addServerCommand(program: Command): void {
  program
    .command('server')
    .description('run one replica of the chat service (`replichat server --help` lists its options)')
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[server options...]')
    .action(async (argv: string[]) => {
      await runServerCommand(argv);
    });
}
