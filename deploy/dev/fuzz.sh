#!/usr/bin/env bash
# Fuzz the collector's profile decoder: mutated pprof profiles (bytes flipped, truncated
# and spliced; hostile ids, indexes and counts; deep stacks; gzip layers added and
# broken) must each be decoded or refused, never panic. Prints the cases run, their rate
# and how they ended.
#
#   deploy/dev/fuzz.sh            # 200,000 cases, release build
#   deploy/dev/fuzz.sh 1000000    # more
#   HOLMES_FUZZ_SEED=42 deploy/dev/fuzz.sh   # another (replayable) sequence
set -euo pipefail
cd "$(dirname "$0")/../.."
export HOLMES_FUZZ_CASES=${1:-200000}
cargo test --release --locked -p holmes-collector --test it -- fuzz_normalize:: --nocapture 2>&1 \
  | grep -E '^fuzz:|panicked|test result'
