// Measures what a follower spends to take in one append: decoding its binary frame
// (src/transport/peer-message-codec.ts) and checking it against the peer message schema
// (src/transport/peer-message-schema.ts), for an append of N sends of about 100 bytes, in a hot loop.
//
//   npm run build && node bench/peer-decode.mjs [entries=64] [iterations=2000]
//
// Prints the frame's size and the mean time per append of encoding, decoding, and decoding plus checking.
import { decodePeerFrame, encodePeerMessage } from '../dist/transport/peer-message-codec.js';
import { createPeerFrameParser } from '../dist/transport/peer-message-schema.js';

const entryCount = Number(process.argv[2] ?? 64);
const iterations = Number(process.argv[3] ?? 2000);
const entries = Array.from({ length: entryCount }, (_, position) => ({
  index: 100 + position,
  epoch: 3,
  command: {
    kind: 'sendMessage', requestId: `bench-${position}`, principal: `session:${'a'.repeat(32)}`, fingerprint: 'b'.repeat(64),
    timestampMs: 1_796_000_000_000 + position, messageId: '01a2338c-f9c1-72da-ad56-9ba9cd320966', sender: 'alice', recipient: 'bob',
    body: `message ${position} `.repeat(8), instant: false,
  },
}));
const message = {
  type: 'append', from: 0, epoch: 3, prevIndex: 99, prevEpoch: 3, entries, commitIndex: 99, sentAtMs: 1234.5, leaderIncarnation: 1, requestDigest: false,
};
const frame = encodePeerMessage(message);
const parse = createPeerFrameParser({ maxEntriesPerAppend: 512 });

function meanMs(work) {
  for (let n = 0; n < Math.min(200, iterations); n += 1) work();
  const startedAt = performance.now();
  for (let n = 0; n < iterations; n += 1) work();
  return ((performance.now() - startedAt) / iterations).toFixed(3);
}

console.log(`append of ${entryCount} sends: ${frame.length} bytes`);
console.log(`encode ${meanMs(() => encodePeerMessage(message))} ms`);
console.log(`decode ${meanMs(() => decodePeerFrame(frame))} ms`);
console.log(`decode and check ${meanMs(() => {
  const checked = parse(frame);
  if (!checked.ok) throw new Error(checked.problem);
})} ms`);
