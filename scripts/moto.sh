#!/usr/bin/env bash
# Local S3 test bed: a pinned moto server on loopback.
#
#   scripts/moto.sh install                       venv at $REPO/.venv with moto[server]
#   scripts/moto.sh start [PORT]                  background server; prints its URL on stdout
#   scripts/moto.sh stop [PORT]                   stop one server, or all started from this repo
#   scripts/moto.sh run-with-parent PPID PORT     server that dies with process PPID
#
# stdout carries only results (the URL from `start`); progress and errors go
# to stderr, so `endpoint=$(scripts/moto.sh start)` just works.
#
# Everything lives inside the repo (.venv/, .moto/) so nothing depends on what
# a developer or CI machine happened to install by hand.
set -euo pipefail

# Pinned: moto's S3 behaviour (ETags, copy directives, error shapes) shifts
# between releases, and the integration tests assert on it.
readonly MOTO_VERSION="5.1.22"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
readonly VENV="$REPO/.venv"
readonly STATE="$REPO/.moto"
readonly MOTO_BIN="$VENV/bin/moto_server"
readonly READY_TIMEOUT_S=60

log() { printf 'moto.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# --- install -----------------------------------------------------------------

installed_ok() {
    [[ -x "$MOTO_BIN" ]] || return 1
    # Checking the version (and that the [server] extra's flask_cors is there)
    # with importlib is ~50 ms; asking pip would cost a second or more.
    "$VENV/bin/python" - "$MOTO_VERSION" <<'EOF' 2>/dev/null
import importlib.metadata as md, importlib.util, sys
ok = md.version("moto") == sys.argv[1] and importlib.util.find_spec("flask_cors")
sys.exit(0 if ok else 1)
EOF
}

cmd_install() {
    installed_ok && return 0
    mkdir -p "$STATE"
    # Test binaries run in parallel (nextest, several `cargo test`s) and may
    # all try to install on first use: one installs, the others wait.
    exec 9>"$STATE/install.lock"
    flock 9
    if ! installed_ok; then
        if [[ ! -x "$VENV/bin/python" ]]; then
            log "creating virtualenv $VENV"
            "${PYTHON:-python3}" -m venv "$VENV" >&2
        fi
        log "installing moto[server]==$MOTO_VERSION into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "moto[server]==$MOTO_VERSION" >&2
        installed_ok || die "moto[server]==$MOTO_VERSION did not install into $VENV"
    fi
    flock -u 9
    exec 9>&-
}

# --- helpers -----------------------------------------------------------------

free_port() {
    # Port 0 lets the kernel choose; there is a small window before moto binds
    # it, which a failed start reports with moto's own log.
    "$VENV/bin/python" -c \
        'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

check_port() {
    if ! [[ "$1" =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > 65535)); then
        die "not a port: '$1'"
    fi
}

# `kill -0` alone succeeds on a zombie, and moto is our own unreaped child in
# `run-with-parent`, so an exited server would look alive forever.
alive() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    # The state follows the command name, which is in parentheses and may
    # itself contain spaces.
    stat="${stat##*) }"
    [[ "${stat%% *}" != "Z" ]]
}

# True when PID is alive and really is a moto server: a stale pid file must
# never make us kill whatever process later reused that PID.
is_moto_pid() {
    local pid="$1"
    [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q moto_server
}

ready() {
    curl --silent --fail --noproxy '*' --max-time 2 --output /dev/null "http://127.0.0.1:$1/moto-api/"
}

# Launch moto_server on PORT in the background; sets MOTO_PID.
launch() {
    local port="$1"
    mkdir -p "$STATE"
    # Every test binary leaves a log behind (kept for post-mortems); prune
    # the ones nobody has written to for a day so .moto/ does not grow forever.
    find "$STATE" -maxdepth 1 -name '*.log' -mmin +1440 -delete 2>/dev/null || true
    local logfile="$STATE/moto-$port.log"
    log "starting moto $MOTO_VERSION on 127.0.0.1:$port (log: $logfile)"
    # stdin/stdout/stderr detached from ours: otherwise `$(moto.sh start)`
    # would wait for the server to exit before returning.
    # scripts/moto_server.py is moto_server with a fix that lets a state
    # machine run more than once (see the file).
    nohup "$VENV/bin/python" "$REPO/scripts/moto_server.py" -H 127.0.0.1 -p "$port" </dev/null >"$logfile" 2>&1 &
    MOTO_PID=$!
    echo "$MOTO_PID" >"$STATE/moto-$port.pid"
}

# Wait until the server on PORT answers, or fail with its log tail.
wait_ready() {
    local port="$1" pid="$2"
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until ready "$port"; do
        if ! alive "$pid"; then
            rm -f "$STATE/moto-$port.pid"
            log "moto exited before answering on port $port; last log lines:"
            tail -n 20 "$STATE/moto-$port.log" >&2 || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            kill "$pid" 2>/dev/null || true
            rm -f "$STATE/moto-$port.pid"
            log "moto did not answer http://127.0.0.1:$port/moto-api/ within ${READY_TIMEOUT_S}s; last log lines:"
            tail -n 20 "$STATE/moto-$port.log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

stop_port() {
    local port="$1"
    local pidfile="$STATE/moto-$port.pid"
    [[ -f "$pidfile" ]] || {
        log "no server recorded on port $port"
        return 0
    }
    local pid
    pid="$(cat "$pidfile")"
    if is_moto_pid "$pid"; then
        kill "$pid"
        # Give it a moment to release the port, then insist.
        for _ in $(seq 1 25); do
            alive "$pid" || break
            sleep 0.2
        done
        if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
        log "stopped moto on port $port (pid $pid)"
    else
        log "moto on port $port (pid $pid) was not running"
    fi
    rm -f "$pidfile"
}

# --- subcommands ---------------------------------------------------------------

cmd_start() {
    cmd_install
    local port="${1:-}"
    if [[ -z "$port" ]]; then port="$(free_port)"; fi
    check_port "$port"
    if ready "$port"; then die "something already answers on 127.0.0.1:$port"; fi
    launch "$port"
    wait_ready "$port" "$MOTO_PID" || die "moto failed to start on port $port"
    log "moto ready on port $port (pid $MOTO_PID)"
    echo "http://127.0.0.1:$port"
}

cmd_stop() {
    if [[ $# -ge 1 ]]; then
        check_port "$1"
        stop_port "$1"
        return
    fi
    shopt -s nullglob
    local pidfile found=0
    for pidfile in "$STATE"/moto-*.pid; do
        found=1
        local port="${pidfile##*/moto-}"
        stop_port "${port%.pid}"
    done
    ((found)) || log "no servers recorded in $STATE"
}

stop_watched() {
    if [[ -n "$WATCHED_PID" ]]; then kill "$WATCHED_PID" 2>/dev/null || true; fi
    rm -f "$STATE/moto-$WATCHED_PORT.pid"
}

# A server tied to another process's life. The Rust test harness spawns this
# with its own PID: when the test binary exits, however it exits (even
# SIGKILL, where no destructor runs), the poll below notices within 0.5 s and
# takes moto down, so test runs never leak servers.
cmd_run_with_parent() {
    [[ $# -eq 2 ]] || usage
    local parent="$1" port="$2"
    [[ "$parent" =~ ^[0-9]+$ ]] || die "not a pid: '$parent'"
    check_port "$port"
    cmd_install
    # Globals, not locals: the EXIT trap runs after this function has returned.
    WATCHED_PID=""
    WATCHED_PORT="$port"
    # Being stopped ourselves (Ctrl-C, kill) also stops the server.
    trap 'exit 0' INT TERM HUP
    trap stop_watched EXIT
    launch "$port"
    WATCHED_PID="$MOTO_PID"
    local pid="$MOTO_PID"
    # Readiness is reported for the log's sake only: the harness polls the
    # port itself, so this loop needs no output channel back to it.
    if wait_ready "$port" "$pid"; then
        log "moto ready on port $port (pid $pid), watching parent $parent"
    else
        exit 1
    fi
    while alive "$parent"; do
        if ! alive "$pid"; then
            log "moto on port $port exited on its own"
            exit 1
        fi
        sleep 0.5
    done
    log "parent $parent is gone; stopping moto on port $port"
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd="$1"
    shift
    case "$cmd" in
    install) cmd_install ;;
    start)
        [[ $# -le 1 ]] || usage
        cmd_start "$@"
        ;;
    stop)
        [[ $# -le 1 ]] || usage
        cmd_stop "$@"
        ;;
    run-with-parent) cmd_run_with_parent "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
    esac
}

main "$@"
