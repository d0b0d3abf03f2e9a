/**
 * Parsers for option values. They throw commander's InvalidArgumentError, so that a bad value is reported
 * like any other usage error: one line naming the option, and exit code 2.
 */
import { InvalidArgumentError } from 'commander';

/** A whole number from 1 up, such as a page size or a message count. */
export function positiveInteger(value: string): number {
  const number = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(number) || number < 1) {
    throw new InvalidArgumentError('must be a whole number from 1 up');
  }
  return number;
}
