#!/usr/bin/env bash
# The main job on a local S3 emulator: start moto, seed a source bucket with a
# few thousand objects (mixed sizes, multipart objects, awkward keys, tags,
# metadata, storage classes), plan (s3-fanout plan: requests, cost, time), sync, then sync again to
# show that an unchanged bucket costs only listings. Then the same job on the
# serverless runtime: the real state machine on moto's Step Functions, the
# Lambda handlers behind a local router, SQS batches fed to the copier
# (`s3-fanout local-stack`), started with `s3-fanout run`. Prints each report.
# Last, replication from S3 events: moto's S3 notifies the local stack's
# event queue, the replicator reconciles each key, and puts, an overwrite
# and a delete at the source show up at the destination within seconds.
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

say "starting a local AWS (moto: S3, SQS, Step Functions)"
scripts/moto.sh install
# moto's Step Functions sends lambda:invoke to localhost:$MOTO_PORT: the
# local stack's Lambda router listens there.
ROUTER_PORT="$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
ENDPOINT="$(MOTO_PORT="$ROUTER_PORT" scripts/moto.sh start)"
PORT="${ENDPOINT##*:}"
STACK_PID=""
cleanup() {
    [[ -n "$STACK_PID" ]] && kill "$STACK_PID" 2>/dev/null
    scripts/moto.sh stop "$PORT" >/dev/null 2>&1 || true
}
trap cleanup EXIT
echo "endpoint: $ENDPOINT" >&2

say "seeding s3://demo-source with $COUNT objects"
"$SEED" --endpoint-url "$ENDPOINT" --bucket demo-source --count "$COUNT" --mixed
"$SEED" --endpoint-url "$ENDPOINT" --bucket demo-backup --count 0

REPORT_DIR="$REPO/demo-report"
SYNC=("$BIN" sync s3://demo-source s3://demo-backup --endpoint-url "$ENDPOINT"
      --multipart-threshold 8MiB --report "$REPORT_DIR")

say "plan: what the sync will copy, request, cost and take (lists only)"
"$BIN" plan s3://demo-source s3://demo-backup --endpoint-url "$ENDPOINT" \
    --multipart-threshold 8MiB

say "sync: s3-fanout sync s3://demo-source s3://demo-backup"
status=0
"${SYNC[@]}" || status=$?

say "sync again: nothing changed, so nothing is copied and only listings are made"
"${SYNC[@]}" --no-progress || true

latest="$(ls -td "$REPORT_DIR"/*/ | sed -n 2p)"
say "the first sync's summary.json ($latest)"
cat "$latest/summary.json"
echo

say "serverless: s3-fanout local-stack (router on 127.0.0.1:$ROUTER_PORT, event source emulator)"
OUTPUTS="$REPORT_DIR/local-stack.json"
rm -f "$OUTPUTS"
"$SEED" --endpoint-url "$ENDPOINT" --bucket demo-serverless --count 0
"$BIN" local-stack --moto-endpoint "$ENDPOINT" --listen "127.0.0.1:$ROUTER_PORT" \
    --outputs "$OUTPUTS" --max-concurrency 8 --emf-log "$REPORT_DIR/emf.log" \
    --replicate s3://demo-source s3://demo-serverless --replicate-deletes \
    2>"$REPORT_DIR/local-stack.log" &
STACK_PID=$!
for _ in $(seq 100); do [[ -s "$OUTPUTS" ]] && break; sleep 0.1; done
[[ -s "$OUTPUTS" ]] || { cat "$REPORT_DIR/local-stack.log" >&2; exit 1; }
echo '{"multipart_threshold": "8MiB"}' >"$REPORT_DIR/run-input.json"

say "serverless: s3-fanout run s3://demo-source s3://demo-serverless --wait"
serverless_status=0
"$BIN" run --stack-outputs "$OUTPUTS" s3://demo-source s3://demo-serverless \
    --input "$REPORT_DIR/run-input.json" --wait || serverless_status=$?
((status == 0)) && status=$serverless_status

say "replication: put 3 objects, overwrite one, delete one at s3://demo-source"
started=$SECONDS
.venv/bin/python - "$ENDPOINT" <<'EOF'
import sys

import boto3

s3 = boto3.client("s3", endpoint_url=sys.argv[1])
for key in ("replicated/new file.txt", "replicated/a+b.txt", "replicated/ü/ñ.txt"):
    s3.put_object(Bucket="demo-source", Key=key, Body=b"first version")
s3.put_object(Bucket="demo-source", Key="replicated/a+b.txt", Body=b"second version")
s3.delete_object(Bucket="demo-source", Key="replicated/new file.txt")
EOF
# Converged when a dry run with --delete finds nothing to copy, update or delete.
pending() {
    "$BIN" sync s3://demo-source/replicated/ s3://demo-serverless/replicated/ \
        --endpoint-url "$ENDPOINT" --delete --dry-run --json 2>/dev/null |
        .venv/bin/python -c 'import json, sys; c = json.load(sys.stdin)["counts"]; print(c["plan_copy"] + c["plan_update"] + c["plan_delete"])'
}
replication_status=1
for _ in $(seq 60); do
    if [[ "$(pending)" == 0 ]]; then replication_status=0; break; fi
    sleep 0.5
done
if ((replication_status == 0)); then
    echo "replicated: s3://demo-serverless/replicated/ matches the source $((SECONDS - started)) s after the first put" >&2
else
    echo "replication did not converge in 30 s; see $REPORT_DIR/local-stack.log" >&2
fi
((status == 0)) && status=$replication_status
exit "$status"
