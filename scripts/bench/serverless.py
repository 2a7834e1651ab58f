#!/usr/bin/env python3
"""Where a serverless run's time went: one Markdown section for
scripts/bench.sh's s3-fanout-serverless runs (bench-results/serverless.md).

    serverless.py EMF_LOG RUN_JSON SCENARIO WALL_S COPIERS LATENCY_MS

EMF_LOG is the local stack's metrics (`local-stack --emf-log`), one EMF
record a line from every function; RUN_JSON is what `s3-fanout run --wait
--json` printed. From them, for the run:

- the wall time, in parts that add up to it: while some function of the
  run was running (each record's BatchDuration, up to its Timestamp), while
  none was (the state machine waiting between its progress polls, and its
  transitions), and the CLI's own start and last poll (its wall time minus
  the run's); then the phases of the run's report (plan, list and send,
  copy, validate, report), which overlap;
- the copiers: objects a second per copier (copies over the copiers'
  invocation time) and against the copy phase, with COPIERS invocations
  allowed at once;
- each batch's life, from SQS accepting it to its result written: queued
  (BatchQueueTime: the queue, the event source's poll, the invocation),
  preparing (reading the run's manifest and whether the batch was counted
  before), copying (BatchCopyTime) and recording its result
  (BatchResultTime), then, for a batch of a listed range, looking whether
  the range is all copied and sending it to VALIDATE (BatchHandoffTime),
  with their shares;
- the listers: their invocation time, and its shares sending batches
  (SendTime: SQS and the run counters) and saving checkpoints
  (CheckpointTime).

The shares of a batch's life or a lister's time are of work that runs side
by side; only the phases and gaps add up to the wall time.
"""

import json
import statistics
import sys


def records(emf_log, run_id):
    with open(emf_log, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("run_id") == run_id:
                yield r


def covered(intervals):
    """Seconds the union of (start, end) intervals covers."""
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def pct(part, whole):
    return f"{100 * part / whole:.0f}%" if whole else "-"


def quantiles(values):
    if not values:
        return "-"
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
    return f"{statistics.median(values) / 1000:.2f} / {p95 / 1000:.2f} / {values[-1] / 1000:.2f}"


def main():
    emf_log, run_json, scenario, wall, copiers, latency = sys.argv[1:7]
    wall, copiers = float(wall), int(copiers)
    with open(run_json, encoding="utf-8") as f:
        run = json.load(f)
    run_id = run["run_id"]
    duration = run.get("duration_secs") or 0.0
    phases = run.get("phases") or []
    by_function = {}
    for r in records(emf_log, run_id):
        name = r.get("FunctionName", "").rsplit("-", 1)[-1]
        by_function.setdefault(name, []).append(r)
    copies = [r for r in by_function.get("copier", []) if not r.get("handed_back") and not r.get("duplicate")]
    listers = by_function.get("lister", [])

    out = [f"### {scenario}: run {run_id}, {wall:.2f} s wall ({run.get('status')}, +{latency} ms a request)", ""]
    # Each function record covers [Timestamp - BatchDuration, Timestamp];
    # the run starts with the planner's.
    spans = [
        ((r["_aws"]["Timestamp"] - r.get("BatchDuration", 0)) / 1000, r["_aws"]["Timestamp"] / 1000)
        for rs in by_function.values()
        for r in rs
    ]
    start = min((a for a, _ in spans), default=0.0)
    end = start + duration
    running = covered([(max(a, start), min(b, end)) for a, b in spans if b > start and a < end])
    idle = max(0.0, duration - running)
    cli = max(0.0, wall - duration)
    out += ["| where the wall time went | seconds | share of wall |", "|---|---:|---:|"]
    out.append(f"| a function of the run running | {running:.2f} | {pct(running, wall)} |")
    out.append(f"| none running: the state machine between polls | {idle:.2f} | {pct(idle, wall)} |")
    out.append(f"| the CLI: starting the run, its last poll, the summary | {cli:.2f} | {pct(cli, wall)} |")
    out.append("")
    out.append("Phases (they overlap): " + "; ".join(
        f"{p['name']} {p['started_secs']:.2f}-{p['started_secs'] + p['duration_secs']:.2f} s" for p in phases) + ".")
    out.append("")

    objects = sum(r.get("ObjectsCopied", 0) for r in copies)
    busy = sum(r.get("BatchDuration", 0) for r in copies) / 1000
    copy_phase = next((p["duration_secs"] for p in phases if p["name"] == "copy"), 0.0)
    per_copier = objects / busy if busy else 0
    per_slot = objects / copy_phase / copiers if copy_phase and copiers else 0
    out.append(
        f"Copiers: {len(copies)} batches, {objects:.0f} objects; {per_copier:.0f} objects/s per copier while it runs "
        f"({busy:.1f} s of invocations), {per_slot:.0f} objects/s per copier over the copy phase "
        f"({copiers} at once, {objects / copy_phase if copy_phase else 0:.0f} objects/s in all)."
    )
    out.append("")
    queued = [r["BatchQueueTime"] for r in copies if "BatchQueueTime" in r]
    copying = [r.get("BatchCopyTime", 0) for r in copies]
    result = [r.get("BatchResultTime", 0) for r in copies]
    handoff = [r.get("BatchHandoffTime", 0) for r in copies]
    life = [r.get("BatchQueueTime", 0) + r.get("BatchDuration", 0) for r in copies]
    preparing = [
        r.get("BatchDuration", 0) - r.get("BatchCopyTime", 0) - r.get("BatchResultTime", 0) - r.get("BatchHandoffTime", 0)
        for r in copies
    ]
    total = sum(life)
    out += ["| a batch's life, sent to result written | median / p95 / max s | share |", "|---|---:|---:|"]
    for name, values in (
        ("queued: SQS, the poll, the invocation", queued),
        ("preparing: the run's manifest, counted before?", preparing),
        ("copying", copying),
        ("recording the result", result),
        ("handing its range to VALIDATE once all copied", handoff),
        ("sent to result written, and handed on", life),
    ):
        out.append(f"| {name} | {quantiles(values)} | {pct(sum(values), total)} |")
    out.append("")
    writing = [r for r in listers if r.get("phase") == "write"]
    validating = [r for r in listers if r.get("phase") == "validate"]
    lister_s = sum(r.get("BatchDuration", 0) for r in writing) / 1000
    send_s = sum(r.get("SendTime", 0) for r in writing) / 1000
    checkpoint_s = sum(r.get("CheckpointTime", 0) for r in writing) / 1000
    validate_s = sum(r.get("BatchDuration", 0) for r in validating) / 1000
    validate_checkpoint_s = sum(r.get("CheckpointTime", 0) for r in validating) / 1000
    out.append(
        f"Listers: {len(writing)} write tasks, {lister_s:.1f} s, of which sending batches {send_s:.1f} s "
        f"({pct(send_s, lister_s)}) and checkpoints {checkpoint_s:.1f} s ({pct(checkpoint_s, lister_s)}); "
        f"VALIDATE {len(validating)} tasks, {validate_s:.1f} s, checkpoints {validate_checkpoint_s:.1f} s "
        f"({pct(validate_checkpoint_s, validate_s)})."
    )
    out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
