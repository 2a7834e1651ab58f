//! A local directory as one side of a sync: uploads (`sync ./dir s3://…`)
//! and restores (`sync s3://… ./dir`) against moto, byte for byte, with
//! awkward names, empty files and multipart-sized files; the diff modes;
//! POSIX metadata; `--delete` both ways; keys that cannot be files; files
//! that cannot be objects; and interrupted transfers that converge.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::Client;
use serde_json::Value;
use support::fault_proxy::*;
use support::*;

const MIB: usize = 1024 * 1024;

/// Awkward names, folders, empty files and two multipart-sized files (over
/// the 8 MiB client-side threshold: 2 parts each, so `-2` ETags).
fn seed_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("plain.txt".into(), body(1, 100)),
        ("with space/and+plus%41.csv".into(), body(2, 2_000)),
        ("ünïcödé/日本語.json".into(), body(3, 777)),
        ("empty".into(), Vec::new()),
        ("dir/empty-too".into(), Vec::new()),
        ("a-b".into(), body(4, 10)),
        ("a/x".into(), body(5, 10)),
        ("deep/1/2/3/4/5/6/7/8/9/leaf".into(), body(6, 33)),
        ("big/one.bin".into(), body(7, 9 * MIB + 123)),
        ("big/two.bin".into(), body(8, 16 * MIB)),
    ];
    for i in 0..40 {
        files.push((
            format!("many/file-{i:03}.dat"),
            body(100 + i, 500 + i as usize),
        ));
    }
    for (name, data) in &files {
        write(root, name, data);
    }
    files
}

fn write(root: &Path, name: &str, data: &[u8]) {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn sync(src: &str, dst: &str, extra: &[&str]) -> (i32, Value) {
    sync_json(src, dst, extra)
}

/// Key and error code of every row of the run's failure CSV.
fn rows(summary: &Value) -> Vec<String> {
    let path = summary["failures_csv"]
        .as_str()
        .unwrap_or_else(|| panic!("no failures_csv in {summary}"));
    let mut reader = csv::Reader::from_path(path).unwrap();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            format!("{} {}", &r[1], &r[4])
        })
        .collect()
}

fn requests(summary: &Value, op: &str) -> u64 {
    summary["requests"][op].as_u64().unwrap_or(0)
}

/// Every file below `root` (not partial downloads), with its bytes.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if !path.to_string_lossy().ends_with(".s3-fanout-partial") {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out.sort();
    out
}

async fn bucket_tree(s3: &Client, bucket: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for listed in list_all(s3, bucket, prefix).await {
        let name = listed.key.strip_prefix(prefix).unwrap().to_owned();
        out.push((name, get_bytes(s3, bucket, &listed.key).await));
    }
    out.sort();
    out
}

