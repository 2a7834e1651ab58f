//! `s3-fanout export` and `s3-fanout import` against a real S3 API (moto on
//! loopback), through the real binary: archives round-trip every byte,
//! header, tag and ETag; deltas converge; a second import writes nothing;
//! damaged archives are refused before any write; a killed import converges
//! when run again.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::Client;
use serde_json::Value;
use support::fault_proxy::{FaultProxy, Op, Rule};
use support::*;

const MIB: usize = 1024 * 1024;

/// Run `s3-fanout <command> ... --endpoint-url <endpoint> --json`; the exit
/// code, the JSON summary (Null when there is none) and stderr.
fn run_json(endpoint: &str, args: &[&str]) -> (i32, Value, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--endpoint-url", endpoint, "--json"]);
    let out = run_cli(&all);
    let summary = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out.status, summary, out.stderr)
}

fn export(args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    run_json(&moto().endpoint, &all)
}

fn import(args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    run_json(&moto().endpoint, &all)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Operations that write to a bucket.
const WRITES: &[&str] = &[
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "PutObjectTagging",
    "DeleteObject",
    "DeleteObjects",
];

fn writes(summary: &Value) -> Vec<String> {
    summary["requests"]
        .as_object()
        .unwrap_or_else(|| panic!("no requests in {summary}"))
        .keys()
        .filter(|op| WRITES.contains(&op.as_str()))
        .cloned()
        .collect()
}

/// Everything S3 keeps of one object that an archive must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    key: String,
    size: u64,
    etag: String,
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    metadata: BTreeMap<String, String>,
    tags: Vec<(String, String)>,
}

/// Every object of `bucket` as [`Stored`], and its bytes by key.
async fn stored(s3: &Client, bucket: &str) -> (Vec<Stored>, BTreeMap<String, Vec<u8>>) {
    let mut objects = Vec::new();
    let mut bodies = BTreeMap::new();
    for listed in list_all(s3, bucket, "").await {
        let head = head(s3, bucket, &listed.key).await;
        objects.push(Stored {
            key: listed.key.clone(),
            size: listed.size,
            etag: listed.etag.clone(),
            content_type: head.content_type().map(str::to_owned),
            cache_control: head.cache_control().map(str::to_owned),
            content_disposition: head.content_disposition().map(str::to_owned),
            metadata: head
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            tags: tags(s3, bucket, &listed.key).await,
        });
        bodies.insert(listed.key.clone(), get_bytes(s3, bucket, &listed.key).await);
    }
    (objects, bodies)
}

/// Assert the two buckets hold the same keys, bytes, headers, metadata,
/// tags and ETags.
async fn assert_same(s3: &Client, source: &str, destination: &str) {
    let (want, want_bodies) = stored(s3, source).await;
    let (got, got_bodies) = stored(s3, destination).await;
    assert_eq!(got, want, "{destination} differs from {source}");
    for (key, bytes) in &want_bodies {
        // Not assert_eq!: a mismatch would print megabytes.
        assert!(
            got_bodies.get(key) == Some(bytes),
            "the bytes of {key:?} differ"
        );
    }
}

/// Keys tools mangle: spaces, unicode, `+`, `%`, a `..` component, a deep
/// path, a leading slash, a tab, S3's 1,024-byte maximum.
fn awkward_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "with space/a b.txt",
        "unicode/ü/ñ/日本語.txt",
        "plus+sign.txt",
        "a+b",
        "percent%41.txt",
        "%2B literal",
        "dots/../escape.txt",
        "../outside",
        "/leading-slash.txt",
        "a//b",
        "tab\tkey",
        "emoji/🦀.bin",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    keys.push(format!("deep/{}leaf.txt", "d/".repeat(150)));
    keys.push(format!("long/{}", "ü".repeat(509)) + "x");
    keys
}

