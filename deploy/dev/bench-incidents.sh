#!/usr/bin/env bash
# The incident query benchmark on both backends: a week of a fleet's data (1M trigger
# events, 100k incidents, 100k profiles) in SQLite, then in a throw-away ClickHouse;
# incident list and detail latency through the HTTP API (collector/benches/incidents.rs).
#
#   deploy/dev/bench-incidents.sh            # full size (several minutes)
#   deploy/dev/bench-incidents.sh --quick    # 10x smaller (HOLMES_BENCH_QUICK=1)
#
# HOLMES_BENCH_BACKENDS=sqlite|clickhouse runs only one; HOLMES_BENCH_KEEP_DB=1 keeps the
# ClickHouse database for EXPLAIN and the query log (until ClickHouse stops).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "${1:-}" = "--quick" ]; then
  export HOLMES_BENCH_QUICK=1
  shift
fi

printf '\n== building the bench (release)\n'
cargo bench -p holmes-collector --bench incidents --no-run

printf '\n== starting ClickHouse\n'
eval "$(deploy/dev/clickhouse.sh start)"
trap 'deploy/dev/clickhouse.sh stop' EXIT

printf '\n== cargo bench -p holmes-collector --bench incidents\n'
cargo bench -p holmes-collector --bench incidents -- "$@"
