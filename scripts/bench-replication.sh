#!/usr/bin/env bash
# Replication-lag benchmark: p50/p90/p99/max lag from a put at the source to
# the object's presence at the destination, over a burst of COUNT puts, on
# the local stack (moto + the event source mapping emulator + the real
# replicator, all on this machine).
#
#   scripts/bench-replication.sh
#   COUNT=1000 PUT_CONCURRENCY=32 REPLICATOR_CONCURRENCY=4 BATCH_SIZE=10 SIZE=1024 \
#       POLL_MS=50 TIMEOUT_SECS=300 scripts/bench-replication.sh
#   PROFILE=release scripts/bench-replication.sh   # release build (many minutes on 2 cores)
#
# What is measured, per key: from the instant its PutObject returned to the
# first ListObjectsV2 of the destination (polled every POLL_MS) that shows it
# with the source's ETag. That covers moto's S3 notification to SQS, the
# event source mapping's long poll (1 s wait, answered as soon as a message
# lands), the replicator's HEADs and its CopyObject, and the polling's own
# resolution (printed with the results). Everything shares one moto and the
# machine's cores with the benchmark, so the figures are moto-on-this-box
# speeds, not AWS ones: they compare settings and catch regressions.
#
# At COUNT=1000 moto itself dominates: its ReceiveMessage walks the whole
# queue several times per message it returns, so with ~1,000 events queued
# a receive of 10 takes ~0.75 s of moto's one GIL-bound core and the
# replicator drains ~13 keys/s (~36/s at COUNT=100). Puts outrun that, the
# backlog grows, and lag grows through the burst: compare the "first / last
# tenth" row, and the minimum lag for the unloaded pipeline.
#
# Starts a fresh moto (stopped on exit), runs examples/replication_lag.rs,
# and writes bench-results/replication-lag.md and .json. The run also checks
# that the destination ends equal to the source and that the event
# dead-letter queue is empty; it exits 1 if not, or if a key is not
# replicated within TIMEOUT_SECS. Progress goes to stderr, the table to stdout.
set -euo pipefail

COUNT="${COUNT:-1000}"
PUT_CONCURRENCY="${PUT_CONCURRENCY:-32}"
REPLICATOR_CONCURRENCY="${REPLICATOR_CONCURRENCY:-4}"
BATCH_SIZE="${BATCH_SIZE:-10}"
SIZE="${SIZE:-1024}"
POLL_MS="${POLL_MS:-50}"
TIMEOUT_SECS="${TIMEOUT_SECS:-300}"
PROFILE="${PROFILE:-debug}"
readonly COUNT PUT_CONCURRENCY REPLICATOR_CONCURRENCY BATCH_SIZE SIZE POLL_MS TIMEOUT_SECS PROFILE

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
cd "$REPO"
readonly OUT_DIR="$REPO/bench-results"

log() { printf 'bench-replication: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for var in COUNT PUT_CONCURRENCY REPLICATOR_CONCURRENCY BATCH_SIZE POLL_MS TIMEOUT_SECS; do
    [[ "${!var}" =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer, got '${!var}'"
done
[[ "$SIZE" =~ ^[0-9]+$ ]] || die "SIZE must be a number of bytes, got '$SIZE'"
((BATCH_SIZE <= 10)) || die "BATCH_SIZE must be at most 10 (SQS's limit), got $BATCH_SIZE"
case "$PROFILE" in
debug) cargo_profile=() ;;
release) cargo_profile=(--release) ;;
*) die "PROFILE must be debug or release, got '$PROFILE'" ;;
esac

# moto's dummy credentials, and nothing from the machine's own AWS setup:
# a profile or endpoint variable must not send the benchmark anywhere else.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN \
    AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_ENDPOINT_URL_SQS AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE \
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI \
    HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

# Debug by default: a release build of the AWS SDK takes many minutes on two
# cores, and most of the lag is spent in moto (Python), not in our code.
log "building the replication_lag example ($PROFILE)"
cargo build --quiet "${cargo_profile[@]}" --example replication_lag
# Ask cargo where it put it: CARGO_TARGET_DIR or a config may move target/.
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
readonly BIN="$target_dir/$PROFILE/examples/replication_lag"

port=""
cleanup() {
    if [[ -n "$port" ]]; then scripts/moto.sh stop "$port" || true; fi
}
trap cleanup EXIT

endpoint="$(scripts/moto.sh start)"
port="${endpoint##*:}"

mkdir -p "$OUT_DIR"
readonly MD="$OUT_DIR/replication-lag.md" JSON="$OUT_DIR/replication-lag.json"
log "burst of $COUNT puts ($SIZE B, $PUT_CONCURRENCY at once), replicator batch $BATCH_SIZE x $REPLICATOR_CONCURRENCY"
code=0
"$BIN" --endpoint "$endpoint" --count "$COUNT" --put-concurrency "$PUT_CONCURRENCY" \
    --replicator-concurrency "$REPLICATOR_CONCURRENCY" --batch-size "$BATCH_SIZE" \
    --size "$SIZE" --poll-ms "$POLL_MS" --timeout-secs "$TIMEOUT_SECS" \
    --json "$JSON" >"$MD" || code=$?
cat "$MD"
if ((code != 0)); then
    die "replication_lag exited $code (see above); partial results in $MD"
fi
log "wrote $MD and $JSON"