/// A source with awkward keys, empty objects, headers, metadata, tags and
/// (when `multipart`) two 12 MiB objects uploaded in 5 MiB parts (`-3`).
async fn seed(s3: &Client, bucket: &str, multipart: bool) {
    for (i, key) in awkward_keys().iter().enumerate() {
        put(s3, bucket, key, body(i as u64, 100 + i * 37)).await;
    }
    put(s3, bucket, "empty/zero", Vec::new()).await;
    put_with(
        s3,
        bucket,
        "empty/with-metadata",
        Vec::new(),
        PutExtras {
            metadata: vec![("note".into(), "nothing here".into())],
            tags: vec![("kind".into(), "empty".into())],
            ..PutExtras::default()
        },
    )
    .await;
    put_with(
        s3,
        bucket,
        "docs/report.html",
        body(77, 4000),
        PutExtras {
            content_type: Some("text/html; charset=utf-8".into()),
            cache_control: Some("max-age=60".into()),
            content_disposition: Some("attachment; filename=\"r.html\"".into()),
            metadata: vec![
                ("owner".into(), "team-a".into()),
                ("checksum".into(), "abc".into()),
            ],
            tags: vec![
                ("project".into(), "x y".into()),
                ("stage".into(), "a+b=c:d/e@f".into()),
            ],
            ..PutExtras::default()
        },
    )
    .await;
    if multipart {
        put_multipart(s3, bucket, "big/one", 12 * MIB, 5 * MIB).await;
        put_multipart(s3, bucket, "big/two", 12 * MIB + 123, 5 * MIB).await;
    }
}

fn object_count(multipart: bool) -> u64 {
    awkward_keys().len() as u64 + 3 + if multipart { 2 } else { 0 }
}

/// The names of an archive's entries, in order.
fn entry_names(archive: &Path) -> Vec<String> {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    tar.entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temp directory")
}

#[tokio::test]
async fn round_trip_keeps_bytes_headers_metadata_tags_and_multipart_etags() {
    // GIVEN a source with awkward keys, empty objects, metadata, tags and
    // two objects uploaded in 5 MiB parts
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "arc-rt").await;
    seed(&s3, &src, true).await;
    let listed = list_all(&s3, &src, "").await;
    assert!(
        listed.iter().any(|l| l.etag.ends_with("-3\"")),
        "{listed:?}"
    );
    let dir = tempdir();
    let archive = dir.path().join("full.tar");

    // WHEN it is exported and the archive imported into another bucket
    let (code, summary, err) = export(&[&format!("s3://{src}"), path_str(&archive)]);
    assert_eq!(code, 0, "{summary}\n{err}");
    let total = object_count(true);
    assert_eq!(count(&summary, "copied"), total);
    assert_eq!(count(&summary, "listed_source"), total);
    let (code, summary, err) = import(&[path_str(&archive), &format!("s3://{dst}")]);

    // THEN every key, byte, header, metadata, tag and ETag arrived, verified
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(count(&summary, "copied"), total);
    assert_eq!(count(&summary, "verify_checked"), total);
    assert_eq!(count(&summary, "verify_mismatched"), 0);
    assert_same(&s3, &src, &dst).await;
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0);

    // AND the archive's entries are generated names, never keys
    let names = entry_names(&archive);
    assert_eq!(names.len() as u64, total + 2, "{names:?}");
    assert_eq!(names[0], "objects/000000001");
    assert_eq!(
        &names[names.len() - 2..],
        ["manifest.jsonl", "trailer.json"]
    );
    assert!(
        names[..names.len() - 2]
            .iter()
            .all(|n| n.starts_with("objects/") && !n.contains("..")),
        "{names:?}"
    );
}

#[tokio::test]
async fn importing_the_same_archive_twice_writes_nothing_the_second_time() {
    // GIVEN an archive imported once
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "arc-twice").await;
    seed(&s3, &src, true).await;
    let dir = tempdir();
    let archive = dir.path().join("a.tar");
    let (code, summary, err) = export(&[&format!("s3://{src}"), path_str(&archive)]);
    assert_eq!(code, 0, "{summary}\n{err}");
    let (code, summary, err) = import(&[path_str(&archive), &format!("s3://{dst}"), "--delete"]);
    assert_eq!(code, 0, "{summary}\n{err}");
    assert!(
        !writes(&summary).is_empty(),
        "the first import wrote: {summary}"
    );

    // WHEN it is imported again
    let (code, summary, err) = import(&[path_str(&archive), &format!("s3://{dst}"), "--delete"]);

    // THEN nothing is put or deleted: only listings are sent
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(writes(&summary), Vec::<String>::new(), "{summary}");
    let requests = summary["requests"].as_object().unwrap();
    assert_eq!(
        requests.keys().collect::<Vec<_>>(),
        vec!["ListObjectsV2"],
        "{requests:?}"
    );
    assert_eq!(count(&summary, "skip_equal"), object_count(true));
    assert_eq!(count(&summary, "copied") + count(&summary, "deleted"), 0);
    assert_same(&s3, &src, &dst).await;
}

