#!/usr/bin/env bash
# The serverless runtime simulated at 100M and 1B keys in each key layout:
# the real planner cuts buckets the synthetic endpoint computes, the
# endpoint weighs each shard, and plan's serverless model prices an
# unchanged night and a first copy at AWS's rates (see the header of
# examples/serverless_simulation.rs). With LISTERS 300 (the first-copy
# settings' ListingConcurrency) it also prices the first copy at the
# first-copy settings. Prints a Markdown table, also written to
# bench-results/. Simulated figures, not measured ones.
#
#   scripts/bench-serverless-simulation.sh [KEYS=100000000,1000000000] [LAYOUTS=dirs,flat,uuid,skewed] [LISTERS=16,64,300]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_RELEASE:-$HOME/.cache/s3-fanout/target-rel}"
export AWS_ACCESS_KEY_ID=synthetic AWS_SECRET_ACCESS_KEY=synthetic AWS_EC2_METADATA_DISABLED=true
cargo build --quiet --release --locked --example serverless_simulation
dir="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
python3 scripts/bench/synthetic_s3.py --port-file "$dir/port" 2>/dev/null &
server=$!
for _ in $(seq 100); do [[ -s "$dir/port" ]] && break; sleep 0.1; done
mkdir -p bench-results
out="bench-results/serverless-simulation-$(date -u +%Y%m%dT%H%M%S).md"
"$CARGO_TARGET_DIR/release/examples/serverless_simulation" "http://127.0.0.1:$(cat "$dir/port")" \
    "${1:-100000000,1000000000}" "${2:-dirs,flat,uuid,skewed}" "${3:-16,64,300}" | tee "$out"
echo "written: $out"
