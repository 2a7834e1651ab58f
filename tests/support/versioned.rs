//! A versioned bucket taken through a history of puts, overwrites,
//! deletes (delete markers), re-creates and a multipart overwrite, for the
//! tests of `--as-of` (`tests/versions.rs`, the serverless runtime's).
//! LastModified has whole seconds on S3 and moto alike, so the history's
//! steps are more than a second apart, and each step's time is the
//! LastModified of its writes, read back from the server.

use std::collections::BTreeMap;

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};

use super::*;

const MIB: usize = 1024 * 1024;

/// What a key holds at a time: bytes, user metadata, tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub bytes: Vec<u8>,
    pub metadata: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
}

pub type Snapshot = BTreeMap<String, Held>;

pub async fn versioned_bucket(client: &Client, tag: &str) -> String {
    let bucket = unique_bucket(tag);
    create_bucket(client, &bucket).await;
    client
        .put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning on");
    bucket
}

/// The newest LastModified of the bucket's versions and delete markers, in
/// RFC 3339: the time of the step just made.
pub async fn newest_time(client: &Client, bucket: &str) -> String {
    let out = client
        .list_object_versions()
        .bucket(bucket)
        .send()
        .await
        .expect("list versions");
    let times = out
        .versions()
        .iter()
        .filter_map(|v| v.last_modified())
        .chain(
            out.delete_markers()
                .iter()
                .filter_map(|m| m.last_modified()),
        );
    let newest = times.max().expect("a version");
    newest
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap()
}

pub async fn put_held(client: &Client, bucket: &str, key: &str, held: &Held) {
    put_with(
        client,
        bucket,
        key,
        held.bytes.clone(),
        PutExtras {
            metadata: held.metadata.clone(),
            tags: held.tags.clone(),
            content_type: Some("application/x-test".into()),
            ..PutExtras::default()
        },
    )
    .await;
}

pub async fn delete(client: &Client, bucket: &str, key: &str) {
    client
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("delete");
}

pub fn held(seed: u64, len: usize, note: &str) -> Held {
    Held {
        bytes: body(seed, len),
        metadata: vec![("note".into(), note.into())],
        tags: vec![("step".into(), note.into())],
    }
}

/// A versioned source taken through four steps, more than a second apart;
/// the time of each step and what the bucket held after it.
pub struct History {
    pub bucket: String,
    pub steps: Vec<(String, Snapshot)>,
}

pub async fn history(client: &Client, tag: &str) -> History {
    let bucket = versioned_bucket(client, tag).await;
    let mut now = Snapshot::new();
    let mut steps = Vec::new();
    let big = |size: usize| Held {
        bytes: multipart_body("big/one.bin", size),
        metadata: Vec::new(),
        tags: Vec::new(),
    };
    // 1: a, b, c, an odd key, and a multipart object.
    for (key, h) in [
        ("a", held(1, 100, "a1")),
        ("dir/b", held(2, 200, "b1")),
        ("dir/c", held(3, 300, "c1")),
        ("odd key+%/ü", held(4, 40, "odd1")),
    ] {
        put_held(client, &bucket, key, &h).await;
        now.insert(key.into(), h);
    }
    put_multipart(client, &bucket, "big/one.bin", 11 * MIB, 5 * MIB).await;
    now.insert("big/one.bin".into(), big(11 * MIB));
    steps.push((newest_time(client, &bucket).await, now.clone()));

    // 2: a overwritten, b deleted (a delete marker), d made.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    for (key, h) in [("a", held(5, 150, "a2")), ("dir/d", held(6, 60, "d1"))] {
        put_held(client, &bucket, key, &h).await;
        now.insert(key.into(), h);
    }
    delete(client, &bucket, "dir/b").await;
    now.remove("dir/b");
    steps.push((newest_time(client, &bucket).await, now.clone()));

    // 3: b made again, c deleted, the multipart object overwritten in
    // other parts.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let b2 = held(7, 210, "b2");
    put_held(client, &bucket, "dir/b", &b2).await;
    now.insert("dir/b".into(), b2);
    delete(client, &bucket, "dir/c").await;
    now.remove("dir/c");
    put_multipart(client, &bucket, "big/one.bin", 16 * MIB, 6 * MIB).await;
    now.insert("big/one.bin".into(), big(16 * MIB));
    steps.push((newest_time(client, &bucket).await, now.clone()));

    // 4: a deleted.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    delete(client, &bucket, "a").await;
    now.remove("a");
    steps.push((newest_time(client, &bucket).await, now.clone()));
    History { bucket, steps }
}