#[tokio::test]
async fn zstd_archives_round_trip() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "arc-zstd").await;
    seed(&s3, &src, false).await;
    let dir = tempdir();
    let by_name = dir.path().join("a.tar.zst");
    let by_flag = dir.path().join("b.archive");

    let (code, summary, err) = export(&[&format!("s3://{src}"), path_str(&by_name)]);
    assert_eq!(code, 0, "{summary}\n{err}");
    let (code, summary, err) = export(&[&format!("s3://{src}"), path_str(&by_flag), "--zstd"]);
    assert_eq!(code, 0, "{summary}\n{err}");
    for archive in [&by_name, &by_flag] {
        let head = std::fs::read(archive).unwrap();
        assert_eq!(
            head[..4],
            [0x28, 0xB5, 0x2F, 0xFD],
            "{}: zstd magic",
            archive.display()
        );
    }

    let (code, summary, err) = import(&[path_str(&by_flag), &format!("s3://{dst}")]);
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(count(&summary, "copied"), object_count(false));
    assert_same(&s3, &src, &dst).await;
}

/// Now as RFC 3339, to the second.
fn rfc3339(secs: u64) -> String {
    aws_smithy_types::DateTime::from_secs(secs as i64)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap()
}

#[tokio::test]
async fn deltas_since_a_manifest_or_a_date_converge_with_changes_deletions_and_moves() {
    // GIVEN a destination brought equal by a full archive
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "arc-delta").await;
    for i in 0..8u64 {
        put(&s3, &src, &format!("k{i}"), body(i, 1000 + i as usize)).await;
    }
    put_multipart(&s3, &src, "big", 11 * MIB, 5 * MIB).await;
    let dir = tempdir();
    let (full, manifest) = (
        dir.path().join("full.tar"),
        dir.path().join("full.manifest"),
    );
    let (code, summary, err) = export(&[
        &format!("s3://{src}"),
        path_str(&full),
        "--manifest-out",
        path_str(&manifest),
    ]);
    assert_eq!(code, 0, "{summary}\n{err}");
    let (code, summary, err) = import(&[path_str(&full), &format!("s3://{dst}")]);
    assert_eq!(code, 0, "{summary}\n{err}");

    // WHEN objects change, go, arrive and move at the source
    put(&s3, &src, "k1", body(101, 999)).await; // changed (size)
    put(&s3, &src, "k2", body(102, 1002)).await; // changed (same size)
    let delete = |key: &'static str| {
        let (s3, src) = (s3.clone(), src.clone());
        async move {
            s3.delete_object()
                .bucket(&src)
                .key(key)
                .send()
                .await
                .unwrap()
        }
    };
    delete("k3").await;
    put(&s3, &src, "new", body(200, 10)).await;
    put(&s3, &src, "moved/k4", body(4, 1004)).await; // a move: same bytes,
    delete("k4").await; // new key

    // AND a delta against the first archive's manifest file is imported
    let delta = dir.path().join("delta.tar");
    let (code, summary, err) = export(&[
        &format!("s3://{src}"),
        path_str(&delta),
        "--since-manifest",
        path_str(&manifest),
    ]);
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(
        count(&summary, "copied"),
        4,
        "k1, k2, new, moved/k4: {summary}"
    );
    assert_eq!(count(&summary, "skip_not_modified"), 5, "k0 k5 k6 k7 big");
    let (code, summary, err) = import(&[path_str(&delta), &format!("s3://{dst}"), "--delete"]);

    // THEN the destination equals the source, deletions and moves included
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(count(&summary, "copied") + count(&summary, "updated"), 4);
    assert_eq!(count(&summary, "deleted"), 2, "k3, k4");
    assert_same(&s3, &src, &dst).await;

    // WHEN later changes are exported by date
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let since = now.as_secs() + 2;
    std::thread::sleep(Duration::from_secs(since) - now + Duration::from_millis(100));
    put(&s3, &src, "k5", body(105, 1005)).await;
    put(&s3, &src, "later", body(300, 3)).await;
    delete("k6").await;
    let dated = dir.path().join("dated.tar");
    let (code, summary, err) = export(&[
        &format!("s3://{src}"),
        path_str(&dated),
        "--since",
        &rfc3339(since),
    ]);
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(count(&summary, "copied"), 2, "k5 and later: {summary}");
    let (code, summary, err) = import(&[path_str(&dated), &format!("s3://{dst}"), "--delete"]);

    // THEN it converges too
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(count(&summary, "deleted"), 1, "k6");
    assert_same(&s3, &src, &dst).await;

    // AND a delta taken against a whole previous archive carries nothing new
    let nothing = dir.path().join("nothing.tar");
    let (code, summary, err) = export(&[
        &format!("s3://{src}"),
        path_str(&nothing),
        "--since-manifest",
        path_str(&dated),
    ]);
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(count(&summary, "copied"), 0, "{summary}");
}

