#!/usr/bin/env bash
# The ingest benchmark on both backends: simulated agents stream CPU profiles into a real
# collector on SQLite, then on a throw-away ClickHouse (collector/benches/ingest.rs).
#
#   deploy/dev/bench.sh               # full run: 50 agents, 1500 profiles (a few minutes)
#   deploy/dev/bench.sh --quick       # smoke run in seconds (HOLMES_BENCH_QUICK=1)
#
# Other knobs, as environment variables: HOLMES_BENCH_AGENTS, HOLMES_BENCH_PROFILES,
# HOLMES_BENCH_POOL (distinct stacks), HOLMES_BENCH_BACKENDS=sqlite|clickhouse,
# HOLMES_BENCH_BATCH_MS (the ClickHouse batch delay). Builds in release mode, starts
# ClickHouse on a free loopback port in a temporary folder and stops it whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "--quick" ]; then
  export HOLMES_BENCH_QUICK=1
  shift
fi

printf '\n== building the bench (release)\n'
cargo bench -p holmes-collector --bench ingest --no-run

printf '\n== starting ClickHouse\n'
eval "$(deploy/dev/clickhouse.sh start)"
trap 'deploy/dev/clickhouse.sh stop' EXIT

printf '\n== cargo bench -p holmes-collector --bench ingest\n'
cargo bench -p holmes-collector --bench ingest -- "$@"