fn sorted(mut files: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    files.sort();
    files
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn a_tree_uploads_and_restores_byte_for_byte_and_reruns_change_nothing() {
    // GIVEN a tree with awkward names, empty files and multipart-sized files
    let s3 = s3().await;
    let bucket = unique_bucket("local-rt");
    create_bucket(&s3, &bucket).await;
    let local = tempfile::tempdir().unwrap();
    let files = seed_tree(local.path());
    std::fs::set_permissions(
        local.path().join("plain.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let url = format!("s3://{bucket}/backup");

    // WHEN it is uploaded with its POSIX attributes
    let (code, up) = sync(&path_arg(local.path()), &url, &["--posix-metadata"]);

    // THEN every file is an object with the same bytes, verified
    assert_eq!(code, 0, "{up}");
    assert_eq!(count(&up, "copied"), files.len() as u64);
    assert_eq!(count(&up, "verify_mismatched"), 0);
    assert_eq!(count(&up, "verify_checked"), files.len() as u64);
    assert_eq!(
        bucket_tree(&s3, &bucket, "backup/").await,
        sorted(files.clone())
    );
    // AND the big files went up in 8 MiB parts, so their ETags are `-2`
    let big = head(&s3, &bucket, "backup/big/two.bin").await;
    assert!(big.e_tag().unwrap().ends_with("-2\""), "{:?}", big.e_tag());
    // AND the attributes are user metadata, as s3fs keeps them
    let plain = head(&s3, &bucket, "backup/plain.txt").await;
    let meta = plain.metadata().unwrap();
    let stat = std::fs::metadata(local.path().join("plain.txt")).unwrap();
    assert_eq!(meta["mode"], stat.mode().to_string());
    assert_eq!(meta["uid"], stat.uid().to_string());
    assert_eq!(meta["mtime"], stat.mtime().to_string());
    assert_eq!(plain.content_type(), Some("text/plain"));
    assert_eq!(list_multipart_uploads(&s3, &bucket).await, 0);

    // WHEN it is uploaded again, in each diff mode
    for mode in ["etag", "size", "mtime"] {
        let (code, again) = sync(&path_arg(local.path()), &url, &["--mode", mode]);
        // THEN nothing is written
        assert_eq!(code, 0, "{mode}: {again}");
        assert_eq!(count(&again, "skip_equal"), files.len() as u64, "{mode}");
        for op in ["PutObject", "UploadPart", "CreateMultipartUpload"] {
            assert_eq!(requests(&again, op), 0, "{mode}: {op}");
        }
    }

    // WHEN the bucket is restored into a new directory
    let restore = tempfile::tempdir().unwrap();
    let target = restore.path().join("restored");
    let (code, down) = sync(&url, &path_arg(&target), &["--posix-metadata"]);

    // THEN the files are the same bytes, with their mode and mtime back
    assert_eq!(code, 0, "{down}");
    assert_eq!(count(&down, "copied"), files.len() as u64);
    assert_eq!(tree(&target), sorted(files.clone()));
    let restored = std::fs::metadata(target.join("plain.txt")).unwrap();
    assert_eq!(restored.mode() & 0o7777, 0o640);
    assert_eq!(restored.mtime(), stat.mtime());

    // AND restoring again (size and ETag modes) downloads nothing
    for mode in ["etag", "size"] {
        let (code, again) = sync(&url, &path_arg(&target), &["--mode", mode]);
        assert_eq!(code, 0, "{mode}: {again}");
        assert_eq!(count(&again, "skip_equal"), files.len() as u64, "{mode}");
        assert_eq!(requests(&again, "GetObject"), 0, "{mode}");
    }
    // AND without --posix-metadata a file gets its object's time, so the
    // mtime mode finds nothing to do on the next restore either
    let plain_restore = restore.path().join("plain");
    assert_eq!(sync(&url, &path_arg(&plain_restore), &[]).0, 0);
    let (code, again) = sync(&url, &path_arg(&plain_restore), &["--mode", "mtime"]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(requests(&again, "GetObject"), 0);
}

#[tokio::test]
async fn each_diff_mode_sees_what_it_compares() {
    // GIVEN an uploaded tree
    let s3 = s3().await;
    let bucket = unique_bucket("local-modes");
    create_bucket(&s3, &bucket).await;
    let local = tempfile::tempdir().unwrap();
    seed_tree(local.path());
    let (src, url) = (path_arg(local.path()), format!("s3://{bucket}"));
    assert_eq!(sync(&src, &url, &[]).0, 0);

    // WHEN a small file and a multipart one change without changing size,
    // with their old times put back (a change only contents can show)
    rewrite_same_size_same_mtime(local.path(), "plain.txt");
    rewrite_same_size_same_mtime(local.path(), "big/two.bin");

    // THEN size and mtime modes see nothing, and the ETag mode both
    for mode in ["size", "mtime"] {
        let (code, run) = sync(&src, &url, &["--mode", mode, "--dry-run"]);
        assert_eq!((code, count(&run, "plan_update")), (0, 0), "{mode}: {run}");
    }
    let (code, run) = sync(&src, &url, &["--mode", "etag"]);
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "updated"), 2, "{run}");

    // WHEN a file is touched (newer, same bytes) and another grows
    let touched = local.path().join("a-b");
    let file = std::fs::File::options().write(true).open(&touched).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    write(local.path(), "a/x", &body(55, 11));
    // THEN mtime mode sends both, size mode only the grown one
    let (_, run) = sync(&src, &url, &["--mode", "size", "--dry-run"]);
    assert_eq!(count(&run, "plan_update"), 1, "{run}");
    let (_, run) = sync(&src, &url, &["--mode", "mtime", "--dry-run"]);
    assert_eq!(count(&run, "plan_update"), 2, "{run}");
    let (_, run) = sync(&src, &url, &["--mode", "etag", "--dry-run"]);
    assert_eq!(count(&run, "plan_update"), 1, "{run}");
}

#[tokio::test]
async fn objects_another_tool_uploaded_in_5mib_parts_compare_equal_to_their_files() {
    // GIVEN a bucket with objects uploaded in 5 MiB parts (rclone's size)
    // and in one PUT, and a restore of it
    let s3 = s3().await;
    let bucket = unique_bucket("local-layout");
    create_bucket(&s3, &bucket).await;
    let etag = put_multipart(&s3, &bucket, "parts/five.bin", 12 * MIB, 5 * MIB).await;
    assert!(etag.ends_with("-3\""));
    put(&s3, &bucket, "single.bin", body(9, 9 * MIB)).await;
    let restore = tempfile::tempdir().unwrap();
    let url = format!("s3://{bucket}");
    assert_eq!(sync(&url, &path_arg(restore.path()), &[]).0, 0);

    // WHEN the directory is synced back up in ETag mode
    let (code, run) = sync(&path_arg(restore.path()), &url, &[]);

    // THEN the files' ETags, computed with the layouts the objects have
    // (inferred from `-3`), match: nothing is uploaded, nothing unverified
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "skip_equal"), 2, "{run}");
    assert_eq!(count(&run, "skip_unverified"), 0);
    assert_eq!(
        requests(&run, "PutObject") + requests(&run, "UploadPart"),
        0
    );
}

