# shellcheck shell=bash
# Shared by the scripts that install pinned tools and run checks
# (check-infra.sh, check-cdk.sh, check-book.sh, sam-build.sh): their
# messages, and pinned Python tools in virtualenvs. Sourced; it defines
# functions and the linters' pins and runs nothing.

# The name messages start with: the script that sourced this file.
SCRIPT_NAME="$(basename "${BASH_SOURCE[1]:-$0}")"

step() { printf '\n==> %s\n' "$*" >&2; }
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# fail MESSAGE: a check failed; the script goes on with the others and
# lists every failure at the end.
failures=()
fail() {
    log "FAILED: $*"
    failures+=("$*")
}

# Pinned: linters add rules between releases, and a check that passes today
# must not fail tomorrow without a change to this repo. One version of each
# for the SAM template and the CDK's.
# shellcheck disable=SC2034 # read by the scripts that source this file
readonly CFN_LINT_VERSION="1.58.0"
# shellcheck disable=SC2034
readonly CHECKOV_VERSION="3.3.30"

# venv_has VENV NAME==VERSION...: each package is installed in VENV at
# exactly that version.
venv_has() {
    local venv="$1"
    shift
    [[ -x "$venv/bin/python" ]] || return 1
    # importlib.metadata answers in ~50 ms; `pip show` takes a second or more.
    "$venv/bin/python" - "$@" <<'PY' 2>/dev/null
import importlib.metadata as md, sys
pins = (arg.split("==", 1) for arg in sys.argv[1:])
sys.exit(0 if all(md.version(name) == version for name, version in pins) else 1)
PY
}

# make_venv VENV: a virtualenv at VENV, unless one is there.
make_venv() {
    local venv="$1"
    [[ -x "$venv/bin/python" ]] && return 0
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        # Debian splits venv/ensurepip out of python3.
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
    log "creating virtualenv $venv"
    python3 -m venv "$venv"
}

# pip_pinned VENV NAME==VERSION...: install exactly these into VENV unless
# they are there.
pip_pinned() {
    local venv="$1"
    shift
    venv_has "$venv" "$@" && return 0
    make_venv "$venv"
    log "installing $* into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" ||
        die "pip could not install $*"
    venv_has "$venv" "$@" || die "$* still not installed in $venv after pip install"
}

# install_linters VENV CHECKOV_VENV: cfn-lint (which brings samtranslator)
# into VENV, checkov into a virtualenv of its own: checkov pins
# boto3==1.35.49 and caps networkx (<2.7) and packaging (<24), so in VENV
# it would downgrade the botocore moto serves the tests with (1.44 to 1.35)
# and the networkx cfn-lint uses. The caller holds the install lock.
install_linters() {
    local venv="$1" checkov_venv="$2"
    pip_pinned "$venv" "cfn-lint==$CFN_LINT_VERSION"
    if [[ ! -f "$checkov_venv/.gitignore" ]]; then
        make_venv "$checkov_venv"
        # The repo's .gitignore predates this virtualenv; one inside it
        # keeps it out of `git status` all the same.
        printf '*\n' >"$checkov_venv/.gitignore"
    fi
    pip_pinned "$checkov_venv" "checkov==$CHECKOV_VERSION"
}
