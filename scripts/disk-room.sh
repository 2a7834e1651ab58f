#!/usr/bin/env bash
# Makes room on disk before the build and the tests, or fails saying why.
#
#   scripts/disk-room.sh TARGET_DIR
#
# CI shares one cargo target directory between clones (scripts/test.sh), and
# every change of dependencies or flags leaves a whole generation of test
# binaries behind in it. moto spools every object over 5 MiB to $TMPDIR, and
# on a full disk it answers HTTP 500 to UploadPart (OSError ENOSPC), which a
# test reports as a server error far from the cause. So: below WANT_GIB free,
# drop what cargo rebuilds on demand (incremental state, and executables not
# written within the last hour, which no build of this run has produced yet);
# below NEED_GIB after that, stop with the figures.
set -euo pipefail

readonly WANT_GIB="${DISK_WANT_GIB:-20}"
readonly NEED_GIB="${DISK_NEED_GIB:-6}"

log() { printf 'disk-room.sh: %s\n' "$*" >&2; }

[[ $# -eq 1 ]] || {
    log "usage: scripts/disk-room.sh TARGET_DIR"
    exit 2
}
target="$1"
spool="${TMPDIR:-/tmp}"
mkdir -p "$target"

free_gib() { df -P --block-size=1G "$1" | awk 'NR == 2 { print $4 }'; }

least_free() {
    local a b
    a="$(free_gib "$target")"
    b="$(free_gib "$spool")"
    echo $((a < b ? a : b))
}

free="$(least_free)"
if ((free < WANT_GIB)); then
    before="$(du -sh "$target" 2>/dev/null | cut -f1)"
    find "$target" -mindepth 2 -maxdepth 2 -type d -name incremental -exec rm -rf {} +
    # Test and bench executables have no extension; libraries (.rlib, .rmeta,
    # .so) are shared by every generation and cheap to keep.
    find "$target" -mindepth 3 -maxdepth 3 -path '*/deps/*' -type f ! -name '*.*' \
        -perm -u+x -mmin +60 -delete
    after="$(du -sh "$target" 2>/dev/null | cut -f1)"
    log "only ${free} GiB free; pruned $target from $before to $after"
    free="$(least_free)"
fi
log "${free} GiB free for $target and $spool"
if ((free < NEED_GIB)); then
    log "error: ${free} GiB free is not enough (the build and moto's spooled objects need ${NEED_GIB} GiB)."
    log "free space on $(df -P "$target" | awk 'NR == 2 { print $6 }'), or remove $target"
    exit 1
fi
