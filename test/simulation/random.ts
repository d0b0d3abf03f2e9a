/**
 * A seeded pseudo-random number generator (mulberry32): small, fast and good enough to drive a schedule.
 * Every random choice of a simulated run comes from one of these, so the same seed gives the same run.
 */
export class Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A number in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  chance(probability: number): boolean {
    return this.next() < probability;
  }

  /** An integer in [minimum, maximum]. */
  integer(minimum: number, maximum: number): number {
    return minimum + Math.floor(this.next() * (maximum - minimum + 1));
  }

  /** A number in [minimum, maximum). */
  between(minimum: number, maximum: number): number {
    return minimum + this.next() * (maximum - minimum);
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('cannot pick from an empty list');
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** A lowercase hex string of `length` characters, for ids that must look random but replay exactly. */
  hex(length: number): string {
    let text = '';
    while (text.length < length) text += Math.floor(this.next() * 0x100000000).toString(16).padStart(8, '0');
    return text.slice(0, length);
  }

  /** A new generator derived from this one, so that one part's draws do not shift another part's. */
  fork(): Random {
    return new Random(Math.floor(this.next() * 0x100000000));
  }
}
