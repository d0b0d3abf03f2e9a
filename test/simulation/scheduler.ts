/**
 * The simulation's one source of time and order: a virtual clock and a queue of events. Events run one at a
 * time, in (time, insertion) order; after each one the scheduler lets the real code's promise chains and
 * its real file I/O (SQLite backups, snapshot renames) finish before it runs the next event, and virtual
 * time does not move meanwhile. Nothing depends on wall time, so a seed replays exactly.
 *
 * An event may belong to a process (one run of a replica). A paused process's events are held and run when
 * it resumes (a SIGSTOPped process keeps its timers and its socket buffers); a dead process's events are
 * dropped (its memory is gone).
 */

/** Thrown by the simulation's fatal handler and by crash faults: the replica process ends here. */
export class SimulatedCrash extends Error {
  override name = 'SimulatedCrash';
}

export type ProcessState = 'running' | 'paused' | 'dead';

/** One run of a replica process: what a crash ends and a restart replaces. */
export class SimulatedProcess {
  state: ProcessState = 'running';
  /** Events that came due while the process was paused, in the order they came due. */
  readonly held: ScheduledEvent[] = [];
  /** Why the process died, for the trace and for failure messages. */
  deathReason: string | undefined;

  constructor(
    readonly name: string,
    readonly startedAtMs: number,
  ) {}

  get alive(): boolean {
    return this.state !== 'dead';
  }
}

export interface ScheduledEvent {
  readonly atMs: number;
  readonly sequence: number;
  readonly label: string;
  readonly owner: SimulatedProcess | undefined;
  readonly run: () => void;
  cancelled: boolean;
}

/** Called with an error that escaped an event (anything but a SimulatedCrash). */
export type EscapedErrorHandler = (error: unknown, event: ScheduledEvent) => void;

/** How long the scheduler waits for real I/O between two events before it calls the run stuck. */
const DRAIN_ROUNDS_MAX = 200_000;

export class Scheduler {
  private nowValue = 0;
  private sequence = 0;
  private readonly heap: ScheduledEvent[] = [];
  private escapedErrorHandler: EscapedErrorHandler = (error) => {
    throw error;
  };
  eventsRun = 0;

  get nowMs(): number {
    return this.nowValue;
  }

  onEscapedError(handler: EscapedErrorHandler): void {
    this.escapedErrorHandler = handler;
  }

  /** Runs `run` after `delayMs` of virtual time (0: after the events already due now). */
  schedule(delayMs: number, label: string, run: () => void, owner?: SimulatedProcess): ScheduledEvent {
    const event: ScheduledEvent = {
      atMs: this.nowValue + Math.max(0, delayMs),
      sequence: this.sequence++,
      label,
      owner,
      run,
      cancelled: false,
    };
    this.push(event);
    return event;
  }

  /** Stops a process: its due events are held until `resume`. */
  pause(process: SimulatedProcess): void {
    if (process.state === 'running') process.state = 'paused';
  }

  /** Resumes a paused process: what came due meanwhile runs now, in order. */
  resume(process: SimulatedProcess): void {
    if (process.state !== 'paused') return;
    process.state = 'running';
    for (const event of process.held.splice(0)) {
      this.push({ ...event, atMs: this.nowValue, sequence: this.sequence++ });
    }
  }

  /** Ends a process: its pending and held events never run. */
  kill(process: SimulatedProcess, reason: string): void {
    if (process.state === 'dead') return;
    process.state = 'dead';
    process.deathReason = reason;
    process.held.length = 0;
  }

  /** The time of the next event, or undefined when none is queued. */
  nextEventAtMs(): number | undefined {
    return this.heap[0]?.atMs;
  }

  /** Runs every event due up to `untilMs`, then sets the clock to `untilMs`. */
  async runUntil(untilMs: number, afterEach?: () => void): Promise<void> {
    for (;;) {
      const next = this.heap[0];
      if (next === undefined || next.atMs > untilMs) break;
      await this.runNext();
      afterEach?.();
    }
    if (untilMs > this.nowValue) this.nowValue = untilMs;
  }

  /** Runs events until `condition` holds (checked after each) or `untilMs` passes; returns whether it held. */
  async runUntilCondition(condition: () => boolean, untilMs: number, afterEach?: () => void): Promise<boolean> {
    if (condition()) return true;
    for (;;) {
      const next = this.heap[0];
      if (next === undefined || next.atMs > untilMs) break;
      await this.runNext();
      afterEach?.();
      if (condition()) return true;
    }
    if (untilMs > this.nowValue) this.nowValue = untilMs;
    return condition();
  }

  private async runNext(): Promise<void> {
    const event = this.pop()!;
    if (event.atMs > this.nowValue) this.nowValue = event.atMs;
    if (event.cancelled) return;
    const owner = event.owner;
    if (owner !== undefined && owner.state === 'dead') return;
    if (owner !== undefined && owner.state === 'paused') {
      owner.held.push(event);
      return;
    }
    this.eventsRun += 1;
    try {
      event.run();
    } catch (error) {
      if (!(error instanceof SimulatedCrash)) this.escapedErrorHandler(error, event);
    }
    await drainRealWork();
  }

  private push(event: ScheduledEvent): void {
    const heap = this.heap;
    heap.push(event);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!earlier(heap[index]!, heap[parent]!)) break;
      [heap[index], heap[parent]] = [heap[parent]!, heap[index]!];
      index = parent;
    }
  }

  private pop(): ScheduledEvent | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length > 0 && last !== undefined) {
      heap[0] = last;
      let index = 0;
      for (;;) {
        const left = index * 2 + 1;
        const right = left + 1;
        let smallest = index;
        if (left < heap.length && earlier(heap[left]!, heap[smallest]!)) smallest = left;
        if (right < heap.length && earlier(heap[right]!, heap[smallest]!)) smallest = right;
        if (smallest === index) break;
        [heap[index], heap[smallest]] = [heap[smallest]!, heap[index]!];
        index = smallest;
      }
    }
    return top;
  }
}

function earlier(a: ScheduledEvent, b: ScheduledEvent): boolean {
  return a.atMs !== b.atMs ? a.atMs < b.atMs : a.sequence < b.sequence;
}

/**
 * Lets every promise chain settle and every real file operation started by the code under test finish:
 * an immediate runs only once the microtask queue is empty, and Node lists file requests and immediates
 * still outstanding. SQLite's online backup steps on immediates, and fs/promises calls are file requests.
 */
export async function drainRealWork(): Promise<void> {
  for (let round = 0; round < DRAIN_ROUNDS_MAX; round += 1) {
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (!realWorkPending()) return;
  }
  throw new Error('real I/O started by the code under test did not finish: the run cannot go on deterministically');
}

function realWorkPending(): boolean {
  for (const resource of process.getActiveResourcesInfo()) {
    if (resource.startsWith('FSReq') || resource === 'CloseReq' || resource === 'Immediate') return true;
  }
  return false;
}
