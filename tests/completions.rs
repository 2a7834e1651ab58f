//! `s3-fanout completions SHELL` and `s3-fanout man`: each completion
//! script loads in its real shell and completes a subcommand and a flag,
//! and every manual page renders with `man -l`. bash, zsh, fish and man
//! come from Debian (`scripts/test.sh` installs them); PowerShell and
//! elvish are not packaged there, so their scripts are only generated.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_s3-fanout");

/// Run `program args...`, failing the test with a way out if the program
/// is missing.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}): install it (apt-get install {program}; scripts/test.sh does)")
    })
}

fn stdout_of(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn bash_completes_subcommands_and_flags() {
    // GIVEN the script sourced into bash, WHEN it completes `s3-fanout sy`
    // and `s3-fanout sync --dry`
    let script = format!(
        r#"source <("{BIN}" completions bash) || exit 1
complete -p s3-fanout || exit 1
complete_words() {{
    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
    local function
    function=$(complete -p s3-fanout | sed -E 's/.* -F ([^ ]+) .*/\1/')
    "$function" s3-fanout "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
    echo "${{COMPREPLY[@]}}"
}}
complete_words s3-fanout sy
complete_words s3-fanout sync --dry"#
    );
    let out = stdout_of(&run("bash", &["-c", &script]), "bash");
    let lines: Vec<&str> = out.lines().collect();
    // THEN bash knows the function, and offers `sync` and `--dry-run` (a
    // subcommand's flag: clap-rs/clap#6421 breaks those for hyphenated
    // names, which `completions` works around)
    assert!(lines[0].ends_with(" s3-fanout"), "{out}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["sync"],
        "{out}"
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["--dry-run"],
        "{out}"
    );
}

#[test]
fn zsh_registers_the_completion_function() {
    // GIVEN zsh's completion system, WHEN the script is sourced
    let script = format!(
        r#"autoload -U compinit && compinit -u -D || exit 1
source <("{BIN}" completions zsh) || exit 1
print -r -- "$_comps[s3-fanout]"
whence -w _s3-fanout"#
    );
    let out = stdout_of(&run("zsh", &["-f", "-c", &script]), "zsh");
    // THEN `s3-fanout` completes with its function, which is defined
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["_s3-fanout", "_s3-fanout: function"],
        "{out}"
    );
}

#[test]
fn fish_completes_subcommands_and_flags() {
    // GIVEN the script loaded into fish, WHEN it completes `s3-fanout sy`
    // and `s3-fanout sync --dry`
    let script = format!(
        r#""{BIN}" completions fish | source; or exit 1
complete -C "s3-fanout sy"
echo ---
complete -C "s3-fanout sync --dry""#
    );
    let out = stdout_of(&run("fish", &["--no-config", "-c", &script]), "fish");
    let (subcommands, flags) = out.split_once("---\n").expect("both completions");
    let first = |text: &str| -> Vec<String> {
        text.lines()
            .map(|line| line.split('\t').next().unwrap().to_owned())
            .collect()
    };
    // THEN it offers `sync` (with its description) and `--dry-run`
    assert_eq!(first(subcommands), ["sync"], "{out}");
    assert!(subcommands.contains("Make DST match SRC"), "{out}");
    assert_eq!(first(flags), ["--dry-run"], "{out}");
}

#[test]
fn every_shell_clap_supports_gets_a_script_and_others_are_refused() {
    for (shell, marker) in [
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "set edit:completion:arg-completer[s3-fanout]"),
    ] {
        let out = stdout_of(&run(BIN, &["completions", shell]), shell);
        assert!(out.contains(marker), "{shell}: {out}");
    }
    let refused = run(BIN, &["completions", "tcsh"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("possible values"));
}

/// Render a page as a reader would, and return its text.
fn rendered(page: &Path) -> String {
    let output = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C")
        .output()
        .expect("man is installed (apt-get install man-db; scripts/test.sh does)");
    stdout_of(&output, &page.display().to_string())
}

#[test]
fn every_manual_page_renders_with_man() {
    // GIVEN every page, written by `man --dir` into a directory it makes
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let out = run(BIN, &["man", "--dir", pages.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let mut names: Vec<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();

    // THEN there is one per command, and each renders with its name,
    // synopsis and options
    for command in ["", "-sync", "-plan", "-check", "-run", "-import", "-man"] {
        let name = format!("s3-fanout{command}.1");
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    for name in &names {
        let text = rendered(&pages.join(name));
        let title = name.trim_end_matches(".1");
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{name}: {text}"
        );
        // The NAME section starts with the command's name.
        let named = text
            .split_once("NAME\n")
            .map(|(_, rest)| rest.split_whitespace().next());
        assert_eq!(named, Some(Some(title)), "{name}: {text}");
    }
    let sync = rendered(&pages.join("s3-fanout-sync.1"));
    assert!(sync.contains("--dry-run"), "{sync}");

    // AND `man` alone prints the top page, the same as the file
    let printed = stdout_of(&run(BIN, &["man"]), "s3-fanout man");
    let file = std::fs::read_to_string(pages.join("s3-fanout.1")).unwrap();
    assert_eq!(printed, file);
}

#[test]
fn a_manual_directory_that_cannot_be_made_is_exit_2_with_its_name() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let under_a_file = file.path().join("man1");
    let out = run(BIN, &["man", "--dir", under_a_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("writing the manual pages into") && stderr.contains("man1"),
        "{stderr}"
    );
}
