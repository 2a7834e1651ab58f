#!/usr/bin/env python3
"""Results bookkeeping for scripts/bench.sh.

    report.py record RESULTS.jsonl TOOL SCENARIO OBJECTS EXIT WALL_S TIME_V_FILE COUNTS.json COMPARE.json SERVER_CPU_S [NOTE]
    report.py skip   RESULTS.jsonl TOOL REASON
    report.py render RESULTS.jsonl OUT.md OUT.json META.json    (Markdown also on stdout)

The pseudo-tool `ceiling` (examples/ceiling.rs: only the necessary requests,
at high concurrency) is the server's own limit; "x ceiling" is each row's
wall time over the ceiling's in the same scenario. The scenarios that move
their source's bytes (THROUGHPUT) also show MiB/s: the source's bytes over
the wall time.

"CPU s" is where the cores went during a run: the tool's user and system
time (from time -v), the server's (its /proc counters, read before and
after) and the counting proxy's. On a machine whose cores they share, a
wall time can be no shorter than their sum over the cores, which is how a
run shows the part of its time that is the server's.
"""

import json
import re
import sys

MIB = 1024 * 1024
# Scenarios that move all their source's bytes: re-syncs move next to none,
# and the small-object copies are measured in objects per second.
THROUGHPUT = ("multipart", "upload-dir", "restore-dir", "large-1g", "large-6g")

def peak_rss_kib(path):
    try:
        with open(path) as f:
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", f.read())
        return int(m.group(1)) if m else None
    except OSError:
        return None


