//! Delete tasks delete only what they should (issue 18, "Delete tasks").
//!
//! A copier message is not proof that a delete is wanted: a batch redriven
//! from the dead-letter queue days later, or one of a run that never asked
//! for deletes, must delete nothing it should not. And deletes go out a
//! thousand to a DeleteObjects request, each conditional on the ETag that
//! was listed, with a `200 OK` read object by object.
//!
//! The copier tests call the handler (`copier::copy_messages`) of this
//! binary's local stack directly with a batch built from a real listing, as
//! the lister builds it; the CLI tests run `s3-fanout sync --delete`. Both
//! reach moto through the fault proxy, which emulates what moto 5.1.22 does
//! not: the per-object ETag condition of DeleteObjects (see
//! `support::fault_proxy::delete_objects_conditionally`).

mod support;

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_s3::Client;
use s3_fanout::engine::diff::Action;
use s3_fanout::model::entry::ObjectEntry;
use s3_fanout::report::{Counts, TaskStatus};
use s3_fanout::serverless::contract::BatchResult;
use s3_fanout::serverless::contract::{CopyBatch, CopyTask, MESSAGE_VERSION};
use s3_fanout::serverless::copier::{copy_messages, result_name};
use support::fault_proxy::{FaultProxy, NOT_IMPLEMENTED_XML, Op, Rule};
use support::local_stack::stack;
use support::*;

/// The destination's objects as the lister saw them: the entries its
/// delete tasks are built from.
async fn listed(client: &Client, bucket: &str) -> Vec<ObjectEntry> {
    list_all(client, bucket, "")
        .await
        .into_iter()
        .map(|l| ObjectEntry {
            version_id: None,
            key: l.key,
            size: l.size,
            etag: l.etag.trim_matches('"').to_owned(),
            last_modified_ms: 0,
            storage_class: l.storage_class,
            checksum: None,
        })
        .collect()
}

/// Plan a run of the test stack from `src` to `dst` (its run.json), with
/// or without deletes; returns its id.
async fn planned_run(src: &str, dst: &str, delete: bool) -> String {
    let run_id = unique_bucket(if delete { "del-run" } else { "nodel-run" });
    let input = serde_json::json!({
        "source": format!("s3://{src}"),
        "destination": format!("s3://{dst}"),
        "delete": delete,
    });
    let (env, id) = (stack().env.clone(), run_id.clone());
    stack()
        .runtime
        .spawn(async move { s3_fanout::serverless::planner::plan(&env, &id, &input).await })
        .await
        .expect("the planner task")
        .expect("the run is planned");
    run_id
}

/// Deliver one batch of delete tasks for `entries` to the copier, as SQS
/// would (a first receive: a redriven message is a new message), and read
/// the result it wrote.
async fn deliver_deletes(run_id: &str, entries: Vec<ObjectEntry>) -> BatchResult {
    let tasks = entries
        .into_iter()
        .map(|destination| {
            CopyTask::from_action(Action::Delete { destination }).expect("a delete is a task")
        })
        .collect();
    let batch = CopyBatch {
        version: MESSAGE_VERSION,
        run_id: run_id.to_owned(),
        batch_id: format!("00000-00000-{:05}", 7),
        tasks,
        range: None,
    };
    let mut message = SqsMessage::default();
    message.message_id = Some(format!("m-{run_id}"));
    message.body = Some(batch.body());
    message
        .attributes
        .insert("ApproximateReceiveCount".into(), "1".into());
    let (env, run_id, batch_id) = (
        stack().env.clone(),
        run_id.to_owned(),
        batch.batch_id.clone(),
    );
    stack()
        .runtime
        .spawn(async move {
            let deadline = SystemTime::now() + Duration::from_secs(120);
            let response = copy_messages(&env, vec![message], deadline).await;
            assert!(
                response.batch_item_failures.is_empty(),
                "the batch was handed back instead of settled"
            );
            env.store
                .get_json::<BatchResult>(&run_id, &result_name(&batch_id))
                .await
                .expect("reading the result")
                .expect("the copier wrote its result")
        })
        .await
        .expect("the copier task")
}

/// The report rows of `result` for `key`, as (status, code).
fn rows_for(result: &BatchResult, key: &str) -> Vec<(TaskStatus, String)> {
    result
        .rows
        .iter()
        .filter(|r| r.key.ends_with(key))
        .map(|r| (r.status, r.error_code.clone()))
        .collect()
}

