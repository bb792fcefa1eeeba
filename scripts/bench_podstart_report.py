#!/usr/bin/env python3
"""Plot one `berth bench podstart` result (JSON) next to it as a PNG: pod start latency
(create -> Running) against runc run from the same image, as CDFs and p50/p99 bars."""
import json
import os
import sys

path = sys.argv[1]
r = json.load(open(path))
png = os.path.splitext(path)[0] + ".png"
b, c = r["berth"], r.get("runc")
print(f"berth  {r['pods']} pods: p50 {b['p50_ms']:.1f} ms  p99 {b['p99_ms']:.1f} ms  max {b['max_ms']:.1f} ms")
if c:
    print(f"runc   p50 {c['p50_ms']:.1f} ms  p99 {c['p99_ms']:.1f} ms; ratio p50 {r['ratio_p50']:.2f}x p99 {r['ratio_p99']:.2f}x")
if r.get("agent_rss_kib_idle"):
    print(f"agent RSS {r['agent_rss_kib_idle'] / 1024:.1f} MiB idle, {r['agent_rss_kib_with_pods'] / 1024:.1f} MiB with the pods")
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib missing: no plot")
    sys.exit(0)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
series = [("berth (create -> Running)", b, "tab:blue")]
if c:
    series.append(("runc run (floor)", c, "tab:gray"))
for label, s, color in series:
    xs = sorted(s["samples_ms"])
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    axes[0].step(xs, ys, where="post", label=label, color=color)
axes[0].set_xlabel("ms")
axes[0].set_ylabel("fraction of starts")
axes[0].set_title(f"start latency CDF ({r['pods']} starts each)")
axes[0].legend()
names = [s[0].split(" ")[0] for s in series]
x = range(len(series))
axes[1].bar([i - 0.2 for i in x], [s[1]["p50_ms"] for s in series], 0.4, label="p50")
axes[1].bar([i + 0.2 for i in x], [s[1]["p99_ms"] for s in series], 0.4, label="p99")
axes[1].set_xticks(list(x))
axes[1].set_xticklabels(names)
title = "latency (ms)"
if c:
    title += f"; ratio p50 {r['ratio_p50']:.2f}x, p99 {r['ratio_p99']:.2f}x"
axes[1].set_title(title)
axes[1].legend()
rss = r.get("agent_rss_kib_idle")
sub = f", agent RSS idle {rss / 1024:.1f} MiB" if rss else ""
build = " [debug build]" if "debug" in r.get("berth_bin", "") else ""
fig.suptitle(f"berth bench podstart{build}{sub}")
fig.tight_layout()
fig.savefig(png, dpi=100)
print("plot:", png)
