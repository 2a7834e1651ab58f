//! Range tasks on the range queue (issue 21, elastic listing): a listing
//! pass is handed out as messages that listers take, list until their
//! deadline, and hand on. SQS delivers at least once and a lister can die
//! anywhere; whatever happens, every key is listed and counted once, and a
//! range never listed to its end fails the run by name.
//!
//! The tasks here go to a queue of the test's own, which no event source
//! consumes, so each test takes them itself, in the order it wants. The
//! batches they send go to the stack's work queue as usual.

mod support;

use std::time::{Duration, SystemTime};

use s3_fanout::serverless::FunctionEnv;
use s3_fanout::serverless::contract::{Checkpoint, Phase, ShardCursor};
use s3_fanout::serverless::lister::{Taken, Tally, checkpoint_name, take_range};
use s3_fanout::serverless::{planner, ranges, reporter};
use support::fault_proxy::{ACCESS_DENIED_XML, Op, Rule};
use support::local_stack::stack;
use support::synthetic::Synthetic;
use support::*;
use tokio::sync::Mutex;

/// One test at a time: the faults below are the whole proxy's.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// An environment like the stack's, whose range tasks go to a new queue
/// that only the test reads.
async fn private_env(tag: &str) -> (FunctionEnv, String) {
    private_env_with(tag, |_| {}).await
}

/// [`private_env`], its configuration changed by `configure`.
async fn private_env_with(
    tag: &str,
    configure: impl FnOnce(&mut s3_fanout::serverless::env::StackConfig),
) -> (FunctionEnv, String) {
    let base = stack().env.clone();
    let queue = base
        .sqs
        .create_queue()
        .queue_name(unique_bucket(tag))
        .send()
        .await
        .expect("a queue")
        .queue_url
        .expect("its URL");
    let mut config = base.config.clone();
    config.range_queue_url = Some(queue.clone());
    configure(&mut config);
    (FunctionEnv::new(config).await, queue)
}

/// Every range task on `queue` now, deleted as they are read.
async fn take_all(env: &FunctionEnv, queue: &str) -> Vec<ShardCursor> {
    let mut tasks = Vec::new();
    loop {
        let received = env
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        if received.messages().is_empty() {
            return tasks;
        }
        for message in received.messages() {
            tasks.push(serde_json::from_str(message.body().unwrap()).expect("a range task"));
            env.sqs
                .delete_message()
                .queue_url(queue)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .expect("delete");
        }
    }
}

fn far() -> SystemTime {
    SystemTime::now() + Duration::from_secs(600)
}

