#!/usr/bin/env bash
# Memory of transfers that pass bytes through this machine: the peak RSS of
# s3-fanout must not grow with the object's size. For each size in
# SIZES_MIB, one object of that size is
#   upload     a local file into a bucket (8 MiB parts read by offset),
#   download   restored from the bucket (ranged GETs written at offsets),
#   stream-mp  copied between two endpoints of the same moto (127.0.0.1 and
#              localhost, which s3-fanout cannot know are one server), piped
#              part by part from ranged GETs into UploadParts,
#   stream-1   the same for an object uploaded in one PUT: one GET piped
#              into one PUT.
#
#   scripts/bench-transfer-memory.sh
#   SIZES_MIB="64 1024" scripts/bench-transfer-memory.sh
#
# Each result is checked (exit 0, one object copied and verified, no
# server-side copy in a stream, the restored file byte-equal) before its
# figure counts. PASS when, for every kind, the largest object's peak RSS is
# within MAX_GROWTH_MIB of the smallest's; else FAIL and exit 1. A debug
# build: the comparison is between sizes, not against other tools.
set -euo pipefail

SIZES_MIB="${SIZES_MIB:-64 512}"
MAX_GROWTH_MIB="${MAX_GROWTH_MIB:-16}"
readonly SIZES_MIB MAX_GROWTH_MIB

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
cd "$REPO"

log() { printf 'bench-transfer-memory: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for size in $SIZES_MIB; do
    [[ "$size" =~ ^[1-9][0-9]*$ ]] || die "SIZES_MIB must hold positive integers, got '$size'"
done

# moto's dummy credentials, and nothing from the machine's own AWS setup.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN \
    AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE \
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

log "building s3-fanout (debug)"
cargo build --quiet --bin s3-fanout
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
readonly BIN="$target_dir/debug/s3-fanout"

WORK="$(mktemp -d)"
readonly WORK
port=""
cleanup() {
    if [[ -n "$port" ]]; then scripts/moto.sh stop "$port" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

endpoint="$(scripts/moto.sh start)"
port="${endpoint##*:}"
readonly OTHER="http://localhost:$port"

# Runs one s3-fanout command as the only child of a fresh python3, so
# RUSAGE_CHILDREN's ru_maxrss (KiB) is that process's peak RSS.
measure() {
    local name="$1"
    shift
    python3 - "$WORK/$name.json" "$WORK/$name.rss" "$BIN" "$@" --json --no-progress <<'PY'
import resource, subprocess, sys

summary_path, rss_path, *command = sys.argv[1:]
with open(summary_path, "wb") as summary:
    code = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=summary).returncode
with open(rss_path, "w") as rss:
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=rss)
sys.exit(code)
PY
}

for size in $SIZES_MIB; do
    log "$size MiB: writing the file"
    mkdir -p "$WORK/up-$size" "$WORK/single-$size"
    head -c "$((size * 1024 * 1024))" /dev/urandom >"$WORK/up-$size/object.bin"
    cp "$WORK/up-$size/object.bin" "$WORK/single-$size/object.bin"
    for bucket in "up-$size" "single-$size" "stream-mp-$size" "stream-1-$size"; do
        # moto takes an unsigned CreateBucket; nothing else needs one.
        python3 - "$endpoint" "$bucket" <<'PY'
import sys, urllib.request
req = urllib.request.Request(f"{sys.argv[1]}/{sys.argv[2]}", method="PUT")
urllib.request.urlopen(req).read()
PY
    done
    log "$size MiB: upload"
    measure "upload-$size" sync "$WORK/up-$size" "s3://up-$size" --endpoint-url "$endpoint" ||
        die "the $size MiB upload failed: $(cat "$WORK/upload-$size.json")"
    log "$size MiB: download"
    measure "download-$size" sync "s3://up-$size" "$WORK/down-$size" --endpoint-url "$endpoint" ||
        die "the $size MiB download failed: $(cat "$WORK/download-$size.json")"
    cmp "$WORK/up-$size/object.bin" "$WORK/down-$size/object.bin" ||
        die "the $size MiB download differs from its file"
    log "$size MiB: streamed, multipart source"
    measure "stream-mp-$size" sync "s3://up-$size" "s3://stream-mp-$size" \
        --source-endpoint-url "$endpoint" --dest-endpoint-url "$OTHER" ||
        die "the $size MiB multipart stream failed: $(cat "$WORK/stream-mp-$size.json")"
    log "$size MiB: streamed, one-PUT source"
    "$BIN" sync "$WORK/single-$size" "s3://single-$size" --endpoint-url "$endpoint" \
        --multipart-threshold 5GiB --no-progress >/dev/null ||
        die "seeding the one-PUT $size MiB object failed"
    measure "stream-1-$size" sync "s3://single-$size" "s3://stream-1-$size" \
        --source-endpoint-url "$endpoint" --dest-endpoint-url "$OTHER" ||
        die "the $size MiB one-PUT stream failed: $(cat "$WORK/stream-1-$size.json")"
    rm -rf "$WORK/down-$size" "$WORK/single-$size"
done

python3 - "$WORK" "$MAX_GROWTH_MIB" $SIZES_MIB <<'PY'
import json, sys

work, max_growth, sizes = sys.argv[1], float(sys.argv[2]), [int(s) for s in sys.argv[3:]]
kinds = ["upload", "download", "stream-mp", "stream-1"]
rss = {}
print(f"{'kind':<10} {'object':>9} {'peak RSS (MiB)':>15} {'wall (s)':>9}  requests")
for kind in kinds:
    for size in sizes:
        with open(f"{work}/{kind}-{size}.json") as f:
            summary = json.load(f)
        with open(f"{work}/{kind}-{size}.rss") as f:
            rss[kind, size] = int(f.read()) / 1024
        counts, requests = summary["counts"], summary["requests"]
        if summary["exit_code"] != 0 or counts["copied"] != 1 or counts["verify_mismatched"] != 0:
            sys.exit(f"bench-transfer-memory: error: {kind} {size} MiB did not copy and verify its object")
        if kind.startswith("stream") and (requests.get("CopyObject") or requests.get("UploadPartCopy")):
            sys.exit(f"bench-transfer-memory: error: {kind} {size} MiB copied server-side: {requests}")
        ops = ", ".join(f"{op} {n}" for op, n in sorted(requests.items()))
        print(f"{kind:<10} {size:>5} MiB {rss[kind, size]:>15.1f} {summary['duration_secs']:>9.1f}  {ops}")
failed = False
for kind in kinds:
    growth = rss[kind, sizes[-1]] - rss[kind, sizes[0]]
    print(f"{kind}: {sizes[0]} -> {sizes[-1]} MiB object, peak RSS {growth:+.1f} MiB")
    failed |= growth > max_growth
print(f"FAIL (limit +{max_growth:.0f} MiB)" if failed else "PASS")
sys.exit(1 if failed else 0)
PY
