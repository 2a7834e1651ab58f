//! List a directory tree in S3's key order, as a stream of entries.
//!
//! S3 lists keys in UTF-8 byte order, where `a-b` comes before `a/x`
//! (`-` is 0x2D, `/` 0x2F). A depth-first walk yields that order if each
//! directory's children are sorted with a directory named as `name/`: every
//! key below `a/` shares that prefix, so the whole subtree sorts where
//! `a/` does. Memory is one sorted directory per level, never the tree.
//!
//! In a directory being uploaded, symbolic links are followed (as `aws s3
//! sync` does), with a loop check on the directories being walked. In a
//! restore target they are not: a link is neither descended into nor
//! listed, so `--delete` can never reach the files a link points to (and
//! a run that deletes reports each link it leaves in place). Sockets,
//! FIFOs and devices have no bytes to upload, names that are not UTF-8
//! cannot be keys, and an unreadable directory cannot be listed: each is
//! reported, never dropped silently. Files named as this tool's partial
//! downloads ([`super::dir::is_partial_name`]) are not listed: in a
//! restore target they are its own, and in a directory being uploaded
//! each is reported, since no key may have that name.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::dir::{DirRole, LocalDir};
use crate::base::error::SyncError;
use crate::model::entry::ObjectEntry;
use crate::model::location::KeyRange;
use crate::report::TaskStatus;

/// Entries sent to the consumer at a time, as a listing page would be.
const PAGE: usize = 1000;

/// List `range` of the directory in ascending key order. A missing root
/// lists as empty (a restore into a directory not yet created).
pub fn list_dir(
    dir: Arc<LocalDir>,
    range: KeyRange,
) -> impl Stream<Item = Result<ObjectEntry, SyncError>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Vec<ObjectEntry>>(2);
    tokio::task::spawn_blocking(move || walk(&dir, &range, &tx));
    futures::stream::unfold(rx, |mut rx| async move {
        let page = rx.recv().await?;
        Some((futures::stream::iter(page.into_iter().map(Ok)), rx))
    })
    .flatten()
}

/// A directory being walked: its device and inode (none for the root,
/// whose are seeded separately), and its children still to visit.
type Level = (Option<(u64, u64)>, Vec<Child>);

/// A child of a directory, sorted by the key it (or its subtree) has.
struct Child {
    sort_key: String,
    path: PathBuf,
    meta: fs::Metadata,
}

fn walk(dir: &LocalDir, range: &KeyRange, tx: &mpsc::Sender<Vec<ObjectEntry>>) {
    let root_meta = match fs::metadata(&dir.root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            dir.report("", TaskStatus::Failed, "LocalUnreadable", &e.to_string());
            return;
        }
    };
    let mut page = Vec::with_capacity(PAGE);
    // Directories being walked, by device and inode, for the loop check;
    // and per level, the children still to visit, in reverse order.
    let mut ancestors: HashSet<(u64, u64)> = HashSet::from([(root_meta.dev(), root_meta.ino())]);
    let mut stack: Vec<Level> = vec![(None, read_sorted(dir, &dir.root, ""))];
    while let Some((_, children)) = stack.last_mut() {
        let Some(child) = children.pop() else {
            if let Some((Some(id), _)) = stack.pop() {
                ancestors.remove(&id);
            }
            continue;
        };
        let key = child.sort_key;
        if child.meta.is_dir() {
            // Only subtrees that can hold keys of the range.
            if !(key.starts_with(&range.prefix) || range.prefix.starts_with(&key))
                || range.is_past_end(&key)
            {
                continue;
            }
            let id = (child.meta.dev(), child.meta.ino());
            if !ancestors.insert(id) {
                dir.report(
                    &key,
                    TaskStatus::Warning,
                    "SymlinkLoop",
                    "a symbolic link leads back into a directory being walked; not followed",
                );
                continue;
            }
            let children = read_sorted(dir, &child.path, &key);
            stack.push((Some(id), children));
            continue;
        }
        if range.is_past_end(&key) {
            break;
        }
        if !range.contains(&key) {
            continue;
        }
        if child.meta.is_file() {
            page.push(super::dir::file_entry(&key, &child.meta));
            if page.len() >= PAGE && tx.blocking_send(std::mem::take(&mut page)).is_err() {
                return; // the consumer is gone
            }
        } else {
            dir.report(
                &key,
                TaskStatus::Warning,
                "NotARegularFile",
                "a socket, FIFO or device file has no contents to transfer; skipped",
            );
        }
    }
    if !page.is_empty() {
        let _ = tx.blocking_send(page);
    }
}

