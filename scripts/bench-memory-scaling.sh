#!/usr/bin/env bash
# Memory scaling: the peak RSS of a dry-run sync over 10,000, 100,000 and
# 1,000,000 listed objects must stay under 100 MiB and must not grow with
# the bucket. Listing streams through bounded channels and the diff is a
# merge-join, so nothing should grow per key; this is the check at the scale
# where a per-key structure would show. Memory does depend on how many pieces
# list at once (each holds a response of up to a thousand keys a side in
# flight), and a small range lists as fewer pieces than a large one, so the
# smallest run at default settings is not the baseline: growth per key is
# judged at one listing stream (smallest vs largest, within 20%) and at
# default settings over the last tenfold step, where as many pieces list at
# once as at any larger count (within 20%). The growth from the smallest run
# at default settings, i.e. the fixed cost of parallel listing, is printed
# beside them. COUNTS="10000 1000000 10000000" checks ten times further
# (about 90 s for the 10M run on 2 cores).
#
# The versions layout is `--as-of` (issue 25): the source is a versioned
# bucket listed with ListObjectVersions and seen as it was at AS_OF, each
# key's version then chosen as its versions stream past, so memory must not
# grow with versions either. COUNT versions are those of 2*COUNT/5 keys
# (a key has 1 to 4 versions and delete markers, 2.5 on average).
#
#   scripts/bench-memory-scaling.sh
#   PROFILE=release scripts/bench-memory-scaling.sh
#   COUNTS="10000 100000" LAYOUTS=flat scripts/bench-memory-scaling.sh
#   LAYOUTS=versions scripts/bench-memory-scaling.sh
#
# moto cannot hold a million objects, so the buckets come from
# scripts/bench/synthetic_s3.py, whose listings are computed from the bucket
# name: `syn-N-flat` (N keys, no folders) and `syn-N-dirs` (N keys under 100
# folders), each diffed against its `-mod` twin, in which every 100th object
# differs; and `syn-K-dirs-versions` (the same keys as `syn-K-dirs`, each
# with a history of versions and delete markers) synced `--as-of` AS_OF,
# mid-history, against the plain `syn-K-dirs`, which holds every key's
# newest version. Each run is `s3-fanout sync --dry-run`, so the diff plans
# ceil(N/100) updates (versions: one per key present at AS_OF at an older
# version than its newest, as the server's versions_as_of counts them) and
# nothing is written. Two more runs list the smallest
# and the largest count with --list-concurrency 1: what parallel listing
# costs in memory, and the growth with that cost taken out. Prints a Markdown table, writes bench-results/memory-scaling.{md,json},
# and ends with PASS, or FAIL with exit status 1; a failed run or a wrong
# count also exits 1. Progress goes to stderr, results to stdout.
set -euo pipefail

COUNTS="${COUNTS:-10000 100000 1000000}"
LAYOUTS="${LAYOUTS:-flat dirs versions}"
PROFILE="${PROFILE:-debug}"
# Mid-history of the synthetic versioned buckets: keys at their first,
# second or third entry, or absent (scripts/bench/synthetic_s3.py).
AS_OF="${AS_OF:-2026-01-02T12:00:00Z}"
readonly COUNTS LAYOUTS PROFILE AS_OF
readonly MAX_RSS_MIB=100
readonly MAX_GROWTH_PCT=20
readonly SERVER_READY_TIMEOUT_S=30

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
cd "$REPO"