#[tokio::test]
async fn delete_mirrors_removals_both_ways() {
    // GIVEN a tree uploaded, and restored
    let s3 = s3().await;
    let bucket = unique_bucket("local-delete");
    create_bucket(&s3, &bucket).await;
    let local = tempfile::tempdir().unwrap();
    let files = seed_tree(local.path());
    let (src, url) = (path_arg(local.path()), format!("s3://{bucket}/p"));
    assert_eq!(sync(&src, &url, &[]).0, 0);
    let restore = tempfile::tempdir().unwrap();
    let restored = path_arg(restore.path());
    assert_eq!(sync(&url, &restored, &[]).0, 0);

    // WHEN files are removed locally (a whole folder among them) and the
    // upload runs with --delete
    std::fs::remove_dir_all(local.path().join("many")).unwrap();
    std::fs::remove_file(local.path().join("empty")).unwrap();
    let (code, run) = sync(&src, &url, &["--delete"]);

    // THEN the bucket loses exactly those objects
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "deleted"), 41);
    let left: Vec<_> = files
        .iter()
        .filter(|(n, _)| !n.starts_with("many/") && n != "empty")
        .cloned()
        .collect();
    assert_eq!(bucket_tree(&s3, &bucket, "p/").await, sorted(left.clone()));

    // WHEN the restore runs again with --delete
    let (code, run) = sync(&url, &restored, &["--delete"]);

    // THEN the files go, and the folder they emptied with them
    assert_eq!(code, 0, "{run}");
    assert_eq!(count(&run, "deleted"), 41);
    assert_eq!(tree(restore.path()), sorted(left));
    assert!(!restore.path().join("many").exists());
}

#[tokio::test]
async fn keys_that_cannot_be_files_are_reported_and_nothing_escapes_the_directory() {
    // GIVEN keys a restore cannot write as files below its directory, a
    // folder marker, and a normal key
    let s3 = s3().await;
    let bucket = unique_bucket("local-unsafe");
    create_bucket(&s3, &bucket).await;
    for key in ["../escape", "a/../../up", "double//slash", "folder/"] {
        put(&s3, &bucket, key, b"x".to_vec()).await;
    }
    put(&s3, &bucket, "fine.txt", b"ok".to_vec()).await;
    let parent = tempfile::tempdir().unwrap();
    let target = parent.path().join("restore");

    // WHEN it is restored
    let (code, run) = sync(&format!("s3://{bucket}"), &path_arg(&target), &[]);

    // THEN the normal key is a file, the folder marker is skipped as one,
    // the others are failures in the report, and nothing was written
    // outside the directory
    assert_eq!(code, 1, "{run}");
    assert_eq!(count(&run, "copied"), 1);
    assert_eq!(count(&run, "skip_folder_markers"), 1);
    assert_eq!(count(&run, "failed"), 3);
    let rows = rows(&run);
    for key in ["../escape", "a/../../up", "double//slash"] {
        assert!(rows.contains(&format!("{key} UnsafeKey")), "{rows:?}");
    }
    assert_eq!(tree(&target), vec![("fine.txt".to_owned(), b"ok".to_vec())]);
    assert_eq!(
        std::fs::read_dir(parent.path()).unwrap().count(),
        1,
        "only the restore directory"
    );
}

