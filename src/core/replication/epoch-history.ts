/**
 * Which epoch wrote each log index, kept as the list of indexes where the epoch changed (Kafka's leader
 * epoch cache). Two logs that hold the same epoch at the same index hold the same entries up to there,
 * because an epoch has one leader and it appends in order; so this small list is all the protocol needs to
 * compare logs.
 */
import { assert } from '../assert.js';

export interface EpochStart {
  readonly epoch: number;
  readonly firstIndex: number;
}

export class EpochHistory {
  private readonly starts: EpochStart[];
  private lastIndexValue: number;
  /** The oldest index still in the log; entries before it were truncated (they live on in snapshots). */
  private firstIndexValue: number;

  constructor(starts: readonly EpochStart[], lastIndex: number) {
    this.starts = [...starts];
    this.lastIndexValue = lastIndex;
    this.firstIndexValue = this.starts[0]?.firstIndex ?? lastIndex + 1;
    assert(lastIndex === 0 || this.starts.length > 0, 'a non-empty log must have an epoch history');
  }

  /** The oldest index the log still holds (lastIndex + 1 for an empty log). */
  get firstIndex(): number {
    return this.firstIndexValue;
  }

  /** Forgets entries before `firstIndex`: the driver deleted them from the log. */
  truncateBefore(firstIndex: number): void {
    assert(firstIndex <= this.lastIndexValue, 'truncation keeps at least the last entry');
    if (firstIndex <= this.firstIndexValue) return;
    this.firstIndexValue = firstIndex;
  }

  get lastIndex(): number {
    return this.lastIndexValue;
  }

  get lastEpoch(): number {
    return this.starts[this.starts.length - 1]?.epoch ?? 0;
  }

  /** The epoch of the entry at `index`; 0 for index 0 of an untruncated log; undefined when not held. */
  epochAt(index: number): number | undefined {
    if (index === 0 && this.firstIndexValue <= 1) return 0;
    if (index < this.firstIndexValue || index > this.lastIndexValue) return undefined;
    for (let position = this.starts.length - 1; position >= 0; position -= 1) {
      const start = this.starts[position]!;
      if (start.firstIndex <= index) return start.epoch;
    }
    return undefined;
  }

  /** Records an appended entry, which must directly follow the last one. */
  append(index: number, epoch: number): void {
    assert(index === this.lastIndexValue + 1, `entry ${index} does not follow ${this.lastIndexValue}`);
    assert(epoch >= this.lastEpoch, `entry epoch ${epoch} is older than the log's ${this.lastEpoch}`);
    if (epoch !== this.lastEpoch) this.starts.push({ epoch, firstIndex: index });
    if (this.lastIndexValue === 0) this.firstIndexValue = index;
    this.lastIndexValue = index;
  }

  /** Replaces the whole history, after a snapshot was installed. */
  reset(starts: readonly EpochStart[], lastIndex: number): void {
    this.starts.splice(0, this.starts.length, ...starts);
    this.lastIndexValue = lastIndex;
    this.firstIndexValue = this.starts[0]?.firstIndex ?? lastIndex + 1;
  }

  snapshot(): EpochStart[] {
    return [...this.starts];
  }
}