log() { printf 'bench-memory-scaling: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

read -ra counts <<<"$COUNTS"
read -ra layouts <<<"$LAYOUTS"
((${#counts[@]} >= 2)) || die "COUNTS needs at least two counts, got '$COUNTS'"
((${#layouts[@]} >= 1)) || die "LAYOUTS is empty"
for n in "${counts[@]}"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "COUNTS must hold positive integers, got '$n'"
done
for layout in "${layouts[@]}"; do
    [[ "$layout" == flat || "$layout" == dirs || "$layout" == versions ]] ||
        die "LAYOUTS may hold flat, dirs and versions, got '$layout'"
done
mapfile -t counts < <(printf '%s\n' "${counts[@]}" | sort -n -u)
readonly smallest="${counts[0]}" largest="${counts[-1]}"
case "$PROFILE" in
    debug) cargo_profile=() ;;
    release) cargo_profile=(--release) ;;
    *) die "PROFILE must be debug or release, got '$PROFILE'" ;;
esac

# Dummy credentials, and nothing from the machine's own AWS or s3-fanout
# setup: a profile, endpoint or S3_FANOUT_* default must not change the run
# or send it anywhere but the local server.
unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN \
    AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3 AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE \
    AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI
for var in "${!S3_FANOUT_@}"; do unset "$var"; done
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

# The figures the issue quotes come from PROFILE=release; a debug build
# shows the same growth (or lack of it) and skips a ten-minute build.
log "building s3-fanout ($PROFILE)"
cargo build --quiet "${cargo_profile[@]}" --bin s3-fanout
# Ask cargo where it put it: CARGO_TARGET_DIR or a config may move target/.
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
readonly BIN="$target_dir/$PROFILE/s3-fanout"

WORK="$(mktemp -d)"
readonly WORK
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

python3 scripts/bench/synthetic_s3.py --port 0 --port-file "$WORK/port" \
    </dev/null >/dev/null 2>"$WORK/server.log" &
server_pid=$!
deadline=$((SECONDS + SERVER_READY_TIMEOUT_S))
until [[ -s "$WORK/port" ]]; do
    kill -0 "$server_pid" 2>/dev/null || die "the synthetic server exited: $(cat "$WORK/server.log")"
    ((SECONDS < deadline)) || die "the synthetic server did not start within ${SERVER_READY_TIMEOUT_S}s"
    sleep 0.1
done
endpoint="http://127.0.0.1:$(cat "$WORK/port")"
readonly endpoint
log "synthetic S3 on $endpoint (pid $server_pid)"

# Runs the sync as the only child of a fresh python3, so RUSAGE_CHILDREN's
# ru_maxrss (KiB on Linux) is the peak RSS of that one process, with no
# polling interval that could miss a short spike. It also asks the server
# how many requests it answered, to cross-check the summary's own count.
measure_sync() {
    local name="$1" n="$2" layout="$3" list_concurrency="$4"
    local extra=() source="s3://syn-$n-$layout" destination="s3://syn-$n-$layout-mod"
    [[ "$list_concurrency" == default ]] || extra=(--list-concurrency "$list_concurrency")
    if [[ "$layout" == versions ]]; then
        # n versions: those of 2n/5 keys; the plain bucket of the same keys
        # holds each key's newest version.
        local keys=$((n * 2 / 5))
        source="s3://syn-$keys-dirs-versions" destination="s3://syn-$keys-dirs"
        extra+=(--as-of "$AS_OF")
    fi
    python3 - "$WORK/$name" "$endpoint" "$BIN" sync "$source" "$destination" \
        --endpoint-url "$endpoint" --dry-run --json --no-progress "${extra[@]}" <<'PY'
import json, resource, subprocess, sys, time, urllib.request

out, endpoint, *command = sys.argv[1:]
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

def served():
    with direct.open(f"{endpoint}/__synthetic/counts", timeout=10) as response:
        ops = json.load(response)["ops"]
    return sum(count for op, count in ops.items() if op != "Control")

before = served()
started = time.monotonic()
with open(f"{out}.json", "wb") as summary:
    code = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=summary).returncode
wall = time.monotonic() - started
with open(f"{out}.measure", "w") as f:
    json.dump({"max_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
               "wall_secs": wall, "served_requests": served() - before}, f)
sys.exit(code)
PY
}

# name count layout list-concurrency, one run a line.
runs=()
for layout in "${layouts[@]}"; do
    for n in "${counts[@]}"; do runs+=("$layout-$n $n $layout default"); done
done
for n in "$smallest" "$largest"; do runs+=("${layouts[0]}-$n-serial $n ${layouts[0]} 1"); done
if [[ " ${layouts[*]} " == *" versions "* && "${layouts[0]}" != versions ]]; then
    # The versions listing at one stream as well: its growth per version,
    # with parallel listing's cost taken out.
    for n in "$smallest" "$largest"; do runs+=("versions-$n-serial $n versions 1"); done
fi

for run in "${runs[@]}"; do
    read -r name n layout list_concurrency <<<"$run"
    what="$n objects, $layout"
    [[ "$layout" != versions ]] || what="$n versions (--as-of $AS_OF)"
    log "dry-run sync of $what (list concurrency $list_concurrency)"
    if ! measure_sync "$name" "$n" "$layout" "$list_concurrency"; then
        cat "$WORK/$name.json" >&2 || true
        tail -n 20 "$WORK/server.log" >&2 || true
        die "the $name run failed; its summary and the server's log are above"
    fi
    printf '%s\n' "$run" >>"$WORK/runs"
done
if grep -q 'synthetic_s3: [0-9]' "$WORK/server.log"; then
    log "the synthetic server refused requests it does not implement:"
    grep 'synthetic_s3: [0-9]' "$WORK/server.log" | sort | uniq -c | head -n 20 >&2
fi

mkdir -p bench-results
python3 - "$WORK" "$PROFILE" "$MAX_RSS_MIB" "$MAX_GROWTH_PCT" "$smallest" "$largest" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" "$(nproc)" "$AS_OF" <<'PY'
import datetime, json, math, sys

work, profile, max_rss, max_growth, smallest, largest, commit, cpus, as_of = sys.argv[1:]
max_rss, max_growth, smallest, largest = float(max_rss), float(max_growth), int(smallest), int(largest)
sys.path.insert(0, "scripts/bench")
import synthetic_s3  # the versioned buckets' formula, for their expected counts

as_of_seconds = int(datetime.datetime.fromisoformat(as_of.replace("Z", "+00:00")).timestamp())
LISTINGS = ("ListObjectsV2", "ListObjectVersions")
# --as-of asks each listing of the source whether it is versioned.
EXPECTED_OPS = {"versions": set(LISTINGS) | {"GetBucketVersioning"}}

rows, errors = [], []
with open(f"{work}/runs") as f:
    runs = [line.split() for line in f if line.strip()]
for name, n, layout, list_concurrency in runs:
    n = int(n)
    with open(f"{work}/{name}.json") as f:
        summary = json.load(f)
    with open(f"{work}/{name}.measure") as f:
        measure = json.load(f)
    counts, requests = summary["counts"], summary["requests"]
    keys = n * 2 // 5 if layout == "versions" else n
    row = {
        "layout": layout, "objects": n, "keys": keys, "list_concurrency": list_concurrency,
        "peak_rss_mib": round(measure["max_rss_kib"] / 1024, 1),
        "wall_secs": round(measure["wall_secs"], 2),
        "listed_source": counts["listed_source"],
        "listed_destination": counts["listed_destination"],
        "planned_updates": counts["plan_update"],
        "pieces": counts["listed_pieces"],
        "list_requests": sum(requests.get(op, 0) for op in LISTINGS),
        "other_requests": {op: c for op, c in requests.items()
                           if op not in EXPECTED_OPS.get(layout, {"ListObjectsV2"})},
        "served_requests": measure["served_requests"],
        "status": summary["status"],
    }
    rows.append(row)
    # A figure from a run that listed the wrong keys says nothing about
    # memory, so every count is checked before the verdict.
    want = {"listed_source": n, "listed_destination": n, "planned_updates": math.ceil(n / 100)}
    if layout == "versions":
        # The keys present at AS_OF, and those at an older version than the
        # plain bucket's (the newest); every key of the plain bucket.
        present, older = synthetic_s3.versions_as_of(keys, as_of_seconds)
        row["versions"] = synthetic_s3.versions_total(keys)
        row["as_of"] = as_of
        want = {"listed_source": present, "listed_destination": keys, "planned_updates": older}
    wrong = [f"{k} {row[k]} (want {v})" for k, v in want.items() if row[k] != v]
    if summary["exit_code"] != 0:
        wrong.append(f"status {summary['status']}, error {summary.get('error')}")
    if counts["plan_copy"] or counts["plan_delete"]:
        wrong.append(f"planned {counts['plan_copy']} copies, {counts['plan_delete']} deletes (want none)")
    if row["other_requests"]:
        wrong.append(f"unexpected requests: {row['other_requests']}")
    if sum(requests.values()) != row["served_requests"]:
        wrong.append(f"summary counts {sum(requests.values())} requests, the server answered {row['served_requests']}")
    if wrong:
        errors.append(f"{name}: " + "; ".join(wrong))

def label(n):
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)

table = [
    "| layout | objects | list concurrency | peak RSS (MiB) | wall (s) | objects/s | listed src / dst | planned updates | pieces | list requests |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]
for r in rows:
    # A versions row lists versions and delete markers: its "objects".
    objects = r.get("versions", r["objects"])
    shown = (f"{objects:,} versions of {r['keys']:,} keys" if "versions" in r
             else f"{objects:,}")
    table.append(
        f"| {r['layout']} | {shown} | {r['list_concurrency']} | {r['peak_rss_mib']:.1f} "
        f"| {r['wall_secs']:.1f} | {objects / r['wall_secs']:,.0f} "
        f"| {r['listed_source']:,} / {r['listed_destination']:,} | {r['planned_updates']:,} "
        f"| {r['pieces']} | {r['list_requests']:,} |")

verdicts = []
peak = max(rows, key=lambda r: r["peak_rss_mib"])
verdicts.append((peak["peak_rss_mib"] < max_rss,
                 f"highest peak RSS {peak['peak_rss_mib']:.1f} MiB ({peak['layout']}, "
                 f"{label(peak['objects'])}, list concurrency {peak['list_concurrency']}); limit {max_rss:.0f} MiB"))
def rss(layout, n, list_concurrency="default"):
    return next(r["peak_rss_mib"] for r in rows if r["layout"] == layout
                and r["objects"] == n and r["list_concurrency"] == list_concurrency)

def pct(a, b):
    return (b - a) / a * 100

growth, notes = {}, []
counts = sorted({r["objects"] for r in rows})
# Per key, at one listing stream: nothing but the key count differs.
serials = list(dict.fromkeys(r["layout"] for r in rows if r["list_concurrency"] == "1"))
serial = serials[0]
serial_growth = {}
for layout in serials:
    serial_growth[layout] = pct(rss(layout, smallest, "1"), rss(layout, largest, "1"))
    verdicts.append((serial_growth[layout] <= max_growth,
                     f"{layout}, list concurrency 1: memory growth {label(largest)} vs "
                     f"{label(smallest)} {serial_growth[layout]:+.1f}%; limit +{max_growth:.0f}%"))
below = max(n for n in counts if n < largest)
for layout in dict.fromkeys(r["layout"] for r in rows):
    # Per key at default settings: the last tenfold step, where as many
    # pieces list at once as at any larger count. With two counts only,
    # the smallest lists as one stream and this is the whole growth.
    growth[layout] = pct(rss(layout, below), rss(layout, largest))
    verdicts.append((growth[layout] <= max_growth,
                     f"{layout}: memory growth {label(largest)} vs {label(below)} "
                     f"{growth[layout]:+.1f}%; limit +{max_growth:.0f}%"))
    if below != smallest:
        pieces = next(r["pieces"] for r in rows if r["layout"] == layout
                      and r["objects"] == smallest and r["list_concurrency"] == "default")
        notes.append(f"{layout}: {label(largest)} vs {label(smallest)} "
                     f"{pct(rss(layout, smallest), rss(layout, largest)):+.1f}% "
                     f"(the {label(smallest)} run lists as "
                     f"{'one stream' if pieces == 1 else f'{pieces} pieces'})")
for layout in serials:
    notes.append(f"{layout}: parallel listing costs "
                 f"{rss(layout, largest) - rss(layout, largest, '1'):.1f} MiB at {label(largest)}")
if any(r["layout"] == "versions" for r in rows):
    notes.append(f"versions: `--as-of {as_of}`, s3://syn-K-dirs-versions against s3://syn-K-dirs "
                 "(K = 2N/5 keys); figures are versions and delete markers listed")
passed = not errors and all(ok for ok, _ in verdicts)

lines = [
    "# Memory scaling",
    "",
    f"`scripts/bench-memory-scaling.sh`, {profile} build, commit {commit}, {cpus} CPUs, "
    f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.",
    "`s3-fanout sync s3://syn-N-LAYOUT s3://syn-N-LAYOUT-mod --dry-run` against the synthetic "
    "listing server (`scripts/bench/synthetic_s3.py`); every 100th object differs. "
    f"versions: `s3-fanout sync s3://syn-K-dirs-versions s3://syn-K-dirs --dry-run --as-of {as_of}`.",
    "",
    *table,
    "",
    *[f"- {'ok' if ok else 'FAIL'}: {text}" for ok, text in verdicts],
    *[f"- wrong run: {e}" for e in errors],
    *[f"- note: {n}" for n in notes],
    "",
    "PASS" if passed else "FAIL",
]
report = "\n".join(lines) + "\n"
with open("bench-results/memory-scaling.md", "w") as f:
    f.write(report)
with open("bench-results/memory-scaling.json", "w") as f:
    json.dump({"profile": profile, "commit": commit, "cpus": int(cpus),
               "limits": {"peak_rss_mib": max_rss, "growth_pct": max_growth},
               "growth_pct": {k: round(v, 1) for k, v in growth.items()},
               "serial_growth_pct": round(serial_growth[serial], 1),
               "serial_growth_pct_by_layout": {k: round(v, 1) for k, v in serial_growth.items()},
               "notes": notes,
               "runs": rows, "errors": errors, "pass": passed}, f, indent=2)
    f.write("\n")
print(report, end="")
sys.exit(0 if passed else 1)
PY
