#!/usr/bin/env bash
# Figures of the ledger of proven pairs at scale (release build): bytes per
# pair on disk, commit and read-back rates. Prints them; times are this
# machine's, not a test.
#
#   scripts/bench-ledger.sh [ENTRIES=1000000] [PIECES=8]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_RELEASE:-$HOME/.cache/s3-fanout/target-rel}"
cargo run --quiet --release --locked --example ledger_figures -- "${1:-1000000}" "${2:-8}"
