#!/usr/bin/env bash
# Offline checks of the serverless side, none of which needs an AWS account:
#
#   1. cfn-lint on the SAM template (infra/template.yaml)
#   2. asl-validator on the state machine (statemachine/sync.asl.json)
#   3. cargo lambda build of every function the template deploys
#      (x86_64, debug: the aarch64 target cannot be installed here, and
#      the point is that the functions compile and link for Lambda)
#
#   scripts/check-infra.sh
#
# Tools are pinned and installed inside the repo: cfn-lint and cargo-lambda
# (which brings zig) into .venv/ (the virtualenv scripts/moto.sh uses),
# asl-validator into .tools/node/. A second run skips the installs.
# All checks run; the exit status is non-zero if any failed.
set -euo pipefail

# Pinned: linters add rules between releases, and a check that passes today
# must not fail tomorrow without a change to this repo.
readonly CFN_LINT_VERSION="1.58.0"
readonly CARGO_LAMBDA_VERSION="1.9.2"
readonly ASL_VALIDATOR_VERSION="4.0.0"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
cd "$REPO"

readonly VENV="$REPO/.venv"
readonly TOOLS="$REPO/.tools"
readonly NODE_PREFIX="$TOOLS/node"
readonly ASL_VALIDATOR="$NODE_PREFIX/node_modules/.bin/asl-validator"
readonly TEMPLATE="infra/template.yaml"
readonly ASL="statemachine/sync.asl.json"

# Same build directory as scripts/test.sh: the AWS SDK is built once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3-fanout/target}"

