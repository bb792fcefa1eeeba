#!/usr/bin/env python3
"""Draws latency.png and throughput.png for a `berth jepsen run` report folder.

Reads DIR/history.jsonl (invoke/ok/fail/info entries, times in ns since the start of the run),
plots per-operation latency over time (by outcome) and completed operations per second, and
shades the nemesis intervals (process "nemesis", start-X ... stop-X). Exits 3 with a message
if matplotlib is missing (the runner then warns and carries on).
"""
import json
import os
import sys

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed", file=sys.stderr)
    sys.exit(3)

COLORS = {"ok": "#3c9a4a", "fail": "#d9534f", "info": "#f0ad4e"}
FAULT_COLORS = {"kill": "#f4c7c3", "pause": "#c6dbef", "partition": "#fde0a5", "netem": "#d9d2e9",
                "member": "#c7e9c0", "disk": "#d9d9d9"}


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def pair(entries):
    open_, ops, nemesis, started = {}, [], [], {}
    end = entries[-1]["time"] if entries else 0
    for e in entries:
        p = e["process"]
        if isinstance(p, str):
            f = e["f"]
            if e["type"] == "invoke" and f.startswith("start-"):
                started.setdefault(f[6:], e["time"])
            elif e["type"] == "info" and f.startswith("stop-") and f[5:] in started:
                nemesis.append((started.pop(f[5:]), e["time"], f[5:]))
            continue
        if e["type"] == "invoke":
            open_[p] = e
        elif p in open_:
            inv = open_.pop(p)
            ops.append((inv["time"], e["time"], e["type"], e["f"]))
    nemesis.extend((t, end, f) for f, t in started.items())
    return ops, nemesis, end


def shade(ax, nemesis):
    seen = set()
    for start, stop, f in nemesis:
        ax.axvspan(start / 1e9, stop / 1e9, color=FAULT_COLORS.get(f, "#f4c7c3"), alpha=0.6,
                   label=None if f in seen else f"nemesis {f}")
        seen.add(f)


def main(d):
    ops, nemesis, end = pair(load(os.path.join(d, "history.jsonl")))
    fig, ax = plt.subplots(figsize=(12, 4))
    shade(ax, nemesis)
    for kind, color in COLORS.items():
        xs = [c / 1e9 for (i, c, t, _) in ops if t == kind]
        ys = [(c - i) / 1e6 for (i, c, t, _) in ops if t == kind]
        if xs:
            ax.scatter(xs, ys, s=3, color=color, label=kind)
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(d, "latency.png"), dpi=100)

    fig, ax = plt.subplots(figsize=(12, 4))
    shade(ax, nemesis)
    seconds = int(end / 1e9) + 1
    for kind, color in COLORS.items():
        counts = [0] * seconds
        for (_, c, t, _) in ops:
            if t == kind:
                counts[min(int(c / 1e9), seconds - 1)] += 1
        ax.plot(range(seconds), counts, color=color, label=kind, drawstyle="steps-post")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("operations completed per second")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(d, "throughput.png"), dpi=100)


if __name__ == "__main__":
    main(sys.argv[1])