def cpu_s(path):
    """User plus system seconds from a time -v file."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    found = [re.search(rf"{kind} time \(seconds\): ([0-9.]+)", text) for kind in ("User", "System")]
    return round(sum(float(m.group(1)) for m in found), 2) if all(found) else None


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def record(out, tool, scenario, objects, code, wall, time_file, counts_file, compare_file, server_cpu, note=""):
    counts = load(counts_file, {"ops": {}, "errors": {}, "total": None})
    compare = load(compare_file, {})
    wall = float(wall)
    size = compare.get("source_bytes")
    rec = {
        "tool": tool,
        "scenario": scenario,
        "objects": int(objects),
        "bytes": size,
        "exit_code": int(code),
        "wall_s": round(wall, 3),
        "objects_per_s": round(int(objects) / wall, 1) if wall > 0 else None,
        "mib_per_s": round(size / MIB / wall, 1) if size is not None and wall > 0 else None,
        "peak_rss_kib": peak_rss_kib(time_file),
        "cpu_s": {"tool": cpu_s(time_file), "server": round(float(server_cpu), 2),
                  "proxy": counts.get("proxy_cpu_s")},
        "requests_total": counts.get("total"),
        "requests": counts.get("ops", {}),
        "request_errors": counts.get("errors", {}),
        "compare": compare,
        "note": note,
    }
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")


def skip(out, tool, reason):
    with open(out, "a") as f:
        f.write(json.dumps({"tool": tool, "skipped": reason}) + "\n")


# Short names for the per-operation column.
ABBREV = {
    "ListObjectsV2": "LOv2", "ListObjects": "LOv1", "CopyObject": "Copy", "UploadPartCopy": "UPC",
    "CreateMultipartUpload": "CMU", "CompleteMultipartUpload": "CompMU", "AbortMultipartUpload": "AbortMU",
    "HeadObject": "Head", "GetObject": "Get", "PutObject": "Put", "HeadBucket": "HeadB",
    "GetBucketLocation": "Loc", "ListBuckets": "LB", "CreateBucket": "MkB", "GetObjectTagging": "GetTag",
    "PutObjectTagging": "PutTag", "DeleteObject": "Del", "DeleteObjects": "DelN", "ListParts": "LParts",
    "UploadPart": "UP",
}


def fmt_rss(kib):
    return f"{kib / 1024:.0f}" if kib else "?"


def fmt_cpu(cpu):
    if not cpu:
        return "?"
    return " / ".join("?" if cpu.get(k) is None else f"{cpu[k]:.2f}" for k in ("tool", "server", "proxy"))


def fmt_mib(mib):
    return f"{mib:.0f}" if mib >= 10 else f"{mib:.1f}"


def median_runs(runs):
    """One row per tool and scenario: the run with the median wall time
    (the lower middle one of an even count), with every run's wall time."""
    by = {}
    for r in runs:
        by.setdefault((r["tool"], r["scenario"]), []).append(r)
    rows = []
    for group in by.values():
        ordered = sorted(group, key=lambda r: r["wall_s"])
        row = dict(ordered[(len(ordered) - 1) // 2])
        row["runs_wall_s"] = [r["wall_s"] for r in group]
        rows.append(row)
    return rows


def render(results, out_md, out_json, meta_file):
    runs, skipped = [], []
    with open(results) as f:
        for line in f:
            rec = json.loads(line)
            (skipped if "skipped" in rec else runs).append(rec)
    rows = median_runs(runs)
    meta = load(meta_file, {})
    scenarios = []
    for r in rows:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    lines = [f"# s3-fanout vs peers ({meta.get('date', '')})", ""]
    params = meta.get("params", {})
    latency = params.get("LATENCY_MS", 0)
    lines.append(
        f"Same server ({meta.get('server', 'moto')}), same data, one tool at a time, each through a counting proxy"
        + (f" that adds {latency} ms to every request" if latency else "") + ". "
        + ", ".join(f"{k}={v}" for k, v in params.items() if v != "") + "."
    )
    lines.append("")
    lines.append("Versions: " + "; ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()))
    lines.append("")
    for scen in scenarios:
        first = next(r for r in rows if r["scenario"] == scen)
        size = f", {fmt_mib(first['bytes'] / MIB)} MiB" if first.get("bytes") is not None else ""
        lines.append(f"## {scen} ({first['objects']} objects{size})")
        lines.append("")
        rate = scen in THROUGHPUT
        lines.append("| tool | exit | wall s |" + (" MiB/s |" if rate else "") + " x ceiling | obj/s | peak RSS MiB "
                     "| CPU s: tool / server / proxy | requests | by operation | equal key+size | equal ETag |")
        lines.append("|---|---:|---:|" + ("---:|" if rate else "") + "---:|---:|---:|---:|---:|---|:---:|:---:|")
        ceiling = next((r["wall_s"] for r in rows if r["scenario"] == scen and r["tool"] == "ceiling"), None)
        for r in (r for r in rows if r["scenario"] == scen):
            if r["tool"] == "ceiling" or not ceiling:
                vs = "-"
            else:
                vs = f"{r['wall_s'] / ceiling:.2f}"
            ops = ", ".join(f"{ABBREV.get(k, k)} {v}" for k, v in sorted(r["requests"].items(), key=lambda kv: -kv[1]))
            errs = sum(r["request_errors"].values())
            if errs:
                ops += f" ({errs} 4xx/5xx: " + ", ".join(f"{ABBREV.get(k, k)} {v}" for k, v in r["request_errors"].items()) + ")"
            c = r["compare"]
            if c.get("equal_key_size"):
                eq_size = "yes"
            else:
                extra = f", {c['extra']} extra" if c.get("extra") else ""
                if c.get("extra_renormalized"):
                    extra += f" ({c['extra_renormalized']} a missing name in another Unicode form)"
                eq_size = f"**no** ({c.get('missing', '?')} missing{extra}, {c.get('size_mismatch', '?')} size)"
            if c.get("equal_etag"):
                eq_etag = "yes"
            elif c.get("equal_key_size"):
                n, mp = c.get("etag_mismatch", 0), c.get("etag_mismatch_multipart_shape", 0)
                eq_etag = f"no ({n} differ" + (f", {mp} multipart-shaped" if mp else "") + ")"
            else:
                eq_etag = "no"
            note = f" ({r['note']})" if r.get("note") else ""
            walls = r["runs_wall_s"]
            wall = f"{r['wall_s']:.2f}" + (f" ({min(walls):.2f}–{max(walls):.2f})" if len(walls) > 1 else "")
            if rate:
                # A destination short of its source did not move its bytes.
                mibs = r.get("mib_per_s") if c.get("equal_key_size") else None
                wall += f" | {'-' if mibs is None else fmt_mib(mibs)}"
            lines.append(
                f"| {r['tool']}{note} | {r['exit_code']} | {wall} | {vs} | {r['objects_per_s'] or 0:.0f} | "
                f"{fmt_rss(r['peak_rss_kib'])} | {fmt_cpu(r.get('cpu_s'))} | {r['requests_total'] if r['requests_total'] is not None else '?'} | {ops} | {eq_size} | {eq_etag} |"
            )
        lines.append("")
    if skipped:
        lines.append("## Skipped peers")
        lines.append("")
        for s in skipped:
            lines.append(f"- **{s['tool']}**: {s['skipped']}")
        lines.append("")
    lines.append("Operation abbreviations: " + ", ".join(f"{v} = {k}" for k, v in ABBREV.items()) + ".")
    lines.append("")
    lines.append(
        "obj/s = source objects in the scenario / wall time (for re-syncs: objects compared; "
        "for uploads: local files); MiB/s = the source's bytes / wall time (- where the destination is short of the source). "
        "The ceiling copies between buckets only, so the upload and restore scenarios have no x ceiling. "
        "For restores, equal ETag means equal bytes, file by file. "
        "With REPEAT above 1, each row is the run with the median wall time, its range in brackets. "
        "Equal ETag may legitimately fail for multipart copies: a `-N` ETag depends on the part layout a tool chose."
    )
    md = "\n".join(lines) + "\n"
    with open(out_md, "w") as f:
        f.write(md)
    with open(out_json, "w") as f:
        json.dump({**meta, "results": rows, "runs": runs, "skipped": skipped}, f, indent=2)
        f.write("\n")
    sys.stdout.write(md)


def main():
    cmd, *args = sys.argv[1:]
    {"record": record, "skip": skip, "render": render}[cmd](*args)


if __name__ == "__main__":
    main()
