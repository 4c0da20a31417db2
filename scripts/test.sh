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
# The data-path layout variants of BENCHMARKS.md's notes must still apply to the ruleset
# netfence writes: each rewrites it, and the bench checks that the pair still connects and
# the intruder is still kept out.
for v in benches/datapath-variants/*.sh; do
  case "$v" in */groups.sh) continue ;; esac
  NETFENCE_DATAPATH_VARIANT="$v" cargo bench --locked --bench datapath -- --quick --warm-up-time 0.2 --measurement-time 0.5 'netfence/'
done
