#!/usr/bin/env bash
# Memory benchmark: the peak RSS of a 20,000-object sync must stay within 20%
# of a 2,000-object one. The pipeline streams listings through bounded
# channels, so memory should not grow with the bucket; this is the check.
#
#   scripts/bench-memory.sh
#   SMALL=2000 LARGE=20000 CONCURRENCY=64 scripts/bench-memory.sh
#
# Seeds two source buckets on a fresh local moto, syncs each into an empty
# destination with `s3-fanout sync --json`, and prints a table plus PASS, or
# FAIL with exit status 1. Progress goes to stderr, results to stdout.
set -euo pipefail

SMALL="${SMALL:-2000}"
LARGE="${LARGE:-20000}"
CONCURRENCY="${CONCURRENCY:-64}"
readonly SMALL LARGE CONCURRENCY
readonly MAX_GROWTH_PCT=20

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
cd "$REPO"

log() { printf 'bench-memory: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for var in SMALL LARGE CONCURRENCY; do
    [[ "${!var}" =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer, got '${!var}'"
done
((LARGE > SMALL)) || die "LARGE ($LARGE) must be greater than SMALL ($SMALL)"

# moto's dummy credentials, and nothing from the machine's own AWS setup:
# a profile or endpoint variable must not send the benchmark anywhere else.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN \
    AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE \
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

# A debug build is enough: the check compares two runs of the same binary
# (growth), not absolute size, and it skips a several-minute release build.
log "building s3-fanout and the seed example (debug)"
cargo build --quiet --bin s3-fanout --example seed
# Ask cargo where it put them: CARGO_TARGET_DIR or a config may move target/.
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
readonly BIN="$target_dir/debug/s3-fanout"
readonly SEED="$target_dir/debug/examples/seed"

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

# Both sources first, so the two syncs run against the same server state.
for n in "$SMALL" "$LARGE"; do
    log "seeding $n objects"
    "$SEED" --endpoint-url "$endpoint" --bucket "bench-src-$n" --count "$n"
    "$SEED" --endpoint-url "$endpoint" --bucket "bench-dst-$n" --count 0 2>/dev/null
done

# Runs the sync as the only child of a fresh python3, so RUSAGE_CHILDREN's
# ru_maxrss (KiB on Linux) is the peak RSS of that one process, with no
# polling interval that could miss a short spike.
measure_sync() {
    local n="$1"
    python3 - "$WORK/$n.json" "$WORK/$n.rss" "$BIN" sync "s3://bench-src-$n" "s3://bench-dst-$n" \
        --endpoint-url "$endpoint" --json --no-progress --concurrency "$CONCURRENCY" <<'PY'
import resource, subprocess, sys

summary_path, rss_path, *command = sys.argv[1:]
with open(summary_path, "wb") as summary:
    code = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=summary).returncode
with open(rss_path, "w") as rss:
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=rss)
sys.exit(code)
PY
}

for n in "$SMALL" "$LARGE"; do
    log "syncing $n objects (concurrency $CONCURRENCY)"
    if ! measure_sync "$n"; then
        cat "$WORK/$n.json" >&2 || true
        die "the $n-object sync failed; its summary is above"
    fi
done

# A figure from a sync that copied less than everything would say nothing
# about memory, so the counts are checked before the verdict.
python3 - "$WORK" "$SMALL" "$LARGE" "$MAX_GROWTH_PCT" <<'PY'
import json, sys

work, small, large, max_growth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
rows = []
for n in (small, large):
    with open(f"{work}/{n}.json") as f:
        summary = json.load(f)
    with open(f"{work}/{n}.rss") as f:
        rss_mib = int(f.read()) / 1024
    counts = summary["counts"]
    if summary["exit_code"] != 0 or counts["copied"] != n or counts["verify_mismatched"] != 0:
        sys.exit(f"bench-memory: error: the {n}-object sync did not copy everything: "
                 f"status {summary['status']}, copied {counts['copied']}, failed {counts['failed']}")
    duration = summary["duration_secs"]
    requests = summary["requests"]
    rows.append((n, rss_mib, duration, n / duration, sum(requests.values()), requests))

print(f"{'objects':>8}  {'peak RSS (MiB)':>14}  {'duration (s)':>12}  {'objects/s':>9}  {'requests':>8}")
for n, rss, duration, rate, total, _ in rows:
    print(f"{n:>8}  {rss:>14.1f}  {duration:>12.1f}  {rate:>9.0f}  {total:>8}")
for n, *_, requests in rows:
    print(f"requests {n}: " + ", ".join(f"{op} {count}" for op, count in requests.items()))

def label(n):
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)

growth = (rows[1][1] - rows[0][1]) / rows[0][1] * 100
print(f"memory growth {label(large)} vs {label(small)}: {growth:+.1f}%")
if growth <= max_growth:
    print("PASS")
else:
    print(f"FAIL (limit +{max_growth:.0f}%)")
    sys.exit(1)
PY
