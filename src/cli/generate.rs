//! Shell completions and manual pages, generated from the parser's own
//! definition (clap_complete, clap_mangen), so they cannot drift from the
//! flags the binary accepts: `s3-fanout completions bash`, `s3-fanout man`.

use std::io::Write;
use std::path::PathBuf;

use super::output::EXIT_USAGE;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for. Load it with, for bash,
    /// `source <(s3-fanout completions bash)`, or save it where the shell
    /// looks (`/usr/share/bash-completion/completions/s3-fanout`,
    /// `~/.zfunc/_s3-fanout`, `~/.config/fish/completions/s3-fanout.fish`).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write `s3-fanout.1` and a page per subcommand (`s3-fanout-sync.1`,
    /// ...) into this directory, made if missing, instead of printing
    /// `s3-fanout.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Print the completion script for a shell, for `command` (the CLI's).
pub fn completions(args: CompletionsArgs, mut command: clap::Command) -> i32 {
    // Into memory first: clap_complete panics on a failed write, and a
    // reader that stops early (`| head`) is no reason to.
    let script = if args.shell == clap_complete::Shell::Bash {
        bash_script(&mut command)
    } else {
        let mut script = Vec::new();
        clap_complete::generate(args.shell, &mut command, BIN, &mut script);
        script
    };
    let mut out = std::io::stdout().lock();
    let written = out.write_all(&script).and_then(|()| out.flush());
    ended("writing the completion script", written, 1)
}

const BIN: &str = "s3-fanout";

/// The bash script. clap_complete 4.6 spells a hyphenated binary's states
/// one way in the script's dispatch loop (`s3__fanout__subcmd__sync`) and
/// another in its case arms (`s3__subcmd__fanout__subcmd__sync`), so no
/// subcommand's flags would complete (clap-rs/clap#6421, open). Generated
/// for `s3_fanout` the two agree; the `complete` lines then name the real
/// command, which the loop takes from bash (`$1`), not from the script.
fn bash_script(command: &mut clap::Command) -> Vec<u8> {
    const STAND_IN: &str = "s3_fanout";
    let mut generated = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::Bash,
        command,
        STAND_IN,
        &mut generated,
    );
    let generated = String::from_utf8_lossy(&generated);
    let mut script = String::with_capacity(generated.len());
    for line in generated.lines() {
        match line.strip_suffix(STAND_IN) {
            Some(head) if line.trim_start().starts_with("complete ") => {
                script.push_str(head);
                script.push_str(BIN);
            }
            _ => script.push_str(line),
        }
        script.push('\n');
    }
    script.into_bytes()
}

/// Print the top manual page of `command` (the CLI's), or write every
/// page into a directory.
pub fn man(args: ManArgs, command: clap::Command) -> i32 {
    match &args.dir {
        Some(dir) => {
            let written =
                std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(command, dir));
            let what = format!("writing the manual pages into {}", dir.display());
            // A directory that cannot be written is the caller's to fix.
            ended(&what, written, EXIT_USAGE)
        }
        None => {
            let mut out = std::io::stdout().lock();
            // As `generate_to` writes it: no `help` subcommand, which has
            // no page of its own to point to.
            let written = clap_mangen::Man::new(command.disable_help_subcommand(true))
                .render(&mut out)
                .and_then(|()| out.flush());
            ended("writing the manual page", written, 1)
        }
    }
}

/// The exit code of a generation: a reader that stopped early (`| head`)
/// is no failure.
fn ended(what: &str, result: std::io::Result<()>, code: i32) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: {what}: {e}");
            code
        }
    }
}
