/**
 * Moves a snapshot file between replicas over the FetchSnapshot streaming RPC: one header chunk, then the
 * file in data chunks. The sender reads the file in chunks and waits for gRPC's flow control, and the
 * receiver writes each chunk to disk before asking for the next, so neither side holds more than a few
 * chunks in memory whatever the database's size. The receiver accepts nothing until the size and checksum
 * match (src/storage/snapshot.ts); installing the verified file is the caller's next step.
 */
import * as grpc from '@grpc/grpc-js';
import { createReadStream } from 'node:fs';
import { assert } from '../core/assert.js';
import {
  receiveSnapshotToTemp,
  SnapshotError,
  type SnapshotFile,
  type SnapshotHeader,
} from '../storage/snapshot.js';
import type {
  FetchSnapshotCall,
  FetchSnapshotRequestMessage,
  PeerServiceClient,
  ReceivedSnapshotChunk,
  SnapshotChunkMessage,
} from './peer-proto.js';

/** 1 MiB per data chunk: few messages per snapshot, far below grpc-js's default 4 MiB message limit. */
export const DEFAULT_SNAPSHOT_CHUNK_BYTES = 1024 * 1024;

/** The largest chunk that still fits, with the message's framing, under the 4 MiB receive limit. */
const MAX_SNAPSHOT_CHUNK_BYTES = 4 * 1024 * 1024 - 1024;

export interface ServeSnapshotOptions {
  readonly chunkBytes?: number;
  /** Delete the snapshot file once the call is over, whether it succeeded or not. */
  readonly removeWhenDone?: boolean;
}

/** How a served call ended: all bytes sent and the call closed OK, the client went away, or sending failed. */
export type ServeSnapshotOutcome = 'sent' | 'cancelled' | 'failed';

/**
 * Streams `snapshot` to the caller of FetchSnapshot: the header, then the file in chunks of `chunkBytes`.
 * Resolves with the outcome and rejects only on a programmer error (a bad `chunkBytes`), so a handler can
 * start it without awaiting it. A failure to read the file ends the call with UNAVAILABLE, because the
 * requester's remedy is to ask again, here or at another replica.
 */
export async function serveSnapshot(
  call: FetchSnapshotCall,
  snapshot: SnapshotFile,
  options: ServeSnapshotOptions = {},
): Promise<ServeSnapshotOutcome> {
  const chunkBytes = options.chunkBytes ?? DEFAULT_SNAPSHOT_CHUNK_BYTES;
  assert(
    Number.isSafeInteger(chunkBytes) && chunkBytes > 0 && chunkBytes <= MAX_SNAPSHOT_CHUNK_BYTES,
    `chunkBytes must be between 1 and ${MAX_SNAPSHOT_CHUNK_BYTES}, not ${chunkBytes}`,
  );
  try {
    return await streamSnapshot(call, snapshot, chunkBytes);
  } catch (error) {
    if (isCallOver(call)) return 'cancelled';
    const details = `sending the snapshot failed: ${messageOf(error)}`;
    // grpc-js turns an 'error' event on a server stream into the call's status and ends the call.
    call.emit('error', { code: grpc.status.UNAVAILABLE, details });
    return 'failed';
  } finally {
    // A file that cannot be deleted now is deleted by cleanUpTempSnapshots at the next start, so a failure
    // here must not turn a finished call into an error.
    if (options.removeWhenDone === true) await snapshot.remove().catch(() => undefined);
  }
}

async function streamSnapshot(
  call: FetchSnapshotCall,
  snapshot: SnapshotFile,
  chunkBytes: number,
): Promise<ServeSnapshotOutcome> {
  const { lastIndex, lastEpoch, sizeBytes, sha256Hex } = snapshot;
  if (!(await writeChunk(call, { header: { lastIndex, lastEpoch, sizeBytes, sha256Hex } }))) return 'cancelled';
  let sentBytes = 0;
  // Leaving the loop early destroys the read stream and closes the file.
  for await (const data of createReadStream(snapshot.path, { highWaterMark: chunkBytes }) as AsyncIterable<Buffer>) {
    sentBytes += data.length;
    if (sentBytes > sizeBytes) break;
    if (!(await writeChunk(call, { data }))) return 'cancelled';
  }
  if (sentBytes !== sizeBytes) {
    throw new Error(`the snapshot file no longer has the ${sizeBytes} bytes its header announced`);
  }
  call.end();
  return (await eventBeforeClose(call, 'finish')) ? 'sent' : 'cancelled';
}

