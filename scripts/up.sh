#!/usr/bin/env bash
# Starts a local one-node Berth cluster with a demo workload (`berth up`; data under ./berth-data).
# Installs what it needs (scripts/deps.sh) and builds. Run as root (namespaces, cgroups, a bridge).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/deps.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/berth-target}"
cargo build --manifest-path "$root/Cargo.toml" -p berth-cli
exec "$CARGO_TARGET_DIR/debug/berth" up "$@"
