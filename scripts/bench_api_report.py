#!/usr/bin/env python3
"""Plot one `berth bench api` result (JSON) next to it as a PNG: CRUD throughput and latency
per phase, watch delivery latency and server memory per watcher."""
import json
import os
import sys

path = sys.argv[1]
r = json.load(open(path))
png = os.path.splitext(path)[0] + ".png"
phases = r["phases"]
w = r.get("watch")
for p in phases:
    print(f"{p['phase']:<7} {p['ops_per_sec']:>9.0f}/s  p50 {p['latency_ms_p50']:.2f} ms  p99 {p['latency_ms_p99']:.2f} ms")
if w:
    print(f"watch   {w['watchers']} watchers: delivery p50 {w['delivery_ms_p50']:.1f} ms p99 {w['delivery_ms_p99']:.1f} ms; "
          f"{w['deliveries']}/{w['deliveries_expected']} delivered; "
          f"server memory per watcher {w.get('server_rss_bytes_per_watcher') or 0:.0f} B "
          f"(after the stream {w.get('server_rss_bytes_per_watcher_after_stream') or 0:.0f} B)")
    if w.get("server_heap_bytes_per_watcher") is not None:
        print(f"        {w.get('watch_rpc', 'single')} RPC, {w['connections']} connections; server heap in use per watcher "
              f"{w['server_heap_bytes_per_watcher']:.0f} B (after the stream "
              f"{w.get('server_heap_bytes_per_watcher_after_stream') or 0:.0f} B)")
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib missing: no plot")
    sys.exit(0)
fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
names = [p["phase"] for p in phases]
axes[0].bar(names, [p["ops_per_sec"] for p in phases], color="tab:blue")
axes[0].set_title(f"ops/s ({r['clients']} clients, {r['objects']} pods)")
x = range(len(names))
axes[1].bar([i - 0.2 for i in x], [p["latency_ms_p50"] for p in phases], 0.4, label="p50")
axes[1].bar([i + 0.2 for i in x], [p["latency_ms_p99"] for p in phases], 0.4, label="p99")
axes[1].set_xticks(list(x))
axes[1].set_xticklabels(names)
axes[1].set_title("latency (ms)")
axes[1].legend()
if w:
    labels = ["delivery p50", "delivery p99", "write ack p50", "write ack p99"]
    vals = [w["delivery_ms_p50"], w["delivery_ms_p99"], w["write_ack_ms_p50"], w["write_ack_ms_p99"]]
    axes[2].bar(labels, vals, color=["tab:green", "tab:green", "tab:gray", "tab:gray"])
    per = w.get("server_rss_bytes_per_watcher_after_stream") or w.get("server_rss_bytes_per_watcher")
    mem = f", {per / 1024:.1f} KiB/watcher" if per else ""
    axes[2].set_title(f"watch fan-out: {w['watchers']} watchers (ms{mem})")
    axes[2].tick_params(axis="x", labelsize=8)
fig.suptitle(f"berth bench api, {len(r['servers'])} member(s)")
fig.tight_layout()
fig.savefig(png, dpi=100)
print("plot:", png)
