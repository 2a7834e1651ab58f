//! Content identity where ETags prove nothing: SSE-KMS buckets, emulated
//! as S3 has them by the fault proxy (an SSE-KMS object's ETag is not the
//! MD5 of its bytes, <https://docs.aws.amazon.com/AmazonS3/latest/API/API_Object.html>,
//! and S3 stores a CRC64NVME checksum with every object that has no other,
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html>).
//! moto alone answers MD5s and stores no default checksums, so without the
//! proxy every test here would pass for the wrong reason.
//!
//! Each pair is proven once, by its checksums or by the copy that made it,
//! and then kept in the ledger of proven pairs, so a re-run costs its
//! listings and nothing else.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_s3::Client;
use futures::StreamExt;
use serde_json::Value;
use support::fault_proxy::{FaultProxy, Op, Rule};
use support::synthetic::Synthetic;
use support::*;

const MIB: usize = 1024 * 1024;
/// Small objects under awkward keys, and multipart ones (mirrored layout).
const SMALL: u64 = 496;
const BIG: u64 = 4;
const ALL: u64 = SMALL + BIG;

fn key(i: u64) -> String {
    match i % 5 {
        0 => format!("plain/{i:04}"),
        1 => format!("space dir/file {i:04}.txt"),
        2 => format!("ünï/çødé-{i:04}"),
        3 => format!("plus+percent%41/{i:04}"),
        _ => format!("deep/a/b/c/{i:04}"),
    }
}

fn small_len(i: u64) -> usize {
    200 + (i % 5) as usize * 50
}

/// A source of [`ALL`] objects and an empty destination, behind a proxy
/// with S3's checksums, and KMS ETags for the buckets asked.
struct World {
    s3: Client,
    src: String,
    dst: String,
    proxy: FaultProxy,
    state: tempfile::TempDir,
}

async fn world(tag: &str, source_kms: bool, destination_kms: bool) -> World {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, tag).await;
    let puts = futures::stream::iter(0..SMALL)
        .map(|i| {
            let (s3, src) = (s3.clone(), src.clone());
            async move { put(&s3, &src, &key(i), body(i, small_len(i))).await }
        })
        .buffer_unordered(16);
    puts.collect::<Vec<_>>().await;
    for i in 0..BIG {
        put_multipart(&s3, &src, &format!("big/{i}"), 11 * MIB, 5 * MIB).await;
    }
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.s3_checksums();
    proxy.enforce_copy_source_if_match();
    if source_kms {
        proxy.kms_etags(&src);
    }
    if destination_kms {
        proxy.kms_etags(&dst);
    }
    World {
        s3,
        src,
        dst,
        proxy,
        state: tempfile::tempdir().unwrap(),
    }
}

impl World {
    /// `sync` through the proxy with this world's ledger; the exit code,
    /// the summary, and the requests it made by operation.
    fn sync(&self, extra: &[&str]) -> (i32, Value, BTreeMap<String, usize>) {
        let state = self.state.path().to_str().unwrap().to_owned();
        self.sync_at(&state, extra)
    }

    /// `COMMAND SRC DST` of this world through its proxy, with the ledger
    /// at `state`, the proxy's log cleared first.
    fn run(&self, command: &str, state: &str, extra: &[&str]) -> CliOutput {
        self.proxy.clear_log();
        let (src, dst) = (format!("s3://{}", self.src), format!("s3://{}", self.dst));
        let mut args = vec![
            command,
            &src,
            &dst,
            "--endpoint-url",
            self.proxy.endpoint(),
            "--state",
            state,
        ];
        args.extend_from_slice(extra);
        run_cli(&args)
    }

    /// [`World::sync`] with the ledger at `state`.
    fn sync_at(&self, state: &str, extra: &[&str]) -> (i32, Value, BTreeMap<String, usize>) {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = self.run("sync", state, &args);
        let summary: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("not a summary ({e}): {}\n{}", out.stdout, out.stderr));
        self.proxy.assert_no_errors();
        (out.status, summary, self.requests())
    }

    fn requests(&self) -> BTreeMap<String, usize> {
        let mut ops = BTreeMap::new();
        for request in self.proxy.requests() {
            *ops.entry(format!("{:?}", request.op)).or_default() += 1;
        }
        ops
    }

    /// A re-run that must copy and HEAD nothing: listings only.
    fn listing_only_rerun(&self, why: &str) {
        let (code, summary, ops) = self.sync(&[]);
        assert_eq!(code, 0, "{why}: {summary}");
        assert_eq!(
            count(&summary, "copied") + count(&summary, "updated"),
            0,
            "{why}"
        );
        assert_eq!(
            ops.keys().collect::<Vec<_>>(),
            ["ListObjectsV2"],
            "{why}: a re-run lists and reads the ledger, nothing else: {ops:?}"
        );
    }
}

