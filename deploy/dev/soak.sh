#!/usr/bin/env bash
# The soak test behind collector/README.md's "Hostile input" figures: holmes-soak runs
# 50 honest agents (5 services x 10) and 10 hostile clients (amplifying profiles, skewed
# clocks, slow readers and half-sent requests, oversized ids, connection floods) against
# one holmes-collector process (SQLite in a temporary folder, loopback only) for a few
# minutes, then checks that every honest trigger, profile and alert arrived exactly once,
# that the collector's RSS stayed under the bound and that every kind of hostile traffic
# was refused with its reason in the collector's counters and log.
#
#   deploy/dev/soak.sh                       # 3 minutes, release build
#   deploy/dev/soak.sh --duration 10m        # longer; any holmes-soak flag goes through
#   deploy/dev/soak.sh --json                # the figures as one JSON object
#
# Exits non-zero, naming each failed check, when an honest item is lost or duplicated,
# the RSS bound is passed or a kind of hostile traffic went uncounted.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

printf '\n== building holmes-collector and holmes-soak (release)\n' >&2
cargo build --release --locked -p holmes-collector --bin holmes-collector \
  -p holmes-devtools --bin holmes-soak >&2
bin=${CARGO_TARGET_DIR:-$root/target}/release

printf '\n== holmes-soak %s\n' "$*" >&2
exec "$bin/holmes-soak" --collector-bin "$bin/holmes-collector" "$@"
