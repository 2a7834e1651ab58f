#!/usr/bin/env bash
# Memory of transfers that pass bytes through this machine: the peak RSS of
# s3-fanout must stay bounded by part concurrency x part size, whatever the
# object's size. For each size in SIZES_MIB, one object of that size is
#   upload     a local file synced into a bucket: multipart, 8 MiB parts
#              read from the file by offset (ranged reads, never whole);
#   upload-1   the same file in one PutObject (--multipart-threshold 5GiB),
#              which also seeds the one-PUT source of stream-1;
#   download   restored from the bucket: ranged GETs of 8 MiB written at
#              their offsets;
#   stream-mp  copied between two endpoints of one moto (127.0.0.1 and
#              localhost, which s3-fanout cannot know are one server, so it
#              streams instead of CopyObject): each part a ranged GET piped
#              into an UploadPart;
#   stream-1   the same for the one-PUT source: one GET piped into one PUT.
# Each runs once per entry of VARIANTS: `default` (no flags: --concurrency
# 64, --part-concurrency 8) and `cNpM` (--concurrency N --part-concurrency M;
# with one object only M matters). upload-1 runs once, at default settings.
#
#   scripts/bench-transfer-memory.sh
#   SIZES_MIB="64 1024" VARIANTS=default scripts/bench-transfer-memory.sh
#   PROFILE=release MOTO=stock scripts/bench-transfer-memory.sh
#
# Every result is checked before its figure counts: exit 0, one object
# copied and none mismatched; the part count (8 MiB parts) and, for the
# streams, no CopyObject or UploadPartCopy in the summary's requests; the
# destination's size and ETag equal to the ones computed from the file (the
# MD5, or the MD5 of the 8 MiB parts' MD5s with -N, which moto computes from
# the bytes it received); the restored file byte-equal (cmp).
#
# PASS when, for every transfer and setting,
#   growth: peak RSS at the largest size <= peak RSS at the smallest +
#           MAX_GROWTH_MIB (16: a debug build's run-to-run noise is a few
#           MiB; memory in proportion to the object would add 0.8% of
#           LARGEST-SMALLEST, 15 MiB for 64 -> 2048 MiB, and a buffered
#           object all of it), and
#   bound:  every peak RSS <= that transfer's peak for a 1 KiB object +
#           part concurrency x 8 MiB (all parts in flight held whole, the
#           documented ceiling: "memory is --concurrency x part size at
#           most"; the pipes hold a few chunks, far less);
# else FAIL with exit status 1 (a wrong or failed run also exits 1). Prints
# a Markdown table, writes bench-results/transfer-memory.{md,json}; progress
# goes to stderr, results to stdout.
#
# Environment:
#   SIZES_MIB      object sizes, 16..5120 MiB ("64 512 2048")
#   VARIANTS       settings to run each transfer with ("default c4p4")
#   PROFILE        auto | debug | release (auto: release if its binary is
#                  newer than every source file, else debug; never starts a
#                  long release build on its own)
#   MOTO           ranged | stock (ranged: scripts/bench/moto_ranged_get.py,
#                  moto whose ranged GETs read only their range; stock moto
#                  reads the whole object for each 8 MiB range, quadratic in
#                  the size: ~8 min per 2 GiB restore, and its slow
#                  answers keep fewer bytes in flight, so s3-fanout's peaks
#                  come out a few MiB lower than with ranged)
#   DATA_DIR       where files and moto's spooled objects go (/dev/shm when
#                  writable: tmpfs, so the root disk is never filled; else
#                  $TMPDIR or /tmp). Needs ~3x the largest size free.
#   MIN_AVAILABLE_MIB  a watchdog stops moto (and the run fails) when the
#                  machine's MemAvailable or DATA_DIR's free space drops
#                  below this (1024)
set -euo pipefail

