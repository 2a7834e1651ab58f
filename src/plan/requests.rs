//! The S3 requests one planned action will cost, by operation: the plan's
//! prediction of what `copy.rs`, `multipart.rs`, `stream.rs` and
//! `local/{upload,download}.rs` send.
//!
//! This mirrors those files, so a change there must change this too; the
//! `plan` test (tests/plan.rs) counts a real sync's requests at the server
//! and holds the two within 1%. Two things the listing cannot tell are
//! assumed, and said in the plan: every request succeeds first time
//! (retries are extra), and a streamed one-PUT object has no tags (with
//! tags it costs one GetObjectTagging more).

use std::collections::BTreeMap;

use crate::engine::diff::Action;
use crate::model::entry::ObjectEntry;
use crate::model::options::{SyncOptions, Transfer};
use crate::model::s3_shape::MAX_DELETE_KEYS;
use crate::model::s3_shape::{EtagShape, default_part_size, etag_shape, uniform_layout};

/// Requests by S3 operation name, as the SDK (and so the report) names them.
pub type Requests = BTreeMap<String, u64>;

pub fn add(requests: &mut Requests, operation: &str, count: u64) {
    if count > 0 {
        *requests.entry(operation.to_owned()).or_default() += count;
    }
}

/// What applying `action` sends, for a run with `options`.
pub fn for_action(options: &SyncOptions, action: &Action, into: &mut Requests) {
    match action {
        Action::Copy { source } | Action::Update { source, .. } => {
            for_transfer(options, source, into)
        }
        // A delete first checks that its source is still absent: a HEAD of
        // a bucket's key, a stat of a directory's file (no request). The
        // delete itself goes out in a batch: see [`for_deletes`].
        Action::Delete { .. } => match options.transfer {
            Transfer::Upload => {}
            _ => add(into, "HeadObject", 1),
        },
        // Two HEADs to compare stored checksums (a pair the ledger did not
        // prove), and the copy if they differ: priced as if it does, the
        // most the pair can cost.
        Action::Compare { source, .. } => {
            add(into, "HeadObject", 2);
            for_transfer(options, source, into)
        }
        Action::Skip { .. } => {}
    }
}

/// What `deletes` deletes send besides their source checks: the worker
/// gathers them [`MAX_DELETE_KEYS`] to a DeleteObjects request (the last
/// one partial); a directory's files are removed without a request.
pub fn for_deletes(options: &SyncOptions, deletes: u64, into: &mut Requests) {
    if options.transfer != Transfer::Download {
        add(
            into,
            "DeleteObjects",
            deletes.div_ceil(MAX_DELETE_KEYS as u64),
        );
    }
}

fn for_transfer(options: &SyncOptions, entry: &ObjectEntry, into: &mut Requests) {
    let copy = &options.copy;
    let multipart_source = match etag_shape(&entry.etag) {
        EtagShape::Multipart(parts) => Some(u64::from(parts)),
        EtagShape::Single => None,
    };
    let default_parts =
        || uniform_layout(entry.size, default_part_size(entry.size, copy.part_size)).len() as u64;
    match options.transfer {
        Transfer::ServerSide | Transfer::Streamed => {
            let multipart = if options.transfer == Transfer::Streamed {
                multipart_source.is_some() || entry.size > crate::model::s3_shape::MAX_PART_SIZE
            } else {
                entry.size > copy.multipart_threshold
                    || (copy.mirror_parts && multipart_source.is_some())
            };
            if !multipart {
                if options.transfer == Transfer::Streamed {
                    add(into, "GetObject", 1);
                    add(into, "PutObject", 1);
                } else {
                    add(into, "CopyObject", 1);
                }
                return;
            }
            // start_upload: HEAD, the source's layout (HEAD of part 1 when
            // its ETag says it has parts) and its tags, at once.
            add(
                into,
                "HeadObject",
                1 + u64::from(multipart_source.is_some()),
            );
            add(into, "GetObjectTagging", 1);
            add(into, "CreateMultipartUpload", 1);
            // The source's own layout when it has one (uniform parts, as
            // every common uploader writes), else the configured part size.
            let parts = multipart_source.unwrap_or_else(default_parts);
            if options.transfer == Transfer::Streamed {
                add(into, "GetObject", parts);
                add(into, "UploadPart", parts);
            } else {
                add(into, "UploadPartCopy", parts);
            }
            // abort_other_uploads, beside the parts; then the completion.
            add(into, "ListMultipartUploads", 1);
            add(into, "CompleteMultipartUpload", 1);
        }
        Transfer::Upload => {
            if entry.size <= copy.multipart_threshold {
                add(into, "PutObject", 1);
            } else {
                add(into, "CreateMultipartUpload", 1);
                add(into, "UploadPart", default_parts());
                add(into, "ListMultipartUploads", 1);
                add(into, "CompleteMultipartUpload", 1);
            }
        }
        Transfer::Download => {
            let gets = if entry.size <= copy.multipart_threshold {
                1
            } else {
                default_parts()
            };
            add(into, "GetObject", gets);
        }
    }
}