#[tokio::test]
async fn files_that_cannot_be_objects_are_reported_not_dropped() {
    // GIVEN a directory with a FIFO, a dangling link and a name that is
    // not UTF-8 beside normal files
    let s3 = s3().await;
    let bucket = unique_bucket("local-odd");
    create_bucket(&s3, &bucket).await;
    let local = tempfile::tempdir().unwrap();
    write(local.path(), "ok.txt", b"fine");
    let fifo = local.path().join("pipe");
    let fifo_c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink(local.path().join("gone"), local.path().join("dangling")).unwrap();
    let url = format!("s3://{bucket}");

    // WHEN it is uploaded
    let (code, run) = sync(&path_arg(local.path()), &url, &[]);
    // THEN the file is uploaded and the others are warnings (exit 3),
    // each reported once although the verification walks the tree again
    assert_eq!(code, 3, "{run}");
    assert_eq!(count(&run, "copied"), 1);
    assert_eq!(count(&run, "warnings"), 2);
    assert_eq!(
        sorted_strings(rows(&run)),
        ["dangling DanglingSymlink", "pipe NotARegularFile"]
    );

    // WHEN a file's name is not UTF-8
    let bad = std::ffi::OsStr::from_encoded_bytes_unchecked_safe(b"caf\xe9.txt");
    std::fs::write(local.path().join(bad), b"latin-1").unwrap();
    let (code, run) = sync(&path_arg(local.path()), &url, &[]);
    // THEN it is a failure in the report, never silently left out
    assert_eq!(code, 1, "{run}");
    let rows = rows(&run);
    assert!(
        rows.contains(&"caf\u{FFFD}.txt InvalidFileName".to_owned()),
        "{rows:?}"
    );
}

