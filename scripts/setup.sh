#!/usr/bin/env bash
# Installs what netfence needs on Debian 12 (run as root): the C libraries it links,
# clang for bindgen, and the userspace tools the tests use as oracles and baselines.
set -euo pipefail
if ! dpkg -s libnftnl-dev libmnl-dev libclang-dev clang pkg-config nftables iptables ipset iproute2 >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config libnftnl-dev libmnl-dev clang libclang-dev \
    nftables iptables ipset iproute2 >/dev/null
fi
