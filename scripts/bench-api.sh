#!/usr/bin/env bash
# Benchmark of the typed Resources API: starts a local Berth cluster on loopback (3 members,
# or 1), runs `berth bench api` against it (pod creates/updates/lists by many clients, then a
# watch fan-out whose watchers all use the first member, whose RSS and heap bytes in use
# (its /metrics) are read before and after),
# and writes bench/api-<date>.json and bench/api-<date>.png.
#
#   scripts/bench-api.sh [MEMBERS] [-- extra `berth bench api` flags]
#   e.g. scripts/bench-api.sh 3                       # the full run: 10,000 watchers
#        scripts/bench-api.sh 1 -- --watchers 1000 --objects 500 --events 50
#
# BERTH_BIN overrides the binary (default: a release build). Every server this starts listens
# on 127.0.0.1 and is stopped by its PID on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
members="${1:-3}"
shift || true
[ "${1:-}" = "--" ] && shift
case "$members" in 1|3) ;; *) echo "MEMBERS must be 1 or 3" >&2; exit 2 ;; esac
"$root/scripts/deps.sh"
python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib
if [ -z "${BERTH_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/berth-target}"
  cargo build --release --manifest-path "$root/Cargo.toml" -p berth-cli
  BERTH_BIN="$CARGO_TARGET_DIR/release/berth"
fi
stamp="$(date +%Y-%m-%d-%H%M%S)"
out="$root/bench/api-$stamp.json"
mkdir -p "$root/bench"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Room for the bench's connections (watchers share them, --watchers-per-conn each).
ulimit -n 65536 2>/dev/null || true
cluster=""
for i in $(seq "$members"); do cluster+="${cluster:+,}b$i=127.0.0.1:2721$i"; done
eps=""
for i in $(seq "$members"); do
  "$BERTH_BIN" server --name "b$i" --data-dir "$work/b$i" --peer-addr "127.0.0.1:2721$i" \
    --client-addr "127.0.0.1:2720$i" --metrics-addr "127.0.0.1:2722$i" \
    --initial-cluster "$cluster" 2>"$work/b$i.log" &
  pids+=($!)
  eps+="${eps:+,}127.0.0.1:2720$i"
done
first_pid="${pids[0]}"
# Ready once the server has created the default namespace (a Resources read that succeeds).
for _ in $(seq 200); do
  ETCDCTL_API=3 etcdctl --endpoints "$eps" get /registry/namespaces/default --keys-only 2>/dev/null \
    | grep -q default && break
  sleep 0.1
done
"$BERTH_BIN" bench api --server "$eps" --server-pid "$first_pid" --server-metrics 127.0.0.1:27221 \
  --out "$out" "$@"
# Record what ran: the member count and the binary (a debug build's figures are not comparable).
python3 - "$out" "$members" "$BERTH_BIN" "$*" <<'PY'
import json, sys
path, members, binary, flags = sys.argv[1:5]
r = json.load(open(path))
r.update({"members": int(members), "berth_bin": binary, "bench_flags": flags})
json.dump(r, open(path, "w"), indent=2)
PY
python3 "$root/scripts/bench_api_report.py" "$out"