/// GIVEN a shard of 20 keys listed 7 keys an invocation (three range tasks)
/// WHEN the first lister sends the next task and fails marking its own
/// handed on; its task comes back while another lister holds its lease,
/// and again after; and the next task, now on the queue twice, is taken
/// twice
/// THEN the first redelivery is handed back (leased), the second sends the
/// next task again, the duplicate of that is dropped without a listing,
/// and the shard ends with each key counted once: three listings of the
/// source, three batches, 20 copies planned, the range counted done once
#[tokio::test(flavor = "multi_thread")]
async fn a_range_task_redelivered_or_duplicated_lists_and_counts_every_key_once() {
    let _serial = SERIAL.lock().await;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "ranges-dup").await;
    for i in 0..20 {
        put(&s3, &src, &format!("r{i:03}"), body(i, 10)).await;
    }
    let run_id = unique_bucket("ranges-dup");
    let checkpoint_key = format!(
        "{}{run_id}/{}",
        stack().env.config.report_prefix,
        checkpoint_name(Phase::Write, 0, 0)
    );
    // The first invocation's checkpoint PUTs: its last save, then the mark
    // that it handed on, refused.
    stack().proxy.add_rule(
        Rule::on(Op::PutObject)
            .key(&checkpoint_key)
            .skip(1)
            .times(1)
            .respond(403, ACCESS_DENIED_XML),
    );
    // Without VALIDATE: the stack's copiers copy this run's batches, and
    // its range would then go to VALIDATE on this test's queue too.
    let input = serde_json::json!({"source": format!("s3://{src}"), "destination": format!("s3://{dst}"), "validate": false});
    let id = run_id.clone();
    let (taken, totals, checkpoints) = stack()
        .runtime
        .spawn(async move {
            let (env, queue) = private_env("ranges-dup").await;
            let plan = planner::plan(&env, &id, &input).await.unwrap();
            assert_eq!(plan.shards, vec![0]);
            let shards: Vec<_> = plan.shards.iter().map(|&s| (s, None)).collect();
            ranges::start_pass(&env, &id, Phase::Write, &shards)
                .await
                .unwrap();
            let first = take_all(&env, &queue).await;
            assert_eq!(first.len(), 1);
            // Only the listings from here on.
            stack().proxy.clear_log();
            let mut taken = Vec::new();
            let died = take_range(&env, first[0].clone(), far(), &mut Tally::default()).await;
            assert!(died.is_err(), "the refused mark ends the invocation");
            // A lister holding the task for 3 s more: the redelivery waits.
            let until = s3_fanout::report::emf::now_ms() + 3_000;
            let held = env.counters().unwrap();
            let held = held.lease(&id, (Phase::Write, 0, 0), until).await.unwrap();
            assert_eq!(held, Some(false), "the failed attempt gave its lease up");
            taken.push(take_range(&env, first[0].clone(), far(), &mut Tally::default()).await);
            tokio::time::sleep(Duration::from_secs(4)).await;
            taken.push(take_range(&env, first[0].clone(), far(), &mut Tally::default()).await);
            // The next task, sent by both.
            let mut pending = take_all(&env, &queue).await;
            assert_eq!(pending.len(), 2, "{pending:?}");
            while !pending.is_empty() {
                for task in std::mem::take(&mut pending) {
                    taken.push(take_range(&env, task, far(), &mut Tally::default()).await);
                }
                pending = take_all(&env, &queue).await;
            }
            let totals = env.counters().unwrap().totals(&id).await.unwrap();
            let mut checkpoints = Vec::new();
            for seq in 0..3 {
                let name = checkpoint_name(Phase::Write, 0, seq);
                let saved: Checkpoint = env.store.get_json(&id, &name).await.unwrap().unwrap();
                checkpoints.push(saved);
            }
            (taken, totals, checkpoints)
        })
        .await
        .unwrap();
    let kinds: Vec<String> = taken
        .iter()
        .map(|t| match t {
            Ok(Taken::HandedOn(next)) => format!("handed on {} done={}", next.seq, next.done),
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("error {e}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Leased",
            "handed on 1 done=false",
            "handed on 2 done=false",
            "Duplicate",
            "handed on 3 done=true",
        ]
    );
    assert_eq!(totals.ranges(Phase::Write), (1, 1));
    assert_eq!((totals.batches_sent, totals.tasks_sent), (3, 20));
    let planned: u64 = checkpoints.iter().map(|c| c.counts.plan_copy).sum();
    assert_eq!(planned, 20, "every key planned once");
    assert!(checkpoints.iter().all(|c| c.handed_on && c.ended));
    let listings = stack()
        .proxy
        .requests()
        .iter()
        .filter(|r| r.op == Op::ListObjectsV2 && r.bucket == src)
        .count();
    assert_eq!(listings, 3, "one listing per range task, none for a repeat");
}

