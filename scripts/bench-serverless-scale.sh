#!/usr/bin/env bash
# The serverless runtime at scale on this machine: the real state machine
# (moto's Step Functions) and handlers (the local stack) against buckets
# served by the synthetic endpoint (scripts/bench/synthetic_s3.py):
#   - an unchanged pair of KEYS keys in each layout (a no-op night);
#   - a first copy of COPY_KEYS keys into an empty bucket (every 100,000th
#     object 6 GiB, copied in parts).
# Prints a table: wall time, ranges listed (the planner's and the splits'),
# lister invocations, the largest range chain against the mean, keys per
# invocation, progress polls, history events, the reporter's peak heap, S3
# requests by operation and DynamoDB calls. Times are this machine's (2
# cores, moto in Python, a Python endpoint), not AWS's; the structure is
# what carries over, and what calibrates the simulation
# (scripts/bench-serverless-simulation.sh).
#
#   scripts/bench-serverless-scale.sh [KEYS=10000000] [LAYOUTS=dirs,flat,uuid,skewed] [COPY_KEYS=1000000]
#
# The same tests run in CI at a million keys unchanged and 100,000 copied,
# in one layout (tests/serverless_scale.rs), where they assert what this
# prints.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_RELEASE:-$HOME/.cache/s3-fanout/target-rel}"
export S3_FANOUT_SCALE_KEYS="${1:-10000000}"
export S3_FANOUT_SCALE_LAYOUTS="${2:-dirs,flat,uuid,skewed}"
export S3_FANOUT_SCALE_COPY_KEYS="${3:-1000000}"
scripts/moto.sh install >/dev/null
mkdir -p bench-results
out="bench-results/serverless-scale-$(date -u +%Y%m%dT%H%M%S).md"
# The copy runs in the first layout only: its cost is the copies, alike in
# every layout.
first_layout="${S3_FANOUT_SCALE_LAYOUTS%%,*}"
{
    cargo test --quiet --release --locked --test serverless_scale unchanged -- --nocapture --test-threads 1 2>&1
    S3_FANOUT_SCALE_LAYOUTS="$first_layout" \
        cargo test --quiet --release --locked --test serverless_scale first_copy -- --nocapture --test-threads 1 2>&1
} | grep '^|' | tee "$out"
echo "written: $out"
