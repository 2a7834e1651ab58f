//! Reading the cargo workspace the functions are built from: which crate
//! under `functions/` builds a binary, and the `[workspace]` member lists.

use std::fs;
use std::path::{Path, PathBuf};

/// `functions/<x>` whose Cargo.toml names package `binary`, if it exists yet.
pub fn function_crate_dir(root: &Path, binary: &str) -> Option<PathBuf> {
    let entries = fs::read_dir(root.join("functions")).ok()?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|dir| {
            fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|m| {
                m.lines().any(|line| {
                    let line = line.trim();
                    line.starts_with("name") && line.contains(&format!("\"{binary}\""))
                })
            })
        })
}

/// The `name = ...` line of a dependency, if the manifest has one.
pub fn dependency_line<'a>(manifest: &'a str, name: &str) -> Option<&'a str> {
    manifest.lines().map(str::trim).find(|line| {
        line.split_once('=')
            .is_some_and(|(key, _)| key.trim() == name)
    })
}

pub fn manifest_has_table(manifest: &str, table: &str) -> bool {
    manifest.lines().any(|l| l.trim() == format!("[{table}]"))
}

/// The strings of `key = [...]` in the `[workspace]` table (a small reader:
/// no TOML parser among the dependencies).
pub fn workspace_list(manifest: &str, key: &str) -> Vec<String> {
    let mut in_workspace = false;
    let mut collecting = false;
    let mut text = String::new();
    for line in manifest.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && !collecting {
            in_workspace = trimmed == "[workspace]";
            continue;
        }
        if in_workspace && !collecting {
            if let Some((k, v)) = trimmed.split_once('=')
                && k.trim() == key
            {
                collecting = true;
                text.push_str(v);
            }
        } else if collecting {
            text.push_str(trimmed);
        }
        if collecting && text.contains(']') {
            break;
        }
    }
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim_start_matches("./").to_string())
        .collect()
}