/// HEADs per written key when verification checks the written keys one by
/// one (`Mover::head_both`): both buckets, or the one bucket beside a
/// directory (a file is read, not requested).
pub fn verify_heads_per_key(transfer: Transfer) -> u64 {
    match transfer {
        Transfer::ServerSide | Transfer::Streamed => 2,
        Transfer::Upload | Transfer::Download => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::options::SyncSpec;

    const MIB: u64 = 1024 * 1024;

    fn options(args: &[&str]) -> SyncOptions {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            spec: SyncSpec,
        }
        let mut all = vec!["plan"];
        all.extend_from_slice(args);
        SyncOptions::try_from(Wrap::parse_from(all).spec).expect("valid options")
    }

    fn entry(size: u64, etag: &str) -> ObjectEntry {
        ObjectEntry {
            version_id: None,
            key: "k".into(),
            size,
            etag: etag.into(),
            last_modified_ms: 0,
            storage_class: None,
            checksum: None,
        }
    }

    fn requests(options: &SyncOptions, entry: ObjectEntry) -> Vec<(String, u64)> {
        let mut into = Requests::new();
        for_action(options, &Action::Copy { source: entry }, &mut into);
        into.into_iter().collect()
    }

    fn ops(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(o, n)| (o.to_string(), *n)).collect()
    }

    #[test]
    fn a_small_server_side_copy_is_one_copy_object() {
        let o = options(&["s3://src-bkt", "s3://dst-bkt"]);
        assert_eq!(requests(&o, entry(10, "abc")), ops(&[("CopyObject", 1)]));
    }

    #[test]
    fn a_multipart_source_is_mirrored_part_for_part() {
        let o = options(&["s3://src-bkt", "s3://dst-bkt"]);
        assert_eq!(
            requests(&o, entry(12 * MIB, "abc-3")),
            ops(&[
                ("CompleteMultipartUpload", 1),
                ("CreateMultipartUpload", 1),
                ("GetObjectTagging", 1),
                ("HeadObject", 2),
                ("ListMultipartUploads", 1),
                ("UploadPartCopy", 3),
            ])
        );
        // Without mirroring, a small multipart source is one CopyObject.
        let o = options(&["s3://src-bkt", "s3://dst-bkt", "--no-mirror-parts"]);
        assert_eq!(
            requests(&o, entry(12 * MIB, "abc-3")),
            ops(&[("CopyObject", 1)])
        );
    }

    #[test]
    fn above_the_threshold_a_plain_object_gets_the_configured_part_size() {
        let o = options(&[
            "s3://src-bkt",
            "s3://dst-bkt",
            "--multipart-threshold",
            "5MiB",
            "--part-size",
            "5MiB",
        ]);
        let got = requests(&o, entry(11 * MIB, "abc"));
        assert!(got.contains(&("UploadPartCopy".into(), 3)), "{got:?}");
        assert!(got.contains(&("HeadObject".into(), 1)), "{got:?}");
    }

    #[test]
    fn uploads_and_restores_count_their_parts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let up = options(&[path, "s3://dst-bkt"]);
        assert_eq!(requests(&up, entry(MIB, "x")), ops(&[("PutObject", 1)]));
        let got = requests(&up, entry(17 * MIB, "x"));
        assert!(got.contains(&("UploadPart".into(), 3)), "{got:?}");
        let down = options(&["s3://src-bkt", path]);
        assert_eq!(
            requests(&down, entry(17 * MIB, "x-3")),
            ops(&[("GetObject", 3)])
        );
        let mut deletes = Requests::new();
        for_action(
            &down,
            &Action::Delete {
                destination: entry(1, "x"),
            },
            &mut deletes,
        );
        for_deletes(&down, 1, &mut deletes);
        assert_eq!(
            deletes.into_iter().collect::<Vec<_>>(),
            ops(&[("HeadObject", 1)]),
            "a restore checks the bucket for the key, and deleting a file is not a request"
        );
    }

    #[test]
    fn deletes_check_their_source_one_by_one_and_go_a_thousand_to_a_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let delete = Action::Delete {
            destination: entry(1, "x"),
        };
        for (args, heads) in [
            (vec!["s3://src-bkt", "s3://dst-bkt"], 2_001),
            // The source is a directory: its files are looked at, not requested.
            (vec![path, "s3://dst-bkt"], 0),
        ] {
            let o = options(&args);
            let mut into = Requests::new();
            for _ in 0..2_001 {
                for_action(&o, &delete, &mut into);
            }
            for_deletes(&o, 2_001, &mut into);
            assert_eq!(
                into.get("HeadObject").copied().unwrap_or(0),
                heads,
                "{args:?}"
            );
            assert_eq!(into["DeleteObjects"], 3, "{args:?}");
            assert!(!into.contains_key("DeleteObject"), "{args:?}");
        }
    }
}
