#!/usr/bin/env bash
# What reading a ListObjectsV2 page costs (release build): the AWS SDK's
# deserializer against the page parser the listings use
# (src/backend/s3/list_page.rs), CPU and wall time per 1,000-object page
# served from loopback. Prints a table; times are this machine's, not a test.
#
#   scripts/bench-list-decode.sh [PAGES=300]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_RELEASE:-$HOME/.cache/s3-fanout/target-rel}"
cargo run --quiet --release --locked --example list_decode -- "${1:-300}"