/** Writes one chunk and waits for flow control to accept more; false when the call is over. */
async function writeChunk(call: FetchSnapshotCall, chunk: SnapshotChunkMessage): Promise<boolean> {
  if (isCallOver(call)) return false;
  if (call.write(chunk)) return true;
  return eventBeforeClose(call, 'drain');
}

/**
 * Resolves true when `call` emits `event`, false if the call closes first: a cancelled call is destroyed
 * and would never emit 'drain' or 'finish', so waiting for those alone could hang.
 */
function eventBeforeClose(call: FetchSnapshotCall, event: 'drain' | 'finish'): Promise<boolean> {
  if (isCallOver(call)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onEvent = (): void => {
      call.off('close', onClose);
      resolve(true);
    };
    const onClose = (): void => {
      call.off(event, onEvent);
      resolve(false);
    };
    call.once(event, onEvent);
    call.once('close', onClose);
  });
}

/** An error's message; duck-typed because errors from another realm (a test VM) fail `instanceof Error`. */
function messageOf(error: unknown): string {
  const message = (error as { message?: unknown } | null)?.message;
  return typeof message === 'string' ? message : String(error);
}

function isCallOver(call: FetchSnapshotCall): boolean {
  return call.cancelled || call.destroyed;
}

export interface FetchSnapshotOptions {
  /** The whole transfer must finish within this time, or the call fails with DEADLINE_EXCEEDED. */
  readonly deadlineMs: number;
  /** Called after each data chunk has been written to disk. */
  readonly onProgress?: (bytesReceived: number, sizeBytes: number) => void;
}

export interface FetchedSnapshot {
  /** A verified, fsynced temporary file in `directory`, ready for swapInSnapshot. */
  readonly tempPath: string;
  readonly header: SnapshotHeader;
}

/**
 * Fetches a snapshot from the replica behind `client` into a temporary file in `directory` (the directory
 * of the database it will replace). Rejects with the call's grpc.ServiceError when the stream fails or
 * times out, and with a SnapshotError when the stream's content is wrong (no header first, too few or too
 * many bytes, a checksum mismatch); in every case the temporary file has been deleted and the call ended.
 */
export async function fetchSnapshot(
  client: PeerServiceClient,
  request: FetchSnapshotRequestMessage,
  directory: string,
  options: FetchSnapshotOptions,
): Promise<FetchedSnapshot> {
  assert(options.deadlineMs > 0, `deadlineMs must be positive, not ${options.deadlineMs}`);
  const call = client.FetchSnapshot(request, new grpc.Metadata(), { deadline: Date.now() + options.deadlineMs });
  const chunks = call[Symbol.asyncIterator]() as AsyncIterator<ReceivedSnapshotChunk>;
  let received = false;
  try {
    const first = await chunks.next();
    if (first.done === true) throw new SnapshotError('the snapshot stream ended before its header');
    if (first.value.part !== 'header') throw new SnapshotError('the snapshot stream did not start with a header');
    const { lastIndex, lastEpoch, sizeBytes, sha256Hex } = first.value.header;
    const header: SnapshotHeader = { lastIndex, lastEpoch, sizeBytes, sha256Hex };
    const tempPath = await receiveSnapshotToTemp(directory, header, dataChunks(chunks, sizeBytes, options.onProgress));
    received = true;
    return { tempPath, header };
  } finally {
    // Stop the server from sending the rest of a snapshot that is already refused; a no-op once it ended.
    if (!received) call.cancel();
  }
}

/**
 * The data chunks after the header, in order. The generator resumes only when the receiver asks for the
 * next chunk, that is after it has written the previous one, so progress counts bytes on disk.
 */
async function* dataChunks(
  chunks: AsyncIterator<ReceivedSnapshotChunk>,
  sizeBytes: number,
  onProgress: FetchSnapshotOptions['onProgress'],
): AsyncGenerator<Buffer> {
  let bytesReceived = 0;
  for (;;) {
    const next = await chunks.next();
    if (next.done === true) return;
    if (next.value.part !== 'data') throw new SnapshotError('the snapshot stream has a chunk that is not data');
    yield next.value.data;
    bytesReceived += next.value.data.length;
    onProgress?.(bytesReceived, sizeBytes);
  }
}
