#!/usr/bin/env bash
# Side-by-side benchmark: a 3-member etcd (Debian's etcd-server 3.4) and a 3-member Berth
# cluster on this machine's loopback, the same `berth bench kv` load against each in
# alternating rounds, then Berth/etcd ratios, a JSON summary and a PNG plot.
#
#   scripts/bench-vs-etcd.sh [OUT_DIR] [ROUNDS] [SECONDS_PER_RUN]
#
# Every server this starts listens on 127.0.0.1 and is stopped by its PID on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/bench/results/kv-$(date +%Y%m%d-%H%M%S)}"
rounds="${2:-3}"
secs="${3:-10}"
mkdir -p "$out"
"$root/scripts/deps.sh" etcd-server
python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/berth-target}"
cargo build --release --manifest-path "$root/Cargo.toml" -p berth-cli
berth="$CARGO_TARGET_DIR/release/berth"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

etcd_cluster="e1=http://127.0.0.1:23801,e2=http://127.0.0.1:23802,e3=http://127.0.0.1:23803"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$work/etcd$i" \
    --listen-client-urls "http://127.0.0.1:2379$i" --advertise-client-urls "http://127.0.0.1:2379$i" \
    --listen-peer-urls "http://127.0.0.1:2380$i" --initial-advertise-peer-urls "http://127.0.0.1:2380$i" \
    --initial-cluster "$etcd_cluster" --initial-cluster-state new --logger zap --log-outputs "$work/etcd$i.log" &
  pids+=($!)
done
berth_cluster="b1=127.0.0.1:27101,b2=127.0.0.1:27102,b3=127.0.0.1:27103"
for i in 1 2 3; do
  "$berth" server --name "b$i" --data-dir "$work/berth$i" --peer-addr "127.0.0.1:2710$i" \
    --client-addr "127.0.0.1:2700$i" --initial-cluster "$berth_cluster" 2>"$work/berth$i.log" &
  pids+=($!)
done
etcd_eps="127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
berth_eps="127.0.0.1:27001,127.0.0.1:27002,127.0.0.1:27003"
for eps in "$etcd_eps" "$berth_eps"; do
  for _ in $(seq 100); do ETCDCTL_API=3 etcdctl --endpoints "$eps" put warmup 1 >/dev/null 2>&1 && break; sleep 0.2; done
done

# name|flags
scenarios=(
  "put-1client|--op put --conns 1 --clients 1"
  "put-1000clients|--op put --conns 100 --clients 1000"
  "range-linearizable-1000clients|--op range --conns 100 --clients 1000"
  "range-serializable-1000clients|--op range-serializable --conns 100 --clients 1000"
)
for r in $(seq "$rounds"); do
  for s in "${scenarios[@]}"; do
    name="${s%%|*}"; flags="${s#*|}"
    # Alternate which system goes first, so drift on a noisy machine hits both alike.
    if [ $((r % 2)) -eq 1 ]; then order="etcd berth"; else order="berth etcd"; fi
    for sys in $order; do
      if [ "$sys" = etcd ]; then eps="$etcd_eps"; else eps="$berth_eps"; fi
      # shellcheck disable=SC2086
      "$berth" bench kv --server "$eps" $flags --duration-secs "$secs" --json "$out/$sys-$name-r$r.json" \
        | sed "s/^/[$sys r$r] /"
    done
  done
done

# Failover: SIGKILL each system's leader while one client writes.
leader_pid() { # $1 = endpoints, $2 = first client port digit prefix, prints the pid
  local eps="$1" leader_ep
  leader_ep=$(ETCDCTL_API=3 etcdctl --endpoints "$eps" endpoint status -w json \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print([e["Endpoint"] for e in d if e["Status"]["leader"]==e["Status"]["header"]["member_id"]][0])')
  local port="${leader_ep##*:}"
  ss -ltnp "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
}
for sys in etcd berth; do
  if [ "$sys" = etcd ]; then eps="$etcd_eps"; else eps="$berth_eps"; fi
  pid=$(leader_pid "$eps")
  "$berth" bench failover --server "$eps" --duration-secs 8 --request-timeout-ms 500 \
    --json "$out/$sys-failover.json" | sed "s/^/[$sys] /" &
  bp=$!
  sleep 3
  kill -9 "$pid"
  wait "$bp"
done

python3 "$root/scripts/bench_report.py" "$out"
