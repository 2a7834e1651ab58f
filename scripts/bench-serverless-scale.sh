#!/usr/bin/env bash
# The serverless runtime at scale on this machine: the real state machine
# (moto's Step Functions) and handlers (the local stack) over an unchanged
# bucket pair served by the synthetic endpoint, in each key layout. Prints
# a table: wall time, shards, lister invocations, the largest lister chain
# against the mean, keys per invocation, listing pages, history events and
# DynamoDB calls. Times are this machine's (2 cores, a debug moto, Python
# listings), not AWS's; the structure is what carries over.
#
#   scripts/bench-serverless-scale.sh [KEYS=10000000] [LAYOUTS=dirs,flat,uuid,skewed]
#
# The same test runs in CI at a million keys in one layout
# (tests/serverless_scale.rs), where it asserts what this prints.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_RELEASE:-$HOME/.cache/s3-fanout/target-rel}"
export S3_FANOUT_SCALE_KEYS="${1:-10000000}"
export S3_FANOUT_SCALE_LAYOUTS="${2:-dirs,flat,uuid,skewed}"
scripts/moto.sh install >/dev/null
mkdir -p bench-results
out="bench-results/serverless-scale-$(date -u +%Y%m%dT%H%M%S).md"
cargo test --quiet --release --locked --test serverless_scale -- --nocapture --test-threads 1 2>&1 |
    grep '^|' | tee "$out"
echo "written: $out"
