#!/usr/bin/env bash
# The soak: repeated syncs through injected faults (10% 503 SlowDown, 5%
# connections cut after the server acted) against a source that changes
# while it is synced, with the destination checked against the source after
# every cycle. Prints cycles run, objects moved, faults injected and
# mismatches found, which must be zero. See examples/soak.rs for a cycle.
#
#   scripts/soak.sh                 10 minutes, 1,000 objects
#   MINUTES=2 OBJECTS=300 SEED=7 scripts/soak.sh
#
# Runs on a fresh moto of its own on loopback. Exit 0: no mismatch and
# every settling sync succeeded; 1: a mismatch or a failed sync; 2: the
# soak itself could not run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3-fanout/target}"
# moto's dummy credentials, and nothing from the machine's own AWS setup.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL

MINUTES="${MINUTES:-10}"
OBJECTS="${OBJECTS:-1000}"
SEED="${SEED:-1}"

# Debug builds, shared with the tests: the soak is about correctness.
cargo build --quiet --bin s3-fanout --example soak
scripts/moto.sh install
endpoint="$(scripts/moto.sh start)"
port="${endpoint##*:}"
trap 'scripts/moto.sh stop "$port" >/dev/null 2>&1 || true' EXIT

echo "soak: ${MINUTES} min, ${OBJECTS} objects, seed ${SEED}, moto at ${endpoint}" >&2
"$CARGO_TARGET_DIR/debug/examples/soak" \
    --endpoint-url "$endpoint" \
    --cli "$CARGO_TARGET_DIR/debug/s3-fanout" \
    --minutes "$MINUTES" --objects "$OBJECTS" --seed "$SEED"