/// What a bucket holds now, as a snapshot.
pub async fn snapshot_of(client: &Client, bucket: &str) -> Snapshot {
    let mut snapshot = Snapshot::new();
    for listed in list_all(client, bucket, "").await {
        let head = head(client, bucket, &listed.key).await;
        let mut metadata: Vec<(String, String)> = head
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        metadata.sort();
        snapshot.insert(
            listed.key.clone(),
            Held {
                bytes: get_bytes(client, bucket, &listed.key).await,
                metadata,
                tags: tags(client, bucket, &listed.key).await,
            },
        );
    }
    snapshot
}

/// The ETag of each key's version current at `time`, from the source's
/// own listing of versions (what the copies must carry).
pub async fn etags_at(
    client: &Client,
    bucket: &str,
    snapshot: &Snapshot,
) -> BTreeMap<String, String> {
    let mut etags = BTreeMap::new();
    for key in snapshot.keys() {
        let out = client
            .list_object_versions()
            .bucket(bucket)
            .prefix(key)
            .send()
            .await
            .unwrap();
        // The version whose bytes the snapshot holds: same size and bytes.
        for v in out.versions().iter().filter(|v| v.key() == Some(key)) {
            let got = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .version_id(v.version_id().unwrap())
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes();
            if got.as_ref() == snapshot[key].bytes.as_slice() {
                etags.insert(key.clone(), v.e_tag().unwrap().to_owned());
            }
        }
    }
    etags
}

/// Each key's history, oldest first, as S3 lists it (versions and delete
/// markers in order, read by the tool's own page reader: the SDK's output
/// splits them): (is a delete marker, version id, ETag).
pub async fn histories(
    client: &aws_sdk_s3::Client,
    bucket: &str,
) -> BTreeMap<String, Vec<(bool, String, String)>> {
    use s3_fanout::backend::s3::version_page::ReadVersions;
    let read = ReadVersions::default();
    client
        .list_object_versions()
        .bucket(bucket)
        .customize()
        .interceptor(read.clone())
        .send()
        .await
        .unwrap();
    let page = read.take().expect("a version page");
    assert!(!page.is_truncated, "one page holds these histories");
    let mut histories: BTreeMap<String, Vec<(bool, String, String)>> = BTreeMap::new();
    for e in page.entries {
        histories.entry(e.object.key.clone()).or_default().push((
            e.delete_marker,
            e.version_id,
            e.object.etag,
        ));
    }
    for h in histories.values_mut() {
        h.reverse();
    }
    histories
}

/// The destination's histories are the source's: the same entries in the
/// same order, each copy of a version with its ETag, its metadata, and its
/// origin's version id and time.
pub async fn assert_same_histories(s3: &aws_sdk_s3::Client, src: &str, dst: &str) {
    let (source, destination) = (histories(s3, src).await, histories(s3, dst).await);
    assert_eq!(
        source.keys().collect::<Vec<_>>(),
        destination.keys().collect::<Vec<_>>()
    );
    for (key, s) in &source {
        let d = &destination[key];
        let shape = |h: &[(bool, String, String)]| {
            h.iter()
                .map(|(m, _, e)| (*m, e.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(s), shape(d), "the history of {key}");
        for ((marker, origin, _), (_, copy, _)) in s.iter().zip(d) {
            if *marker {
                continue;
            }
            let head = |bucket: &str, id: &str| {
                s3.head_object()
                    .bucket(bucket)
                    .key(key)
                    .version_id(id)
                    .send()
            };
            let (from, to) = (
                head(src, origin).await.unwrap(),
                head(dst, copy).await.unwrap(),
            );
            let to_meta = to.metadata().cloned().unwrap_or_default();
            assert_eq!(
                to_meta.get("s3fanout-origin-version-id"),
                Some(origin),
                "{key}"
            );
            let at = from
                .last_modified()
                .unwrap()
                .fmt(aws_smithy_types::date_time::Format::DateTime)
                .unwrap();
            assert_eq!(to_meta.get("s3fanout-origin-last-modified"), Some(&at));
            for (name, value) in from.metadata().cloned().unwrap_or_default() {
                assert_eq!(to_meta.get(&name), Some(&value), "{key}: {name}");
            }
            assert_eq!(from.content_type(), to.content_type(), "{key}");
        }
    }
}