SIZES_MIB="${SIZES_MIB:-64 512 2048}"
VARIANTS="${VARIANTS:-default c4p4}"
PROFILE="${PROFILE:-auto}"
MOTO="${MOTO:-ranged}"
MAX_GROWTH_MIB="${MAX_GROWTH_MIB:-16}"
MIN_AVAILABLE_MIB="${MIN_AVAILABLE_MIB:-1024}"
if [[ -z "${DATA_DIR:-}" ]]; then
    if [[ -d /dev/shm && -w /dev/shm ]]; then DATA_DIR=/dev/shm; else DATA_DIR="${TMPDIR:-/tmp}"; fi
fi
readonly SIZES_MIB VARIANTS MOTO MAX_GROWTH_MIB MIN_AVAILABLE_MIB DATA_DIR
readonly PART_MIB=8 # s3-fanout's part size when bytes pass through this machine
readonly READY_TIMEOUT_S=60

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
cd "$REPO"
readonly PY="$REPO/.venv/bin/python"

log() { printf 'bench-transfer-memory: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

read -ra sizes <<<"$SIZES_MIB"
read -ra variants <<<"$VARIANTS"
((${#sizes[@]} >= 2)) || die "SIZES_MIB needs at least two sizes, got '$SIZES_MIB'"
((${#variants[@]} >= 1)) || die "VARIANTS is empty"
for size in "${sizes[@]}"; do
    if ! [[ "$size" =~ ^[1-9][0-9]*$ ]] || ((size < 16 || size > 5120)); then
        die "SIZES_MIB must hold integers from 16 (above the 8 MiB multipart threshold) to 5120 (one PUT's limit), got '$size'"
    fi
done
mapfile -t sizes < <(printf '%s\n' "${sizes[@]}" | sort -n -u)
readonly largest="${sizes[-1]}"
for variant in "${variants[@]}"; do
    [[ "$variant" == default || "$variant" =~ ^c[1-9][0-9]*p[1-9][0-9]*$ ]] ||
        die "VARIANTS may hold default and cNpM (--concurrency N --part-concurrency M), got '$variant'"
done
[[ "${variants[0]}" == default ]] || die "VARIANTS must start with default (it seeds the sources)"
[[ "$MOTO" == ranged || "$MOTO" == stock ]] || die "MOTO must be ranged or stock, got '$MOTO'"
for var in MAX_GROWTH_MIB MIN_AVAILABLE_MIB; do
    [[ "${!var}" =~ ^[0-9]+$ ]] || die "$var must be a non-negative integer, got '${!var}'"
done

# Dummy credentials, and nothing from the machine's own AWS or s3-fanout
# setup: a profile, endpoint or S3_FANOUT_* default must not change the run
# or send it anywhere but the local server.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN \
    AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE \
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI
for var in "${!S3_FANOUT_@}"; do unset "$var"; done
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

# --- room --------------------------------------------------------------------

mkdir -p "$DATA_DIR"
free_mib() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }
available_mib() { awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo; }
on_tmpfs=0
[[ "$(stat -f -c %T "$DATA_DIR")" == tmpfs ]] && on_tmpfs=1
# At most three copies of the largest object at once (the file, the source
# in moto, the copy or restore), plus moto's own memory: it holds a one-PUT
# body and a whole object answering a plain GET (stream-1), or the parts
# joined in CompleteMultipartUpload; with MOTO=stock also each 8 MiB range's
# whole object.
need_disk=$((3 * largest + 256))
need_mem=$((3 * largest + MIN_AVAILABLE_MIB))
((on_tmpfs)) && need_mem=$((need_mem + need_disk))
log "data in $DATA_DIR ($( ((on_tmpfs)) && echo tmpfs || echo disk)): $(free_mib "$DATA_DIR") MiB free," \
    "needs ~$need_disk; memory available $(available_mib) MiB, needs ~$need_mem; root disk:" \
    "$(df -h / | awk 'NR == 2 { print $4 " free of " $2 }')"
(($(free_mib "$DATA_DIR") >= need_disk)) ||
    die "$DATA_DIR has $(free_mib "$DATA_DIR") MiB free, ~$need_disk needed: lower SIZES_MIB or set DATA_DIR"
(($(available_mib) >= need_mem)) ||
    die "$(available_mib) MiB of memory available, ~$need_mem needed: lower SIZES_MIB"

# --- build -------------------------------------------------------------------

if [[ "$PROFILE" == auto ]]; then
    PROFILE=debug
    target_dir="$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    release_bin="$target_dir/release/s3-fanout"
    if [[ -x "$release_bin" ]]; then
        newest_source="$(git ls-files -z -- src Cargo.toml Cargo.lock build.rs |
            xargs -0 stat -c %Y 2>/dev/null | sort -n | tail -n 1)"
        (($(stat -c %Y "$release_bin") > newest_source)) && PROFILE=release
    fi
fi
case "$PROFILE" in
    debug) cargo_profile=() ;;
    release) cargo_profile=(--release) ;;
    *) die "PROFILE must be auto, debug or release, got '$PROFILE'" ;;
esac
readonly PROFILE
log "building s3-fanout ($PROFILE)"
cargo build --quiet "${cargo_profile[@]}" --bin s3-fanout
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
readonly BIN="$target_dir/$PROFILE/s3-fanout"
# The bound uses the part concurrency a run really has: the default from
# the binary's own help, or the variant's.
default_part_concurrency="$("$BIN" sync --help |
    awk '/--part-concurrency/ { on = 1 } on && /\[default: [0-9]+\]/ { gsub(/[^0-9]/, ""); print; exit }')"
[[ "$default_part_concurrency" =~ ^[0-9]+$ ]] || die "could not read --part-concurrency's default from '$BIN sync --help'"
readonly default_part_concurrency

scripts/moto.sh install

# --- server ------------------------------------------------------------------

WORK="$(mktemp -d "$DATA_DIR/bench-transfer-memory.XXXXXX")"
readonly WORK
mkdir -p "$WORK/moto-tmp" "$WORK/runs"
moto_pid="" watchdog_pid=""
cleanup() {
    if [[ -n "$watchdog_pid" ]]; then kill "$watchdog_pid" 2>/dev/null || true; fi
    if [[ -n "$moto_pid" ]]; then
        kill "$moto_pid" 2>/dev/null || true
        wait "$moto_pid" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

if [[ "$MOTO" == ranged ]]; then server=scripts/bench/moto_ranged_get.py; else server=scripts/moto_server.py; fi
port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
readonly endpoint="http://127.0.0.1:$port" other="http://localhost:$port"
log "starting $server on 127.0.0.1:$port (objects spooled under $WORK/moto-tmp)"
# TMPDIR: moto spools every object over 5 MiB to a temporary file.
TMPDIR="$WORK/moto-tmp" "$PY" "$server" -H 127.0.0.1 -p "$port" </dev/null >"$WORK/moto.log" 2>&1 &
moto_pid=$!
deadline=$((SECONDS + READY_TIMEOUT_S))
until curl --silent --fail --noproxy '*' --max-time 2 --output /dev/null "$endpoint/moto-api/"; do
    kill -0 "$moto_pid" 2>/dev/null || die "moto exited: $(tail -n 20 "$WORK/moto.log")"
    ((SECONDS < deadline)) || die "moto did not answer within ${READY_TIMEOUT_S}s"
    sleep 0.2
done

# Stops our moto (so the transfer in flight fails) before the machine runs
# short of memory or DATA_DIR of space; the run then dies saying why.
watchdog() {
    while sleep 1; do
        local mem disk
        mem="$(available_mib)" disk="$(free_mib "$WORK")"
        if ((mem < MIN_AVAILABLE_MIB || disk < MIN_AVAILABLE_MIB)); then
            echo "memory available $mem MiB, $DATA_DIR free $disk MiB (floor $MIN_AVAILABLE_MIB)" >"$WORK/watchdog"
            kill "$moto_pid" 2>/dev/null
            return
        fi
    done
}
watchdog &
watchdog_pid=$!

fail() {
    [[ -s "$WORK/watchdog" ]] && log "the watchdog stopped moto: $(cat "$WORK/watchdog")"
    [[ -n "${1:-}" && -s "$WORK/runs/$1.json" ]] && cat "$WORK/runs/$1.json" >&2
    tail -n 5 "$WORK/moto.log" >&2 || true
    die "${2:-the $1 run failed}"
}

# --- helpers -----------------------------------------------------------------

# S3 housekeeping and checks, straight to moto with boto3 from the venv.
s3() {
    "$PY" - "$endpoint" "$@" <<'PY'
import hashlib, sys
import boto3
from botocore.config import Config

endpoint, command, *args = sys.argv[1:]
assert endpoint.startswith("http://127.0.0.1:"), endpoint
if command == "file-etags":  # PATH PART_MIB: "md5 multipart-etag"
    path, part = args[0], int(args[1]) << 20
    whole, parts = hashlib.md5(), []
    with open(path, "rb") as f:
        while chunk := f.read(part):
            whole.update(chunk)
            parts.append(hashlib.md5(chunk).digest())
    print(f'"{whole.hexdigest()}"', f'"{hashlib.md5(b"".join(parts)).hexdigest()}-{len(parts)}"')
    sys.exit()
s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(s3={"addressing_style": "path"}))
if command == "mkbucket":
    s3.create_bucket(Bucket=args[0])
elif command == "head":  # BUCKET KEY: "size etag"
    head = s3.head_object(Bucket=args[0], Key=args[1])
    print(head["ContentLength"], head["ETag"])
elif command == "rm":  # BUCKET [PREFIX]: every object (and upload) under it
    bucket, prefix = args[0], args[1] if len(args) > 1 else ""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
    for upload in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
else:
    sys.exit(f"unknown command {command}")
PY
}

# Runs one s3-fanout command as the only child of a fresh python3, so
# RUSAGE_CHILDREN's ru_maxrss (KiB) is the peak RSS of that one process,
# with no polling interval that could miss a short spike. moto's own peak
# (VmHWM, reset through clear_refs first) is recorded beside it.
measure() {
    local name="$1"
    shift
    python3 - "$WORK/runs/$name" "$moto_pid" "$BIN" "$@" --json --no-progress <<'PY'
import json, resource, subprocess, sys, time

out, moto_pid, *command = sys.argv[1:]

def moto_hwm_kib():
    try:
        with open(f"/proc/{moto_pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None

try:
    with open(f"/proc/{moto_pid}/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
started = time.monotonic()
with open(f"{out}.json", "wb") as summary:
    code = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=summary).returncode
wall = time.monotonic() - started
with open(f"{out}.measure", "w") as f:
    json.dump({"max_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
               "wall_secs": wall, "moto_hwm_kib": moto_hwm_kib()}, f)
sys.exit(code)
PY
}

flags_of() {
    case "$1" in
        default) ;;
        c*p*)
            local c="${1#c}"
            echo "--concurrency ${c%%p*} --part-concurrency ${1##*p}"
            ;;
    esac
}
part_concurrency_of() {
    if [[ "$1" == default ]]; then echo "$default_part_concurrency"; else echo "${1##*p}"; fi
}

