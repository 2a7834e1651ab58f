#!/usr/bin/env bash
# The main job on a local S3 emulator: start moto, seed a source bucket with a
# few thousand objects (mixed sizes, multipart objects, awkward keys, tags,
# metadata, storage classes), plan with --dry-run, sync, then sync again to
# show that an unchanged bucket costs only listings. Prints each report.
#
#   scripts/demo.sh            # COUNT=3000 objects by default
#   COUNT=20000 scripts/demo.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3-fanout/target}"
COUNT="${COUNT:-3000}"

# moto accepts any credentials; these keep a real AWS setup out of the demo.
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

say "building s3-fanout and the seeding tool"
cargo build --quiet --bin s3-fanout --example seed
BIN="$CARGO_TARGET_DIR/debug/s3-fanout"
SEED="$CARGO_TARGET_DIR/debug/examples/seed"

say "starting a local S3 server (moto)"
ENDPOINT="$(scripts/moto.sh start)"
PORT="${ENDPOINT##*:}"
trap 'scripts/moto.sh stop "$PORT" >/dev/null 2>&1 || true' EXIT
echo "S3 endpoint: $ENDPOINT" >&2

say "seeding s3://demo-source with $COUNT objects"
"$SEED" --endpoint-url "$ENDPOINT" --bucket demo-source --count "$COUNT" --mixed
"$SEED" --endpoint-url "$ENDPOINT" --bucket demo-backup --count 0

REPORT_DIR="$REPO/demo-report"
SYNC=("$BIN" sync s3://demo-source s3://demo-backup --endpoint-url "$ENDPOINT"
      --multipart-threshold 8MiB --report "$REPORT_DIR")

say "plan: s3-fanout sync --dry-run"
"${SYNC[@]}" --dry-run --no-progress

say "sync: s3-fanout sync s3://demo-source s3://demo-backup"
status=0
"${SYNC[@]}" || status=$?

say "sync again: nothing changed, so nothing is copied and only listings are made"
"${SYNC[@]}" --no-progress || true

latest="$(ls -td "$REPORT_DIR"/*/ | sed -n 2p)"
say "the first sync's summary.json ($latest)"
cat "$latest/summary.json"
echo
exit "$status"
