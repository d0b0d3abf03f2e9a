/**
 * A crashed replica's promise chains reject with SimulatedCrash: the simulation's fatal handler must throw
 * (production's exits the process, so nothing after it ever runs), and inside the driver's async code that
 * throw becomes a rejection nobody handles. Jest fails a test on any unhandled rejection, and it listens on
 * the worker's real process object, which test code cannot reach (jest gives tests a copy). So this module
 * installs, through the in-process inspector, a filter in front of jest's listeners in the worker's main
 * context: rejections with a SimulatedCrash are the expected end of a crashed replica and are dropped;
 * every other one is handed to `onOther` (the simulation reports it as a violation with its seed) and to
 * jest as before.
 */
import events from 'node:events';
import { Session } from 'node:inspector';

const HOOK_KEY = '__replichatSimulationRejection';

type Hook = (reason: unknown) => void;

/** Installs the filter; returns the function that removes it again. */
export function filterSimulatedCrashRejections(onOther: (reason: unknown) => void): () => void {
  // The main context reaches this hook through the events module object, which both contexts share.
  (events as unknown as Record<string, Hook | undefined>)[HOOK_KEY] = onOther;
  const session = new Session();
  session.connect();
  evaluate(
    session,
    `(() => {
      if (globalThis.${HOOK_KEY}Restore) return;
      const originals = process.rawListeners('unhandledRejection');
      process.removeAllListeners('unhandledRejection');
      const filter = (reason, promise) => {
        if (reason !== null && typeof reason === 'object' && reason.name === 'SimulatedCrash') return;
        const hook = process.getBuiltinModule?.('node:events')?.${HOOK_KEY};
        if (typeof hook === 'function') hook(reason);
        for (const listener of originals) listener(reason, promise);
      };
      process.on('unhandledRejection', filter);
      globalThis.${HOOK_KEY}Restore = () => {
        process.removeListener('unhandledRejection', filter);
        for (const listener of originals) process.on('unhandledRejection', listener);
        delete globalThis.${HOOK_KEY}Restore;
      };
    })()`,
  );
  return () => {
    evaluate(session, `globalThis.${HOOK_KEY}Restore?.()`);
    session.disconnect();
    (events as unknown as Record<string, Hook | undefined>)[HOOK_KEY] = undefined;
  };
}

function evaluate(session: Session, expression: string): void {
  let failure: unknown;
  session.post('Runtime.evaluate', { expression }, (error, result) => {
    if (error !== null) failure = error;
    else if (result.exceptionDetails !== undefined) failure = new Error(result.exceptionDetails.text);
  });
  if (failure !== undefined) throw failure;
}