/// GIVEN a run of two shards, whose second range task is never taken (it
/// failed on every receive and is in the range dead-letter queue)
/// THEN progress does not call the pass complete, and the report fails
/// the run, naming the shard and its keys
#[tokio::test(flavor = "multi_thread")]
async fn a_range_never_listed_to_its_end_fails_the_run_by_name() {
    let _serial = SERIAL.lock().await;
    let s3 = s3().await;
    let (src, dst) = bucket_pair(&s3, "ranges-lost").await;
    for i in 0..3000 {
        if i % 100 == 0 {
            put(&s3, &src, &format!("k{i:05}"), Vec::new()).await;
        }
    }
    for folder in ["a", "b"] {
        put(&s3, &src, &format!("{folder}/one"), body(1, 10)).await;
    }
    let run_id = unique_bucket("ranges-lost");
    let input = serde_json::json!({"source": format!("s3://{src}"), "destination": format!("s3://{dst}"), "validate": false});
    let id = run_id.clone();
    let (progress, (outcome, summary), shards) = stack()
        .runtime
        .spawn(async move {
            let (env, queue) = private_env("ranges-lost").await;
            let plan = planner::plan(&env, &id, &input).await.unwrap();
            assert!(plan.shards.len() >= 2, "{plan:?}");
            let shards: Vec<_> = plan.shards.iter().map(|&s| (s, None)).collect();
            ranges::start_pass(&env, &id, Phase::Write, &shards)
                .await
                .unwrap();
            let tasks = take_all(&env, &queue).await;
            let lost = tasks.last().unwrap().shard;
            let mut pending: Vec<ShardCursor> =
                tasks.into_iter().filter(|t| t.shard != lost).collect();
            while !pending.is_empty() {
                for task in std::mem::take(&mut pending) {
                    take_range(&env, task, far(), &mut Tally::default())
                        .await
                        .unwrap();
                }
                pending = take_all(&env, &queue).await;
            }
            let before = s3_fanout::serverless::contract::Progress {
                run_id: id.clone(),
                ..Default::default()
            };
            let progress = reporter::progress(&env, &before).await.unwrap();
            let outcome = reporter::report(&env, &id, None).await.unwrap();
            let summary = env.store.get_bytes(&id, "summary.json").await.unwrap();
            let summary = String::from_utf8(summary.expect("summary.json")).unwrap();
            (progress, (outcome, summary), (plan.shards.len(), lost))
        })
        .await
        .unwrap();
    let (count, lost) = shards;
    assert!(!progress.complete);
    assert_eq!(
        (progress.ranges_sent, progress.ranges_done),
        (count as u64, count as u64 - 1)
    );
    assert_ne!(outcome.exit_code, 0, "{outcome:?}");
    assert!(
        summary.contains("ListingIncomplete")
            && summary.contains(&format!("write shard {lost} (keys after")),
        "{summary}"
    );
}

/// The synthetic endpoint of this binary's split tests (each test lists
/// buckets of its own size, so its counts are its own).
fn synthetic() -> &'static Synthetic {
    Synthetic::shared(&stack().proxy)
}

/// How a split test's first lister dies.
enum Death {
    /// SQS refuses the split's task: the split is in the checkpoint, its
    /// task was never sent.
    HandingOut,
    /// After handing the split out, at its next checkpoint: the split's
    /// task is on the queue, the checkpoint that recorded it is the last.
    CheckpointingAfter,
}

