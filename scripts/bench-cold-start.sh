#!/usr/bin/env bash
# Cold-start figures of the Lambda functions as SAM builds them: each
# release bootstrap's size, and the time from process start to its first
# Runtime API `next` request (scripts/bench/cold_start.py).
#
#   scripts/bench-cold-start.sh [ROUNDS]       (default 20 starts a function)
#
# The bootstraps are built for this machine's architecture, so they can run
# here: x86_64 on x86_64. (An arm64 build runs only on arm64; under
# emulation its timings would be the emulator's.) The arm64 sizes come from
# scripts/sam-build.sh arm64, which CI runs.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

case "$(uname -m)" in
x86_64) architecture=x86_64 ;;
aarch64) architecture=arm64 ;;
*) echo "bench-cold-start.sh: no Lambda architecture for $(uname -m)" >&2 && exit 1 ;;
esac

build_dir="$(mktemp -d)"
trap 'rm -rf "$build_dir"' EXIT
SAM_BUILD_DIR="$build_dir/build" scripts/sam-build.sh "$architecture"
python3 scripts/bench/cold_start.py "$build_dir/build" "${1:-20}"
