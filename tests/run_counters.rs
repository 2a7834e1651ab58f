//! The run counters (issue 21, "Accounting that does not grow with
//! batches"): progress is two Queries whatever the number of batches, the
//! report reads no batch result without rows, and every batch counts once
//! however often it is sent or delivered.
//!
//! The handlers of this binary's local stack run against moto's DynamoDB
//! through the fault proxy, which records each call's `x-amz-target`.
//! moto's transactions are made atomic and isolated, as DynamoDB's are, by
//! `scripts/moto_server.py`.

mod support;

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::SqsMessage;
use futures::StreamExt;
use s3_fanout::model::entry::ObjectEntry;
use s3_fanout::report::Counts;
use s3_fanout::serverless::contract::{
    BatchResult, Checkpoint, CopyBatch, CopyTask, MESSAGE_VERSION, SentBatch,
};
use s3_fanout::serverless::copier::{copy_messages, result_name};
use s3_fanout::serverless::counters::RunCounters;
use s3_fanout::serverless::reporter;
use support::local_stack::stack;
use support::*;
use tokio::sync::Mutex;

/// One test at a time: the request counts below are of the whole proxy.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// Run `work` on the stack's runtime, where its clients live.
async fn on_stack<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    stack().runtime.spawn(work).await.expect("stack task")
}

fn counters() -> RunCounters {
    stack()
        .env
        .counters()
        .expect("the stack has a run table")
        .clone()
}

fn sent_batches(from: usize, to: usize) -> Vec<SentBatch> {
    (from..to)
        .map(|i| SentBatch {
            id: format!("00000-00000-{i:05}"),
            tasks: 1 + (i as u64 % 100),
            first_key: format!("k{i:05}-a"),
            last_key: format!("k{i:05}-z"),
        })
        .collect()
}

/// Plan a run of the test stack from `src` to `dst`; returns its id.
async fn planned_run(src: &str, dst: &str) -> String {
    let run_id = unique_bucket("counted");
    let input = serde_json::json!({
        "source": format!("s3://{src}"),
        "destination": format!("s3://{dst}"),
    });
    let (env, id) = (stack().env.clone(), run_id.clone());
    on_stack(async move { s3_fanout::serverless::planner::plan(&env, &id, &input).await })
        .await
        .expect("the run is planned");
    run_id
}

/// DynamoDB calls the proxy saw, by operation.
fn dynamodb_calls(operation: &str) -> usize {
    let target = format!("DynamoDB_20120810.{operation}");
    stack()
        .proxy
        .requests()
        .iter()
        .filter(|r| r.target.as_deref() == Some(target.as_str()))
        .count()
}

/// S3 requests the proxy saw for the run's folder.
fn run_folder_requests(run_id: &str) -> Vec<String> {
    stack()
        .proxy
        .requests()
        .iter()
        .filter(|r| r.target.is_none() && (r.path.contains(run_id) || r.query.contains(run_id)))
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect()
}