async fn exists(client: &Client, bucket: &str, key: &str) -> bool {
    client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_batch_redriven_after_its_source_came_back_deletes_nothing_and_counts_it() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "del-back").await;
    // GIVEN two destination-only objects, listed for deletion
    let kept = body(1, 300);
    put(&s3, &dst, "came-back", kept.clone()).await;
    put(&s3, &dst, "still-gone", body(2, 300)).await;
    let run_id = planned_run(&src, &dst, true).await;
    let entries = listed(&s3, &dst).await;
    // AND the source key of one put back before the batch is redriven
    put(&s3, &src, "came-back", body(3, 100)).await;

    // WHEN the batch is delivered
    let result = deliver_deletes(&run_id, entries).await;

    // THEN the object whose source came back is still there, byte-equal
    assert_eq!(get_bytes(&s3, &dst, "came-back").await, kept);
    // AND the other one, whose source is still absent, was deleted
    assert!(!exists(&s3, &dst, "still-gone").await);
    // AND the report counts both
    let Counts {
        source_reappeared,
        deleted,
        failed,
        ..
    } = result.counts;
    assert_eq!((source_reappeared, deleted, failed), (1, 1, 0));
    assert_eq!(
        rows_for(&result, "came-back"),
        [(TaskStatus::Warning, "SourceReappeared".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_batch_of_a_run_without_delete_deletes_nothing_and_counts_it() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "del-unasked").await;
    // GIVEN a run planned without deletes, and destination-only objects
    let mut kept = Vec::new();
    for i in 0..3u64 {
        let bytes = body(i, 200);
        put(&s3, &dst, &format!("only-here/{i}"), bytes.clone()).await;
        kept.push(bytes);
    }
    let run_id = planned_run(&src, &dst, false).await;
    let entries = listed(&s3, &dst).await;

    // WHEN a batch of delete tasks for that run arrives anyway
    let result = deliver_deletes(&run_id, entries).await;

    // THEN nothing is deleted
    for (i, bytes) in kept.iter().enumerate() {
        assert_eq!(
            &get_bytes(&s3, &dst, &format!("only-here/{i}")).await,
            bytes
        );
    }
    // AND each task is a failure row, counted
    assert_eq!(result.counts.deleted, 0);
    assert_eq!(result.counts.failed, 3);
    assert_eq!(result.counts.delete_not_requested, 3);
    for i in 0..3 {
        assert_eq!(
            rows_for(&result, &format!("only-here/{i}")),
            [(TaskStatus::Failed, "DeleteNotRequested".to_owned())]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_object_changed_after_listing_is_not_deleted() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "del-changed").await;
    // GIVEN two destination-only objects, listed for deletion
    put(&s3, &dst, "rewritten", body(1, 300)).await;
    put(&s3, &dst, "as-listed", body(2, 300)).await;
    let run_id = planned_run(&src, &dst, true).await;
    let entries = listed(&s3, &dst).await;
    // AND one written again after the listing (another ETag)
    let newer = body(9, 400);
    put(&s3, &dst, "rewritten", newer.clone()).await;

    // WHEN the batch is delivered
    let result = deliver_deletes(&run_id, entries).await;

    // THEN the rewritten object stays, as written
    assert_eq!(get_bytes(&s3, &dst, "rewritten").await, newer);
    assert!(!exists(&s3, &dst, "as-listed").await);
    assert_eq!(result.counts.destination_changed, 1);
    assert_eq!((result.counts.deleted, result.counts.failed), (1, 0));
    assert_eq!(
        rows_for(&result, "rewritten"),
        [(TaskStatus::Warning, "DestinationChanged".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_conditional_deletes_gets_a_head_first_and_a_plain_delete() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "del-noimpl").await;
    put(&s3, &dst, "rewritten", body(1, 300)).await;
    put(&s3, &dst, "as-listed", body(2, 300)).await;
    let run_id = planned_run(&src, &dst, true).await;
    let entries = listed(&s3, &dst).await;
    let newer = body(9, 400);
    put(&s3, &dst, "rewritten", newer.clone()).await;
    // GIVEN a server that refuses the ETag of a DeleteObjects, as an
    // S3-compatible one without conditional deletes may
    let proxy = &stack().proxy;
    proxy.add_rule(
        Rule::on(Op::DeleteObjects)
            .bucket(&dst)
            .times(1)
            .respond(501, NOT_IMPLEMENTED_XML),
    );

    let result = deliver_deletes(&run_id, entries).await;

    // THEN the ETags were checked by HEAD, and only the unchanged object
    // went in the second, plain request
    assert_eq!(get_bytes(&s3, &dst, "rewritten").await, newer);
    assert!(!exists(&s3, &dst, "as-listed").await);
    assert_eq!(result.counts.destination_changed, 1);
    assert_eq!(result.counts.deleted, 1);
    let to_dst = |op: Op| {
        proxy
            .requests()
            .iter()
            .filter(|r| r.op == op && r.bucket == dst)
            .count()
    };
    assert_eq!(to_dst(Op::DeleteObjects), 2);
    assert_eq!(to_dst(Op::HeadObject), 2);
}

/// `s3-fanout sync SRC DST --delete --json` through `proxy`.
fn sync_delete_via(proxy: &FaultProxy, src: &str, dst: &str) -> (i32, serde_json::Value) {
    let (src, dst) = (format!("s3://{src}"), format!("s3://{dst}"));
    let out = run_cli(&[
        "sync",
        &src,
        &dst,
        "--delete",
        "--endpoint-url",
        proxy.endpoint(),
        "--json",
    ]);
    let summary = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON summary ({e}):\n{}\n{}", out.stdout, out.stderr));
    (out.status, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cli_sync_delete_of_1001_keys_sends_two_delete_objects_requests() {
    use futures::StreamExt;
    const N: usize = 1_001;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "del-batch").await;
    put(&s3, &src, "kept", body(0, 10)).await;
    put(&s3, &dst, "kept", body(0, 10)).await;
    let puts = futures::stream::iter(0..N)
        .map(|i| {
            let (s3, dst) = (s3.clone(), dst.clone());
            async move { put(&s3, &dst, &format!("extra/{i:05}"), Vec::new()).await }
        })
        .buffer_unordered(32);
    puts.collect::<Vec<_>>().await;
    let proxy = FaultProxy::start(&moto().endpoint);

    let (status, summary) = sync_delete_via(&proxy, &src, &dst);

    assert_eq!(status, 0, "{summary}");
    assert_eq!(count(&summary, "deleted"), N as u64);
    let remaining: Vec<String> = list_all(&s3, &dst, "")
        .await
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(remaining, ["kept"]);
    // ceil(1,001 / 1,000) requests, none of them one per key; each key's
    // source checked once.
    assert_eq!(proxy.count_op(Op::DeleteObjects), N.div_ceil(1_000));
    assert_eq!(proxy.count_op(Op::DeleteObject), 0);
    let source_heads = proxy
        .requests()
        .iter()
        .filter(|r| r.op == Op::HeadObject && r.bucket == src)
        .count();
    assert_eq!(source_heads, N);
    assert_eq!(
        summary["requests"]["DeleteObjects"],
        N.div_ceil(1_000) as u64
    );
    proxy.assert_no_errors();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_200_delete_objects_answer_is_read_key_by_key() {
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "del-200").await;
    for key in ["a", "b", "c"] {
        put(&s3, &dst, key, body(1, 10)).await;
    }
    let proxy = FaultProxy::start(&moto().endpoint);
    // GIVEN a 200 that reports an error for one key and names no other
    proxy.add_rule(Rule::on(Op::DeleteObjects).bucket(&dst).respond(
        200,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Error><Key>b</Key><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error></DeleteResult>",
    ));

    let (status, summary) = sync_delete_via(&proxy, &src, &dst);

    // THEN nothing counts as deleted: one failure S3 named, two it did not
    // confirm
    assert_eq!(status, 1, "{summary}");
    assert_eq!(count(&summary, "deleted"), 0);
    assert_eq!(count(&summary, "failed"), 3);
    let csv = std::fs::read_to_string(summary["failures_csv"].as_str().expect("a failures.csv"))
        .expect("failures.csv");
    assert!(csv.contains(",b,,failed,InternalError,"), "{csv}");
    assert_eq!(csv.matches("DeleteNotConfirmed").count(), 2, "{csv}");
}

/// A client of this binary's moto server through `proxy`.
async fn client_via(proxy: &FaultProxy) -> Client {
    s3_fanout::base::client::build_s3_client(
        &s3_fanout::base::client::ClientSettings {
            endpoint_url: Some(proxy.endpoint().to_owned()),
            force_path_style: true,
            region: Some(REGION.into()),
            ..Default::default()
        },
        None,
    )
    .await
}

#[tokio::test]
async fn a_head_denied_as_aws_denies_it_without_list_bucket_is_settled_by_a_listing() {
    // GIVEN a source bucket where, as on AWS for a role whose
    // s3:ListBucket carries an s3:prefix condition, every HEAD answers 403,
    // for a missing key as for a present one
    // (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html)
    let moto_client = s3().await;
    let bucket = unique_bucket("head-403");
    create_bucket(&moto_client, &bucket).await;
    put(&moto_client, &bucket, "data/present", b"x".to_vec()).await;
    put(
        &moto_client,
        &bucket,
        "data/present-too-long",
        b"y".to_vec(),
    )
    .await;
    let proxy = FaultProxy::start(&moto().endpoint);
    proxy.add_rule(Rule::on(Op::HeadObject).bucket(&bucket).respond(403, ""));
    let client = client_via(&proxy).await;
    let location: s3_fanout::model::location::S3Location =
        format!("s3://{bucket}/data/").parse().unwrap();
    let options =
        s3_fanout::model::options::SyncOptions::try_from(s3_fanout::model::options::SyncSpec {
            source: format!("s3://{bucket}/data/"),
            destination: "s3://elsewhere/".into(),
            ..Default::default()
        })
        .unwrap()
        .copy;
    let head = |relative: &'static str| {
        let (client, location, options) = (&client, &location, &options);
        async move {
            s3_fanout::backend::s3::head::head_object(
                client,
                location,
                options,
                s3_fanout::model::entry::Side::Source,
                relative,
            )
            .await
        }
    };

    // WHEN keys are looked up there
    let (missing, present, prefix_only) = (
        head("gone").await,
        head("present").await,
        head("present-too").await,
    );

    // THEN a missing key is absent (one listing said so), a present key's
    // 403 stays a failure (never "absent", so never deleted on its
    // account), and a key that is only a prefix of another is absent
    assert_eq!(missing.unwrap(), None);
    assert_eq!(present.unwrap_err().http_status, Some(403));
    assert_eq!(prefix_only.unwrap(), None);
    assert_eq!(proxy.count_op(Op::ListObjectsV2), 3, "a listing per 403");
}
