/**
 * The stored form of a cluster record: normalised JSON. Every backend encodes with `encodeRecord` and
 * decodes with `decodeRecord`, so that what one replica wrote is read back the same by every other, and so
 * that a value someone else put at our key (a typo in `etcdctl put`, a hand-edited Lease, a record from a
 * future version) is refused with a clear error instead of steering the cluster.
 */
import { normalizeRecord, recordProblem, type ClusterRecord } from '../core/replication/cluster-record.js';
import type { Member } from '../core/replication/types.js';
import { ConfigurationStoreError } from './configuration-store-error.js';

/** Normalised JSON of a record; refuses (INVALID_RECORD) a record that breaks the structural rules. */
export function encodeRecord(record: ClusterRecord, where: string): string {
  return JSON.stringify(checkedRecord(record, where));
}

/** The record a stored text holds, deep-frozen; refuses (INVALID_RECORD) anything else. */
export function decodeRecord(text: string, where: string): ClusterRecord {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ConfigurationStoreError('INVALID_RECORD', `${where} does not hold JSON: ${(error as Error).message}`);
  }
  return checkedRecord(shapeOf(value, where), where);
}

/** A normalised, deep-frozen copy of a record that keeps the structural rules. */
export function checkedRecord(record: ClusterRecord, where: string): ClusterRecord {
  const shaped = shapeOf(record, where);
  const problem = recordProblem(shaped);
  if (problem !== undefined) {
    throw new ConfigurationStoreError('INVALID_RECORD', `${where}: invalid cluster record: ${problem}`);
  }
  return freezeRecord(normalizeRecord(shaped));
}

function freezeRecord(record: ClusterRecord): ClusterRecord {
  return Object.freeze({
    ...record,
    members: Object.freeze(record.members.map((member) => Object.freeze({ ...member }))),
    inSync: Object.freeze([...record.inSync]),
    removed: Object.freeze([...record.removed]),
  });
}

/** Checks the types of every field, and copies only the known ones. */
function shapeOf(value: unknown, where: string): ClusterRecord {
  const refuse = (problem: string): never => {
    throw new ConfigurationStoreError('INVALID_RECORD', `${where}: invalid cluster record: ${problem}`);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return refuse('not an object');
  const fields = value as Record<string, unknown>;
  const ordinalList = (name: string): number[] => {
    const list = fields[name];
    if (!Array.isArray(list)) return refuse(`${name} is not an array`);
    return list.map((item) => (isOrdinal(item) ? item : refuse(`${name} holds ${JSON.stringify(item)}, not an ordinal`)));
  };
  if (!Array.isArray(fields.members)) return refuse('members is not an array');
  const members: Member[] = fields.members.map((member: unknown) => {
    if (typeof member !== 'object' || member === null) return refuse('a member is not an object');
    const { ordinal, address } = member as Record<string, unknown>;
    if (!isOrdinal(ordinal)) return refuse(`member ordinal ${JSON.stringify(ordinal)} is not an ordinal`);
    if (typeof address !== 'string' || address === '') return refuse(`member ${ordinal} has no address`);
    return { ordinal, address };
  });
  if (typeof fields.epoch !== 'number') return refuse('epoch is not a number');
  if (!isOrdinal(fields.leader)) return refuse('leader is not an ordinal');
  if (typeof fields.clusterId !== 'string' || fields.clusterId === '') return refuse('clusterId is not a non-empty string');
  return {
    epoch: fields.epoch,
    leader: fields.leader,
    members,
    inSync: ordinalList('inSync'),
    removed: ordinalList('removed'),
    clusterId: fields.clusterId,
  };
}

function isOrdinal(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}
