#!/usr/bin/env bash
# Start or stop a throw-away ClickHouse server on loopback, for tests and local trials.
#
#   eval "$(deploy/dev/clickhouse.sh start)"   # prints export lines: HOLMES_TEST_CLICKHOUSE_URL, HOLMES_CH_DIR, HOLMES_CH_PID
#   deploy/dev/clickhouse.sh stop               # stops the one started above (uses HOLMES_CH_DIR)
#   deploy/dev/clickhouse.sh restart            # starts it again on the same folder and ports, after
#                                               # it was killed (outage tests; uses HOLMES_CH_DIR)
#
# Installs Debian's clickhouse-server if it is missing. Everything lives in a temporary
# folder: data, logs and a config written here (the system config is not touched). The
# config defines a cluster `holmes_test` of this one server (storage/tests/clickhouse_cluster.rs).
set -euo pipefail

log() { printf 'clickhouse.sh: %s\n' "$*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

install_if_missing() {
  if command -v clickhouse-server >/dev/null 2>&1; then return; fi
  log "installing clickhouse-server from apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq clickhouse-server >&2
}

start() {
  install_if_missing
  local dir http tcp inter
  dir=$(mktemp -d "${TMPDIR:-/tmp}/holmes-clickhouse.XXXXXX")
  http=$(free_port); tcp=$(free_port); inter=$(free_port)
  mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
  cat > "$dir/users.xml" <<XML
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
XML
  cat > "$dir/config.xml" <<XML
<yandex>
  <logger>
    <level>warning</level>
    <log>$dir/log/server.log</log>
    <errorlog>$dir/log/error.log</errorlog>
    <console>0</console>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$http</http_port>
  <tcp_port>$tcp</tcp_port>
  <interserver_http_port>$inter</interserver_http_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <max_concurrent_queries>200</max_concurrent_queries>
  <mark_cache_size>536870912</mark_cache_size>
  <uncompressed_cache_size>536870912</uncompressed_cache_size>
  <!-- A cluster of this one server, for the cluster schema's tests (local tables plus
       Distributed tables, without replication: no ZooKeeper here). -->
  <remote_servers>
    <holmes_test>
      <shard><replica><host>127.0.0.1</host><port>$tcp</port></replica></shard>
    </holmes_test>
  </remote_servers>
</yandex>
XML
  run_server "$dir" "http://127.0.0.1:$http"
}

# Starts the server configured in folder $1 and waits until $2 answers; prints the exports.
run_server() {
  local dir=$1 url=$2
  clickhouse-server --config-file="$dir/config.xml" >>"$dir/log/stdout.log" 2>&1 &
  local pid=$!
  echo "$pid" > "$dir/pid"
  for _ in $(seq 1 300); do
    if curl -fsS "$url/?query=SELECT%201" >/dev/null 2>&1; then
      log "ClickHouse $(curl -fsS "$url/?query=SELECT%20version()") ready at $url (pid $pid, dir $dir)"
      printf 'export HOLMES_TEST_CLICKHOUSE_URL=%q\nexport HOLMES_CH_DIR=%q\nexport HOLMES_CH_PID=%q\n' "$url" "$dir" "$pid"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  log "ClickHouse did not come up; its logs:"
  tail -n 40 "$dir"/log/*.log >&2 || true
  kill "$pid" 2>/dev/null || true
  return 1
}

restart() {
  local dir=${HOLMES_CH_DIR:-}
  [ -n "$dir" ] && [ -f "$dir/config.xml" ] || { log "HOLMES_CH_DIR names no server folder"; return 1; }
  local http
  http=$(sed -n 's:.*<http_port>\([0-9]*\)</http_port>.*:\1:p' "$dir/config.xml")
  run_server "$dir" "http://127.0.0.1:$http"
}

stop() {
  local dir=${HOLMES_CH_DIR:-}
  [ -n "$dir" ] && [ -f "$dir/pid" ] || { log "nothing to stop"; return 0; }
  local pid; pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) restart ;;
  *) echo "usage: $0 start|stop|restart" >&2; exit 2 ;;
esac
