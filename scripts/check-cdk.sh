#!/usr/bin/env bash
# Offline checks of the CDK construct (infra/cdk/), none of which needs an
# AWS account or compiles Rust:
#
#   1. cdk synth of the sample app (infra/cdk/bin/sample.ts: one stack with
#      every default, one with replication, notifications and every other
#      option on), with asset bundling off: cargo-lambda builds the
#      functions at deploy time, not here
#   2. the parity test (scripts/cdk-parity.py): the synthesized templates
#      against the SAM template transformed by samtranslator with the same
#      values, resource by resource
#   3. cfn-lint on the synthesized templates
#   4. checkov on them: no failed check; each one that does not fit is
#      skipped in the construct with its reason (Metadata.checkov)
#
#   scripts/check-cdk.sh
#
# npm packages are pinned by infra/cdk/package-lock.json and installed with
# `npm ci` into infra/cdk/node_modules; cfn-lint and checkov are those of
# scripts/check-infra.sh, same versions (read from it), same virtualenvs.
# A second run skips the installs.
# All checks run; the exit status is non-zero if any failed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
cd "$REPO"
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

readonly CDK_DIR="$REPO/infra/cdk"
readonly VENV="$REPO/.venv"
readonly CHECKOV_VENV="$REPO/.venv-checkov"
readonly TOOLS="$REPO/.tools"
readonly CDK="$CDK_DIR/node_modules/.bin/cdk"
# Stamped into node_modules by a finished `npm ci`: a lock file changed
# since (or an install cut short) means installing again.
readonly NPM_STAMP="$CDK_DIR/node_modules/.s3-fanout-lock.sha256"

timings=()
started=$SECONDS
# took STEP: how long since the previous call, printed and kept for the end.
took() {
    local seconds=$((SECONDS - started))
    log "$1: ${seconds} s"
    timings+=("$(printf '%-28s %4d s' "$1" "$seconds")")
    started=$SECONDS
}

# Nothing of the CDK CLI's reaches the network: no version check, no
# notices (--no-notices below), no telemetry.
export CDK_DISABLE_VERSION_CHECK=true
export CDK_DISABLE_CLI_TELEMETRY=true
# samtranslator and the CDK need a region, not credentials; none of a
# developer's own AWS setup is read.
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

# --- installs ------------------------------------------------------------------

lock_hash() { sha256sum "$CDK_DIR/package-lock.json" | cut -d' ' -f1; }

npm_ok() {
    [[ -x "$CDK" && -f "$NPM_STAMP" && "$(cat "$NPM_STAMP")" == "$(lock_hash)" ]]
}

install_tools() {
    mkdir -p "$TOOLS"
    # The same lock as scripts/check-infra.sh: both install into .venv/.
    exec 9>"$TOOLS/install.lock"
    flock 9

    # cfn-lint brings samtranslator, which the parity test transforms with.
    install_linters "$VENV" "$CHECKOV_VENV"

    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        log "installing Debian's nodejs and npm"
        { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; } ||
            die "apt-get could not install nodejs npm"
    fi
    # aws-cdk-lib 2.276 wants node >= 20.
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    ((major >= 20)) || die "node $(node --version) is too old: aws-cdk-lib needs node 20 or later"
    if ! npm_ok; then
        log "npm ci in $CDK_DIR (versions from package-lock.json)"
        (cd "$CDK_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
            die "npm ci failed in $CDK_DIR"
        lock_hash >"$NPM_STAMP"
    fi
    flock -u 9
}

step "tools (pinned, project-local)"
install_tools
log "cfn-lint $CFN_LINT_VERSION, checkov $CHECKOV_VERSION, node $(node --version)," \
    "aws-cdk-lib $(node -p 'require(process.argv[1]).version' "$CDK_DIR/node_modules/aws-cdk-lib/package.json")," \
    "cdk CLI $("$CDK" --version 2>/dev/null | cut -d' ' -f1)"
took "installs"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
out="$scratch/cdk.out"

# --- 1. synth ------------------------------------------------------------------

step "cdk synth (infra/cdk/bin/sample.ts, no asset bundling)"
# s3-fanout:bundle=false: the app turns bundling off for every stack
# (infra/cdk/bin/sample.ts says why a -c of aws:cdk:bundling-stacks would
# not). cdk.json's build step compiles the TypeScript first.
if (cd "$CDK_DIR" && "$CDK" synth --quiet --no-notices --no-version-reporting \
    -c s3-fanout:bundle=false -o "$out" >/dev/null); then
    mapfile -t templates < <(find "$out" -maxdepth 1 -name '*.template.json' | sort)
    if ((${#templates[@]} == 0)); then
        fail "cdk synth wrote no template into $out"
    else
        log "cdk synth: ${#templates[@]} templates: $(basename -a "${templates[@]}" | tr '\n' ' ')"
    fi
else
    fail "cdk synth failed (errors above)"
    templates=()
fi
took "cdk synth"

# --- 2. parity -----------------------------------------------------------------

step "parity: CDK construct against the SAM template (scripts/cdk-parity.py)"
if ((${#templates[@]} == 0)); then
    fail "parity test not run: no synthesized template"
elif "$VENV/bin/python" scripts/cdk-parity.py "$out" >"$scratch/parity.txt"; then
    grep -v '^same ' "$scratch/parity.txt" >&2 || true
    log "parity: SAM and CDK deploy the same resources"
else
    grep -v '^same ' "$scratch/parity.txt" >&2 || true
    fail "the CDK construct and infra/template.yaml differ (DIFFERS lines above)"
fi
took "parity test"

# --- 3. cfn-lint ---------------------------------------------------------------

step "cfn-lint on the synthesized templates"
if ((${#templates[@]} == 0)); then
    fail "cfn-lint not run: no synthesized template"
elif "$VENV/bin/cfn-lint" -- "${templates[@]}"; then
    log "cfn-lint: no errors or warnings"
else
    fail "cfn-lint found problems in the synthesized templates (listed above)"
fi
took "cfn-lint"

# --- 4. checkov ----------------------------------------------------------------

step "checkov on the synthesized templates"
if ((${#templates[@]} == 0)); then
    fail "checkov not run: no synthesized template"
else
    # Offline, as in scripts/check-infra.sh: no Prisma Cloud downloads, no
    # PyPI version query, a timeout in case a future version reaches out
    # anyway, and a template checkov cannot parse is a failure.
    file_args=()
    for template in "${templates[@]}"; do
        file_args+=(-f "$template")
    done
    status=0
    output="$(
        BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true CKV_PARSE_ERROR_FAIL=true \
            timeout 300 "$CHECKOV_VENV/bin/checkov" --framework cloudformation \
            --quiet --compact --skip-download "${file_args[@]}"
    )" || status=$?
    printf '%s\n' "$output" >&2
    if ((status == 124)); then
        fail "checkov did not finish within 300 s (waiting on the network?)"
    elif ((status != 0)); then
        fail "checkov reported failed checks or parse errors in the synthesized templates (listed above)"
    elif ! grep -q '^Passed checks: [1-9]' <<<"$output"; then
        fail "checkov passed no check at all: it found no resources in the synthesized templates"
    else
        log "checkov: no failed checks"
    fi
fi
took "checkov"

# --- result --------------------------------------------------------------------

printf '\ncheck-cdk.sh: time per step\n' >&2
printf '  %s\n' "${timings[@]}" >&2
if ((${#failures[@]})); then
    printf '\ncheck-cdk.sh: %d check(s) failed:\n' "${#failures[@]}" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
printf '\ncheck-cdk.sh: cdk synth, parity with the SAM template, cfn-lint and checkov all pass\n' >&2
