#!/usr/bin/env bash
# The Python programs the interop tests (collector/interop) run against a collector:
# Grafana's Pyroscope client and OpenTelemetry's generated OTLP classes, from PyPI, at
# pinned versions, each set in its own virtualenv under ${XDG_CACHE_HOME:-$HOME/.cache}/holmes
# (installed once, rebuilt when missing or broken).
#
#   eval "$(deploy/dev/pyclients.sh)"   # prints export lines: HOLMES_TEST_PYTHON (pyroscope-io 1.4.0,
#                                       # opentelemetry-proto 1.45.2), HOLMES_TEST_PYTHON_LEGACY
#                                       # (pyroscope-io 0.8.16, which still posts to /ingest)
#
# opentelemetry-proto 1.45.2 is generated from the OTLP proto release v1.10.0, the same
# as the Rust crate opentelemetry-proto 0.33.1 the collector uses (the profiles signal is
# `v1development` and changed field numbers between releases: keep the two in step,
# collector/README.md "OTLP profiles").
set -euo pipefail

log() { printf 'pyclients.sh: %s\n' "$*" >&2; }

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/holmes
PYROSCOPE_IO=1.4.0
PYROSCOPE_IO_LEGACY=0.8.16
OTLP_PROTO=1.45.2
PROTOBUF=7.36.2

# venv NAME CHECK PACKAGES...: the virtualenv's python, installed if missing.
venv() {
  local dir=$CACHE/$1 check=$2
  shift 2
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$check" 2>/dev/null; then
    echo "$dir/bin/python"
    return
  fi
  log "installing $* from PyPI into $dir"
  rm -rf "$dir"
  mkdir -p "$CACHE"
  if ! python3 -m venv "$dir" >&2; then
    log "python3 -m venv failed (Debian: apt-get install python3-venv)"
    return 1
  fi
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" >&2
  "$dir/bin/python" -c "$check"
  echo "$dir/bin/python"
}

current=$(venv "pyclients-$PYROSCOPE_IO-$OTLP_PROTO" \
  'import pyroscope, opentelemetry.proto.profiles.v1development.profiles_pb2' \
  "pyroscope-io==$PYROSCOPE_IO" "opentelemetry-proto==$OTLP_PROTO" "protobuf==$PROTOBUF")
legacy=$(venv "pyroscope-io-$PYROSCOPE_IO_LEGACY" 'import pyroscope' "pyroscope-io==$PYROSCOPE_IO_LEGACY")
printf 'export HOLMES_TEST_PYTHON=%q\n' "$current"
printf 'export HOLMES_TEST_PYTHON_LEGACY=%q\n' "$legacy"
