/**
 * Cleanup that holds however a test process ends. A child runs under a small bash watchdog: it starts the
 * child, prints the child's pid, and kills the child with SIGKILL as soon as its stdin (a pipe from the
 * test process) reaches end-of-file. The kernel closes that pipe whenever the test process ends, however
 * it ends (jest finishing, a crash, SIGKILL). Once the child has exited, the watchdog removes the
 * directory it was given. A process 'exit' listener cannot do this from a test: jest gives each test file
 * a process object of its own, and listeners added to it were found never to run (the peer certificates'
 * directory, which one removed, stayed behind after every run). An etcd shared by a test file is never
 * stopped either, and each left about 120 MB (its preallocated WAL) behind before the watchdog removed it.
 *
 * The watchdog must outlive the test process's pipes: its own stderr goes to /dev/null (the child keeps
 * the real one), since bash reports a killed child on stderr, and it ignores SIGPIPE once the child has
 * started (so the child keeps the default), since a test process that ends at once, as one that only asks
 * for a removal may, has closed the pipe of the pid line before bash writes it. Either write used to end
 * the watchdog by SIGPIPE, leaving the directory and, in the second case, the child.
 */
import { spawn, type ChildProcess } from 'node:child_process';

const WATCHDOG = `
directory=$1
shift
exec 3<&0 4>&2 2>/dev/null
"$0" "$@" </dev/null 2>&4 3<&- 4>&- &
child_pid=$!
trap '' PIPE
echo "pid $child_pid"
( while read -r _ <&3; do :; done; kill -9 "$child_pid" 2>/dev/null ) &
reader_pid=$!
wait "$child_pid"
status=$?
kill "$reader_pid" 2>/dev/null
rm -rf -- "$directory"
exit "$status"
`;

/**
 * Starts `binary` under the watchdog, which removes `directory` once the binary has exited; the binary's
 * pid is the first line of the watchdog's stdout (`pid N`).
 */
export function spawnUnderWatchdog(binary: string, binaryArguments: readonly string[], directory: string): ChildProcess {
  return spawn('bash', ['-c', WATCHDOG, binary, directory, ...binaryArguments], { stdio: ['pipe', 'pipe', 'pipe'] });
}

/**
 * Removes `directory` once this process has ended: a watchdog whose child only sleeps, and which keeps
 * neither this process alive nor its output.
 */
export function removeWhenThisProcessEnds(directory: string): void {
  const watchdog = spawnUnderWatchdog('sleep', ['infinity'], directory);
  watchdog.unref();
  for (const stream of [watchdog.stdin, watchdog.stdout, watchdog.stderr]) (stream as unknown as { unref?: () => void } | null)?.unref?.();
}
