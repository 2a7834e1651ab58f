#!/usr/bin/env python3
"""Cold start of each Lambda bootstrap: process start to its first `next`.

    cold_start.py BUILD_DIR [ROUNDS]

BUILD_DIR is a `sam build` output (scripts/sam-build.sh with SAM_BUILD_DIR
set), one directory per function holding its `bootstrap`. Each bootstrap is
started ROUNDS times (default 20), one at a time, with the environment Lambda
gives a function (AWS_LAMBDA_RUNTIME_API and the AWS_LAMBDA_FUNCTION_* names,
per https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html)
plus the S3_FANOUT_* settings infra/template.yaml gives it, pointed at a
Runtime API on 127.0.0.1 served here. The figure is what a cold start adds
in the function's own code, before Lambda can hand it an event: from just
before the process is spawned to the arrival of its first
`GET /2018-06-01/runtime/invocation/next`
(https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html). Lambda's
own work before the process starts (downloading the code, the sandbox) is
not on this machine and not measured. The peak RSS at that moment is
printed too: it is the memory the function holds before its first event.

Nothing leaves 127.0.0.0/8: every endpoint the functions are given is on
loopback, and no request is answered before `next`.
"""

import http.server
import os
import statistics
import subprocess
import sys
import threading
import time

NEXT_PATH = "/2018-06-01/runtime/invocation/next"


class RuntimeApi(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), NextHandler)
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.arrived_at = None


class NextHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == NEXT_PATH and not self.server.arrived.is_set():
            self.server.arrived_at = time.monotonic()
            self.server.arrived.set()
        # Hold the request (as Lambda does until an event comes) so the
        # process does nothing else while it is measured, then let it go.
        self.server.release.wait(10)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def environment(function, api_port):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api_port}",
        "AWS_LAMBDA_FUNCTION_NAME": f"bench-{function}",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/bench-{function}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/12/06/[$LATEST]bench",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        # A closed loopback port: no request is made before `next`, and
        # none could leave this machine if one were.
        "S3_FANOUT_ENDPOINT_URL": "http://127.0.0.1:9",
        "S3_FANOUT_REPORT_BUCKET": "bench-reports",
        "S3_FANOUT_SOURCE": "s3://bench-source/",
        "S3_FANOUT_DESTINATION": "s3://bench-destination/",
        "S3_FANOUT_WORK_QUEUE_URL": "http://127.0.0.1:9/000000000000/work",
        "S3_FANOUT_RANGE_QUEUE_URL": "http://127.0.0.1:9/000000000000/ranges",
        "S3_FANOUT_DEAD_LETTER_QUEUE_URL": "http://127.0.0.1:9/000000000000/dlq",
        "S3_FANOUT_RUN_TABLE": "bench-runs",
        "RUST_LOG": "warn",
    }
    return env


def peak_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def measure(bootstrap, function, rounds):
    times, rss = [], []
    for _ in range(rounds):
        api = RuntimeApi()
        server = threading.Thread(target=api.serve_forever, daemon=True)
        server.start()
        started = time.monotonic()
        process = subprocess.Popen(
            [bootstrap],
            env=environment(function, api.server_address[1]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        arrived = api.arrived.wait(10)
        if arrived:
            times.append((api.arrived_at - started) * 1000)
            rss.append(peak_rss_kib(process.pid))
        process.kill()
        _, stderr = process.communicate()
        api.release.set()
        api.shutdown()
        api.server_close()
        if not arrived:
            raise SystemExit(
                f"{function}: no `next` within 10 s (exit {process.returncode}): "
                f"{stderr.decode(errors='replace').strip()[-2000:]}"
            )
    return times, [r for r in rss if r is not None]


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    build_dir = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) == 3 else 20
    functions = sorted(
        name
        for name in os.listdir(build_dir)
        if os.access(os.path.join(build_dir, name, "bootstrap"), os.X_OK)
    )
    if not functions:
        raise SystemExit(f"no */bootstrap in {build_dir}: run scripts/sam-build.sh with SAM_BUILD_DIR")
    print(f"process start to first `next`, {rounds} cold starts each (ms), and peak RSS then")
    print(f"{'function':<22} {'size MiB':>8} {'min':>7} {'median':>7} {'p90':>7} {'RSS MiB':>8}")
    for function in functions:
        bootstrap = os.path.join(build_dir, function, "bootstrap")
        times, rss = measure(bootstrap, function, rounds)
        times.sort()
        p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
        size = os.path.getsize(bootstrap) / 1048576
        peak = max(rss) / 1024 if rss else float("nan")
        print(
            f"{function:<22} {size:>8.1f} {times[0]:>7.1f} {statistics.median(times):>7.1f} "
            f"{p90:>7.1f} {peak:>8.1f}"
        )


if __name__ == "__main__":
    main()
