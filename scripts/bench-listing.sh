#!/usr/bin/env bash
# Listing speed: an unchanged re-sync of synthetic buckets (a bucket against
# its `-twin`, so the whole run is the two listings and the diff), behind the
# counting proxy at LATENCY_MS per request, as a region's round trip. It is
# what decides a nightly no-op: how soon the range is cut into pieces, how
# many listers run, and what the cuts cost in requests.
#
#   scripts/bench-listing.sh
#   LATENCY_MS=30 REPEAT=3 BUCKETS="syn-10000-dirs syn-100000-skewed" scripts/bench-listing.sh
#   BASELINE_BIN=/tmp/s3-fanout-old scripts/bench-listing.sh   # two builds side by side
#
# Buckets come from scripts/bench/synthetic_s3.py (listings computed from the
# name: syn-N-flat, -dirs, -skewed, -uuid), so 100,000 or 1,000,000 keys cost
# no seeding. Each build runs REPEAT times per bucket; the table shows the
# median wall time with the range, the ListObjectsV2 requests and the pieces
# of that run, and the tool's CPU seconds (user+sys). On a 2-core machine the
# Python server's CPU bounds the larger runs, so compare builds within one
# table. Results on stdout (Markdown), progress on stderr.
set -euo pipefail

LATENCY_MS="${LATENCY_MS:-30}"
REPEAT="${REPEAT:-3}"
BUCKETS="${BUCKETS:-syn-10000-dirs syn-100000-dirs syn-100000-flat syn-100000-skewed syn-100000-uuid}"
PROFILE="${PROFILE:-release}"
readonly LATENCY_MS REPEAT BUCKETS PROFILE

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
cd "$REPO"

log() { printf 'bench-listing: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ "$LATENCY_MS" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "LATENCY_MS must be a number of milliseconds, got '$LATENCY_MS'"
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer, got '$REPEAT'"
for b in $BUCKETS; do
    [[ "$b" =~ ^syn-[0-9]+-(flat|dirs|skewed|uuid)$ ]] || die "BUCKETS holds syn-N-LAYOUT names, got '$b'"
done

PY="$REPO/.venv/bin/python"
if [[ ! -x "$PY" ]]; then
    log "creating .venv"
    python3 -m venv "$REPO/.venv" >&2
fi
BIN="${S3_FANOUT_BIN:-}"
if [[ -z "$BIN" ]]; then
    flag=()
    [[ "$PROFILE" == release ]] && flag=(--release)
    log "building s3-fanout ($PROFILE)"
    cargo build -q "${flag[@]}" --bin s3-fanout >&2
    BIN="$(cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/$PROFILE/s3-fanout"
fi
builds=("$BIN")
if [[ -n "${BASELINE_BIN:-}" ]]; then builds+=("$BASELINE_BIN"); fi

WORK="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_file() {
    for _ in $(seq 1 100); do [[ -s "$1" ]] && return 0; sleep 0.1; done
    die "$2 did not start"
}
"$PY" scripts/bench/synthetic_s3.py --port-file "$WORK/syn.port" >/dev/null 2>"$WORK/syn.log" &
pids+=($!)
wait_file "$WORK/syn.port" "the synthetic endpoint"
"$PY" scripts/bench/proxy.py --upstream "http://127.0.0.1:$(cat "$WORK/syn.port")" \
    --port-file "$WORK/proxy.port" --latency-ms "$LATENCY_MS" 2>"$WORK/proxy.log" &
pids+=($!)
wait_file "$WORK/proxy.port" "the counting proxy"
ENDPOINT="http://127.0.0.1:$(cat "$WORK/proxy.port")"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

# One run: "wall listings pieces cpu" on a line, or the tool's error.
run() {
    local bin="$1" bucket="$2" start end
    start="$(date +%s.%N)"
    if ! /usr/bin/time -f "%U %S" -o "$WORK/time" "$bin" sync "s3://$bucket" "s3://$bucket-twin" \
        --endpoint-url "$ENDPOINT" --no-progress --json --no-state >"$WORK/out" 2>"$WORK/err"; then
        die "$bin on $bucket failed: $(tail -n 3 "$WORK/err")"
    fi
    end="$(date +%s.%N)"
    "$PY" - "$WORK/out" "$WORK/time" "$start" "$end" <<'EOF'
import json, sys
summary = json.load(open(sys.argv[1]))
user, system = map(float, open(sys.argv[2]).read().split()[-2:])
print(f"{float(sys.argv[4]) - float(sys.argv[3]):.3f} {summary['requests'].get('ListObjectsV2', 0)} "
      f"{summary['counts']['listed_pieces']} {user + system:.2f}")
EOF
}

echo "Unchanged re-sync against the synthetic endpoint, +$LATENCY_MS ms per request, median of $REPEAT ($(nproc) cores):"
echo
echo "| bucket | build | wall s (range) | ListObjectsV2 | pieces | CPU s |"
echo "|---|---|---:|---:|---:|---:|"
for bucket in $BUCKETS; do
    for bin in "${builds[@]}"; do
        : >"$WORK/runs"
        for round in $(seq 1 "$REPEAT"); do
            log "$bucket: $bin, round $round"
            run "$bin" "$bucket" >>"$WORK/runs"
        done
        sort -n "$WORK/runs" | "$PY" -c '
import sys
runs = [line.split() for line in sys.stdin]
wall, lists, pieces, cpu = runs[len(runs) // 2]
print(f"| {sys.argv[1]} | {sys.argv[2]} | {wall} ({runs[0][0]}-{runs[-1][0]}) | {lists} | {pieces} | {cpu} |")
' "$bucket" "$(basename "$bin")"
    done
done