step() { printf '\n==> %s\n' "$*" >&2; }
log() { printf 'check-infra.sh: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

failures=()
fail() {
    log "FAILED: $*"
    failures+=("$*")
}

# --- installs ------------------------------------------------------------------

python_tools_ok() {
    [[ -x "$VENV/bin/cfn-lint" && -x "$VENV/bin/cargo-lambda" ]] || return 1
    # importlib.metadata answers in ~50 ms; `pip show` takes a second or more.
    "$VENV/bin/python" - "$CFN_LINT_VERSION" "$CARGO_LAMBDA_VERSION" <<'EOF' 2>/dev/null
import importlib.metadata as md, sys
ok = md.version("cfn-lint") == sys.argv[1] and md.version("cargo-lambda") == sys.argv[2]
sys.exit(0 if ok else 1)
EOF
}

node_tools_ok() {
    [[ -x "$ASL_VALIDATOR" ]] || return 1
    local installed
    installed="$(node -p 'require(process.argv[1]).version' \
        "$NODE_PREFIX/node_modules/asl-validator/package.json" 2>/dev/null)" || return 1
    [[ "$installed" == "$ASL_VALIDATOR_VERSION" ]]
}

install_tools() {
    if python_tools_ok && command -v node >/dev/null && node_tools_ok; then
        return 0
    fi
    mkdir -p "$TOOLS"
    # Two runs at once (a developer and a test run) install once.
    exec 9>"$TOOLS/install.lock"
    flock 9

    if ! python_tools_ok; then
        if [[ ! -x "$VENV/bin/python" ]]; then
            if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
                # Debian splits venv/ensurepip out of python3.
                apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            fi
            log "creating virtualenv $VENV"
            python3 -m venv "$VENV"
        fi
        log "installing cfn-lint $CFN_LINT_VERSION and cargo-lambda $CARGO_LAMBDA_VERSION into $VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "cfn-lint==$CFN_LINT_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION" ||
            die "pip could not install cfn-lint==$CFN_LINT_VERSION cargo-lambda==$CARGO_LAMBDA_VERSION"
        python_tools_ok || die "cfn-lint/cargo-lambda still not at the pinned versions after pip install"
    fi

    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        log "installing Debian's nodejs and npm"
        { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; } ||
            die "apt-get could not install nodejs npm"
    fi
    if ! node_tools_ok; then
        log "installing asl-validator $ASL_VALIDATOR_VERSION into $NODE_PREFIX"
        npm install --prefix "$NODE_PREFIX" --save-exact --no-audit --no-fund \
            --loglevel=error "asl-validator@$ASL_VALIDATOR_VERSION" >/dev/null ||
            die "npm could not install asl-validator@$ASL_VALIDATOR_VERSION"
        node_tools_ok || die "asl-validator still not at $ASL_VALIDATOR_VERSION after npm install"
    fi
    flock -u 9
}

step "tools (pinned, project-local)"
install_tools
log "cfn-lint $CFN_LINT_VERSION, cargo-lambda $CARGO_LAMBDA_VERSION, asl-validator $ASL_VALIDATOR_VERSION, node $(node --version)"

# --- 1. template ---------------------------------------------------------------

step "cfn-lint $TEMPLATE"
if [[ ! -f "$TEMPLATE" ]]; then
    fail "$TEMPLATE does not exist"
elif "$VENV/bin/cfn-lint" -- "$TEMPLATE"; then
    log "cfn-lint: no errors or warnings"
else
    fail "cfn-lint found problems in $TEMPLATE (listed above)"
fi

# --- 2. state machine ----------------------------------------------------------

step "asl-validator $ASL"
if [[ ! -f "$ASL" ]]; then
    fail "$ASL does not exist"
else
    # The definition carries DefinitionSubstitutions placeholders
    # (${PlannerFunctionArn}, ...) that SAM fills in at deploy time.
    # Validate what Step Functions will receive: each placeholder replaced
    # by a Lambda function ARN, so the ARN checks on Resource fields still
    # apply.
    substituted="$(mktemp --suffix=.asl.json)"
    trap 'rm -f "$substituted"' EXIT
    # shellcheck disable=SC2016 # JavaScript, not shell: no expansion wanted.
    node -e '
        const fs = require("fs");
        const text = fs.readFileSync(process.argv[1], "utf8").replace(
            /\$\{([A-Za-z0-9]+)\}/g,
            (_, name) => `arn:aws:lambda:us-east-1:123456789012:function:${name}`);
        fs.writeFileSync(process.argv[2], text);
    ' "$ASL" "$substituted"
    if "$ASL_VALIDATOR" --json-path "$substituted"; then
        log "asl-validator: valid"
    else
        fail "asl-validator rejected $ASL (errors above)"
    fi
fi

# --- 3. function builds --------------------------------------------------------

# The binaries the template deploys (Metadata.BuildProperties.Binary), each
# the one binary of the workspace package of the same name.
mapfile -t binaries < <(sed -n 's/^ *Binary: *\([A-Za-z0-9_-]*\) *$/\1/p' "$TEMPLATE" 2>/dev/null | sort -u)

step "cargo lambda build (x86_64, debug): ${binaries[*]:-none}"
if ((${#binaries[@]} == 0)); then
    fail "no BuildProperties.Binary found in $TEMPLATE"
else
    packages=()
    for binary in "${binaries[@]}"; do
        packages+=(--package "$binary")
    done
    started=$SECONDS
    # `cargo lambda` finds its subcommand binary on PATH. `--compiler
    # cargo` links with the host toolchain instead of zig: the target here
    # is the host's, and zig's wrappers live under .venv/, whose path
    # changes with every clone and would rebuild every dependency (5 min in
    # CI). `sam build` uses zig, for the arm64 target and an older glibc.
    if PATH="$VENV/bin:$PATH" cargo lambda build --x86-64 --compiler cargo --locked "${packages[@]}"; then
        missing=()
        for binary in "${binaries[@]}"; do
            bootstrap="$CARGO_TARGET_DIR/lambda/$binary/bootstrap"
            if [[ -x "$bootstrap" ]]; then
                log "$bootstrap ($(du -h "$bootstrap" | cut -f1))"
            else
                missing+=("$binary")
            fi
        done
        if ((${#missing[@]})); then
            fail "cargo lambda build made no bootstrap for: ${missing[*]}"
        else
            log "cargo lambda build: ${#binaries[@]} functions in $((SECONDS - started)) s"
        fi
    else
        fail "cargo lambda build failed (errors above)"
    fi
fi

# --- result --------------------------------------------------------------------

if ((${#failures[@]})); then
    printf '\ncheck-infra.sh: %d check(s) failed:\n' "${#failures[@]}" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
printf '\ncheck-infra.sh: template, state machine and function builds all pass\n' >&2
