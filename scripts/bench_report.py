#!/usr/bin/env python3
"""Summarize a bench-vs-etcd results folder: medians per system and scenario, Berth/etcd
ratios, summary.json and kv.png."""
import glob
import json
import os
import re
import statistics
import sys

out = sys.argv[1]
runs = {}
for path in glob.glob(os.path.join(out, "*-r*.json")):
    m = re.match(r"(etcd|berth)-(.+)-r(\d+)\.json$", os.path.basename(path))
    if not m:
        continue
    sys_, scenario, _ = m.groups()
    runs.setdefault(scenario, {}).setdefault(sys_, []).append(json.load(open(path)))

summary = {}
for scenario, by_sys in sorted(runs.items()):
    row = {}
    for sys_, rs in by_sys.items():
        row[sys_] = {
            "throughput_per_sec": statistics.median(r["throughput_per_sec"] for r in rs),
            "latency_ms_p50": statistics.median(r["latency_ms_p50"] for r in rs),
            "latency_ms_p99": statistics.median(r["latency_ms_p99"] for r in rs),
            "rounds": len(rs),
        }
    if "etcd" in row and "berth" in row:
        row["ratio_throughput"] = row["berth"]["throughput_per_sec"] / max(row["etcd"]["throughput_per_sec"], 1e-9)
        row["ratio_p99"] = row["berth"]["latency_ms_p99"] / max(row["etcd"]["latency_ms_p99"], 1e-9)
    summary[scenario] = row
for sys_ in ("etcd", "berth"):
    p = os.path.join(out, f"{sys_}-failover.json")
    if os.path.exists(p):
        summary.setdefault("failover", {})[sys_] = json.load(open(p))
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)

print(f"{'scenario':<34} {'etcd/s':>10} {'berth/s':>10} {'ratio':>6} {'etcd p99':>9} {'berth p99':>9}")
for scenario, row in summary.items():
    if scenario == "failover":
        continue
    e, b = row.get("etcd", {}), row.get("berth", {})
    print(f"{scenario:<34} {e.get('throughput_per_sec', 0):>10.0f} {b.get('throughput_per_sec', 0):>10.0f} "
          f"{row.get('ratio_throughput', 0):>6.2f} {e.get('latency_ms_p99', 0):>9.2f} {b.get('latency_ms_p99', 0):>9.2f}")
for sys_, f in summary.get("failover", {}).items():
    print(f"failover {sys_}: longest write gap {f['max_gap_ms']:.0f} ms")

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [s for s in summary if s != "failover"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = range(len(names))
    for i, sys_ in enumerate(("etcd", "berth")):
        axes[0].bar([j + i * 0.4 for j in x], [summary[n].get(sys_, {}).get("throughput_per_sec", 0) for n in names], 0.4, label=sys_)
        axes[1].bar([j + i * 0.4 for j in x], [summary[n].get(sys_, {}).get("latency_ms_p99", 0) for n in names], 0.4, label=sys_)
    for ax, title in zip(axes, ("throughput (req/s, median of rounds)", "p99 latency (ms)")):
        ax.set_xticks([j + 0.2 for j in x])
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "kv.png"), dpi=100)
    print("plot:", os.path.join(out, "kv.png"))
except ImportError:
    print("matplotlib missing: no plot")