# run KIND SIZE VARIANT -- ARGS...: measures one transfer and records it.
run() {
    local kind="$1" size="$2" variant="$3"
    shift 4
    local name="$kind-$size-$variant"
    local -a flags
    read -ra flags <<<"$(flags_of "$variant")"
    log "$kind, $( ((size)) && echo "$size MiB" || echo "1 KiB") object, $variant"
    measure "$name" "$@" "${flags[@]}" || fail "$name"
    printf '%s %s %s %s\n' "$kind" "$size" "$variant" "$(part_concurrency_of "$variant")" >>"$WORK/runs/list"
}

# expect_object BUCKET KEY SIZE_BYTES ETAG NAME
expect_object() {
    local got
    got="$(s3 head "$1" "$2")" || fail "$5" "$5: s3://$1/$2 is missing"
    [[ "$got" == "$3 $4" ]] || fail "$5" "$5: s3://$1/$2 is '$got', want '$3 $4'"
}

# --- baseline: a 1 KiB object each way ---------------------------------------

s3 mkbucket tm-tiny-src
s3 mkbucket tm-tiny-dst
mkdir -p "$WORK/tiny"
head -c 1024 /dev/urandom >"$WORK/tiny/object.bin"
read -r tiny_md5 _ <<<"$(s3 file-etags "$WORK/tiny/object.bin" "$PART_MIB")"
run upload 0 default -- sync "$WORK/tiny" s3://tm-tiny-src --endpoint-url "$endpoint"
expect_object tm-tiny-src object.bin 1024 "$tiny_md5" upload-0-default
run download 0 default -- sync s3://tm-tiny-src "$WORK/tiny-down" --endpoint-url "$endpoint"
cmp -s "$WORK/tiny/object.bin" "$WORK/tiny-down/object.bin" || fail download-0-default "the 1 KiB restore differs"
run stream 0 default -- sync s3://tm-tiny-src s3://tm-tiny-dst \
    --source-endpoint-url "$endpoint" --dest-endpoint-url "$other"
