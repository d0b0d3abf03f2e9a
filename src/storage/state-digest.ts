/**
 * The state digest: SHA-256 over the ordered rows of every replicated table. Two replicas with the same
 * digest hold the same logical chat state, whatever their files' page layout; the log and local metadata
 * are left out because they are history and per-replica bookkeeping, not state.
 */
import { createHash } from 'node:crypto';
import type { SqliteDatabase } from './database.js';
import { REPLICATED_TABLES } from './migrations.js';

/** Returns the hex SHA-256 digest of the replicated state. */
export function computeStateDigest(database: SqliteDatabase): string {
  const hash = createHash('sha256');
  for (const table of REPLICATED_TABLES) {
    hash.update(`table ${table.name}\n`);
    const statement = database.prepare(`SELECT * FROM ${table.name} ORDER BY ${table.orderBy}`).raw(true);
    for (const row of statement.iterate() as IterableIterator<unknown[]>) {
      hash.update(JSON.stringify(row));
      hash.update('\n');
    }
  }
  return hash.digest('hex');
}
