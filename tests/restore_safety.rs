//! A restore never touches anything outside its directory: regression
//! tests for issue 18, each of which failed on the code before its fix.
//!
//! - `--delete` into a target holding a link to an outside directory
//!   (walked, then deleted through, before);
//! - a link swapped in for a directory between the walk and the delete;
//! - a link planted at a partial file's name (written through, then
//!   renamed into place, before);
//! - setuid bits from an object's metadata (restored as asked, before);
//! - keys with `.` segments merging into another key's file, and names too
//!   long to take the partial suffix;
//! - a non-root restore of a read-only file with `--posix-metadata`
//!   (failed on every run, before).

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::fault_proxy::*;
use support::*;

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// Key and error code of every row of the run's failure CSV.
fn rows(summary: &Value) -> Vec<String> {
    let path = summary["failures_csv"]
        .as_str()
        .unwrap_or_else(|| panic!("no failures_csv in {summary}"));
    let mut reader = csv::Reader::from_path(path).unwrap();
    let mut rows: Vec<String> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            format!("{} {}", &r[1], &r[4])
        })
        .collect();
    rows.sort();
    rows
}

/// An outside directory with files whose bytes must survive.
fn outside_tree(root: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let files = vec![
        (root.join("keep-1"), body(91, 1_000)),
        (root.join("sub/keep-2"), body(92, 10)),
        (root.join("sub/deeper/keep-3"), body(93, 0)),
    ];
    for (path, data) in &files {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    files
}

fn assert_intact(files: &[(std::path::PathBuf, Vec<u8>)]) {
    for (path, data) in files {
        let now = std::fs::read(path).unwrap_or_else(|e| panic!("{} is gone: {e}", path.display()));
        assert_eq!(&now, data, "{} changed", path.display());
    }
}

#[tokio::test]
async fn delete_restore_never_deletes_through_a_link_to_an_outside_directory() {
    // GIVEN a restore target holding a link `x` to an outside directory,
    // and a link `y` to an outside file, and a bucket with no `x/…` keys
    let s3 = s3().await;
    let bucket = unique_bucket("safe-del");
    create_bucket(&s3, &bucket).await;
    put(&s3, &bucket, "b.txt", b"from the bucket".to_vec()).await;
    let tmp = tempfile::tempdir().unwrap();
    let (target, outside) = (tmp.path().join("target"), tmp.path().join("outside"));
    let files = outside_tree(&outside);
    std::fs::create_dir_all(&target).unwrap();
    symlink(&outside, target.join("x")).unwrap();
    symlink(outside.join("keep-1"), target.join("y")).unwrap();

    // WHEN it is restored with --delete
    let (code, run) = sync_json(&format!("s3://{bucket}"), &path_arg(&target), &["--delete"]);

    // THEN every outside file is there, byte-equal, the links are kept and
    // reported, and the bucket's key is restored
    assert_intact(&files);
    assert_eq!(code, 3, "warnings only: {run}");
    assert_eq!(count(&run, "deleted"), 0, "{run}");
    assert!(
        std::fs::symlink_metadata(target.join("x"))
            .unwrap()
            .is_symlink()
    );
    assert!(
        std::fs::symlink_metadata(target.join("y"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(target.join("b.txt")).unwrap(),
        b"from the bucket"
    );
    assert_eq!(rows(&run), ["x SymlinkKept", "y SymlinkKept"]);
}

#[tokio::test]
async fn a_link_swapped_in_after_the_walk_is_not_deleted_through() {
    // GIVEN a target whose folder `m/` holds files the bucket does not
    // have, and a bucket listed in pages of five, whose second page the
    // proxy holds back: the merge cannot call `m/…` destination-only
    // before that page arrives, long after the directory was walked
    let s3 = s3().await;
    let bucket = unique_bucket("safe-race");
    create_bucket(&s3, &bucket).await;
    for i in 0..6 {
        put(&s3, &bucket, &format!("a/k{i}"), body(i, 100)).await;
    }
    put(&s3, &bucket, "z", b"last".to_vec()).await;
    let tmp = tempfile::tempdir().unwrap();
    let (target, outside) = (tmp.path().join("target"), tmp.path().join("outside"));
    for i in 0..5 {
        let path = target.join(format!("m/f{i}"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"stale").unwrap();
    }
    std::fs::create_dir_all(&outside).unwrap();
    let files: Vec<_> = (0..5)
        .map(|i| (outside.join(format!("f{i}")), body(200 + i, 64)))
        .collect();
    for (path, data) in &files {
        std::fs::write(path, data).unwrap();
    }
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(
        Rule::on(Op::ListObjectsV2)
            .bucket(&bucket)
            .query_contains("continuation-token")
            .delay(Duration::from_secs(3)),
    );

    // WHEN the restore runs with --delete, and while the second page is
    // held, `m` is swapped for a link to the outside directory
    let child = cli()
        .args([
            "sync",
            &format!("s3://{bucket}"),
            &path_arg(&target),
            "--endpoint-url",
            proxy.endpoint(),
            "--delete",
            "--json",
            "--list-concurrency",
            "1",
            "--list-page-size",
            "5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !proxy
        .requests()
        .iter()
        .any(|r| r.op == Op::ListObjectsV2 && r.query.contains("continuation-token"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no second page asked for"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::rename(target.join("m"), tmp.path().join("m-moved")).unwrap();
    symlink(&outside, target.join("m")).unwrap();
    let output = child.wait_with_output().unwrap();
    let run: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));

    // THEN the deletes failed at the link and the outside files are intact
    assert_intact(&files);
    assert_eq!(output.status.code(), Some(1), "{run}");
    let rows = rows(&run);
    for i in 0..5 {
        assert!(rows.contains(&format!("m/f{i} UnsafePath")), "{rows:?}");
    }
    assert_eq!(count(&run, "deleted"), 0, "{run}");
}

#[tokio::test]
async fn a_link_planted_at_a_partial_name_is_replaced_not_written_through() {
    // GIVEN links planted at `a.txt`'s partial name and at `b.txt` itself,
    // both to outside files
    let s3 = s3().await;
    let bucket = unique_bucket("safe-partial");
    create_bucket(&s3, &bucket).await;
    let (a, b) = (body(1, 5_000), body(2, 300));
    put(&s3, &bucket, "a.txt", a.clone()).await;
    put(&s3, &bucket, "d/b.txt", b.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let (target, outside) = (tmp.path().join("target"), tmp.path().join("outside"));
    let files = outside_tree(&outside);
    std::fs::create_dir_all(target.join("d")).unwrap();
    symlink(
        outside.join("keep-1"),
        target.join(".a.txt.s3-fanout-partial"),
    )
    .unwrap();
    symlink(outside.join("sub/keep-2"), target.join("d/b.txt")).unwrap();

    // WHEN the bucket is restored
    let (code, run) = sync_json(&format!("s3://{bucket}"), &path_arg(&target), &[]);

    // THEN the outside files are unchanged, and each key is a regular
    // file holding the object's bytes
    assert_eq!(code, 0, "{run}");
    assert_intact(&files);
    for (name, data) in [("a.txt", &a), ("d/b.txt", &b)] {
        let meta = std::fs::symlink_metadata(target.join(name)).unwrap();
        assert!(meta.is_file(), "{name} is a regular file");
        assert_eq!(&std::fs::read(target.join(name)).unwrap(), data);
    }
    assert!(!target.join(".a.txt.s3-fanout-partial").exists());
}

#[tokio::test]
async fn partial_files_are_private_while_a_restore_with_attributes_runs() {
    // GIVEN an object restored with --posix-metadata to mode 0600, and a
    // GET the proxy holds, so the partial file exists for a while
    let s3 = s3().await;
    let bucket = unique_bucket("safe-mode");
    create_bucket(&s3, &bucket).await;
    let extras = PutExtras {
        metadata: vec![("mode".into(), (0o100600).to_string())],
        ..PutExtras::default()
    };
    put_with(&s3, &bucket, "secret", body(3, 100), extras).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(
        Rule::on(Op::GetObject)
            .key("secret")
            .delay(Duration::from_secs(2)),
    );
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    let mut child = cli()
        .args([
            "sync",
            &format!("s3://{bucket}"),
            &path_arg(&target),
            "--endpoint-url",
            proxy.endpoint(),
            "--posix-metadata",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // WHEN the partial file appears
    let partial = target.join(".secret.s3-fanout-partial");
    let started = Instant::now();
    while !partial.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no partial file"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // THEN only its owner may read it, and so the finished file
    let mode = std::fs::metadata(&partial).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "partial file mode {mode:o}");
    assert!(child.wait().unwrap().success());
    assert_eq!(
        std::fs::metadata(target.join("secret")).unwrap().mode() & 0o7777,
        0o600
    );
}

/// An object's stored attributes, as an upload with --posix-metadata
/// writes them (s3fs's names).
fn stored_attributes(mode: u32, owner: u32, mtime: i64) -> PutExtras {
    PutExtras {
        metadata: vec![
            ("mode".into(), mode.to_string()),
            ("uid".into(), owner.to_string()),
            ("gid".into(), owner.to_string()),
            ("mtime".into(), mtime.to_string()),
        ],
        ..PutExtras::default()
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test]
async fn setuid_bits_from_metadata_are_masked_unless_asked_for_with_an_owner() {
    if !is_root() {
        eprintln!("SKIPPED: restoring owners and setuid bits needs root (CI runs as root)");
        return;
    }
    // GIVEN an object whose stored attributes ask for a setuid-root file
    let s3 = s3().await;
    let bucket = unique_bucket("safe-suid");
    create_bucket(&s3, &bucket).await;
    let extras = stored_attributes(0o104755, 0, 1_600_000_000);
    put_with(
        &s3,
        &bucket,
        "tool",
        b"#!/bin/sh\necho owned\n".to_vec(),
        extras,
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();

    // WHEN it is restored as root with --posix-metadata
    let plain = tmp.path().join("plain");
    let (code, run) = sync_json(
        &format!("s3://{bucket}"),
        &path_arg(&plain),
        &["--posix-metadata"],
    );

    // THEN the special bits are masked, with a warning row
    assert_eq!(code, 3, "{run}");
    let mode = std::fs::metadata(plain.join("tool")).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o755, "{mode:o}");
    assert_eq!(rows(&run), ["tool PartialCopy"]);

    // AND with --posix-special-bits, whose owner is restored, they are kept
    let kept = tmp.path().join("kept");
    let (code, run) = sync_json(
        &format!("s3://{bucket}"),
        &path_arg(&kept),
        &["--posix-metadata", "--posix-special-bits"],
    );
    assert_eq!(code, 0, "{run}");
    let meta = std::fs::metadata(kept.join("tool")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o4755, "{:o}", meta.mode());
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
}

#[tokio::test]
async fn keys_with_dot_segments_are_refused_never_merged() {
    // GIVEN `p/q` and keys that a path library would fold onto it, a
    // 250-byte name (too long to take the partial suffix as it is) and a
    // 256-byte one (too long for any file name)
    let s3 = s3().await;
    let bucket = unique_bucket("safe-keys");
    create_bucket(&s3, &bucket).await;
    let (long, too_long) = ("n".repeat(250), "o".repeat(256));
    let exact = body(7, 4_000);
    put(&s3, &bucket, "p/q", exact.clone()).await;
    for (i, key) in ["p/./q", "p/../q", "p//q", too_long.as_str()]
        .iter()
        .enumerate()
    {
        put(&s3, &bucket, key, body(100 + i as u64, 4_000)).await;
    }
    put(&s3, &bucket, &format!("d/{long}"), b"long".to_vec()).await;
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");

    // WHEN the bucket is restored
    let (code, run) = sync_json(&format!("s3://{bucket}"), &path_arg(&target), &[]);

    // THEN `p/q` holds its own bytes, the long name is restored through a
    // hashed partial, and the rest are refused as UnsafeKey rows
    assert_eq!(code, 1, "{run}");
    assert_eq!(std::fs::read(target.join("p/q")).unwrap(), exact);
    assert_eq!(
        std::fs::read(target.join("d").join(&long)).unwrap(),
        b"long"
    );
    let mut expected: Vec<String> = ["p/./q", "p/../q", "p//q", too_long.as_str()]
        .iter()
        .map(|k| format!("{k} UnsafeKey"))
        .collect();
    expected.sort();
    assert_eq!(rows(&run), expected);
    assert_eq!(count(&run, "copied"), 2, "{run}");
    let left: Vec<_> = std::fs::read_dir(target.join("p")).unwrap().collect();
    assert_eq!(left.len(), 1, "only p/q below p/");
}

#[tokio::test]
async fn a_non_root_restore_of_a_read_only_file_with_attributes_succeeds() {
    if !is_root() {
        eprintln!("SKIPPED: dropping to another user needs root (CI runs as root)");
        return;
    }
    // GIVEN a read-only file's object, with root's stored owner
    let s3 = s3().await;
    let bucket = unique_bucket("safe-ro");
    create_bucket(&s3, &bucket).await;
    let extras = stored_attributes(0o100444, 0, 1_500_000_000);
    put_with(&s3, &bucket, "ro/readme", body(5, 321), extras).await;

    // AND the CLI copied where user `nobody` can run it, and a home, a
    // temp folder and a target that user owns
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = tmp.path().join("s3-fanout");
    std::fs::copy(env!("CARGO_BIN_EXE_s3-fanout"), &bin).unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join("tmp")).unwrap();
    const NOBODY: u32 = 65534;
    for path in [home.as_path(), &home.join("tmp")] {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let target = home.join("target");
    let run_as_nobody = || {
        let model = cli();
        let mut command = Command::new(&bin);
        for (name, value) in model.get_envs() {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let output = command
            .env("HOME", &home)
            .env("TMPDIR", home.join("tmp"))
            .args([
                "sync",
                &format!("s3://{bucket}"),
                &path_arg(&target),
                "--endpoint-url",
                &moto().endpoint,
                "--posix-metadata",
                "--json",
            ])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let run: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
        (output.status.code(), run)
    };

    // WHEN user `nobody` restores it, twice
    let (code, first) = run_as_nobody();
    let (again, second) = run_as_nobody();

    // THEN both runs succeed: the file is read-only, has its stored time,
    // is nobody's own, and the second run finds it equal
    assert_eq!(code, Some(0), "{first}");
    let meta = std::fs::metadata(target.join("ro/readme")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o444, "{:o}", meta.mode());
    assert_eq!(meta.mtime(), 1_500_000_000);
    assert_eq!(meta.uid(), NOBODY);
    assert_eq!(again, Some(0), "{second}");
    assert_eq!(count(&second, "copied"), 0, "{second}");
}
