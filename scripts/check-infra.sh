#!/usr/bin/env bash
# Offline checks of the serverless side, none of which needs an AWS account:
#
#   1. cfn-lint on the SAM template (infra/template.yaml)
#   2. checkov on the template: no failed check; each one that does not fit
#      this stack is skipped in the template with its reason
#   3. asl-validator on the state machine (statemachine/sync.asl.json)
#
# The functions themselves are built as a deploy builds them, by `sam build`
# in release mode for arm64: scripts/sam-build.sh.
#
#   scripts/check-infra.sh
#
# Tools are pinned and installed inside the repo: cfn-lint into .venv/ (the virtualenv scripts/moto.sh uses),
# checkov into .venv-checkov/, asl-validator into .tools/node/. A second run
# skips the installs.
# All checks run; the exit status is non-zero if any failed.
set -euo pipefail

# Pinned: a validator adds rules between releases. (cfn-lint's and
# checkov's pins are in scripts/lib/common.sh, shared with check-cdk.sh.)
readonly ASL_VALIDATOR_VERSION="4.0.0"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
cd "$REPO"
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

readonly VENV="$REPO/.venv"
readonly CHECKOV_VENV="$REPO/.venv-checkov"
readonly TOOLS="$REPO/.tools"
readonly NODE_PREFIX="$TOOLS/node"
readonly ASL_VALIDATOR="$NODE_PREFIX/node_modules/.bin/asl-validator"
readonly TEMPLATE="infra/template.yaml"
readonly ASL="statemachine/sync.asl.json"


# --- installs ------------------------------------------------------------------

node_tools_ok() {
    [[ -x "$ASL_VALIDATOR" ]] || return 1
    local installed
    installed="$(node -p 'require(process.argv[1]).version' \
        "$NODE_PREFIX/node_modules/asl-validator/package.json" 2>/dev/null)" || return 1
    [[ "$installed" == "$ASL_VALIDATOR_VERSION" ]]
}

install_tools() {
    if venv_has "$VENV" "cfn-lint==$CFN_LINT_VERSION" && venv_has "$CHECKOV_VENV" "checkov==$CHECKOV_VERSION" &&
        command -v node >/dev/null && node_tools_ok; then
        return 0
    fi
    mkdir -p "$TOOLS"
    # Two runs at once (a developer and a test run) install once.
    exec 9>"$TOOLS/install.lock"
    flock 9

    install_linters "$VENV" "$CHECKOV_VENV"

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
log "cfn-lint $CFN_LINT_VERSION, checkov $CHECKOV_VERSION, asl-validator $ASL_VALIDATOR_VERSION, node $(node --version)"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# --- 1. template ---------------------------------------------------------------

step "cfn-lint $TEMPLATE"
if [[ ! -f "$TEMPLATE" ]]; then
    fail "$TEMPLATE does not exist"
elif "$VENV/bin/cfn-lint" -- "$TEMPLATE"; then
    log "cfn-lint: no errors or warnings"
else
    fail "cfn-lint found problems in $TEMPLATE (listed above)"
fi

# --- 2. checkov ----------------------------------------------------------------

step "checkov on the template"
if [[ ! -f "$TEMPLATE" ]]; then
    fail "$TEMPLATE does not exist"
else
    # checkov leaves out resources whose Condition is false with every
    # parameter at its default, and Replication and RunNotifications default
    # to "false": the replicator, its queues, log group and alarm, and the
    # run topic would go unchecked. So a copy with both defaulting to "true"
    # is scanned too; it has the same lines, so the template's skip comments
    # hold for both.
    optional="$scratch/template.options-on.yaml"
    flips=(Replication RunNotifications)
    sed_args=()
    for parameter in "${flips[@]}"; do
        sed_args+=(-e "/^  $parameter:\$/,/^  [A-Za-z]/ s/^    Default: \"false\"\$/    Default: \"true\"/")
    done
    sed "${sed_args[@]}" "$TEMPLATE" >"$optional"
    flipped="$(diff "$TEMPLATE" "$optional" | grep -c '^>' || true)"
    if ((flipped != ${#flips[@]})); then
        fail "flipped $flipped of ${#flips[@]} 'Default: \"false\"' lines (${flips[*]}) in $TEMPLATE for checkov"
    else
        # No network: --skip-download (and BC_SKIP_MAPPING, its environment
        # twin) skips the Prisma Cloud downloads of guidelines and policy
        # metadata, and CKV_SKIP_PACKAGE_UPDATE_CHECK the PyPI query for a
        # newer checkov. Offline, either would wait out DNS and connection
        # timeouts; the timeout makes a future version that reaches out
        # anyway fail here instead of hanging CI. CKV_PARSE_ERROR_FAIL: a
        # template checkov cannot parse is a failure, not 0 checks passed.
        started=$SECONDS
        status=0
        output="$(
            BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true CKV_PARSE_ERROR_FAIL=true \
                timeout 300 "$CHECKOV_VENV/bin/checkov" --framework cloudformation \
                --quiet --compact --skip-download -f "$TEMPLATE" -f "$optional"
        )" || status=$?
        printf '%s\n' "$output" >&2
        if ((status == 124)); then
            fail "checkov did not finish within 300 s (waiting on the network?)"
        elif ((status != 0)); then
            fail "checkov reported failed checks or parse errors (listed above; $(basename "$optional") is $TEMPLATE with ${flips[*]} true, same lines)"
        elif ! grep -q '^Passed checks: [1-9]' <<<"$output"; then
            fail "checkov passed no check at all: it found no resources in $TEMPLATE"
        else
            log "checkov: no failed checks, in $((SECONDS - started)) s"
        fi
    fi
fi

# --- 3. state machine ----------------------------------------------------------

step "asl-validator $ASL"
if [[ ! -f "$ASL" ]]; then
    fail "$ASL does not exist"
else
    # The definition carries DefinitionSubstitutions placeholders
    # (${PlannerFunctionArn}, ..., ${RunTopicArn}) that SAM fills in at
    # deploy time. Validate what Step Functions will receive: each function
    # placeholder replaced by a Lambda function ARN, so the ARN checks on
    # Resource fields still apply, and the topic's by an SNS topic ARN.
    substituted="$scratch/sync.asl.json"
    # shellcheck disable=SC2016 # JavaScript, not shell: no expansion wanted.
    node -e '
        const fs = require("fs");
        const text = fs.readFileSync(process.argv[1], "utf8").replace(
            /\$\{([A-Za-z0-9]+)\}/g,
            (_, name) => name.endsWith("TopicArn")
                ? `arn:aws:sns:us-east-1:123456789012:${name}`
                : `arn:aws:lambda:us-east-1:123456789012:function:${name}`);
        fs.writeFileSync(process.argv[2], text);
    ' "$ASL" "$substituted"
    if "$ASL_VALIDATOR" --json-path "$substituted"; then
        log "asl-validator: valid"
    else
        fail "asl-validator rejected $ASL (errors above)"
    fi
fi

# --- result --------------------------------------------------------------------

if ((${#failures[@]})); then
    printf '\ncheck-infra.sh: %d check(s) failed:\n' "${#failures[@]}" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
printf '\ncheck-infra.sh: template (cfn-lint, checkov) and state machine pass\n' >&2