#[tokio::test]
async fn a_delta_imported_without_its_predecessor_is_reported_not_hidden() {
    // GIVEN a delta archive and a destination that never got the full one
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "arc-gap").await;
    put(&s3, &src, "old", body(1, 10)).await;
    let dir = tempdir();
    let full = dir.path().join("full.tar");
    let (code, _, err) = export(&[&format!("s3://{src}"), path_str(&full)]);
    assert_eq!(code, 0, "{err}");
    put(&s3, &src, "new", body(2, 10)).await;
    let delta = dir.path().join("delta.tar");
    let (code, _, err) = export(&[
        &format!("s3://{src}"),
        path_str(&delta),
        "--since-manifest",
        path_str(&full),
    ]);
    assert_eq!(code, 0, "{err}");

    // WHEN only the delta is imported
    let (code, summary, err) = import(&[path_str(&delta), &format!("s3://{dst}")]);

    // THEN what it carries is applied, and the missing object fails the run
    assert_eq!(code, 1, "{summary}\n{err}");
    assert_eq!(count(&summary, "copied"), 1);
    assert_eq!(count(&summary, "verify_mismatched"), 1);
    let rows = summary["failures_csv"].as_str().unwrap();
    let csv = std::fs::read_to_string(rows).unwrap();
    assert!(
        csv.contains("MissingAtDestination") && csv.contains("import the archives before this one"),
        "{csv}"
    );
}

/// Byte offsets, in a plain archive, of the named entry's data.
fn entry_offset(archive: &Path, want: impl Fn(&str, u64) -> bool) -> u64 {
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let entry = entry.unwrap();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        if want(&name, entry.size()) {
            return entry.raw_file_position();
        }
    }
    panic!("no such entry in {}", archive.display());
}

#[tokio::test]
async fn truncated_or_altered_archives_are_refused_and_nothing_is_written() {
    // GIVEN a good archive, and a destination with objects of its own
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "arc-bad").await;
    seed(&s3, &src, false).await;
    put(&s3, &dst, "already/here", body(9, 50)).await;
    put(&s3, &dst, "plus+sign.txt", body(9, 51)).await;
    let before = contents(&s3, &dst).await;
    let dir = tempdir();
    let good = dir.path().join("good.tar");
    let (code, _, err) = export(&[&format!("s3://{src}"), path_str(&good)]);
    assert_eq!(code, 0, "{err}");
    let whole = std::fs::read(&good).unwrap();

    let damaged = |name: &str, bytes: Vec<u8>| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    // Cut in half.
    let truncated = damaged("truncated.tar", whole[..whole.len() / 2].to_vec());
    // One bit of one object's bytes flipped.
    let object_at = entry_offset(&good, |name, size| {
        name.starts_with("objects/") && size > 10
    });
    let mut flipped = whole.clone();
    flipped[object_at as usize + 5] ^= 0x01;
    let tampered_object = damaged("object.tar", flipped);
    // One character of the manifest changed: a size.
    let manifest_at = entry_offset(&good, |name, _| name == "manifest.jsonl") as usize;
    let mut edited = whole.clone();
    let size_at = manifest_at
        + edited[manifest_at..]
            .windows(8)
            .position(|w| w == b"\"size\":1")
            .expect("a size in the manifest");
    edited[size_at + 7] = b'2';
    let tampered_manifest = damaged("manifest.tar", edited);
    // Compressed and cut short.
    let zstd = dir.path().join("good.tar.zst");
    let (code, _, err) = export(&[&format!("s3://{src}"), path_str(&zstd)]);
    assert_eq!(code, 0, "{err}");
    let compressed = std::fs::read(&zstd).unwrap();
    let truncated_zstd = damaged(
        "truncated.tar.zst",
        compressed[..compressed.len() - 100].to_vec(),
    );

    for (archive, why) in [
        (&truncated, "truncated"),
        (&tampered_object, "does not match its checksum"),
        (&tampered_manifest, "does not match the trailer's checksum"),
        (&truncated_zstd, "refusing"),
    ] {
        // WHEN it is imported (with --delete, so a wrong plan would show)
        let (code, summary, err) = import(&[path_str(archive), &format!("s3://{dst}"), "--delete"]);

        // THEN it is refused with a clear error, exit 2, and nothing changed
        assert_eq!(code, 2, "{}: {summary}\n{err}", archive.display());
        assert!(
            err.contains("refusing") && err.contains(why),
            "{}: {err}",
            archive.display()
        );
        assert_eq!(contents(&s3, &dst).await, before, "{}", archive.display());
    }

    // AND the good archive still imports
    let (code, summary, err) = import(&[path_str(&good), &format!("s3://{dst}"), "--delete"]);
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_same(&s3, &src, &dst).await;
}

