#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, unit, property and kernel tests.
# Needs root (kernel tests run in their own network namespaces), Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "the kernel tests need root: run as root (they only touch namespaces they create)" >&2
  exit 2
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# Smoke run of the benchmarks: each runs briefly, baselines included.
cargo bench --locked --bench ipset --bench nft --bench plan --bench compile --bench sync --bench scenarios --bench datapath -- --quick --warm-up-time 0.2 --measurement-time 0.5
