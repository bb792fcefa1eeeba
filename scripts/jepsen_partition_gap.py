#!/usr/bin/env python3
# Usage: scripts/jepsen_partition_gap.py DIR/history.jsonl  (JEPSEN.md, bug 4)
# For every partition that isolates the leader: from the partition's application to the first
# ok write/cas completion (any node), and the longest interval with no ok completion at all.
import json, sys
h=[json.loads(l) for l in open(sys.argv[1])]
faults=[]
for e in h:
    if e["process"]=="nemesis" and e["type"]=="info" and e["f"].startswith("start-") and isinstance(e["value"],dict) and e["value"].get("mode")=="isolate-leader":
        faults.append(e["time"])
stops=[e["time"] for e in h if e["process"]=="nemesis" and e["type"]=="info" and e["f"].startswith("stop-")]
oks=sorted(e["time"] for e in h if e["process"]!="nemesis" and e["type"]=="ok")
wok=sorted(e["time"] for e in h if e["process"]!="nemesis" and e["type"]=="ok" and e["f"] in ("write","cas"))
for t in faults:
    end=min([s for s in stops if s>t] or [t+10**10])
    first=[o for o in oks if o>t]
    firstw=[o for o in wok if o>t]
    win=[t]+[o for o in oks if t<o<end]+[end]
    gap=max(b-a for a,b in zip(win,win[1:]))
    n=len([o for o in oks if t<o<end])
    print(f"isolate-leader at {t/1e9:.2f}s (healed {end/1e9:.2f}s): first ok op +{(first[0]-t)/1e9:.2f}s, first ok write/cas +{(firstw[0]-t)/1e9:.2f}s, longest gap without any ok {gap/1e9:.2f}s, ok ops during fault {n}")
