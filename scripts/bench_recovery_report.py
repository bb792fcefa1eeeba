#!/usr/bin/env python3
"""Plot one `berth bench recovery` result (JSON) next to it as a PNG: node loss (SIGKILL of an
agent -> every replica Running elsewhere) per grace-period setting, and member loss (SIGKILL
of the Raft leader or the controller Lease's holder -> Raft leader, controllers and schedulers
acting again), one point per round with the p50 marked."""
import json
import os
import sys

path = sys.argv[1]
r = json.load(open(path))
png = os.path.splitext(path)[0] + ".png"
build = r.get("build", "?")

for n in r["node_loss"]:
    s = n["running_ms"]
    print(f"node loss, grace {n['node_grace_period_ms']} ms / agent renew {n['agent_lease_renew_ms']} ms: "
          f"Running again p50 {s['p50']:.0f} ms p99 {s['p99']:.0f} ms over {s['n']} rounds "
          f"(evicted p50 {n['evicted_ms']['p50']:.0f} ms, bound p50 {n['bound_ms']['p50']:.0f} ms)")
m = r.get("member_loss")
if m:
    for key, label in [("raft_elected_ms", "Raft leader elected"), ("controller_lease_ms", "controller Lease renewed"),
                       ("replacement_created_ms", "controllers act (replacement created)"),
                       ("probes_bound_ms", "schedulers act (all probes bound)"),
                       ("replacement_running_ms", "replacement Running")]:
        s = m[key]
        if s["n"]:
            print(f"member loss: {label}: p50 {s['p50']:.0f} ms p99 {s['p99']:.0f} ms over {s['n']} rounds")
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib missing: no plot")
    sys.exit(0)

fig, axes = plt.subplots(1, 2, figsize=(14, 5))
ax = axes[0]
phases = [("evicted_ms", "evicted"), ("bound_ms", "bound"), ("running_ms", "Running")]
for i, n in enumerate(r["node_loss"]):
    for j, (key, label) in enumerate(phases):
        x = i * (len(phases) + 1) + j
        vals = [round_[key] for round_ in n["rounds"]]
        ax.scatter([x] * len(vals), [v / 1000 for v in vals], color=f"C{j}", alpha=0.6,
                   label=label if i == 0 else None)
        ax.hlines(n[key]["p50"] / 1000, x - 0.3, x + 0.3, color="black")
ticks = [i * (len(phases) + 1) + 1 for i in range(len(r["node_loss"]))]
ax.set_xticks(ticks)
ax.set_xticklabels([f"grace {n['node_grace_period_ms'] / 1000:g} s\nrenew {n['agent_lease_renew_ms']} ms"
                    for n in r["node_loss"]])
ax.axhline(5, color="red", linestyle="--", label="target 5 s")
ax.set_ylabel("seconds after SIGKILL of an agent")
ax.set_title("node loss (bar: p50)")
ax.legend(fontsize=8)

ax = axes[1]
if m:
    keys = [("raft_elected_ms", "Raft\nleader"), ("controller_lease_ms", "controller\nLease"),
            ("replacement_created_ms", "controllers\nact"), ("probes_bound_ms", "schedulers\nact"),
            ("replacement_running_ms", "replacement\nRunning")]
    for j, (key, label) in enumerate(keys):
        for rd in m["rounds"]:
            v = rd.get(key)
            if v is None:
                continue
            marker = "o" if rd["target"] == "raft-leader" else "s"
            ax.scatter(j, v / 1000, color=f"C{j}", marker=marker, alpha=0.6)
        if m[key]["n"]:
            ax.hlines(m[key]["p50"] / 1000, j - 0.3, j + 0.3, color="black")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([k[1] for k in keys], fontsize=8)
    ax.axhline(2, color="red", linestyle="--", label="target 2 s")
    ax.set_ylabel("seconds after SIGKILL of a member")
    ax.set_title("member loss (o: Raft leader killed, s: controller Lease holder; bar: p50)")
    ax.legend(fontsize=8)
fig.suptitle(f"berth bench recovery: {r['servers']} servers, {r['agents']} agents, "
             f"{r['replicas']} replicas ({build} build)")
fig.tight_layout()
fig.savefig(png, dpi=100)
print("plot:", png)
