#!/usr/bin/env bash
# The benchmarks behind BENCHMARKS.md, and the report itself, in one command.
#
#   scripts/bench.sh [--report-only] [ARGS...] [-- ARGS...]
#
# Runs `cargo bench --locked` for the sync, scenarios, datapath, ipset and nft benches
# (ARGS go to every bench, e.g. a criterion filter or `--quick`; the ipset and nft benches'
# `bound` groups leave the kernel bounds in bound.jsonl), records the tool versions, the
# commit and the machine in env.txt beside the records, then writes BENCHMARKS.md and
# docs/bench/*.svg with `bench-report`. `--report-only` skips the benches and the
# environment and regenerates the report from the records already there.
#
# The benches need root (each works in network namespaces of its own); the report
# doesn't. Records: $NETFENCE_BENCH_DIR, else $CARGO_TARGET_DIR/netfence-bench, else
# target/netfence-bench.
set -euo pipefail
cd "$(dirname "$0")/.."

report_only=0
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --report-only) report_only=1 ;;
    --) shift; args+=("$@"); break ;;
    *) args+=("$1") ;;
  esac
  shift
done

records="${NETFENCE_BENCH_DIR:-${CARGO_TARGET_DIR:-target}/netfence-bench}"

if [ "$report_only" -eq 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the benches need root (they build network namespaces): run as root, or --report-only" >&2
    exit 2
  fi
  # Benches not in the manifest (yet) are skipped rather than failing the run.
  benches=()
  for b in sync scenarios datapath ipset nft; do
    if grep -q "^name = \"$b\"" Cargo.toml; then
      benches+=(--bench "$b")
    else
      echo "bench.sh: no bench '$b' in Cargo.toml, skipped" >&2
    fi
  done
  if [ ${#benches[@]} -eq 0 ]; then
    echo "bench.sh: none of the report's benches is in Cargo.toml" >&2
    exit 1
  fi
  started="$(date -u '+%Y-%m-%d %H:%M UTC')"
  command="scripts/bench.sh${args[*]:+ -- ${args[*]}}"
  cargo bench --locked "${benches[@]}" -- "${args[@]}"

  # The report binary never starts a process, so what takes one is learnt here.
  version() {
    if command -v "$1" >/dev/null 2>&1; then
      "$@" 2>&1 | head -n 1
    else
      echo "not installed"
    fi
  }
  commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit="$commit (with uncommitted changes)"
  fi
  mkdir -p "$records"
  {
    echo "# written by scripts/bench.sh; read by bench-report"
    echo "date=$started"
    echo "git=$commit"
    echo "command=$command"
    echo "cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "cores=$(nproc)"
    echo "memory=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel=$(uname -sr) $(uname -m)"
    echo "iptables-nft=$(version iptables-nft --version)"
    echo "nft=$(version nft --version)"
    echo "ipset=$(version ipset --version)"
    echo "rustc=$(version rustc --version)"
  } >"$records/env.txt"
fi

cargo run --release --locked -p bench-report -- --records "$records" --env "$records/env.txt"