/// `OsStr::from_encoded_bytes_unchecked` is unsafe only because the bytes
/// might not be a valid platform encoding; on Unix any bytes are.
trait FromBytes {
    fn from_encoded_bytes_unchecked_safe(bytes: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytes for std::ffi::OsStr {
    fn from_encoded_bytes_unchecked_safe(bytes: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(bytes)
    }
}

#[tokio::test]
async fn an_interrupted_upload_and_restore_converge_on_rerun() {
    // GIVEN a tree, and a proxy that makes each part upload and each
    // ranged download take a second
    let s3 = s3().await;
    let bucket = unique_bucket("local-kill");
    create_bucket(&s3, &bucket).await;
    let local = tempfile::tempdir().unwrap();
    let files = seed_tree(local.path());
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(Rule::on(Op::UploadPart).delay(Duration::from_secs(1)));
    let url = format!("s3://{bucket}");
    let kill_when = |args: Vec<String>, op: Op| {
        let mut child = cli()
            .args(&args)
            .args(["--endpoint-url", proxy.endpoint(), "--concurrency", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            proxy.wait_for(op, 1, Duration::from_secs(30)),
            "never reached {op:?}"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(proxy.wait_idle(Duration::from_secs(10)));
    };

    // WHEN an upload is killed mid multipart upload, then run again
    kill_when(
        vec!["sync".into(), path_arg(local.path()), url.clone()],
        Op::UploadPart,
    );
    assert!(
        list_multipart_uploads(&s3, &bucket).await >= 1,
        "killed mid-upload"
    );
    proxy.clear_rules();
    let (code, run) = sync(&path_arg(local.path()), &url, &[]);

    // THEN it converges: every file there, no upload left open
    assert_eq!(code, 0, "{run}");
    assert_eq!(bucket_tree(&s3, &bucket, "").await, sorted(files.clone()));
    assert_eq!(list_multipart_uploads(&s3, &bucket).await, 0);

    // WHEN a restore is killed mid-download of a big file, then run again
    let restore = tempfile::tempdir().unwrap();
    let target: PathBuf = restore.path().join("r");
    proxy.add_rule(
        Rule::on(Op::GetObject)
            .key("big/two.bin")
            .delay(Duration::from_secs(2)),
    );
    kill_when(
        vec!["sync".into(), url.clone(), path_arg(&target)],
        Op::GetObject,
    );
    proxy.clear_rules();
    assert_ne!(tree(&target), sorted(files.clone()), "killed mid-restore");
    let (code, run) = sync(&url, &path_arg(&target), &[]);

    // THEN it converges, and no partial file is left
    assert_eq!(code, 0, "{run}");
    assert_eq!(tree(&target), sorted(files));
    let partials = walkdir_count(&target, ".s3-fanout-partial");
    assert_eq!(partials, 0);
}

#[tokio::test]
async fn a_restore_keeps_at_most_64_gets_in_flight_whatever_its_concurrency() {
    // GIVEN 400 small objects, listed first, over which the adaptive
    // limit grows past 8 objects at once; then 12 objects of 40 MiB,
    // eight 5 MiB ranges each, whose GETs the proxy holds half a second:
    // at --concurrency 256 and 8 ranges an object, all 96 could be out at
    // once
    let s3 = s3().await;
    let bucket = unique_bucket("local-gets");
    create_bucket(&s3, &bucket).await;
    let mut files = Vec::new();
    for i in 0..400u64 {
        let (key, data) = (format!("a/{i:03}.bin"), body(i, 64));
        put(&s3, &bucket, &key, data.clone()).await;
        files.push((key, data));
    }
    let proxy = FaultProxy::start(&moto().endpoint);
    for i in 0..12u64 {
        let (key, data) = (format!("z/{i:03}.bin"), body(i, 40 * MIB));
        put(&s3, &bucket, &key, data.clone()).await;
        proxy.add_rule(
            Rule::on(Op::GetObject)
                .key(&key)
                .delay(Duration::from_millis(500)),
        );
        files.push((key, data));
    }
    let restore = tempfile::tempdir().unwrap();
    let target = restore.path().join("r");

    // WHEN it restores at the highest concurrency
    let out = cli()
        .args(["sync", &format!("s3://{bucket}"), &path_arg(&target)])
        .args(["--endpoint-url", proxy.endpoint(), "--concurrency", "256"])
        .args(["--multipart-threshold", "5MiB", "--part-size", "5MiB"])
        .args(["--part-concurrency", "8"])
        .output()
        .unwrap();

    // THEN every file is there, and no more than 64 GETs were ever out at
    // once: each holds a connection's read buffer and a write buffer, and
    // a 5 GiB tree of large files peaked at 216 MiB without the bound
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(tree(&target), sorted(files));
    assert_eq!(proxy.count_op(Op::GetObject), 400 + 96);
    let peak = proxy.peak_in_flight();
    assert!(
        (2..=64 + 2).contains(&peak),
        "{peak} requests in flight at once"
    );
}

fn sorted_strings(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn walkdir_count(dir: &Path, suffix: &str) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            n += walkdir_count(&path, suffix);
        } else if path.to_string_lossy().ends_with(suffix) {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn an_upload_and_a_restore_under_random_faults_end_byte_for_byte_equal() {
    // GIVEN a tree, and a server behind random 503s and responses cut off
    // halfway (a restore's bodies break off mid-file)
    let s3 = s3().await;
    let bucket = unique_bucket("local-faults");
    create_bucket(&s3, &bucket).await;
    let local = tempfile::tempdir().unwrap();
    let files = seed_tree(local.path());
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_random_faults(&bucket, 0xD15C);
    let url = format!("s3://{bucket}");
    let through_faults = |src: &str, dst: &str| {
        let args = [
            "sync",
            src,
            dst,
            "--endpoint-url",
            proxy.endpoint(),
            "--json",
            "--retry-mode",
            "standard",
        ];
        let out = run_cli(&args);
        let summary: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr));
        (out.status, summary)
    };

    // WHEN it is uploaded, then restored, both through the faults
    let (code, up) = through_faults(&path_arg(local.path()), &url);
    assert_eq!(code, 0, "{up}");
    let restore = tempfile::tempdir().unwrap();
    let (code, down) = through_faults(&url, &path_arg(restore.path()));

    // THEN both end equal, byte for byte, having retried what failed
    assert_eq!(code, 0, "{down}");
    assert!(proxy.faults_injected() > 0);
    assert!(count(&up, "retries") + count(&down, "retries") > 0);
    assert_eq!(bucket_tree(&s3, &bucket, "").await, sorted(files.clone()));
    assert_eq!(tree(restore.path()), sorted(files));
    assert_eq!(walkdir_count(restore.path(), ".s3-fanout-partial"), 0);
    assert_eq!(list_multipart_uploads(&s3, &bucket).await, 0);
}

/// Rewrite `name` with other bytes of the same size and put its mtime
/// back: what s5cmd's and rclone's size-and-time comparison cannot see.
fn rewrite_same_size_same_mtime(root: &Path, name: &str) {
    let path = root.join(name);
    let before = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut data = std::fs::read(&path).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xFF;
    std::fs::write(&path, data).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(before).unwrap();
}

/// Long enough for every file written in `dir` before it to be settled: a
/// digest is only remembered for a file whose times are that old when read
/// (a tenth of a second on a local ext4 or tmpfs, else 2 s).
fn let_files_settle(dir: &Path) {
    use s3_fanout::backend::local::digests::{file_system_of, settle_time};
    let probe = dir.join(".settle-probe");
    std::fs::write(&probe, b"").unwrap();
    let meta = std::fs::metadata(&probe).unwrap();
    std::fs::remove_file(&probe).unwrap();
    let ctime_ns = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
    std::thread::sleep(settle_time(file_system_of(dir), ctime_ns) + Duration::from_millis(50));
}

#[tokio::test]
async fn unchanged_files_are_not_read_again_and_a_same_size_rewrite_with_its_mtime_put_back_is() {
    // GIVEN a tree uploaded, its files settled, and one re-sync that read
    // every file to compare its ETag (the upload's verification had the
    // HEADs of what it wrote)
    let s3 = s3().await;
    let bucket = unique_bucket("local-digests");
    create_bucket(&s3, &bucket).await;
    let local = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let files = seed_tree(local.path());
    let n = files.len() as u64;
    let_files_settle(local.path());
    let (src, url) = (path_arg(local.path()), format!("s3://{bucket}/up"));
    let state_arg = ["--state", state.path().to_str().unwrap()];
    assert_eq!(sync(&src, &url, &state_arg).0, 0);
    let (code, first) = sync(&src, &url, &state_arg);
    assert_eq!(code, 0, "{first}");
    assert_eq!(count(&first, "skip_equal"), n, "{first}");
    assert_eq!(
        count(&first, "file_etags_read") + count(&first, "file_etags_remembered"),
        n,
        "{first}"
    );
    assert!(state.path().join("file-digests.zst").exists());

    // WHEN it is re-synced again
    let (code, again) = sync(&src, &url, &state_arg);

    // THEN no file is read: each is known unchanged by its stat
    assert_eq!(code, 0, "{again}");
    assert_eq!(count(&again, "skip_equal"), n, "{again}");
    assert_eq!(count(&again, "file_etags_read"), 0, "{again}");
    assert_eq!(count(&again, "file_etags_remembered"), n, "{again}");

    // WHEN a small and a multipart file are rewritten with the same size
    // and their old mtimes put back
    rewrite_same_size_same_mtime(local.path(), "plain.txt");
    rewrite_same_size_same_mtime(local.path(), "big/two.bin");
    let_files_settle(local.path());
    let (code, changed) = sync(&src, &url, &state_arg);

    // THEN their ctimes give them away: they are read, found different and
    // uploaded, and the bucket holds their new bytes
    assert_eq!(code, 0, "{changed}");
    assert_eq!(count(&changed, "file_etags_read"), 2, "{changed}");
    assert_eq!(count(&changed, "updated"), 2, "{changed}");
    assert_eq!(count(&changed, "verify_mismatched"), 0, "{changed}");
    assert_eq!(bucket_tree(&s3, &bucket, "up/").await, tree(local.path()));

    // AND their new digests were remembered: the next run reads nothing
    // (a file read moments after its write is not remembered, as a write
    // in the same clock tick as a stat leaves the stat unchanged: see the
    // unit tests of `digests`)
    let (_, next) = sync(&src, &url, &state_arg);
    assert_eq!(count(&next, "file_etags_read"), 0, "{next}");

    // WHEN the store is damaged
    let store = state.path().join("file-digests.zst");
    let mut bytes = std::fs::read(&store).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&store, bytes).unwrap();
    rewrite_same_size_same_mtime(local.path(), "a-b");
    let (code, damaged) = sync(&src, &url, &state_arg);
    // THEN the run reads every file instead, and misses no change
    assert_eq!(code, 0, "{damaged}");
    assert_eq!(count(&damaged, "file_etags_read"), n, "{damaged}");
    assert_eq!(count(&damaged, "updated"), 1, "{damaged}");
    assert_eq!(bucket_tree(&s3, &bucket, "up/").await, tree(local.path()));
}

/// A bucket holding [`seed_tree`], and an empty directory to restore it
/// into, with a state directory of its own (so digests are remembered).
struct RestoreBed {
    url: String,
    files: Vec<(String, Vec<u8>)>,
    restore: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl RestoreBed {
    async fn new(name: &str) -> RestoreBed {
        let s3 = s3().await;
        let bucket = unique_bucket(name);
        create_bucket(&s3, &bucket).await;
        let seed = tempfile::tempdir().unwrap();
        let files = seed_tree(seed.path());
        let url = format!("s3://{bucket}");
        assert_eq!(sync(&path_arg(seed.path()), &url, &["--no-state"]).0, 0);
        RestoreBed {
            url,
            files,
            restore: tempfile::tempdir().unwrap(),
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// `s3-fanout sync` from the bucket into the directory.
    fn run(&self) -> (i32, Value) {
        let state_arg = ["--state", self.state.path().to_str().unwrap()];
        sync(&self.url, &path_arg(self.restore.path()), &state_arg)
    }
}

#[tokio::test]
async fn a_restore_run_again_at_once_reads_no_file_its_verification_read() {
    use s3_fanout::backend::local::digests::file_system_of;
    // GIVEN a bucket, restored into a directory on a local file system
    // with fine times (ext4, tmpfs), whose verification reads each file
    // moments after writing it
    let bed = RestoreBed::new("restore-again").await;
    let (files, restore) = (bed.files.clone(), bed.restore.path());
    // ext4, XFS, Btrfs or tmpfs, as on every machine this runs on in CI
    let fine = matches!(
        file_system_of(restore),
        Some(0xEF53 | 0x5846_5342 | 0x9123_683E | 0x0102_1994)
    );
    let (code, restored) = bed.run();
    assert_eq!(code, 0, "{restored}");
    assert_eq!(
        count(&restored, "file_etags_read"),
        files.len() as u64,
        "{restored}"
    );

    // WHEN it is run again straight away
    let (code, again) = bed.run();

    // THEN nothing is downloaded, and on such a file system no file is
    // read: the verification waited the tenth of a second until each file
    // it read had settled, and kept its digest (elsewhere files are kept
    // only once 2 s old)
    assert_eq!(code, 0, "{again}");
    assert_eq!(requests(&again, "GetObject"), 0, "{again}");
    if fine {
        assert_eq!(count(&again, "file_etags_read"), 0, "{again}");
    }
    assert_eq!(tree(restore), sorted(files));
}

#[tokio::test]
async fn a_restore_target_edited_in_place_with_its_mtime_put_back_is_downloaded_again() {
    // GIVEN a bucket restored into a directory, settled, and re-synced
    // until its files' digests are remembered
    let bed = RestoreBed::new("restore-digests").await;
    let (files, restore) = (bed.files.clone(), bed.restore.path());
    assert_eq!(bed.run().0, 0);
    let_files_settle(restore);
    assert_eq!(bed.run().0, 0);
    let (code, again) = bed.run();
    assert_eq!(code, 0, "{again}");
    assert_eq!(count(&again, "file_etags_read"), 0, "{again}");
    assert_eq!(requests(&again, "GetObject"), 0, "{again}");

    // WHEN a restored file is edited in place, same size, old mtime back
    rewrite_same_size_same_mtime(restore, "many/file-007.dat");
    let (code, repaired) = bed.run();

    // THEN it is read, found different and downloaded again
    assert_eq!(code, 0, "{repaired}");
    assert_eq!(count(&repaired, "file_etags_read"), 1, "{repaired}");
    assert_eq!(count(&repaired, "updated"), 1, "{repaired}");
    assert_eq!(tree(restore), sorted(files));
}
