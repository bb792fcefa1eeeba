#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, unit, storage-conformance and
# integration tests (real `berth server` processes on loopback, etcdctl against them).
# Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# A target dir outside the clone doubles as a build cache between runs and clones.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/berth-target}"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