/// GIVEN one range of about 60,000 keys (an unchanged pair served by the
/// synthetic endpoint), taken by a lister with time to list it all
/// WHEN it splits the rest of its range off after ten pages and dies as
/// `death` says, and SQS delivers its task again
/// THEN the retry sends the split again, splits nothing itself, and lists
/// only up to where the split begins; the split ranges are listed by the
/// next listers (which may split in turn); and every key is listed and
/// counted once a side: 60,000 equal pairs, the endpoint serving each key
/// once but for partly used pages, every range sent counted done once
async fn a_split_survives_its_lister_dying(death: Death, tag: &'static str, keys: u64) {
    let _serial = SERIAL.lock().await;
    let synthetic = synthetic();
    let (source, destination) = (format!("syn-{keys}-flat"), format!("syn-{keys}-flat-twin"));
    let run_id = unique_bucket(tag);
    let input = serde_json::json!({
        "source": format!("s3://{source}"), "destination": format!("s3://{destination}"),
        "max_shards": 1, "validate": false,
    });
    let checkpoint_key = format!(
        "{}{run_id}/{}",
        stack().env.config.report_prefix,
        checkpoint_name(Phase::Write, 0, 0)
    );
    let fault = match death {
        Death::HandingOut => Rule::on(Op::SendMessageBatch)
            .times(1)
            .respond(403, ACCESS_DENIED_XML),
        Death::CheckpointingAfter => Rule::on(Op::PutObject)
            .key(&checkpoint_key)
            .skip(1)
            .times(1)
            .respond(403, ACCESS_DENIED_XML),
    };
    let id = run_id.clone();
    let (first, retried, splits, checkpoints, totals) = stack()
        .runtime
        .spawn(async move {
            let (env, queue) =
                private_env_with(tag, |config| config.lister_max_keys = u64::MAX).await;
            let plan = planner::plan(&env, &id, &input).await.unwrap();
            assert_eq!(plan.shards, vec![0]);
            ranges::start_pass(&env, &id, Phase::Write, &[(0, None)])
                .await
                .unwrap();
            let task = take_all(&env, &queue).await.remove(0);
            stack().proxy.add_rule(fault);
            let first = take_range(&env, task.clone(), far(), &mut Tally::default()).await;
            let retried = take_range(&env, task, far(), &mut Tally::default()).await;
            let mut splits = 0;
            let mut pending = take_all(&env, &queue).await;
            while !pending.is_empty() {
                for task in std::mem::take(&mut pending) {
                    splits += 1;
                    take_range(&env, task, far(), &mut Tally::default())
                        .await
                        .unwrap();
                }
                pending = take_all(&env, &queue).await;
            }
            let checkpoints: Vec<Checkpoint> = env
                .store
                .get_all(&id, "sent/")
                .await
                .unwrap()
                .into_iter()
                .map(|(_, c)| c)
                .collect();
            let totals = env.counters().unwrap().totals(&id).await.unwrap();
            (first, retried, splits, checkpoints, totals)
        })
        .await
        .unwrap();
    assert!(first.is_err(), "the first lister dies: {first:?}");
    let Ok(Taken::HandedOn(next)) = &retried else {
        panic!("the retry lists its part and counts it done: {retried:?}");
    };
    assert!(next.done);
    // The retried range split once (its first attempt), before it died.
    let own = checkpoints
        .iter()
        .find(|c| c.shard == 0 && c.seq == 0)
        .expect("the range's checkpoint");
    assert_eq!(own.splits.len(), 1, "{:?}", own.splits);
    assert_eq!(
        own.range.as_ref().and_then(|r| r.end_before.clone()),
        own.splits[0].range.start_at,
        "the range ends where its split begins"
    );
    // Every range sent was listed to its end, once.
    let (sent, done) = totals.ranges(Phase::Write);
    assert_eq!(sent, done);
    assert!(sent >= 2, "{sent}");
    let ranges = checkpoints.iter().filter(|c| c.done).count() as u64;
    assert_eq!(ranges, sent, "a done checkpoint per range");
    // Every key listed and found equal once a side, by the run's counts
    let sum = |f: fn(&Checkpoint) -> u64| checkpoints.iter().map(f).sum::<u64>();
    assert_eq!(sum(|c| c.counts.listed_source), keys);
    assert_eq!(sum(|c| c.counts.listed_destination), keys);
    assert_eq!(sum(|c| c.counts.skip_equal), keys);
    // AND at the endpoint: each key served once, but for the pages a
    // range or an invocation ends inside (1,000 keys at most each), the
    // pages the dead lister had read ahead and the planner read, and,
    // where it died with keys listed since its last checkpoint, those
    // (ten pages at most)
    let served = &synthetic.counts()["keys"];
    let repeated = match death {
        Death::HandingOut => 0,
        Death::CheckpointingAfter => 10_000,
    };
    let partial = 1_000 * (ranges + checkpoints.len() as u64 + 4) + repeated;
    for bucket in [&source, &destination] {
        let listed = served[bucket.as_str()].as_u64().unwrap();
        assert!(
            (keys..=keys + partial).contains(&listed),
            "{bucket}: {listed} keys served for {keys}, {ranges} ranges, {splits} split tasks"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_recorded_by_a_lister_that_dies_handing_it_out_is_sent_by_its_retry() {
    a_split_survives_its_lister_dying(Death::HandingOut, "split-out", 60_000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lister_killed_after_handing_a_split_out_before_its_next_checkpoint_converges() {
    a_split_survives_its_lister_dying(Death::CheckpointingAfter, "split-after", 60_100).await;
}
