#!/usr/bin/env bash
# The collector's benchmarks on every backend, against throw-away ClickHouse servers
# (Debian's 18.16 and a current 26.9 from chdb):
#
#   deploy/dev/bench.sh [ingest] [--quick]   # simulated agents stream a day of CPU profiles into a
#                                            # real collector, in the agent's own form and as pprof
#                                            # (collector/benches/ingest.rs): 50 agents, 1500
#                                            # profiles, then the service's flame graph of the day
#   deploy/dev/bench.sh incidents [--quick]  # a week of a fleet's data (1M trigger events, 100k
#                                            # incidents and profiles); incident list and detail
#                                            # latency through the HTTP API (benches/incidents.rs)
#
# --quick is a smoke run (HOLMES_BENCH_QUICK=1). Other knobs, as environment variables:
# for ingest HOLMES_BENCH_BACKENDS=sqlite,ch18,chcurrent and HOLMES_BENCH_INPUTS=stream,native,pprof
# (runs to make), HOLMES_BENCH_AGENTS, HOLMES_BENCH_PROFILES, HOLMES_BENCH_POOL (distinct
# stacks), HOLMES_BENCH_BATCH_MS (the ClickHouse batch delay); for incidents
# HOLMES_BENCH_BACKENDS=sqlite|clickhouse and HOLMES_BENCH_KEEP_DB=1 (keeps the ClickHouse
# database until ClickHouse stops). Builds in release mode, starts both ClickHouse servers on
# free loopback ports in temporary folders and stops them whatever happens.
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

printf '\n== starting ClickHouse 18.16 and 26.9\n'
eval "$(deploy/dev/clickhouse.sh start)"
trap 'deploy/dev/clickhouse.sh stop' EXIT
eval "$(deploy/dev/chdb.sh start)"
trap 'deploy/dev/chdb.sh stop; deploy/dev/clickhouse.sh stop' EXIT

printf '\n== cargo bench -p holmes-collector --bench %s\n' "$bench"
cargo bench -p holmes-collector --bench "$bench" -- "$@"
