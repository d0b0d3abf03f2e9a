# Medians of each step of a sequential send, from the merged timeline of bench/timeline/sequential.mjs.
import sys, statistics
ev = []
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) < 4: continue
    ev.append((float(p[2]), p[1], ' '.join(p[3:])))
ev.sort()
leader = None
for t, pid, what in ev:
    if what == 'rpc-start SendMessage': leader = pid; break
steps = {k: [] for k in ['client to leader', 'leader: to the batch', 'leader: apply and commit', 'leader: appends built and sent', 'wire: append to slower follower', 'follower: apply and commit (slower)', 'wire: reply to leader (slower)', 'leader: reply to acknowledgement', 'leader: acknowledgement to answer', 'leader to client, and its next send', 'total']}
sends = [i for i, e in enumerate(ev) if e[2] == 'client-send']
skipped = 0
for a, b in zip(sends, sends[1:]):
    seg = ev[a:b+1]
    def first(pred, start=0):
        for j in range(start, len(seg)):
            if pred(seg[j]): return j
        return None
    try:
        i1 = first(lambda e: e[1] == leader and e[2] == 'rpc-start SendMessage')
        i2 = first(lambda e: e[1] == leader and e[2] == 'apply-start 1', i1)
        i3 = first(lambda e: e[1] == leader and e[2].startswith('carryOut msgs=2'), i2)
        sendsA = [j for j in range(i3, len(seg)) if seg[j][1] == leader and seg[j][2] == 'send append'][:2]
        fol = {}
        for j in range(sendsA[0], len(seg)):
            t, pid, w = seg[j]
            if pid == leader: continue
            d = fol.setdefault(pid, {})
            if w == 'deliver append' and 'deliver' not in d: d['deliver'] = t
            if w == 'send appendReply' and 'reply' not in d: d['reply'] = t
        replies = [j for j in range(sendsA[0], len(seg)) if seg[j][1] == leader and seg[j][2] == 'deliver appendReply'][:2]
        iack = first(lambda e: e[1] == leader and e[2].startswith('ack'), replies[-1])
        idone = first(lambda e: e[1] == leader and e[2] == 'rpc-done', iack)
        T = lambda j: seg[j][0]
        full = [d for d in fol.values() if 'deliver' in d and 'reply' in d]
        assert len(full) == 2, fol
        slow = max(full, key=lambda d: d['reply'])
        steps['client to leader'].append(T(i1) - T(0))
        steps['leader: to the batch'].append(T(i2) - T(i1))
        steps['leader: apply and commit'].append(T(i3) - T(i2))
        steps['leader: appends built and sent'].append(T(sendsA[1]) - T(i3))
        steps['wire: append to slower follower'].append(slow['deliver'] - T(sendsA[0]))
        steps['follower: apply and commit (slower)'].append(slow['reply'] - slow['deliver'])
        steps['wire: reply to leader (slower)'].append(T(replies[-1]) - slow['reply'])
        steps['leader: reply to acknowledgement'].append(T(iack) - T(replies[-1]))
        steps['leader: acknowledgement to answer'].append(T(idone) - T(iack))
        steps['leader to client, and its next send'].append(T(len(seg) - 1) - T(idone))
        steps['total'].append(T(len(seg) - 1) - T(0))
    except Exception as e:
        # A send whose events are incomplete (a heartbeat in between, a message on its way) is left out.
        skipped += 1
        continue
for k, v in steps.items():
    if v: print(f"{k:40s} median {statistics.median(v):6.2f} ms  (n={len(v)})")
print(f'sends left out (events incomplete): {skipped}')
