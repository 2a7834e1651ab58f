#!/usr/bin/env bash
# CPU a lister spends per key listed: the same listing, merge-join and
# decision code (backend/s3/listing.rs, engine/diff.rs) run by
# `s3-fanout sync --dry-run` over an unchanged pair the synthetic endpoint
# computes, its user + system time divided by the keys listed on both
# sides. plan's serverless model takes this figure
# (`lister_cpu_us_per_key` in src/model/prices-us-east-1.json) to bound how
# many streams a lister's share of a vCPU can parse.
#
#   scripts/bench-lister-cpu.sh [KEYS=1000000] [LAYOUT=dirs]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_RELEASE:-$HOME/.cache/s3-fanout/target-rel}"
export AWS_ACCESS_KEY_ID=synthetic AWS_SECRET_ACCESS_KEY=synthetic AWS_EC2_METADATA_DISABLED=true
keys="${1:-1000000}" layout="${2:-dirs}"
cargo build --quiet --release --locked --bin s3-fanout
dir="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$dir"' EXIT
python3 scripts/bench/synthetic_s3.py --port-file "$dir/port" 2>/dev/null &
server=$!
for _ in $(seq 100); do [[ -s "$dir/port" ]] && break; sleep 0.1; done
endpoint="http://127.0.0.1:$(cat "$dir/port")"
# The sync is the only child of this python3, so RUSAGE_CHILDREN is its own.
python3 - "$keys" "$endpoint" "$CARGO_TARGET_DIR/release/s3-fanout" sync \
    "s3://syn-$keys-$layout" "s3://syn-$keys-$layout-twin" --endpoint-url "$endpoint" \
    --dry-run --json --no-progress <<'PY'
import json, resource, subprocess, sys, time
keys, endpoint, *command = sys.argv[1:]
started = time.monotonic()
done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
wall = time.monotonic() - started
if done.returncode != 0:
    sys.exit(f"the sync exited {done.returncode}")
summary = json.loads(done.stdout)
counts = summary.get("counts", summary)
listed = counts["listed_source"] + counts["listed_destination"]
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = usage.ru_utime + usage.ru_stime
print(f"| keys listed (both sides) | wall | user + system CPU | CPU a key listed | keys a CPU-second |")
print(f"|---:|---:|---:|---:|---:|")
print(f"| {listed:,} | {wall:.1f} s | {cpu:.2f} s | {cpu / listed * 1e6:.2f} µs | {listed / cpu:,.0f} |")
PY
