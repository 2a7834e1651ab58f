#!/usr/bin/env bash
# The README's deploy build, as a user runs it: `sam build` of
# infra/template.yaml, every function in release mode with cargo-lambda and
# its zig, for one architecture. Then each `bootstrap` is checked to be an
# ELF executable for that machine, and its size printed.
#
#   scripts/sam-build.sh [arm64|x86_64]     (default arm64, the template's)
#
# Environment:
#   SAM_BUILD_DIR  where SAM puts the artifacts (default: a temporary
#                  directory, removed at exit; set it to keep them, e.g. for
#                  scripts/bench-cold-start.sh)
#
# The AWS SAM CLI and cargo-lambda are pinned and installed by this script
# into one virtualenv per pair of versions under ~/.cache/s3-fanout/tools/,
# not inside the clone: cargo-lambda's zig wrappers name the zig they run,
# and a path that changed with every clone would rebuild every C dependency
# (aws-lc, zstd) for every CI run. The cargo build directory is shared by
# every clone on this machine for the same reason as scripts/test.sh's.
set -euo pipefail

readonly SAM_CLI_VERSION="1.170.0"
readonly CARGO_LAMBDA_VERSION="1.9.2"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
cd "$REPO"
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

readonly TEMPLATE="infra/template.yaml"
readonly VENV="$HOME/.cache/s3-fanout/tools/sam-$SAM_CLI_VERSION-cargo-lambda-$CARGO_LAMBDA_VERSION"
# Not the tests' build directory: a release build for another target shares
# nothing with it, and keeping them apart keeps each one's cache warm.
export CARGO_TARGET_DIR="${SAM_CARGO_TARGET_DIR:-$HOME/.cache/s3-fanout/target-lambda}"
# SAM asks before sending telemetry and checks PyPI for a newer version;
# neither may reach the network from CI.
export SAM_CLI_TELEMETRY=0 SAM_CLI_DISABLE_UPDATE_CHECK=1

architecture="${1:-arm64}"
case "$architecture" in
arm64) rust_target="aarch64-unknown-linux-gnu" elf_machine=183 ;; # EM_AARCH64
x86_64) rust_target="x86_64-unknown-linux-gnu" elf_machine=62 ;;  # EM_X86_64
*) die "architecture must be arm64 or x86_64, not '$architecture'" ;;
esac

# --- installs ------------------------------------------------------------------

if ! venv_has "$VENV" "aws-sam-cli==$SAM_CLI_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION"; then
    mkdir -p "$(dirname "$VENV")"
    # Two clones building at once (a developer and CI) install once.
    exec 9>"$VENV.lock"
    flock 9
    pip_pinned "$VENV" "aws-sam-cli==$SAM_CLI_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION"
    flock -u 9
fi
if ! rustup target list --installed | grep -qx "$rust_target"; then
    log "adding the Rust standard library for $rust_target"
    rustup target add "$rust_target" || die "rustup could not add $rust_target"
fi

# --- build ---------------------------------------------------------------------

if [[ -n "${SAM_BUILD_DIR:-}" ]]; then
    build_dir="$SAM_BUILD_DIR"
    rm -rf "$build_dir"
else
    build_dir="$(mktemp -d)/sam-build"
    trap 'rm -rf "$(dirname "$build_dir")"' EXIT
fi

log "sam build ($architecture, release) into $build_dir; cargo target $CARGO_TARGET_DIR"
started=$SECONDS
# --beta-features: SAM still calls its cargo-lambda builder a beta.
PATH="$VENV/bin:$PATH" sam build --template-file "$TEMPLATE" --build-dir "$build_dir" \
    --beta-features --parameter-overrides "Architecture=$architecture" ||
    die "sam build failed for $architecture (output above)"
elapsed=$((SECONDS - started))

# --- check what it built -------------------------------------------------------

# The functions the template deploys, each a directory of the build named
# for its logical id.
mapfile -t functions < <(sed -n 's/^  \([A-Za-z0-9]\{1,\}Function\):$/\1/p' "$TEMPLATE")
((${#functions[@]} > 0)) || die "no *Function resources found in $TEMPLATE"

# ELF header: magic, EI_CLASS 2 (64-bit), EI_DATA 1 (little-endian), and
# e_machine, a 16-bit little-endian field at offset 18.
elf_machine_of() {
    local header
    header="$(od -An -tu1 -N20 "$1" | tr -s ' \n' ' ')"
    read -r -a bytes <<<"$header"
    ((${#bytes[@]} == 20)) || return 1
    [[ "${bytes[*]:0:6}" == "127 69 76 70 2 1" ]] || return 1
    echo $((bytes[18] + 256 * bytes[19]))
}

total=0
printf '%-22s %12s %9s\n' function bytes MiB
for function in "${functions[@]}"; do
    bootstrap="$build_dir/$function/bootstrap"
    if [[ ! -x "$bootstrap" ]]; then
        fail "$function has no executable bootstrap at $bootstrap"
        continue
    fi
    machine="$(elf_machine_of "$bootstrap")" || machine="not a 64-bit little-endian ELF"
    if [[ "$machine" != "$elf_machine" ]]; then
        fail "$bootstrap is for machine $machine, not $elf_machine ($architecture)"
        continue
    fi
    size="$(stat -c %s "$bootstrap")"
    total=$((total + size))
    printf '%-22s %12d %9.1f\n' "$function" "$size" "$(awk -v bytes="$size" 'BEGIN { print bytes / 1048576 }')"
done
((${#failures[@]} == 0)) || die "${#failures[@]} of ${#functions[@]} functions did not build an $architecture bootstrap"
log "${#functions[@]} $architecture bootstraps, $((total / 1048576)) MiB in all, built in ${elapsed} s"