/// The five checks of a KMS bucket pair: it syncs and verifies, re-runs
/// listing-only, copies a same-size change at the source and only it,
/// repairs a same-size overwrite at the destination, and copies back what
/// was deleted there.
async fn five_checks(tag: &str, source_kms: bool, destination_kms: bool) {
    let w = world(tag, source_kms, destination_kms).await;

    let (code, summary, _) = w.sync(&[]);
    assert_eq!(code, 0, "the first sync verifies: {summary}");
    assert_eq!(count(&summary, "copied"), ALL);
    assert_eq!(count(&summary, "verify_mismatched"), 0);
    assert_eq!(
        count(&summary, "ledger_entries"),
        ALL,
        "every copy is a proven pair"
    );
    assert_eq!(
        count(&summary, "checksum_heads"),
        0,
        "each copy proves itself: verification reads it from the ledger, no HEAD"
    );

    w.listing_only_rerun("unchanged");

    // A same-size change at the source: copied, and only it.
    put(&w.s3, &w.src, &key(7), body(10_007, small_len(7))).await;
    let (code, summary, ops) = w.sync(&[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "updated"), 1, "{summary}");
    assert_eq!(count(&summary, "copied"), 0);
    assert_eq!(ops.get("CopyObject"), Some(&1), "{ops:?}");
    w.listing_only_rerun("after a source change");

    // A same-size overwrite at the destination, out of band: found by its
    // checksum, and repaired.
    put(&w.s3, &w.dst, &key(9), body(20_009, small_len(9))).await;
    let (code, summary, _) = w.sync(&[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "updated"), 1, "{summary}");
    assert_eq!(count(&summary, "checksum_different"), 1, "{summary}");
    assert_eq!(
        get_bytes(&w.s3, &w.dst, &key(9)).await,
        body(9, small_len(9))
    );
    w.listing_only_rerun("after a destination overwrite");

    // Deleted at the destination, out of band: copied back.
    w.s3.delete_object()
        .bucket(&w.dst)
        .key(key(11))
        .send()
        .await
        .unwrap();
    let (code, summary, _) = w.sync(&[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied"), 1, "{summary}");
    w.listing_only_rerun("after a destination delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_a_kms_destination() {
    five_checks("kms-dst", false, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_kms_source_into_sse_s3() {
    five_checks("kms-src", true, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_kms_into_kms() {
    five_checks("kms-both", true, true).await;
}

/// Copies another tool made (no ledger, checksums present): the first run
/// proves each pair with two HEADs and copies nothing; the next makes
/// neither. Then the ledger is lost, and after that damaged: each costs
/// HEADs once, never a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_copied_elsewhere_are_proven_once_and_a_lost_ledger_costs_heads_only() {
    let w = world("kms-other", false, true).await;
    let keys: Vec<String> = (0..SMALL)
        .map(key)
        .chain((0..BIG).map(|i| format!("big/{i}")))
        .collect();
    let copies = futures::stream::iter(keys)
        .map(|k| {
            let (s3, src, dst) = (w.s3.clone(), w.src.clone(), w.dst.clone());
            async move {
                s3.copy_object()
                    .bucket(dst)
                    .key(&k)
                    .copy_source(format!("{src}/{}", urlencode(&k)))
                    .send()
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(16);
    copies.collect::<Vec<_>>().await;

    let (code, summary, ops) = w.sync(&[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied") + count(&summary, "updated"), 0);
    assert_eq!(count(&summary, "proven_by_checksum"), ALL);
    assert_eq!(ops.get("HeadObject"), Some(&(2 * ALL as usize)), "{ops:?}");
    w.listing_only_rerun("proven by checksums last time");

    std::fs::remove_dir_all(w.state.path()).unwrap();
    let (code, summary, ops) = w.sync(&[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied") + count(&summary, "updated"), 0);
    assert_eq!(ops.get("HeadObject"), Some(&(2 * ALL as usize)), "{ops:?}");
    w.listing_only_rerun("the ledger rebuilt");

    // Damage every chunk of the ledger: a warning, HEADs, no copies.
    for entry in std::fs::read_dir(w.state.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("chunk-")
        {
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
        }
    }
    let out = w.run("sync", w.state.path().to_str().unwrap(), &["--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stderr.contains("damaged"), "a warning: {}", out.stderr);
    assert_eq!(w.proxy.count_op(Op::CopyObject), 0);
    assert_eq!(w.proxy.count_op(Op::HeadObject), 2 * ALL as usize);
    w.listing_only_rerun("the damaged ledger replaced");
}

/// A run killed half-way through its copies leaves the ledger it found;
/// the re-run accepts it, proves what the killed run copied by checksums,
/// and copies the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_leaves_a_ledger_the_next_run_accepts() {
    let w = world("kms-kill", false, true).await;
    let (code, summary, _) = w.sync(&[]);
    assert_eq!(code, 0, "{summary}");
    for i in 0..40 {
        put(
            &w.s3,
            &w.src,
            &key(i * 5),
            body(30_000 + i, small_len(i * 5)),
        )
        .await;
    }
    w.proxy.clear_log();
    w.proxy.add_rule(
        Rule::on(Op::CopyObject)
            .bucket(&w.dst)
            .delay(Duration::from_millis(300)),
    );
    let (src, dst) = (format!("s3://{}", w.src), format!("s3://{}", w.dst));
    let state = w.state.path().to_str().unwrap().to_owned();
    let mut child = cli()
        .args([
            "sync",
            &src,
            &dst,
            "--endpoint-url",
            w.proxy.endpoint(),
            "--state",
            &state,
            "--concurrency",
            "2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(w.proxy.wait_for(Op::CopyObject, 8, Duration::from_secs(60)));
    child.kill().unwrap(); // SIGKILL: no clean-up of any kind
    child.wait().unwrap();
    assert!(w.proxy.wait_idle(Duration::from_secs(10)));
    w.proxy.clear_rules();

    let (code, summary, _) = w.sync(&[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "failed"), 0);
    let copies = count(&summary, "copied") + count(&summary, "updated");
    assert!(
        copies <= 40 && copies + count(&summary, "proven_by_checksum") >= 40,
        "{summary}"
    );
    assert_eq!(count(&summary, "skip_unverified"), 0, "{summary}");
    w.listing_only_rerun("after the killed run");
}

/// `check` writes nothing and proves every pair: by the ledger, and with
/// `--checksum` by the checksums of every pair; a difference is reported
/// and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_proves_every_pair_and_writes_nothing() {
    let w = world("kms-check", false, true).await;
    let (code, _, _) = w.sync(&[]);
    assert_eq!(code, 0);
    let state = w.state.path().to_str().unwrap().to_owned();
    let check = |extra: &[&str]| {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = w.run("check", &state, &args);
        let summary: Value = serde_json::from_str(&out.stdout).unwrap();
        let writes = w
            .proxy
            .requests()
            .iter()
            .filter(|r| !matches!(r.op, Op::ListObjectsV2 | Op::HeadObject))
            .count();
        assert_eq!(writes, 0, "check only lists and HEADs");
        (out.status, summary)
    };

    let (code, summary) = check(&[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "proven_by_ledger"), ALL);
    assert_eq!(w.proxy.count_op(Op::HeadObject), 0);

    let (code, summary) = check(&["--checksum"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "proven_by_checksum"), ALL);
    assert_eq!(w.proxy.count_op(Op::HeadObject), 2 * ALL as usize);

    put(&w.s3, &w.dst, &key(3), body(40_003, small_len(3))).await;
    w.s3.delete_object()
        .bucket(&w.dst)
        .key(key(4))
        .send()
        .await
        .unwrap();
    let (code, summary) = check(&[]);
    assert_eq!(code, 1, "{summary}");
    assert_eq!(count(&summary, "verify_mismatched"), 2, "{summary}");
    assert_eq!(count(&summary, "checksum_different"), 1, "{summary}");
}

fn urlencode(key: &str) -> String {
    percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
        .replace("%2F", "/")
}

/// Where ETags are MD5s nothing gets worse: an unchanged 10,000-object
/// re-sync is its listings (ten pages a side, and the partly used pages of
/// its cuts) and nothing else, and keeps no ledger entry.
#[test]
fn where_etags_are_md5s_an_unchanged_resync_is_its_listings_alone() {
    let server = Synthetic::start();
    let state = tempfile::tempdir().unwrap();
    let out = run_cli(&[
        "sync",
        "s3://syn-10000-dirs",
        "s3://syn-10000-dirs-twin",
        "--endpoint-url",
        &server.endpoint,
        "--state",
        state.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(count(&summary, "skip_equal"), 10_000, "{summary}");
    assert_eq!(
        count(&summary, "ledger_entries"),
        0,
        "MD5 pairs need no entry"
    );
    let ops = server.counts()["ops"].clone();
    let lists = ops["ListObjectsV2"].as_u64().unwrap_or(0);
    assert_eq!(ops.as_object().map(|o| o.len()), Some(1), "{ops}");
    // Ten pages a side, one delimiter page to cut at the folders, and up
    // to a partly used page a side for each piece after the first.
    let pieces = count(&summary, "listed_pieces");
    assert!(
        (20..=20 + 1 + 2 * (pieces - 1)).contains(&lists),
        "{lists} listings for {pieces} pieces: {summary}"
    );
}

/// A mirrored multipart copy keeps its source's full-object CRC64NVME, and
/// hands it to CompleteMultipartUpload: a copy whose bytes differ (here a
/// part copied from one byte further on, as a bug or a bad disk would) is
/// refused by S3 at completion, reported, and never becomes the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_copy_carries_the_full_object_checksum_and_a_damaged_one_is_refused() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "kms-crc").await;
    put_multipart(&s3, &src, "big/good", 11 * MIB, 5 * MIB).await;
    put_multipart(&s3, &src, "big/bad", 11 * MIB, 5 * MIB).await;
    let w = World {
        s3,
        src,
        dst,
        proxy: FaultProxy::start(&moto().endpoint),
        state: tempfile::tempdir().unwrap(),
    };
    w.proxy.s3_checksums();
    w.proxy.kms_etags(&w.dst);
    w.proxy.shift_first_part_copy("big/bad");

    let (code, summary, _) = w.sync(&[]);
    assert_eq!(code, 1, "{summary}");
    assert_eq!(count(&summary, "copied"), 1, "{summary}");
    assert_eq!(count(&summary, "failed"), 1, "{summary}");
    // The good copy carries its source's checksum, as S3 stored it.
    let checksum = |bucket: &str, key: &str| {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        let endpoint = w.proxy.endpoint().to_owned();
        async move {
            let client = proxied_client(&endpoint).await;
            let head = client
                .head_object()
                .bucket(bucket)
                .key(key)
                .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                .send()
                .await
                .unwrap();
            (
                head.checksum_crc64_nvme().map(str::to_owned),
                head.checksum_type().map(|t| t.as_str().to_owned()),
            )
        }
    };
    let source = checksum(&w.src, "big/good").await;
    assert!(source.0.is_some(), "{source:?}");
    assert_eq!(checksum(&w.dst, "big/good").await, source);
    // The damaged one is not at the destination, and nothing is left open.
    let absent =
        w.s3.head_object()
            .bucket(&w.dst)
            .key("big/bad")
            .send()
            .await;
    assert!(absent.is_err(), "a refused completion left an object");
    assert_eq!(list_multipart_uploads(&w.s3, &w.dst).await, 0);

    // The next run copies it whole, and proves it.
    let (code, summary, _) = w.sync(&[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "copied"), 1, "{summary}");
    assert_eq!(
        get_bytes(&w.s3, &w.dst, "big/bad").await,
        get_bytes(&w.s3, &w.src, "big/bad").await
    );
}

async fn proxied_client(endpoint: &str) -> Client {
    s3_fanout::base::client::build_s3_client(
        &s3_fanout::base::client::ClientSettings {
            endpoint_url: Some(endpoint.to_owned()),
            force_path_style: true,
            region: Some(REGION.into()),
            ..Default::default()
        },
        None,
    )
    .await
}

/// The ledger in a bucket (`--state s3://…`): written whole (chunks, then
/// the manifest), and read back by the next run with two GETs, its only
/// requests beside the listings. A state location inside a synced one is
/// refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_can_live_in_a_bucket_but_never_inside_a_synced_location() {
    let w = world("kms-s3state", false, true).await;
    let state_bucket = unique_bucket("kms-state");
    create_bucket(&w.s3, &state_bucket).await;
    let state = format!("s3://{state_bucket}/ledgers/nightly");
    let (code, summary, _) = w.sync_at(&state, &[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "ledger_entries"), ALL);
    let stored: Vec<String> = list_all(&w.s3, &state_bucket, "ledgers/nightly/")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert!(
        stored.contains(&"ledgers/nightly/manifest.json".to_owned())
            && stored.iter().any(|k| k.contains("/chunk-")),
        "{stored:?}"
    );

    let (code, summary, ops) = w.sync_at(&state, &[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(count(&summary, "proven_by_ledger"), ALL, "{summary}");
    assert_eq!(
        ops,
        BTreeMap::from([("GetObject".to_owned(), 2), ("ListObjectsV2".to_owned(), 2)]),
        "listings, the manifest and one chunk: {summary}"
    );

    for inside in [
        format!("s3://{}/.s3-fanout", w.dst),
        format!("s3://{}", w.src),
    ] {
        let out = w.run("sync", &inside, &[]);
        assert_eq!(out.status, 2, "{}", out.stderr);
        assert!(out.stderr.contains("--state"), "{}", out.stderr);
    }
}
