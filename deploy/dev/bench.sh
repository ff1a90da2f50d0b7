#!/usr/bin/env bash
# The collector's benchmarks on both backends, against a throw-away ClickHouse:
#
#   deploy/dev/bench.sh [ingest] [--quick]   # simulated agents stream CPU profiles into a real
#                                            # collector (collector/benches/ingest.rs): 50 agents,
#                                            # 1500 profiles, a few minutes
#   deploy/dev/bench.sh incidents [--quick]  # a week of a fleet's data (1M trigger events, 100k
#                                            # incidents and profiles); incident list and detail
#                                            # latency through the HTTP API (benches/incidents.rs)
#
# --quick is a smoke run (HOLMES_BENCH_QUICK=1). Other knobs, as environment variables:
# HOLMES_BENCH_BACKENDS=sqlite|clickhouse (one backend only); for ingest HOLMES_BENCH_AGENTS,
# HOLMES_BENCH_PROFILES, HOLMES_BENCH_POOL (distinct stacks), HOLMES_BENCH_BATCH_MS (the
# ClickHouse batch delay); for incidents HOLMES_BENCH_KEEP_DB=1 keeps the ClickHouse
# database (until ClickHouse stops). Builds in release mode, starts ClickHouse on a free
# loopback port in a temporary folder and stops it whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."

bench=ingest
case "${1:-}" in
  ingest|incidents) bench=$1; shift ;;
esac
if [ "${1:-}" = "--quick" ]; then
  export HOLMES_BENCH_QUICK=1
  shift
fi

printf '\n== building the %s bench (release)\n' "$bench"
cargo bench -p holmes-collector --bench "$bench" --no-run

printf '\n== starting ClickHouse\n'
eval "$(deploy/dev/clickhouse.sh start)"
trap 'deploy/dev/clickhouse.sh stop' EXIT

printf '\n== cargo bench -p holmes-collector --bench %s\n' "$bench"
cargo bench -p holmes-collector --bench "$bench" -- "$@"
