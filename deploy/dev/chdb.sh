#!/usr/bin/env bash
# Start or stop a throw-away *current* ClickHouse (26.9) on loopback, beside Debian's
# 18.16 (deploy/dev/clickhouse.sh), so the store is tested against both ends of the range
# it supports.
#
#   eval "$(deploy/dev/chdb.sh start)"   # prints export lines: HOLMES_TEST_CLICKHOUSE_CURRENT_URL,
#                                        # HOLMES_CHDB_DIR, HOLMES_CHDB_PID
#   deploy/dev/chdb.sh stop              # stops the one started above (uses HOLMES_CHDB_DIR)
#   deploy/dev/chdb.sh restart           # starts it again on the same folder and port (data kept)
#
# The server is the ClickHouse 26.9.2.1 that the PyPI wheel `chdb-core` 26.9.0 embeds
# (clickhouse-local, which in this build serves HTTP after `SYSTEM START LISTEN HTTP`).
# It is installed once with pip into a virtualenv under
# ${XDG_CACHE_HOME:-$HOME/.cache}/holmes/chdb-26.9.0 (about 20 s, 533 MB; rebuilt when
# missing). chdb's public API refuses to serve, so its low-level `_chdb.query` runs the
# listen statement and then one `sleepEachRow` query that keeps the server up at ~0 CPU;
# SIGTERM ends it. One `default` user without a password: loopback and tests only.
# The version is pinned: this relies on chdb internals.
set -euo pipefail

log() { printf 'chdb.sh: %s\n' "$*" >&2; }

CHDB_VERSION=26.9.0
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/holmes
VENV=$CACHE/chdb-$CHDB_VERSION

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

install_if_missing() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import chdb._chdb' 2>/dev/null; then return; fi
  log "installing chdb-core $CHDB_VERSION from PyPI into $VENV"
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  if ! python3 -m venv "$VENV" >&2; then
    log "python3 -m venv failed (Debian: apt-get install python3-venv)"
    return 1
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "chdb-core==$CHDB_VERSION" >&2
}

start() {
  install_if_missing
  local dir http
  dir=$(mktemp -d "${TMPDIR:-/tmp}/holmes-chdb.XXXXXX")
  http=$(free_port)
  mkdir -p "$dir/data"
  # clickhouse-local reads ./config.xml from its working directory.
  cat > "$dir/config.xml" <<XML
<clickhouse>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$http</http_port>
  <path>$dir/data/</path>
  <logger><level>warning</level><console>0</console></logger>
</clickhouse>
XML
  cat > "$dir/serve.py" <<'PY'
import chdb._chdb as chdb
# One call: a second _chdb.query in this process fails ("EventNotifier is initialized
# twice"), so the listen statement and the keep-alive query travel together.
chdb.query(
    "SYSTEM START LISTEN HTTP; "
    "SELECT sleepEachRow(1) FROM numbers(1000000000000) SETTINGS max_block_size = 1",
    "CSV",
)
PY
  run_server "$dir" "http://127.0.0.1:$http"
}

# Starts the server of folder $1 and waits until $2 answers; prints the exports.
run_server() {
  local dir=$1 url=$2
  (cd "$dir" && exec "$VENV/bin/python" serve.py >>"$dir/server.log" 2>&1) &
  local pid=$!
  echo "$pid" > "$dir/pid"
  for _ in $(seq 1 300); do
    if curl -fsS "$url/?query=SELECT%201" >/dev/null 2>&1; then
      log "ClickHouse $(curl -fsS "$url/?query=SELECT%20version()") ready at $url (pid $pid, dir $dir)"
      printf 'export HOLMES_TEST_CLICKHOUSE_CURRENT_URL=%q\nexport HOLMES_CHDB_DIR=%q\nexport HOLMES_CHDB_PID=%q\n' \
        "$url" "$dir" "$pid"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  log "ClickHouse (chdb) did not come up; its log:"
  tail -n 40 "$dir/server.log" >&2 || true
  kill "$pid" 2>/dev/null || true
  return 1
}

restart() {
  local dir=${HOLMES_CHDB_DIR:-}
  [ -n "$dir" ] && [ -f "$dir/config.xml" ] || { log "HOLMES_CHDB_DIR names no server folder"; return 1; }
  local http
  http=$(sed -n 's:.*<http_port>\([0-9]*\)</http_port>.*:\1:p' "$dir/config.xml")
  run_server "$dir" "http://127.0.0.1:$http"
}

stop() {
  local dir=${HOLMES_CHDB_DIR:-}
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
  install) install_if_missing ;;
  *) echo "usage: $0 start|stop|restart|install" >&2; exit 2 ;;
esac
