#!/usr/bin/env bash
# Recovery benchmark: `berth bench recovery` starts its own cluster on loopback (3 servers,
# 3 agents with --pod-network none, a 6-replica busybox Deployment), kills agents and
# control-plane members with SIGKILL, and times the repair; writes bench/recovery-<date>.json
# and .png.
#
#   scripts/bench-recovery.sh [NODE_ROUNDS] [MEMBER_ROUNDS] [-- extra `berth bench recovery` flags]
#   e.g. scripts/bench-recovery.sh 10 10
#        BERTH_BIN=/var/tmp/x/debug/berth scripts/bench-recovery.sh 3 4
#
# BERTH_BIN overrides the binary (default: a release build). Needs root (agents make
# namespaces and cgroups) and /bin/busybox (busybox-static). Every process it starts listens
# on 127.0.0.1 and is stopped by its PID; node names, run dirs and cgroups start with "bv".
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
node_rounds="${1:-10}"
member_rounds="${2:-10}"
shift $(( $# < 2 ? $# : 2 )) || true
[ "${1:-}" = "--" ] && shift
"$root/scripts/deps.sh"
python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib
if [ -z "${BERTH_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/berth-target}"
  cargo build --release --manifest-path "$root/Cargo.toml" -p berth-cli
  BERTH_BIN="$CARGO_TARGET_DIR/release/berth"
fi
stamp="$(date +%Y-%m-%d-%H%M%S)"
out="$root/bench/recovery-$stamp.json"
mkdir -p "$root/bench"
"$BERTH_BIN" bench recovery --node-rounds "$node_rounds" --member-rounds "$member_rounds" \
  --out "$out" "$@" >/dev/null
# Record what ran (a debug build's figures are not comparable with a release build's).
python3 - "$out" "$BERTH_BIN" "$*" <<'PY'
import json, sys
path, binary, flags = sys.argv[1:4]
r = json.load(open(path))
r.update({"berth_bin": binary, "bench_flags": flags,
          "build": "debug" if "/debug/" in binary else "release"})
json.dump(r, open(path, "w"), indent=2)
PY
python3 "$root/scripts/bench_recovery_report.py" "$out"