/// The children of one directory, sorted descending (popped ascending).
fn read_sorted(dir: &LocalDir, path: &std::path::Path, prefix: &str) -> Vec<Child> {
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            dir.report(
                prefix,
                TaskStatus::Failed,
                "LocalUnreadable",
                &format!("cannot list the directory {}: {e}", path.display()),
            );
            return Vec::new();
        }
    };
    let mut children = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                dir.report(
                    prefix,
                    TaskStatus::Failed,
                    "LocalUnreadable",
                    &format!("cannot list the directory {}: {e}", path.display()),
                );
                continue;
            }
        };
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            let shown = format!("{prefix}{}", name.to_string_lossy());
            dir.report(
                &shown,
                TaskStatus::Failed,
                "InvalidFileName",
                "the file name is not UTF-8, so it cannot be an S3 key; rename it to transfer it",
            );
            continue;
        };
        if super::dir::is_partial_name(name) {
            if dir.role == DirRole::Source {
                dir.report(
                    &format!("{prefix}{name}"),
                    TaskStatus::Warning,
                    "PartialDownloadName",
                    "named as this tool's partial downloads (a restore left it, or it only looks so); not uploaded, since a restore would refuse the key: rename it to upload it",
                );
            }
            continue;
        }
        let child_path = entry.path();
        // fs::metadata follows symbolic links; symlink_metadata does not.
        let follow = dir.role == DirRole::Source;
        let meta = if follow {
            fs::metadata(&child_path)
        } else {
            fs::symlink_metadata(&child_path)
        };
        if meta.as_ref().is_ok_and(fs::Metadata::is_symlink) {
            if dir.role == (DirRole::Destination { delete: true }) {
                dir.report(
                    &format!("{prefix}{name}"),
                    TaskStatus::Warning,
                    "SymlinkKept",
                    "a symbolic link in the restore target: not followed and not deleted (an object at its key would replace the link itself)",
                );
            }
            continue;
        }
        let meta = match meta {
            Ok(meta) => meta,
            Err(e) => {
                let dangling = fs::symlink_metadata(&child_path).is_ok_and(|m| m.is_symlink());
                let (status, code) = if dangling {
                    (TaskStatus::Warning, "DanglingSymlink")
                } else {
                    (TaskStatus::Failed, "LocalUnreadable")
                };
                dir.report(&format!("{prefix}{name}"), status, code, &e.to_string());
                continue;
            }
        };
        let mut sort_key = format!("{prefix}{name}");
        if meta.is_dir() {
            sort_key.push('/');
        }
        children.push(Child {
            sort_key,
            path: child_path,
            meta,
        });
    }
    children.sort_unstable_by(|a, b| b.sort_key.cmp(&a.sort_key));
    children
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(root: &std::path::Path) -> Arc<LocalDir> {
        Arc::new(LocalDir {
            root: root.to_owned(),
            role: DirRole::Source,
            hash_etags: false,
            digests: None,
            part_size: 8 << 20,
            problems: None,
            reported: Default::default(),
            target: Default::default(),
        })
    }

    fn reporting(
        root: &std::path::Path,
        role: DirRole,
    ) -> (Arc<LocalDir>, Arc<crate::report::ReportRows>) {
        let rows = Arc::new(crate::report::ReportRows::new().unwrap());
        let stats = Arc::new(crate::report::Stats::default());
        let dir = Arc::new(LocalDir {
            role,
            problems: Some((rows.clone(), stats)),
            ..Arc::try_unwrap(local(root)).unwrap()
        });
        (dir, rows)
    }

    fn codes(rows: &crate::report::ReportRows) -> Vec<(String, String)> {
        let mut codes: Vec<_> = rows
            .read_all()
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.error_code))
            .collect();
        codes.sort();
        codes
    }

    #[tokio::test]
    async fn a_restore_target_walk_never_follows_or_lists_links() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
        fs::create_dir_all(root.join("d")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"x").unwrap();
        fs::write(root.join("d/f"), b"x").unwrap();
        fs::write(root.join("d/.f.s3-fanout-partial"), b"half").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("x")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("d/file-link")).unwrap();
        for delete in [false, true] {
            let (dir, rows) = reporting(&root, DirRole::Destination { delete });
            assert_eq!(keys(dir, KeyRange::all()).await, ["d/f"]);
            let expected: Vec<(String, String)> = if delete {
                vec![
                    ("d/file-link".into(), "SymlinkKept".into()),
                    ("x".into(), "SymlinkKept".into()),
                ]
            } else {
                Vec::new()
            };
            assert_eq!(codes(&rows), expected, "delete: {delete}");
        }
        // The same tree uploaded follows both links, as `aws s3 sync` does.
        let (dir, rows) = reporting(&root, DirRole::Source);
        assert_eq!(
            keys(dir, KeyRange::all()).await,
            ["d/f", "d/file-link", "x/secret"]
        );
        assert_eq!(
            codes(&rows),
            [(
                "d/.f.s3-fanout-partial".to_owned(),
                "PartialDownloadName".to_owned()
            )]
        );
    }

    #[tokio::test]
    async fn files_that_only_end_like_a_partial_are_uploaded() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("notes.s3-fanout-partial"), b"mine").unwrap();
        let listed = keys(local(tmp.path()), KeyRange::all()).await;
        assert_eq!(listed, ["notes.s3-fanout-partial"]);
    }

    async fn keys(dir: Arc<LocalDir>, range: KeyRange) -> Vec<String> {
        list_dir(dir, range).map(|e| e.unwrap().key).collect().await
    }

    #[tokio::test]
    async fn lists_in_s3_key_order_with_directories_as_prefixes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for file in ["a-b", "a/x", "a/y/z", "a.txt", "b", "ü", "a/y-1", " space"] {
            let path = root.join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, file).unwrap();
        }
        fs::write(root.join("a/.x.s3-fanout-partial"), b"half").unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        let listed = keys(local(root), KeyRange::all()).await;
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(listed, sorted, "byte order, as S3 lists");
        assert_eq!(
            listed,
            [" space", "a-b", "a.txt", "a/x", "a/y-1", "a/y/z", "b", "ü"]
        );
        let under_a = KeyRange {
            prefix: "a/".into(),
            ..KeyRange::default()
        };
        assert_eq!(keys(local(root), under_a).await, ["a/x", "a/y-1", "a/y/z"]);
        let missing = local(&root.join("not-yet"));
        assert!(keys(missing, KeyRange::all()).await.is_empty());
    }

    #[tokio::test]
    async fn symlinks_are_followed_but_loops_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"x").unwrap();
        std::os::unix::fs::symlink(root.join("d"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root, root.join("d/loop")).unwrap();
        std::os::unix::fs::symlink(root.join("gone"), root.join("dangling")).unwrap();
        let rows = Arc::new(crate::report::ReportRows::new().unwrap());
        let stats = Arc::new(crate::report::Stats::default());
        let dir = Arc::new(LocalDir {
            problems: Some((rows.clone(), stats.clone())),
            ..Arc::try_unwrap(local(root)).unwrap()
        });
        assert_eq!(keys(dir, KeyRange::all()).await, ["d/f", "link/f"]);
        let codes: Vec<String> = rows
            .read_all()
            .unwrap()
            .into_iter()
            .map(|r| r.error_code)
            .collect();
        assert!(codes.contains(&"DanglingSymlink".to_owned()), "{codes:?}");
        assert!(codes.contains(&"SymlinkLoop".to_owned()), "{codes:?}");
        assert_eq!(stats.snapshot().warnings, codes.len() as u64);
    }
}
