#!/usr/bin/env bash
# The serverless runtime's throughput on this machine, next to the CLI and
# the server's ceiling: the same objects, the same server (Garage), the same
# latency on every request (LATENCY_MS, 30 by default: a region's round
# trip). scripts/bench.sh runs the three (the `s3-fanout-serverless` tool is
# `s3-fanout run --wait` on `s3-fanout local-stack`) and prints, after the
# usual table, where each serverless run's time went
# (scripts/bench/serverless.py): the run's phases and the state machine's
# waits, objects a second per copier, and each batch's life from SQS
# accepting it to its result written (queued, preparing, copying,
# recording, handing on), with the listers' time sending batches and
# saving checkpoints. Tables: bench-results/latest.md and
# bench-results/serverless.md.
#
#   scripts/bench-serverless.sh
#   COUNT=2000 REPEAT=1 SERVERLESS_COPIERS=4 scripts/bench-serverless.sh
#
# Any of scripts/bench.sh's settings apply (S3_FANOUT_BIN, CEILING_BIN,
# SERVER, SCENARIOS, ...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export COUNT="${COUNT:-10000}" SERVER="${SERVER:-garage}" LATENCY_MS="${LATENCY_MS:-30}" \
    REPEAT="${REPEAT:-3}" CHART="${CHART:-0}" \
    TOOLS="${TOOLS:-ceiling s3-fanout s3-fanout-serverless}" \
    SCENARIOS="${SCENARIOS:-prefixed resync-unchanged resync-1pct}"
exec scripts/bench.sh
