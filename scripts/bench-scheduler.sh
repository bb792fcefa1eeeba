#!/usr/bin/env bash
# Scheduler benchmark: a Berth cluster on this machine's loopback (servers with --no-scheduler
# and --no-controllers: hollow nodes renew no Leases, so node lifecycle would evict their pods),
# then `berth bench scheduler` with hollow nodes: pods/s bound by 1 and 3 scheduler instances
# (started in the bench process against the cluster) and packing quality of MostAllocated
# against the lower bound; writes bench/scheduler-<date>.json and .png.
#
#   scripts/bench-scheduler.sh [NODES] [PODS] [MEMBERS]
#
# Defaults are small (200 nodes, 1000 pods, 3 members). BERTH_PROFILE=debug uses a debug build
# (quick to build, slow to run: its figures only show that the bench works).
# Raft timings are relaxed (100 ms heartbeats, 1 s election timeout) so that a busy shared
# machine does not turn the run into leader elections.
# Every server this starts listens on 127.0.0.1 and is stopped by its PID on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
nodes="${1:-200}"
pods="${2:-1000}"
members="${3:-3}"
profile="${BERTH_PROFILE:-release}"
date="$(date +%F)"
out_json="$root/bench/scheduler-$date.json"
out_png="$root/bench/scheduler-$date.png"
python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/berth-target}"
if [ "$profile" = release ]; then
  cargo build --release --manifest-path "$root/Cargo.toml" -p berth-cli
else
  cargo build --manifest-path "$root/Cargo.toml" -p berth-cli
fi
berth="$CARGO_TARGET_DIR/$profile/berth"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

initial=""
eps=""
for i in $(seq "$members"); do
  initial="${initial:+$initial,}s$i=127.0.0.1:2731$i"
  eps="${eps:+$eps,}127.0.0.1:2730$i"
done
for i in $(seq "$members"); do
  "$berth" server --name "s$i" --data-dir "$work/s$i" --peer-addr "127.0.0.1:2731$i" \
    --client-addr "127.0.0.1:2730$i" --initial-cluster "$initial" --no-scheduler --no-controllers \
    --heartbeat-interval 100 --election-timeout 1000 \
    2>"$work/s$i.log" &
  pids+=($!)
done
for _ in $(seq 100); do "$berth" cluster members --server "$eps" >/dev/null 2>&1 && break; sleep 0.2; done

if ! "$berth" bench scheduler --server "$eps" --nodes "$nodes" --pods "$pods" \
  --instances 1,3 --policies MostAllocated,LeastAllocated --json "$out_json" 2>"$work/bench.log"; then
  grep -v '^ ' "$work/bench.log" | tail -20 >&2
  for i in $(seq "$members"); do echo "== s$i" >&2; tail -5 "$work/s$i.log" >&2; done
  exit 1
fi
python3 - "$out_json" "$out_png" "$profile" "$members" <<'PY'
import json, sys
src, png, profile, members = sys.argv[1:5]
d = json.load(open(src))
d["build_profile"] = profile
d["server_members"] = int(members)
json.dump(d, open(src, "w"), indent=2)
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
runs = d["runs"]
labels = [f'{r["policy"]}\n{r["instances"]} inst.' for r in runs]
fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
axes[0].bar(labels, [r["pods_per_sec"] for r in runs], color="tab:blue")
axes[0].set_title("pods bound per second (cold start to last bind)")
axes[1].bar(labels, [r["nodes_used"] for r in runs], color="tab:orange", label="nodes used")
lb = runs[0]["nodes_lower_bound"]
axes[1].axhline(lb, color="black", linestyle="--", label=f"lower bound ({lb})")
axes[1].set_title("nodes holding pods")
axes[1].legend()
fig.suptitle(f'berth bench scheduler: {d["nodes"]} hollow nodes, {d["pods"]} pods, '
             f'{members}-member cluster, {profile} build')
fig.tight_layout()
fig.savefig(png, dpi=100)
for r in runs:
    print(f'{r["policy"]:<15} {r["instances"]} inst.: {r["pods_per_sec"]:8.0f} pods/s, '
          f'{r["node_conflicts"]:5d} node conflicts, nodes used {r["nodes_used"]} '
          f'(lower bound {r["nodes_lower_bound"]}, x{r["packing_ratio"]:.2f}), '
          f'{r["overcommitted_nodes"]} overcommitted')
print(f"wrote {src} and {png}")
PY
