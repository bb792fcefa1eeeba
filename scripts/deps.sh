#!/usr/bin/env bash
# Installs the system packages Berth builds and tests with (Debian; run as root).
# Safe to run again: it only installs what is missing. Extra package names may be given.
set -euo pipefail
need=()
# nftables and iproute2 (ip, tc netem): the lab network and the faults of `berth jepsen run`;
# iputils-ping: the pod network tests; runc (the agent's fallback runtime), busybox-static (the
# offline test image), util-linux (nsenter, mount), docker-registry (the registry the pull tests
# push to and pull from, started by the tests on loopback; its packaged service is not used).
for pkg in libclang-dev clang protobuf-compiler etcd-client iproute2 iputils-ping nftables curl runc busybox-static util-linux docker-registry "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Python grpcio for the compatibility test of the Resources API (a client no one here wrote).
if ! python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
  echo "installing: grpcio grpcio-tools (pip)"
  python3 -m pip install -q --disable-pip-version-check grpcio grpcio-tools
fi
# matplotlib draws the latency and throughput charts of `berth jepsen run` (optional: the run
# only warns without it).
if ! python3 -c 'import matplotlib' 2>/dev/null; then
  echo "installing: matplotlib (pip)"
  python3 -m pip install -q --disable-pip-version-check matplotlib
fi