expect_object tm-tiny-dst object.bin 1024 "$tiny_md5" stream-0-default

# --- the sizes ---------------------------------------------------------------

for size in "${sizes[@]}"; do
    bytes=$((size << 20))
    src="$WORK/src-$size"
    mkdir -p "$src"
    log "$size MiB: writing the file and its ETags"
    head -c "$bytes" /dev/urandom >"$src/object.bin"
    read -r md5 mp_etag <<<"$(s3 file-etags "$src/object.bin" "$PART_MIB")"
    for bucket in src-mp src-1 dst; do s3 mkbucket "tm-$size-$bucket"; done

    # Settings other than default write to dst and are removed after the
    # check; default's upload stays as stream-mp's and download's source.
    for ((i = ${#variants[@]} - 1; i >= 0; i--)); do
        v="${variants[i]}"
        if [[ "$v" == default ]]; then dest=(tm-"$size"-src-mp ""); else dest=(tm-"$size"-dst "up-$v/"); fi
        run upload "$size" "$v" -- sync "$src" "s3://${dest[0]}/${dest[1]}" --endpoint-url "$endpoint"
        expect_object "${dest[0]}" "${dest[1]}object.bin" "$bytes" "$mp_etag" "upload-$size-$v"
        [[ "$v" == default ]] || s3 rm "${dest[0]}" "${dest[1]}"
    done
    for v in "${variants[@]}"; do
        run download "$size" "$v" -- sync "s3://tm-$size-src-mp" "$WORK/down" --endpoint-url "$endpoint"
        cmp -s "$src/object.bin" "$WORK/down/object.bin" || fail "download-$size-$v" "the $size MiB restore ($v) differs from its file"
        rm -rf "$WORK/down"
    done
    run upload-1 "$size" default -- sync "$src" "s3://tm-$size-src-1" --endpoint-url "$endpoint" \
        --multipart-threshold 5GiB
    expect_object "tm-$size-src-1" object.bin "$bytes" "$md5" "upload-1-$size-default"
    rm -rf "$src"

    for v in "${variants[@]}"; do
        run stream-1 "$size" "$v" -- sync "s3://tm-$size-src-1" "s3://tm-$size-dst/one-$v/" \
            --source-endpoint-url "$endpoint" --dest-endpoint-url "$other"
        expect_object "tm-$size-dst" "one-$v/object.bin" "$bytes" "$md5" "stream-1-$size-$v"
        s3 rm "tm-$size-dst" "one-$v/"
    done
    s3 rm "tm-$size-src-1"
    for v in "${variants[@]}"; do
        run stream-mp "$size" "$v" -- sync "s3://tm-$size-src-mp" "s3://tm-$size-dst/mp-$v/" \
            --source-endpoint-url "$endpoint" --dest-endpoint-url "$other"
        expect_object "tm-$size-dst" "mp-$v/object.bin" "$bytes" "$mp_etag" "stream-mp-$size-$v"
        s3 rm "tm-$size-dst" "mp-$v/"
    done
    s3 rm "tm-$size-src-mp"
done

# --- verdict -----------------------------------------------------------------

mkdir -p bench-results
python3 - "$WORK/runs" "$PROFILE" "$MOTO" "$MAX_GROWTH_MIB" "$PART_MIB" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(nproc)" <<'PY'
import datetime, json, math, sys

runs, profile, moto, max_growth, part_mib, commit, cpus = sys.argv[1:]
max_growth, part_mib = float(max_growth), int(part_mib)

rows, errors = [], []
with open(f"{runs}/list") as f:
    listed = [line.split() for line in f if line.strip()]
for kind, size, variant, part_concurrency in listed:
    size, part_concurrency = int(size), int(part_concurrency)
    name = f"{kind}-{size}-{variant}"
    with open(f"{runs}/{name}.json") as f:
        summary = json.load(f)
    with open(f"{runs}/{name}.measure") as f:
        measure = json.load(f)
    counts, requests = summary["counts"], summary["requests"]
    row = {"kind": kind, "size_mib": size, "variant": variant, "part_concurrency": part_concurrency,
           "peak_rss_mib": round(measure["max_rss_kib"] / 1024, 1),
           "wall_secs": round(measure["wall_secs"], 2),
           "moto_peak_mib": measure["moto_hwm_kib"] and round(measure["moto_hwm_kib"] / 1024),
           "requests": requests, "retries": counts["retries"]}
    rows.append(row)
    # A figure from a run that moved the object some other way, or not at
    # all, says nothing about this memory; the bytes themselves were
    # checked (ETag, cmp) as the runs went.
    wrong = []
    if summary["exit_code"] != 0 or counts["copied"] != 1 or counts["failed"] or counts["verify_mismatched"]:
        wrong.append(f"status {summary['status']}, copied {counts['copied']}, failed {counts['failed']}, "
                     f"mismatched {counts['verify_mismatched']}")
    parts = math.ceil(size / part_mib)
    op = lambda name: requests.get(name, 0)
    if kind.startswith("stream") and (op("CopyObject") or op("UploadPartCopy")):
        wrong.append("copied server-side")
    want = {
        "upload": {"UploadPart": parts, "PutObject": 0} if size else {"PutObject": 1},
        "upload-1": {"PutObject": 1, "UploadPart": 0},
        "download": {"GetObject": parts if size else 1},
        "stream": {"PutObject": 1, "GetObject": 1},
        "stream-1": {"PutObject": 1, "UploadPart": 0, "GetObject": 1},
        "stream-mp": {"UploadPart": parts, "GetObject": parts, "PutObject": 0},
    }[kind]
    for name_, n in want.items():
        # A retried GET or part is one more request; a missing one is wrong.
        if not (n <= op(name_) <= n + counts["retries"]):
            wrong.append(f"{name_} {op(name_)} (want {n})")
    if wrong:
        errors.append(f"{name}: " + "; ".join(wrong))

# The 1 KiB baseline of each transfer: what the process costs with nothing
# in flight to speak of.
base_of = {"upload": "upload", "upload-1": "upload", "download": "download",
           "stream-1": "stream", "stream-mp": "stream"}
baseline = {r["kind"]: r["peak_rss_mib"] for r in rows if r["size_mib"] == 0}
sized = [r for r in rows if r["size_mib"]]
for r in sized:
    r["bound_mib"] = round(baseline[base_of[r["kind"]]] + r["part_concurrency"] * part_mib, 1)

names = {"upload": "upload, multipart", "upload-1": "upload, one PUT", "download": "download",
         "stream-mp": "stream, multipart source", "stream-1": "stream, one-PUT source"}
def setting(variant):
    if variant == "default":
        return "default"
    c, p = variant[1:].split("p")
    return f"-c {c} -p {p}"
def ops(requests):
    data = ["GetObject", "PutObject", "UploadPart"]
    shown = [f"{op} {requests[op]}" for op in data if requests.get(op)]
    rest = sum(n for op, n in requests.items() if op not in data)
    return ", ".join(shown + [f"+{rest} other"])

order = list(names)
sized.sort(key=lambda r: (order.index(r["kind"]), r["variant"] != "default", r["variant"], r["size_mib"]))
table = ["| transfer | settings | object (MiB) | peak RSS (MiB) | bound (MiB) | wall (s) | MiB/s | moto peak (MiB) | requests |",
         "|---|---|---:|---:|---:|---:|---:|---:|---|"]
for r in sized:
    table.append(f"| {names[r['kind']]} | {setting(r['variant'])} | {r['size_mib']:,} | {r['peak_rss_mib']:.1f} "
                 f"| {r['bound_mib']:.0f} | {r['wall_secs']:.1f} | {r['size_mib'] / r['wall_secs']:.0f} "
                 f"| {r['moto_peak_mib'] if r['moto_peak_mib'] is not None else '?'} | {ops(r['requests'])} |")

verdicts = []
for kind in order:
    for variant in dict.fromkeys(r["variant"] for r in sized if r["kind"] == kind):
        mine = sorted((r for r in sized if r["kind"] == kind and r["variant"] == variant), key=lambda r: r["size_mib"])
        small, large = mine[0], mine[-1]
        growth = large["peak_rss_mib"] - small["peak_rss_mib"]
        verdicts.append((growth <= max_growth,
                         f"{names[kind]}, {setting(variant)}: peak RSS {small['peak_rss_mib']:.1f} MiB at "
                         f"{small['size_mib']} MiB, {large['peak_rss_mib']:.1f} at {large['size_mib']} MiB "
                         f"({growth:+.1f}; limit +{max_growth:.0f})"))
over = [r for r in sized if r["peak_rss_mib"] > r["bound_mib"]]
highest = max(sized, key=lambda r: r["peak_rss_mib"] - r["bound_mib"])
verdicts.append((not over,
                 "every peak within its bound (1 KiB baseline + part concurrency x "
                 f"{part_mib} MiB); closest: {names[highest['kind']]}, {setting(highest['variant'])}, "
                 f"{highest['size_mib']} MiB: {highest['peak_rss_mib']:.1f} of {highest['bound_mib']:.0f}"))
passed = not errors and all(ok for ok, _ in verdicts)

lines = [
    "# Memory of transfers through this machine",
    "",
    f"`scripts/bench-transfer-memory.sh`, {profile} build, commit {commit}, {cpus} CPUs, "
    f"moto ({'ranged GETs read only their range' if moto == 'ranged' else 'stock'}), "
    f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. One object per run; "
    "`-c N -p M` is `--concurrency N --part-concurrency M`. 1 KiB baseline peak RSS: "
    + ", ".join(f"{k} {v:.1f} MiB" for k, v in baseline.items()) + ".",
    "",
    *table,
    "",
    *[f"- {'ok' if ok else 'FAIL'}: {text}" for ok, text in verdicts],
    *[f"- wrong run: {e}" for e in errors],
    "",
    "PASS" if passed else "FAIL",
]
report = "\n".join(lines) + "\n"
with open("bench-results/transfer-memory.md", "w") as f:
    f.write(report)
with open("bench-results/transfer-memory.json", "w") as f:
    json.dump({"profile": profile, "moto": moto, "commit": commit, "cpus": int(cpus),
               "limits": {"growth_mib": max_growth, "part_mib": part_mib},
               "baseline_mib": baseline, "runs": rows, "errors": errors, "pass": passed}, f, indent=2)
    f.write("\n")
print(report, end="")
sys.exit(0 if passed else 1)
PY