/// The run's failures.csv, as the report wrote it.
async fn failures_csv(run_id: &str) -> String {
    let (env, id) = (stack().env.clone(), run_id.to_owned());
    let csv = on_stack(async move { env.store.get_bytes(&id, "failures.csv").await })
        .await
        .unwrap()
        .expect("failures.csv");
    String::from_utf8(csv).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_sent_again_by_a_retried_lister_count_once() {
    let _serial = SERIAL.lock().await;
    let run_id = unique_bucket("resent");
    let counters = counters();
    // GIVEN a lister that sent 150 batches, then crashed before its
    // checkpoint, and whose retry sends 100..250 again under the same ids
    let (first, retry) = (sent_batches(0, 150), sent_batches(100, 250));
    let (c, id) = (counters.clone(), run_id.clone());
    on_stack(async move {
        c.record_sent(&id, &first, None).await?;
        c.record_sent(&id, &retry, None).await
    })
    .await
    .expect("counted");
    // THEN each batch is counted once, with its tasks
    let totals = on_stack(async move { counters.totals(&run_id).await })
        .await
        .unwrap();
    assert_eq!(totals.batches_sent, 250);
    let tasks: u64 = sent_batches(0, 250).iter().map(|b| b.tasks).sum();
    assert_eq!(totals.tasks_sent, tasks);
    assert_eq!(totals.batches_done, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_is_two_queries_at_two_thousand_batches_and_the_report_finds_the_one_lost() {
    let _serial = SERIAL.lock().await;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "counted").await;
    let run_id = planned_run(&src, &dst).await;
    let counters = counters();
    // GIVEN 2,000 batches sent, as a lister records them (its checkpoint
    // and the counters), and all but the last counted done by copiers
    // working at once
    let batches = sent_batches(0, 2_000);
    let checkpoint = Checkpoint {
        done: true,
        batches: batches.clone(),
        ..Checkpoint::default()
    };
    let (env, c, id, all) = (
        stack().env.clone(),
        counters.clone(),
        run_id.clone(),
        batches.clone(),
    );
    on_stack(async move {
        env.store
            .put_json(&id, "sent/00000-00000.json", &checkpoint)
            .await?;
        c.record_sent(&id, &all, None).await?;
        let done = futures::stream::iter(all[..1_999].to_vec())
            .map(|batch| {
                let (c, id) = (c.clone(), id.clone());
                async move {
                    let counts = Counts {
                        copied: batch.tasks,
                        bytes_copied: batch.tasks * 1_000,
                        ..Counts::default()
                    };
                    c.record_done(&id, &batch.id, &counts, (None, None)).await
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        assert!(done.iter().all(|d| matches!(d, Ok(true))), "{done:?}");
        Ok::<_, s3_fanout::base::error::SyncError>(())
    })
    .await
    .expect("the batches are counted");

    // WHEN the state machine asks for progress
    stack().proxy.clear_log();
    let (env, id) = (stack().env.clone(), run_id.clone());
    let before = s3_fanout::serverless::contract::Progress {
        run_id: id.clone(),
        polls: 3,
        ..Default::default()
    };
    let progress = on_stack(async move { reporter::progress(&env, &before).await })
        .await
        .expect("progress");
    // THEN it knows every batch, in two Queries and no read of the run's folder
    assert_eq!(
        (progress.batches_sent, progress.batches_done),
        (2_000, 1_999)
    );
    assert!(!progress.complete);
    assert_eq!(dynamodb_calls("Query"), 2, "{:?}", stack().proxy.requests());
    assert_eq!(run_folder_requests(&run_id), Vec::<String>::new());

    // WHEN the run is reported
    stack().proxy.clear_log();
    let (env, id) = (stack().env.clone(), run_id.clone());
    let outcome = on_stack(async move { reporter::report(&env, &id, None).await })
        .await
        .expect("the report");
    // THEN its counts are exact: the 1,999 done, and the last batch's
    // tasks failed, as lost
    let lost = &batches[1_999];
    let copied: u64 = batches[..1_999].iter().map(|b| b.tasks).sum();
    assert_eq!(outcome.counts.copied, copied);
    assert_eq!(outcome.counts.bytes_copied, copied * 1_000);
    assert_eq!(outcome.counts.failed, lost.tasks);
    // AND failures.csv names that batch, and only it
    let csv = failures_csv(&run_id).await;
    assert_eq!(csv.matches("BatchLost").count(), 1, "{csv}");
    assert!(csv.contains(&lost.id), "{csv}");
    // AND it read the run's folder a fixed number of times, none a result:
    // run.json, the listings of sent/, rows/ and validate/, the one
    // checkpoint, and the report it wrote
    let reads = run_folder_requests(&run_id);
    assert!(reads.iter().all(|r| !r.contains("/results/")), "{reads:#?}");
    assert!(reads.len() <= 12, "{reads:#?}");
    // AND which batch was lost took one read of 100 markers per 100 sent
    assert_eq!(dynamodb_calls("BatchGetItem"), 20);
}

/// A planned run and its one batch: a copy of `present.bin`, in the
/// source, and one of `gone.bin` (listed, then deleted before the copy).
async fn run_of_one_batch(s3: &aws_sdk_s3::Client, name: &str, seed: u64) -> (String, CopyBatch) {
    let (src, dst) = bucket_pair(s3, name).await;
    let etag = put(s3, &src, "present.bin", body(seed, 2048)).await;
    let run_id = planned_run(&src, &dst).await;
    let entry = |key: &str, etag: &str| ObjectEntry {
        version_id: None,
        key: key.into(),
        size: 2048,
        etag: etag.trim_matches('"').into(),
        last_modified_ms: 0,
        storage_class: None,
        checksum: None,
    };
    let batch = batch(
        &run_id,
        entry("present.bin", &etag),
        entry("gone.bin", "0123456789abcdef0123456789abcdef"),
    );
    (run_id, batch)
}

/// A batch of one copy of `present` and one of `gone`.
fn batch(run_id: &str, present: ObjectEntry, gone: ObjectEntry) -> CopyBatch {
    CopyBatch {
        version: MESSAGE_VERSION,
        run_id: run_id.to_owned(),
        batch_id: "00000-00000-00001".into(),
        tasks: vec![
            CopyTask::Copy { object: present },
            CopyTask::Copy { object: gone },
        ],
        range: None,
    }
}

fn message(batch: &CopyBatch, receive_count: u32) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(format!("m-{}-{receive_count}", batch.batch_id));
    message.body = Some(batch.body());
    message
        .attributes
        .insert("ApproximateReceiveCount".into(), receive_count.to_string());
    message
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_delivered_twice_counts_once_with_the_rows_of_the_delivery_counted() {
    let _serial = SERIAL.lock().await;
    let s3 = s3().await;
    let (run_id, batch) = run_of_one_batch(&s3, "twice", 1).await;
    // WHEN SQS delivers the batch, then again (its first copier's delete
    // of the message was lost), and the second delivery cannot read that
    // the first counted it (the run table's reads fail), so it copies too
    let reads = "DynamoDB_20120810.BatchGetItem";
    stack().proxy.add_rule(
        support::fault_proxy::Rule::any()
            .target(reads)
            .respond(500, support::fault_proxy::DYNAMODB_INTERNAL_ERROR_JSON),
    );
    for receive_count in [1, 2] {
        let (env, message) = (stack().env.clone(), message(&batch, receive_count));
        let response = on_stack(async move {
            let deadline = SystemTime::now() + Duration::from_secs(120);
            copy_messages(&env, vec![message], deadline).await
        })
        .await;
        assert!(response.batch_item_failures.is_empty());
    }
    stack().proxy.remove_target_rules(reads);
    // THEN it counts once: one copy, one vanished source
    let (c, id) = (counters(), run_id.clone());
    let totals = on_stack(async move { c.totals(&id).await }).await.unwrap();
    assert_eq!(totals.batches_done, 1);
    assert_eq!(totals.batches_with_rows, 1);
    assert_eq!(totals.counts.copied, 1, "{:?}", totals.counts);
    assert_eq!(totals.counts.source_vanished, 1, "{:?}", totals.counts);
    // AND the batch's record is the counted delivery's
    let (env, id, name) = (
        stack().env.clone(),
        run_id.clone(),
        result_name(&batch.batch_id),
    );
    let record = on_stack(async move { env.store.get_json::<BatchResult>(&id, &name).await })
        .await
        .unwrap()
        .expect("results/BATCH.json");
    assert_eq!(record.receive_count, 1);
    // AND both deliveries left rows, but the report has the counted one's
    let (env, id) = (stack().env.clone(), run_id.clone());
    let rows = on_stack(async move { env.store.list(&id, "rows/").await })
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (env, id) = (stack().env.clone(), run_id.clone());
    let outcome = on_stack(async move { reporter::report(&env, &id, None).await })
        .await
        .expect("the report");
    assert_eq!(outcome.counts.copied, 1);
    let csv = failures_csv(&run_id).await;
    assert_eq!(csv.matches("gone.bin").count(), 1, "{csv}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_counted_by_a_delivery_killed_before_its_record_gets_the_next_deliverys() {
    let _serial = SERIAL.lock().await;
    let s3 = s3().await;
    let (run_id, batch) = run_of_one_batch(&s3, "record", 2).await;
    let deliver = |receive_count| {
        let (env, message) = (stack().env.clone(), message(&batch, receive_count));
        on_stack(async move {
            let deadline = SystemTime::now() + Duration::from_secs(120);
            copy_messages(&env, vec![message], deadline).await
        })
    };
    let record = || {
        let (env, id, name) = (
            stack().env.clone(),
            run_id.clone(),
            result_name(&batch.batch_id),
        );
        on_stack(async move { env.store.get_json::<BatchResult>(&id, &name).await })
    };
    // GIVEN a delivery that counted the batch and was killed before it
    // wrote the batch's record (the record is removed to stand for it)
    assert!(deliver(1).await.batch_item_failures.is_empty());
    let url = stack()
        .env
        .store
        .url(&run_id, &result_name(&batch.batch_id));
    let (bucket, key) = url
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .expect("an s3:// URL");
    s3.delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    assert!(record().await.unwrap().is_none());
    // WHEN SQS delivers it again
    let copies = stack().proxy.count_op(support::fault_proxy::Op::CopyObject);
    assert!(deliver(2).await.batch_item_failures.is_empty());
    // THEN nothing is copied again: the batch is counted done
    assert_eq!(
        stack().proxy.count_op(support::fault_proxy::Op::CopyObject),
        copies
    );
    // AND the batch has a record, the redelivery's, and still counts once
    let written = record().await.unwrap().expect("results/BATCH.json");
    assert_eq!(written.receive_count, 2);
    let (c, id) = (counters(), run_id.clone());
    let totals = on_stack(async move { c.totals(&id).await }).await.unwrap();
    assert_eq!(totals.batches_done, 1);
    assert_eq!(totals.counts.copied, 1, "{:?}", totals.counts);
    // AND a third delivery leaves the record as it is
    assert!(deliver(3).await.batch_item_failures.is_empty());
    assert_eq!(record().await.unwrap().unwrap().receive_count, 2);
}

/// A write-phase range is copied (and VALIDATE may list it again) only
/// once its listing is done and every batch it sent, and every part its
/// copiers split a large object into, is done: never on a count that only
/// looks complete (parts done before the batch that split them, a batch
/// delivered twice).
#[tokio::test(flavor = "multi_thread")]
async fn a_range_is_copied_only_when_its_listing_its_batches_and_their_parts_are_done() {
    let _serial = SERIAL.lock().await;
    let run_id = unique_bucket("range-copies");
    let (c, id) = (counters(), run_id.clone());
    let copies = on_stack(async move {
        let shard = 3;
        let range = s3_fanout::model::location::KeyRange::default();
        let done = |batch: &str| {
            let (c, id, batch) = (c.clone(), id.clone(), batch.to_owned());
            async move {
                let counts = Counts::default();
                c.record_done(&id, &batch, &counts, (None, Some(shard)))
                    .await
            }
        };
        let look = || {
            let (c, id) = (c.clone(), id.clone());
            async move {
                c.range_copies(&id, shard)
                    .await
                    .map(|r| r.map(|r| r.all_done()))
            }
        };
        let mut seen = Vec::new();
        // GIVEN a range still listed whose two batches are copied
        c.record_sent(&id, &sent_batches(0, 2), None).await?;
        done("00000-00000-00000").await?;
        done("00000-00000-00001").await?;
        seen.push(look().await?); // None: its listing is not done
        // WHEN its lister counts it done with 3 batches sent
        c.record_range_done(
            &id,
            (s3_fanout::serverless::contract::Phase::Write, shard),
            3,
            &range,
        )
        .await?;
        seen.push(look().await?); // Some(false): one batch to go
        // AND the third batch's copier splits an object into two part
        // batches (counted sent first), one of which finishes before the
        // batch that split it is counted done
        let parts = vec![
            SentBatch {
                id: "00000-00000-00002-p0000-0000".into(),
                tasks: 1,
                first_key: "big".into(),
                last_key: "big".into(),
            },
            SentBatch {
                id: "00000-00000-00002-p0000-0001".into(),
                tasks: 1,
                first_key: "big".into(),
                last_key: "big".into(),
            },
        ];
        c.record_sent(&id, &parts, Some(shard)).await?;
        // a retried split sends the same parts again
        c.record_sent(&id, &parts, Some(shard)).await?;
        done(&parts[0].id).await?;
        seen.push(look().await?); // 3 of 5 done
        done("00000-00000-00002").await?;
        // a duplicate delivery of a counted batch
        assert!(!done("00000-00000-00002").await?);
        seen.push(look().await?); // 4 of 5 done
        done(&parts[1].id).await?;
        seen.push(look().await?); // all 5
        Ok::<_, s3_fanout::base::error::SyncError>(seen)
    })
    .await
    .expect("counted");
    // THEN it reads copied only at the end
    assert_eq!(
        copies,
        [None, Some(false), Some(false), Some(false), Some(true)]
    );
}

/// A copied range goes to VALIDATE once, whichever of its batches' copiers
/// (and its lister) look after its last count: the first to count it sent
/// sends it. A retry (a redelivered batch, which may be the one that
/// counted it and died before sending) sends it again. Before, every look
/// that saw it copied sent it: 151 VALIDATE tasks for 21 ranges in a
/// 10,000-object run at 30 ms (`scripts/bench-serverless.sh`), 130 lister
/// invocations that only found the range taken.
#[tokio::test(flavor = "multi_thread")]
async fn a_copied_range_is_sent_to_validate_once_by_its_looks_and_again_by_a_retry() {
    let _serial = SERIAL.lock().await;
    let (src, dst) = bucket_pair(&s3().await, "validate-once").await;
    let run_id = planned_run(&src, &dst).await;
    let (c, env, id) = (counters(), stack().env.clone(), run_id.clone());
    let sent = on_stack(async move {
        // A shard past the plan's: only this test counts it.
        let shard = 900;
        // GIVEN a range listed to its end whose one batch is copied
        c.record_sent(&id, &sent_batches(0, 1), None).await?;
        c.record_done(
            &id,
            "00000-00000-00000",
            &Counts::default(),
            (None, Some(shard)),
        )
        .await?;
        let range = s3_fanout::model::location::KeyRange::default();
        c.record_range_done(
            &id,
            (s3_fanout::serverless::contract::Phase::Write, shard),
            1,
            &range,
        )
        .await?;
        // WHEN its lister, the batch's copier and a duplicate delivery of
        // the batch look, and then a redelivery (a retry) does
        let look = |retry| {
            let (env, id) = (env.clone(), id.clone());
            async move {
                s3_fanout::serverless::ranges::validate_when_copied(&env, &id, shard, retry).await
            }
        };
        Ok::<_, s3_fanout::base::error::SyncError>([
            look(false).await?,
            look(false).await?,
            look(false).await?,
            look(true).await?,
        ])
    })
    .await
    .expect("looked");
    // THEN the first look sent it, the next two did not, the retry did
    assert_eq!(sent, [true, false, false, true]);
}
