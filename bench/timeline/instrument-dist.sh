#!/usr/bin/env bash
# Patches timestamps into the built server (dist/) for bench/timeline/sequential.mjs and waves.mjs. When
# RC_TRACE names a directory, each point keeps a line "T <pid> <unix ms, µs precision> <event>" in memory,
# and the process writes them all to RC_TRACE/trace-<pid>.txt as it exits; the files of all the servers
# then give one timeline across processes. Writing each line to standard error as it happened cost the
# benchmark's own process most, which copies the servers' standard error to their log files, and a whole
# timeline written to standard error at exit was cut short. Temporary by design: `npm run build` removes
# every hook.
#
#   npm run build && bash bench/timeline/instrument-dist.sh && node bench/timeline/sequential.mjs
set -euo pipefail
cd "$(dirname "$0")/../../dist"
grep -q "__t(" node/replica-node.js && { echo "dist is already instrumented; run npm run build first" >&2; exit 1; }
T='globalThis.__t=(l)=>{if(!process.env.RC_TRACE)return;if(globalThis.__tl===undefined){globalThis.__tl=[];process.on("exit",()=>process.getBuiltinModule("node:fs").writeFileSync(`${process.env.RC_TRACE}/trace-${process.pid}.txt`,globalThis.__tl.join("")))}globalThis.__tl.push(`T ${process.pid} ${(performance.timeOrigin+performance.now()).toFixed(3)} ${l}\n`)};'
sed -i "s|^export class ReplicaNode|${T}\nexport class ReplicaNode|" node/replica-node.js
sed -i "s|    applySubmitted() {|    applySubmitted() { __t('apply-start ' + this.submitted.length);|" node/replica-node.js
sed -i "s|        if (output.entriesToPersist.length > 0)|        __t('carryOut msgs=' + output.messages.length + ' persist=' + output.entriesToPersist.length); if (output.entriesToPersist.length > 0)|" node/replica-node.js
sed -i "s|    acknowledge(commitIndex) {|    acknowledge(commitIndex) { if (this.waiting.length \&\& this.waiting[0].index <= commitIndex) __t('ack ' + commitIndex);|" node/replica-node.js
sed -i "s|        handler.onPeerMessage(message, fromClientAddress);|        __t('deliver ' + message.type); handler.onPeerMessage(message, fromClientAddress); __t('delivered');|" transport/peer-server.js
sed -i "s|    send(address, message) {|    send(address, message) { __t('send ' + message.type);|" transport/peer-sender.js
sed -i "s|            const startedAt = process.hrtime.bigint();|            const startedAt = process.hrtime.bigint(); __t('rpc-start ' + method);|" api/chat-service.js
sed -i "s|                finish(grpc.status.OK);|                finish(grpc.status.OK); __t('rpc-done');|" api/chat-service.js
for file in node/replica-node.js transport/peer-server.js transport/peer-sender.js api/chat-service.js; do
  grep -q "__t(" "$file" || { echo "no hook went into $file: the patterns no longer match the build" >&2; exit 1; }
done
echo "dist instrumented"
