#!/usr/bin/env bash
# The fleet load test behind the README's scale table: holmes-loadgen's simulated agents
# against real collector processes on ClickHouse, in both topologies, one after the other:
#
#   deploy/dev/loadgen.sh [single|kafka|both] [holmes-loadgen flags...]
#
#   single  one collector (role `all`): ingest, store, correlate, query
#   kafka   one `ingest` collector producing to a Kafka topic (a tansu broker), two
#           `process` collectors consuming it as one group, all storing into ClickHouse
#
# Default flags: 50 agents (5 services x 10), 60 s, every service spiking every 10 s
# (each instance: a trigger and a 1000-sample CPU profile). Builds release binaries,
# starts ClickHouse (deploy/dev/clickhouse.sh) and, for kafka, the broker
# (deploy/dev/kafka.sh) on free loopback ports in temporary folders, and stops
# everything whatever happens. Prints holmes-loadgen's report per topology and a
# Markdown table row for each. HOLMES_LOADGEN_MAX_PROFILES sets the collectors'
# `[incidents] max_profiles_per_incident` (0: no capture budget, every profile stored:
# the throughput runs; unset: the default budget of 10 per kind).
# HOLMES_LOADGEN_MAX_STREAM_TABLE_BYTES sets the ingesting collectors' `[limits]
# max_stream_table_bytes` (the memory all agent streams' tables may hold; the agents
# then send some streams' profiles self-contained, and reconnect when a stream is ended).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

mode=both
case "${1:-}" in
  single|kafka|both) mode=$1; shift ;;
esac

say() { printf '\n== %s\n' "$*" >&2; }

say "building holmes-collector and holmes-loadgen (release)"
cargo build --release -p holmes-collector --bin holmes-collector -p holmes-devtools --bin holmes-loadgen --locked >&2
bin=${CARGO_TARGET_DIR:-$root/target}/release
# HOLMES_LOADGEN_COLLECTOR runs another build's collector binary against the same load
# (a before/after comparison in one sitting).
collector=${HOLMES_LOADGEN_COLLECTOR:-$bin/holmes-collector}

work=$(mktemp -d -t holmes-loadgen.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${HOLMES_CH_DIR:-}" ] && deploy/dev/clickhouse.sh stop >/dev/null 2>&1 || true
  [ -n "${HOLMES_KAFKA_DIR:-}" ] && deploy/dev/kafka.sh stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say "starting ClickHouse"
eval "$(deploy/dev/clickhouse.sh start)"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Writes a collector config: $1 name, $2 role, $3 database; prints "grpc http".
config() {
  local name=$1 role=$2 db=$3 grpc http
  grpc=$(free_port); http=$(free_port)
  mkdir -p "$work/$name"
  {
    echo "role = \"$role\""
    echo "grpc_addr = \"127.0.0.1:$grpc\""
    echo "http_addr = \"127.0.0.1:$http\""
    echo "data_dir = \"$work/$name\""
    echo "store = \"clickhouse\""
    echo "[clickhouse]"
    echo "url = \"$HOLMES_TEST_CLICKHOUSE_URL\""
    echo "database = \"$db\""
    if [ -n "${HOLMES_LOADGEN_MAX_PROFILES:-}" ]; then
      echo "[incidents]"
      echo "max_profiles_per_incident = $HOLMES_LOADGEN_MAX_PROFILES"
    fi
    if [ -n "${HOLMES_LOADGEN_MAX_STREAM_TABLE_BYTES:-}" ] && [ "$role" != process ]; then
      echo "[limits]"
      echo "max_stream_table_bytes = $HOLMES_LOADGEN_MAX_STREAM_TABLE_BYTES"
    fi
    if [ "$role" != all ]; then
      echo "[kafka]"
      echo "brokers = \"$HOLMES_TEST_KAFKA_BROKERS\""
      echo "topic = \"$db\""
      echo "group_id = \"$db\""
    fi
  } > "$work/$name/collector.toml"
  echo "$grpc $http"
}

# Starts a collector from its config and waits for its healthz; sets $started.
started=
start() {
  local name=$1 http=$2
  RUST_LOG=warn "$collector" serve --config "$work/$name/collector.toml" \
    > "$work/$name/log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$http/healthz" >/dev/null 2>&1; then
      started=${pids[-1]}
      return 0
    fi
    sleep 0.1
  done
  echo "collector $name did not start; its log:" >&2
  cat "$work/$name/log" >&2
  return 1
}

rows=()
run() {
  local topology=$1; shift
  local out=$work/$topology.json
  "$bin/holmes-loadgen" --json "$@" > "$out"
  cat "$out" >&2
  rows+=("$(python3 - "$topology" "$out" <<'PY'
import json, sys
topology, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
rss = " + ".join(f"{c['rss_peak_bytes'] / 1048576:.0f}" for c in r["collectors"])
print(f"| {topology} | {r['agents']} | {r['profiles_per_s']:.1f} | {r['samples_per_s']:.0f} | "
      f"{r['trigger_stored_p99_ms']:.0f} ms | {r['trigger_incident_p50_ms']:.0f} / {r['trigger_incident_p99_ms']:.0f} ms | "
      f"{r['warmup_trigger_incident_max_ms']:.0f} ms | "
      f"{r['triggers_without_incident']} | {rss} MiB |")
PY
)")
}

if [ "$mode" = single ] || [ "$mode" = both ]; then
  say "single node: one collector (role all)"
  read -r grpc http < <(config single all holmes_load_single)
  start single "$http"; pid=$started
  run "single node" --ingest "http://127.0.0.1:$grpc" --query "http://127.0.0.1:$http" \
    --collector-pid "$pid" "$@"
  kill "$pid"; wait "$pid" 2>/dev/null || true
fi

if [ "$mode" = kafka ] || [ "$mode" = both ]; then
  say "starting the Kafka broker"
  eval "$(deploy/dev/kafka.sh start)"
  say "ingest + two processors"
  read -r p1_grpc p1_http < <(config process1 process holmes_load_kafka)
  read -r p2_grpc p2_http < <(config process2 process holmes_load_kafka)
  read -r in_grpc in_http < <(config ingest ingest holmes_load_kafka)
  start process1 "$p1_http"; p1=$started
  start process2 "$p2_http"; p2=$started
  start ingest "$in_http"; ingest=$started
  # The load starts once the consumer group has settled: both processors own partitions
  # (their correlation state rebuilt), so a start-up rebalance is not measured as latency.
  for _ in $(seq 1 600); do
    owned=0
    for h in "$p1_http" "$p2_http"; do
      n=$(curl -fsS "http://127.0.0.1:$h/metrics" 2>/dev/null \
        | awk '$1 == "holmes_kafka_assigned_partitions" { print $2 }')
      [ "${n:-0}" -gt 0 ] && owned=$((owned + 1))
    done
    [ "$owned" = 2 ] && break
    sleep 0.1
  done
  [ "$owned" = 2 ] || say "warning: the processors did not both own partitions within 60 s"
  run "ingest + 2 processors" --ingest "http://127.0.0.1:$in_grpc" \
    --query "http://127.0.0.1:$p1_http" \
    --collector-pid "$ingest" --collector-pid "$p1" --collector-pid "$p2" "$@"
fi

say "results"
echo "| topology | agents | profiles/s | samples/s | trigger → stored p99 | trigger → incident p50 / p99 | warm-up worst | triggers in no incident | collector RSS |"
echo "|---|---|---|---|---|---|---|---|---|"
for r in "${rows[@]}"; do echo "$r"; done
