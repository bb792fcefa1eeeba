#!/usr/bin/env bash
# Starts a local single-member Berth cluster (data under ./berth-data). Installs what it needs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/deps.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/berth-target}"
cargo build --manifest-path "$root/Cargo.toml" -p berth-cli
exec "$CARGO_TARGET_DIR/debug/berth" up "$@"
