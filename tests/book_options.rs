//! The book's option reference is the binary's own `--help`: one page per
//! subcommand under `docs/book/src/reference/`, each the help text as the
//! built `s3-fanout` prints it. Hand-written chapters link to these pages
//! instead of carrying option tables, so an option added, renamed or
//! reworded in clap fails this test until the pages are regenerated:
//!
//!     S3_FANOUT_BLESS=1 cargo test --test book_options
//!
//! The subcommands are read from `s3-fanout --help`, not listed here, so a
//! new subcommand gets a page (and must be named in `SUMMARY.md`) too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_s3-fanout");
const BLESS: &str = "S3_FANOUT_BLESS";
const REGENERATE: &str = "S3_FANOUT_BLESS=1 cargo test --test book_options";

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/book/src/reference")
}

fn summary_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/book/src/SUMMARY.md")
}

/// `s3-fanout ARGS... --help`, as a user's terminal would show it, minus
/// anything this machine's environment would add: clap prints the value of
/// every `env = ...` variable that is set (`[env: S3_FANOUT_MODE=size]`),
/// and would wrap to `COLUMNS` if wrapping were ever enabled.
fn help(args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
    assert!(
        output.status.success(),
        "s3-fanout {} --help: {}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("--help prints UTF-8")
}

/// The subcommands a help text lists under `Commands:` (clap's layout: two
/// spaces, the name, two or more spaces, its summary), `help` excepted.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// A reference page: the help text, verbatim in a fenced block (a table
/// would drop the possible values, defaults and environment variables clap
/// prints under each option).
fn page(path: &[&str], help: &str) -> String {
    let command = std::iter::once("s3-fanout")
        .chain(path.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "# `{command}`\n\n\
         <!-- Generated from `{command} --help` by tests/book_options.rs; do not edit.\n     \
         Regenerate: {REGENERATE} -->\n\n\
         ```text\n{}\n```\n",
        help.trim_end()
    )
}

/// Every page the binary's help makes, by file name: `s3-fanout.md` for the
/// top level, `SUB.md` for each subcommand (`SUB-SUBSUB.md` below that).
fn expected_pages() -> BTreeMap<String, String> {
    let mut pages = BTreeMap::new();
    let mut queue: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = queue.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        for sub in subcommands(&text) {
            let mut child = path.clone();
            child.push(sub);
            queue.push(child);
        }
        let name = if path.is_empty() {
            "s3-fanout.md".to_owned()
        } else {
            format!("{}.md", path.join("-"))
        };
        pages.insert(name, page(&args, &text));
    }
    pages
}

fn committed_pages() -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(reference_dir()) else {
        return BTreeMap::new();
    };
    entries
        .map(|entry| entry.expect("reading docs/book/src/reference").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).expect("reading a reference page");
            (name, text)
        })
        .collect()
}

#[test]
fn option_reference_pages_are_the_binarys_help() {
    // GIVEN every (sub)command's `--help` from the built binary
    let expected = expected_pages();
    assert!(
        expected.contains_key("sync.md") && expected.len() > 5,
        "found too few subcommands in `s3-fanout --help`: {:?}",
        expected.keys().collect::<Vec<_>>()
    );

    if std::env::var_os(BLESS).is_some() {
        let dir = reference_dir();
        std::fs::create_dir_all(&dir).unwrap();
        for (name, _) in committed_pages() {
            if !expected.contains_key(&name) {
                std::fs::remove_file(dir.join(&name)).unwrap();
            }
        }
        for (name, text) in &expected {
            std::fs::write(dir.join(name), text).unwrap();
        }
        eprintln!("wrote {} pages into {}", expected.len(), dir.display());
    }

    // WHEN they are compared with the pages committed in the book
    let committed = committed_pages();
    let mut problems = Vec::new();
    for (name, text) in &expected {
        match committed.get(name) {
            None => problems.push(format!("{name}: missing")),
            Some(have) if have != text => problems.push(format!(
                "{name}: differs from --help, first at line {}:\n  committed: {:?}\n  --help:    {:?}",
                first_difference(have, text) + 1,
                have.lines().nth(first_difference(have, text)).unwrap_or(""),
                text.lines().nth(first_difference(have, text)).unwrap_or(""),
            )),
            Some(_) => {}
        }
    }
    for name in committed.keys() {
        if !expected.contains_key(name) {
            problems.push(format!("{name}: no such subcommand any more"));
        }
    }

    // THEN they are the same, page for page
    assert!(
        problems.is_empty(),
        "docs/book/src/reference/ is not what the binary's --help says:\n{}\n\n\
         Regenerate the pages with:\n    {REGENERATE}\nand commit them.",
        problems.join("\n")
    );
}

#[test]
fn every_reference_page_is_in_the_books_summary() {
    // GIVEN the book's table of contents, WHEN each generated page is
    // looked for in it
    let summary = std::fs::read_to_string(summary_path()).expect("reading SUMMARY.md");
    let missing: Vec<String> = expected_pages()
        .into_keys()
        .filter(|name| !summary.contains(&format!("(reference/{name})")))
        .collect();
    // THEN every page is listed, or mdbook would leave it out of the book
    assert!(
        missing.is_empty(),
        "docs/book/src/SUMMARY.md lists no link to reference/{}: add a line such as\n    \
         - [`X`](reference/X.md)\nunder the Reference part",
        missing.join(", reference/")
    );
}

fn first_difference(a: &str, b: &str) -> usize {
    a.lines()
        .zip(b.lines())
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.lines().count().min(b.lines().count()))
}
