#!/usr/bin/env bash
# Pod start benchmark: starts one `berth server` and one `berth agent` on loopback (the agent
# with the embedded libcontainer runtime and `--pod-network none`: pods get a fresh network
# namespace with loopback only, no bridge or veth), packs Debian's busybox-static into the
# agent's store as busybox:1.36, runs `berth bench podstart` (N pods, create -> Running by
# watch; then runc from the same unpacked image as the floor; the agent's RSS), and writes
# bench/podstart-<date>.json and .png.
#
#   scripts/bench-podstart.sh [PODS] [-- extra `berth bench podstart` flags]
#   e.g. scripts/bench-podstart.sh 200
#
# BERTH_BIN overrides the binary (default: a release build); NODE names the node, its run dir
# (/run/NODE) and its cgroups (NODE, NODE-runc for the floor). Every process this starts is
# stopped by its PID on exit; the server listens on 127.0.0.1 only.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
pods="${1:-50}"
shift || true
[ "${1:-}" = "--" ] && shift
node="${NODE:-podstart-n1}"
"$root/scripts/deps.sh"
if [ -z "${BERTH_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/berth-target}"
  cargo build --release --manifest-path "$root/Cargo.toml" -p berth-cli
  BERTH_BIN="$CARGO_TARGET_DIR/release/berth"
fi
stamp="$(date +%Y-%m-%d-%H%M%S)"
out="$root/bench/podstart-$stamp.json"
mkdir -p "$root/bench"
work="$(mktemp -d)"
server_pid=""
agent_pid=""
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  for d in /sys/fs/cgroup/*/"$node" /sys/fs/cgroup/"$node" /sys/fs/cgroup/*/"$node-runc" /sys/fs/cgroup/"$node-runc"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  rm -rf "/run/$node" "$work"
}
trap cleanup EXIT

port="${PORT:-27301}"
"$BERTH_BIN" server --name pb1 --data-dir "$work/server" --peer-addr "127.0.0.1:$((port + 1))" \
  --client-addr "127.0.0.1:$port" --initial-cluster "pb1=127.0.0.1:$((port + 1))" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 200); do
  ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$port" get /registry/namespaces/default --keys-only 2>/dev/null \
    | grep -q default && break
  sleep 0.1
done
# The image: busybox-static and a link per applet.
rootfs="$work/busybox-rootfs"
mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
cp /bin/busybox "$rootfs/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$rootfs/bin/$a"; done
"$BERTH_BIN" image build --rootfs "$rootfs" --tag busybox:1.36 --data-dir "$work/agent" >/dev/null
"$BERTH_BIN" agent --server "127.0.0.1:$port" --name "$node" --data-dir "$work/agent" \
  --run-dir "/run/$node" --cgroup-parent "$node" --node-ip 127.0.0.1 --pod-network none \
  2>"$work/agent.log" &
agent_pid=$!
"$BERTH_BIN" bench podstart --server "127.0.0.1:$port" --node "$node" --pods "$pods" \
  --agent-data-dir "$work/agent" --agent-pid "$agent_pid" --runc-cgroup-parent "$node-runc" \
  --out "$out" "$@"
python3 - "$out" "$BERTH_BIN" "$*" <<'PY'
import json, sys
path, binary, flags = sys.argv[1:4]
r = json.load(open(path))
r.update({"berth_bin": binary, "bench_flags": flags, "runtime": "libcontainer", "pod_network": "none"})
json.dump(r, open(path, "w"), indent=2)
PY
python3 "$root/scripts/bench_podstart_report.py" "$out"