#[tokio::test]
async fn an_import_killed_mid_upload_converges_when_run_again() {
    // GIVEN an archive of small objects and one uploaded in parts, and an
    // import that is killed while a part upload is in flight
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "arc-kill").await;
    for i in 0..20u64 {
        put(&s3, &src, &format!("a/{i:02}"), body(i, 2000)).await;
    }
    put_multipart(&s3, &src, "m/big", 12 * MIB, 5 * MIB).await;
    for i in 0..20u64 {
        put(&s3, &src, &format!("z/{i:02}"), body(100 + i, 2000)).await;
    }
    let dir = tempdir();
    let archive = dir.path().join("a.tar");
    let (code, _, err) = export(&[&format!("s3://{src}"), path_str(&archive)]);
    assert_eq!(code, 0, "{err}");

    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(Rule::on(Op::UploadPart).delay(Duration::from_secs(30)));
    let mut child = cli()
        .args([
            "import",
            path_str(&archive),
            &format!("s3://{dst}"),
            "--endpoint-url",
            proxy.endpoint(),
            "--concurrency",
            "2",
            // What the killed run extracted stays with the test's directory.
            "--temp-dir",
            path_str(dir.path()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the import");
    assert!(
        proxy.wait_for(Op::UploadPart, 1, Duration::from_secs(60)),
        "the import never reached the multipart object"
    );
    child.kill().expect("kill the import");
    child.wait().unwrap();
    let partial = contents(&s3, &dst).await;
    assert!(
        !partial.is_empty() && partial.len() < 41,
        "half applied: {} objects",
        partial.len()
    );
    assert_eq!(
        list_multipart_uploads(&s3, &dst).await,
        1,
        "the killed upload is open"
    );

    // WHEN the import runs again
    let (code, summary, err) = import(&[path_str(&archive), &format!("s3://{dst}")]);

    // THEN it converges, writing only what was missing, and the killed
    // run's upload is aborted
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(
        count(&summary, "copied") + count(&summary, "skip_equal"),
        41,
        "{summary}"
    );
    assert!(count(&summary, "skip_equal") >= partial.len() as u64);
    assert_same(&s3, &src, &dst).await;
    assert_eq!(list_multipart_uploads(&s3, &dst).await, 0);
}

#[tokio::test]
async fn an_export_resumes_a_body_that_breaks_off() {
    // GIVEN a large object whose first GET breaks off half-way
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "arc-resume").await;
    put(&s3, &src, "large", body(5, 9 * MIB + 7)).await;
    put(&s3, &src, "small", body(6, 1000)).await;
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(Rule::on(Op::GetObject).key("large").times(1).reset());
    proxy.add_rule(Rule::on(Op::GetObject).key("small").times(1).reset());
    let dir = tempdir();
    let archive = dir.path().join("a.tar");

    // WHEN it is exported through the proxy and imported
    let (code, summary, err) = run_json(
        proxy.endpoint(),
        &["export", &format!("s3://{src}"), path_str(&archive)],
    );
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(
        proxy.count(Op::GetObject, "large"),
        2,
        "one broken GET, one resumed"
    );
    assert_eq!(
        proxy.count(Op::GetObject, "small"),
        2,
        "one broken GET, one again"
    );
    let (code, summary, err) = import(&[path_str(&archive), &format!("s3://{dst}")]);

    // THEN the bytes arrived whole
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_same(&s3, &src, &dst).await;
}

#[tokio::test]
async fn missing_buckets_and_foreign_files_are_refused_with_exit_2() {
    let s3 = s3().await;
    let (src, _) = bucket_pair(&s3, "arc-usage").await;
    let dir = tempdir();
    let archive = dir.path().join("a.tar");

    let (code, _, err) = export(&["s3://no-such-bucket-arc", path_str(&archive)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!archive.exists(), "no archive is left behind");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no partial file is left behind"
    );

    put(&s3, &src, "k", body(1, 10)).await;
    let (code, _, err) = export(&[&format!("s3://{src}"), path_str(&archive)]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = import(&[path_str(&archive), "s3://no-such-bucket-arc"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not exist"), "{err}");

    let foreign = dir.path().join("notes.txt");
    std::fs::write(&foreign, "hello").unwrap();
    let (code, _, err) = import(&[path_str(&foreign), &format!("s3://{src}")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an s3-fanout archive"), "{err}");
}

const PRECONDITION_FAILED_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>If-Match</Condition><RequestId>TEST</RequestId></Error>";
const NO_SUCH_KEY_XML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><RequestId>TEST</RequestId></Error>";

#[tokio::test]
async fn objects_that_change_or_vanish_after_listing_are_exported_as_they_are_or_reported() {
    // GIVEN a source where one object answers its listed ETag with 412 (it
    // changed after the listing) and another with 404 (it was deleted)
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "arc-race").await;
    for key in ["changed", "gone", "steady"] {
        put(&s3, &src, key, body(key.len() as u64, 500)).await;
    }
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(
        Rule::on(Op::GetObject)
            .key("changed")
            .times(1)
            .respond(412, PRECONDITION_FAILED_XML),
    );
    proxy.add_rule(
        Rule::on(Op::GetObject)
            .key("gone")
            .respond(404, NO_SUCH_KEY_XML),
    );
    let dir = tempdir();
    let archive = dir.path().join("a.tar");

    // WHEN it is exported
    let (code, summary, err) = run_json(
        proxy.endpoint(),
        &["export", &format!("s3://{src}"), path_str(&archive)],
    );

    // THEN the changed object is exported as it is now, the vanished one is
    // reported and left out of the manifest (a warning, exit 3)
    assert_eq!(code, 3, "{summary}\n{err}");
    assert_eq!(count(&summary, "source_changed"), 1, "{summary}");
    assert_eq!(count(&summary, "source_vanished"), 1, "{summary}");
    assert_eq!(count(&summary, "copied"), 2, "{summary}");
    assert_eq!(
        proxy.count(Op::GetObject, "changed"),
        2,
        "412, then the current version"
    );

    // AND an import with --delete treats the vanished key as deleted
    put(&s3, &dst, "gone", body(1, 1)).await;
    let (code, summary, err) = import(&[path_str(&archive), &format!("s3://{dst}"), "--delete"]);
    assert_eq!(code, 0, "{summary}\n{err}");
    assert_eq!(count(&summary, "listed_source"), 2);
    assert_eq!(count(&summary, "deleted"), 1);
    let keys: Vec<String> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(keys, ["changed", "steady"]);
}

// ---- Archives that expand without bound (issue 18, "Unbounded manifest") ----

/// A 512-byte GNU tar header of a regular file.
fn tar_header(name: &str, size: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path(name).unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(0);
    header.set_cksum();
    header.as_bytes().to_vec()
}

/// Zeros from `len` up to the next 512-byte block.
fn tar_padding(len: u64) -> Vec<u8> {
    vec![0; ((512 - len % 512) % 512) as usize]
}

/// The header line every export starts its manifest with.
const MANIFEST_HEADER_LINE: &str = "{\"format\":\"s3-fanout-manifest\",\"version\":1,\"source\":\"s3://src/\",\"created_at\":\"2026-01-01T00:00:00Z\",\"since\":{\"kind\":\"full\"}}\n";

/// A zstd archive, well formed to its last byte, whose manifest is `head`,
/// then `chunk` `copies` times, then `tail`. The repeated chunk is one zstd
/// frame compressed once and written `copies` times (a zstd stream may be
/// several frames), so a few hundred KiB hold gigabytes and the test builds
/// them in milliseconds. The trailer claims `objects` manifest lines; its
/// checksum is left wrong, as it plays no part: a hostile archive would
/// carry the right one, and the check reaches it only after the manifest.
fn expanding_archive(
    path: &Path,
    head: &[u8],
    chunk: &[u8],
    copies: u64,
    tail: &[u8],
    objects: u64,
) {
    let manifest_bytes = head.len() as u64 + chunk.len() as u64 * copies + tail.len() as u64;
    let mut prefix = tar_header("manifest.jsonl", manifest_bytes);
    prefix.extend_from_slice(head);
    let trailer = serde_json::to_vec_pretty(&serde_json::json!({
        "format": "s3-fanout-archive",
        "version": 1,
        "manifest_sha256": "0".repeat(64),
        "manifest_bytes": manifest_bytes,
        "manifest_objects": objects,
        "object_entries": 0,
        "object_bytes": 0,
    }))
    .unwrap();
    let mut suffix = tail.to_vec();
    suffix.extend(tar_padding(manifest_bytes));
    suffix.extend(tar_header("trailer.json", trailer.len() as u64));
    suffix.extend_from_slice(&trailer);
    suffix.extend(tar_padding(trailer.len() as u64));
    suffix.extend([0u8; 1024]);

    let frame = zstd::encode_all(chunk, 3).unwrap();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    use std::io::Write;
    file.write_all(&zstd::encode_all(&prefix[..], 3).unwrap())
        .unwrap();
    for _ in 0..copies {
        file.write_all(&frame).unwrap();
    }
    file.write_all(&zstd::encode_all(&suffix[..], 3).unwrap())
        .unwrap();
    file.flush().unwrap();
}

/// What a watched import cost.
#[derive(Debug)]
struct Measured {
    code: i32,
    stderr: String,
    elapsed: Duration,
    /// Peak resident set, from `wait4`'s rusage (and /proc while it ran).
    peak_rss: u64,
    /// The most bytes seen at once in the child's TMPDIR, polled.
    peak_temp: u64,
    /// Bytes the child wrote through `write(2)` and kin (/proc/PID/io
    /// `wchar`), read after it exited and before it was reaped: every
    /// spooled byte is in it, however quickly the spool was deleted.
    written: u64,
    /// Bytes still in its TMPDIR once it exited.
    left_behind: u64,
    /// Why the watchdog killed the child, if it did.
    killed: Option<String>,
}

/// Past these the child is killed: with the caps gone (the fix reverted)
/// the test then fails in seconds instead of filling the disk or memory.
const KILL_TEMP_BYTES: u64 = 256 * MIB as u64;
const KILL_RSS_BYTES: u64 = 1024 * MIB as u64;
const KILL_AFTER: Duration = Duration::from_secs(60);

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A field of a /proc/PID file, as a number (`VmHWM:  1234 kB` → 1234).
fn proc_field(pid: i32, file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Run `s3-fanout import ARCHIVE s3://...` with a TMPDIR of its own,
/// measuring its peak memory and temp-dir bytes, and kill it past the
/// watchdog's bounds. The destination is never reached: the check comes
/// first and the endpoint is a closed loopback port.
fn import_measured(archive: &Path) -> Measured {
    let temp = tempdir();
    let logs = tempdir();
    let stderr_path = logs.path().join("stderr");
    let started = std::time::Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by the wait4 below, which also reports its rusage"
    )]
    let child = cli()
        .args([
            "import",
            path_str(archive),
            "s3://arc-bomb-never-reached",
            "--endpoint-url",
            "http://127.0.0.1:9",
        ])
        .env("TMPDIR", temp.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("run s3-fanout");
    let pid = child.id() as i32;
    let (mut peak_rss, mut peak_temp, mut written) = (0u64, 0u64, 0u64);
    let mut killed = None;
    loop {
        // Exited? Asked with WNOWAIT, so /proc/PID stays readable until the
        // wait4 below reaps it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        let rc = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        assert_eq!(rc, 0, "waitid: {}", std::io::Error::last_os_error());
        let exited = unsafe { info.si_pid() } == pid;
        if let Some(kib) = proc_field(pid, "status", "VmHWM:") {
            peak_rss = peak_rss.max(kib * 1024);
        }
        if let Some(bytes) = proc_field(pid, "io", "wchar:") {
            written = written.max(bytes);
        }
        peak_temp = peak_temp.max(dir_bytes(temp.path()));
        if exited {
            break;
        }
        if killed.is_none() {
            let why = if peak_temp > KILL_TEMP_BYTES {
                Some(format!("{peak_temp} bytes in its TMPDIR"))
            } else if peak_rss > KILL_RSS_BYTES {
                Some(format!("a resident set of {peak_rss} bytes"))
            } else if started.elapsed() > KILL_AFTER {
                Some(format!("still running after {KILL_AFTER:?}"))
            } else {
                None
            };
            if let Some(why) = why {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed = Some(why);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    // ru_maxrss is in KiB on Linux.
    peak_rss = peak_rss.max(usage.ru_maxrss as u64 * 1024);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Measured {
        left_behind: dir_bytes(temp.path()),
        code,
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        elapsed: started.elapsed(),
        peak_rss,
        peak_temp,
        written,
        killed,
    }
}

/// The bounds a refused bomb must stay within. The caps let through at
/// most a line of 128 KiB, or 1 MiB plus 4,096 times the few hundred bytes
/// of the archive decoded before the cap trips; a few MiB of slack covers
/// the spool's buffer and what the binary writes besides.
const BOMB_MAX_RSS: u64 = 200 * MIB as u64;
const BOMB_MAX_TEMP: u64 = 8 * MIB as u64;
const BOMB_MAX_TIME: Duration = Duration::from_secs(20);

fn assert_refused_within_bounds(name: &str, archive: &Path, reason: &str) {
    let archive_bytes = std::fs::metadata(archive).unwrap().len();
    let got = import_measured(archive);
    eprintln!(
        "{name}: archive {archive_bytes} bytes; exit {} after {:.2?}; peak RSS {:.1} MiB; peak TMPDIR {:.2} MiB; written {:.2} MiB{}",
        got.code,
        got.elapsed,
        got.peak_rss as f64 / MIB as f64,
        got.peak_temp as f64 / MIB as f64,
        got.written as f64 / MIB as f64,
        got.killed
            .as_deref()
            .map(|why| format!("; KILLED: {why}"))
            .unwrap_or_default()
    );
    eprintln!("{name}: stderr: {}", got.stderr.trim());
    assert_eq!(got.killed, None, "{name}: {got:?}");
    assert_eq!(got.code, 2, "{name}: {got:?}");
    assert_eq!(got.left_behind, 0, "{name}: the spool was left behind");
    assert!(
        got.stderr.contains("refusing") && got.stderr.contains(reason),
        "{name}: {}",
        got.stderr
    );
    assert!(got.peak_rss < BOMB_MAX_RSS, "{name}: {got:?}");
    assert!(got.peak_temp < BOMB_MAX_TEMP, "{name}: {got:?}");
    assert!(got.written < BOMB_MAX_TEMP, "{name}: {got:?}");
    assert!(got.elapsed < BOMB_MAX_TIME, "{name}: {got:?}");
}

#[test]
fn a_manifest_line_that_decompresses_to_a_gigabyte_is_refused_in_bounded_memory_and_disk() {
    // GIVEN a zstd archive of ~60 KiB whose manifest's second line is a key
    // of 1 GiB of "a" (the tar header says so, and the stream holds it)
    let dir = tempdir();
    let archive = dir.path().join("long-line.tar.zst");
    let mut head = MANIFEST_HEADER_LINE.as_bytes().to_vec();
    head.extend_from_slice(b"{\"key\":\"");
    let tail = b"\",\"size\":0,\"etag\":\"e\",\"last_modified_ms\":0}\n";
    expanding_archive(&archive, &head, &vec![b'a'; MIB], 1024, tail, 1);

    // WHEN it is imported, THEN it is refused (exit 2) at the line cap,
    // within a few MiB of disk and memory, before the rest is decompressed
    assert_refused_within_bounds(
        "long line",
        &archive,
        "manifest line 2 is longer than 131072 bytes",
    );
}

#[test]
fn a_manifest_of_many_lines_past_its_cap_is_refused_in_bounded_memory_and_disk() {
    // GIVEN a zstd archive of ~200 KiB whose manifest holds 12.8 million
    // well-formed object lines (1 GiB) where its trailer claims 3: every
    // line within the line cap, the whole far past the size cap of 3
    let dir = tempdir();
    let archive = dir.path().join("many-lines.tar.zst");
    let line = b"{\"key\":\"k\",\"size\":0,\"etag\":\"d41d8cd98f00b204e9800998ecf8427e\",\"last_modified_ms\":0}\n";
    let chunk = line.repeat(MIB / line.len());
    expanding_archive(
        &archive,
        MANIFEST_HEADER_LINE.as_bytes(),
        &chunk,
        1024,
        b"",
        3,
    );

    // WHEN it is imported, THEN it is refused (exit 2) once the manifest
    // outgrows what its compressed bytes can hold, long before the trailer
    assert_refused_within_bounds("many lines", &archive, "decompression bomb");
}
