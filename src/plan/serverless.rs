//! What the same sync would cost on the serverless runtime: SQS messages,
//! Lambda invocations and GB-seconds, Step Functions state transitions,
//! and the wall time at a given copier concurrency.
//!
//! Counts follow `statemachine/sync.asl.json` and the functions' code:
//! - the planner once; a lister per shard, again per `lister_max_keys`
//!   keys, for WRITE and again for VALIDATE;
//! - a copier per `batch_size` messages of at most 100 tasks each
//!   (the real [`crate::serverless::batch::BatchBuilder`] cuts them);
//! - the reporter once per progress poll, whose wait grows 2 s per poll up
//!   to 60 s (`reporter::progress`), and once for the report.

use std::collections::BTreeMap;

use serde::Serialize;

use super::requests::{Requests, add};
use super::tally::BatchCost;
use crate::base::error::SyncError;
use crate::model::prices::{Assumptions, PriceTable};

/// The stack's settings the estimate depends on (the template's defaults).
#[derive(Debug, Clone, Serialize)]
pub struct StackShape {
    pub copier_concurrency: u64,
    pub copier_batch_size: u64,
    pub copier_task_concurrency: u64,
    pub shard_concurrency: u64,
    pub lister_max_keys: u64,
    pub architecture: String,
    pub validate: bool,
    /// The stack publishes each run's end to SNS (RunNotifications).
    pub notifications: bool,
}

/// What the plan measured and decided, the model's input.
pub struct Inputs<'a> {
    pub shards: u64,
    pub listed_source: u64,
    pub listed_destination: u64,
    /// The destination after the run (for VALIDATE's listing).
    pub destination_after: u64,
    /// Requests of the copies and deletes themselves, as the local
    /// runtime sends them (deletes a thousand to a DeleteObjects).
    pub transfer_requests: &'a Requests,
    pub batches: &'a [BatchCost],
    /// Requests the planner made to cut the shards (measured).
    pub planner_requests: &'a Requests,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerlessEstimate {
    pub stack: StackShape,
    pub shards: u64,
    pub s3_requests: Requests,
    pub sqs_messages: u64,
    pub sqs_requests: u64,
    pub lambda_invocations: BTreeMap<String, u64>,
    pub lambda_gb_seconds: BTreeMap<String, f64>,
    pub state_transitions: u64,
    pub cost_usd: BTreeMap<String, f64>,
    pub total_usd: f64,
    pub wall_secs: f64,
}

/// Reporter polls until `secs` have passed: waits of 2, 4, ... 60, 60 s.
fn progress_polls(secs: f64) -> u64 {
    let (mut polls, mut waited) = (1u64, 0.0);
    while waited < secs {
        waited += (2 * polls).min(60) as f64;
        polls += 1;
    }
    polls
}

/// Keys a lister handles between checkpoints (the stack's default
/// `S3_FANOUT_CHECKPOINT_KEYS`).
const CHECKPOINT_KEYS: u64 = 10_000;

/// Lister invocations for one pass over `keys` keys in `shards` shards.
fn lister_invocations(shards: u64, keys: u64, max_keys: u64) -> u64 {
    shards.max(1) + keys / max_keys.max(1)
}

/// ListObjectsV2 pages for one pass: each shard lists both sides; a shard's
/// last page is partial.
fn list_pages(shards: u64, source: u64, destination: u64) -> u64 {
    source.div_ceil(1000) + destination.div_ceil(1000) + shards.max(1)
}

/// What the run the plan measured would take and cost on `stack`.
pub fn estimate(
    stack: StackShape,
    inputs: Inputs<'_>,
    prices: &PriceTable,
) -> Result<ServerlessEstimate, SyncError> {
    let shards = inputs.shards.max(1);
    let batches = inputs.batches.len() as u64;
    let listers = lister_invocations(shards, inputs.listed_source, stack.lister_max_keys);
    // A shard whose write phase sent no batch is not listed again: with
    // none sent anywhere, VALIDATE is one invocation per shard that reads
    // what the write phase left and lists nothing.
    let validating = stack.validate && batches > 0;
    let run = Run {
        stack: &stack,
        inputs: &inputs,
        a: &prices.assumptions,
        shards,
        batches,
        copier_invocations: batches.div_ceil(stack.copier_batch_size.max(1)),
        listers,
        validators: match (stack.validate, validating) {
            (true, true) => listers,
            (true, false) => shards,
            (false, _) => 0,
        },
        validating,
    };
    let timing = run.timing();
    let s3 = run.s3_requests(timing.polls);
    let sqs_requests = run.sqs_requests(prices, &timing);
    let invocations = run.invocations(timing.polls);
    let gb_seconds = run.gb_seconds(&timing);
    let transitions = run.state_transitions(timing.polls);

    let total_invocations: u64 = invocations.values().sum();
    let gb_price = prices.lambda_gb_second(&stack.architecture)?;
    let mut cost = BTreeMap::new();
    cost.insert("s3_requests".to_owned(), prices.s3_requests(&s3)?);
    cost.insert(
        "sqs".to_owned(),
        sqs_requests as f64 / 1e6 * prices.sqs.per_million_requests,
    );
    cost.insert(
        "lambda".to_owned(),
        total_invocations as f64 / 1e6 * prices.lambda.per_million_requests
            + gb_seconds.values().sum::<f64>() * gb_price,
    );
    cost.insert(
        "step_functions".to_owned(),
        transitions as f64 / 1000.0 * prices.step_functions.per_1000_state_transitions,
    );
    let total_usd = cost.values().sum();
    Ok(ServerlessEstimate {
        stack,
        shards,
        s3_requests: s3,
        sqs_messages: batches,
        sqs_requests,
        lambda_invocations: invocations,
        lambda_gb_seconds: gb_seconds,
        state_transitions: transitions,
        cost_usd: cost,
        total_usd,
        wall_secs: timing.wall_secs,
    })
}

/// What every step of the estimate shares: the stack, the plan's figures
/// and the invocations they imply.
struct Run<'a> {
    stack: &'a StackShape,
    inputs: &'a Inputs<'a>,
    a: &'a Assumptions,
    shards: u64,
    batches: u64,
    copier_invocations: u64,
    /// Lister invocations of the WRITE pass, and of the VALIDATE pass (0
    /// without it).
    listers: u64,
    validators: u64,
    /// VALIDATE lists (some shard sent a batch).
    validating: bool,
}

/// How long the run takes.
struct Timing {
    /// Copier invocations' time, summed.
    copier_secs: f64,
    /// Reporter progress polls.
    polls: u64,
    wall_secs: f64,
}

impl Run<'_> {
    fn timing(&self) -> Timing {
        let (stack, inputs, a) = (self.stack, self.inputs, self.a);
        // Copier time: a batch's tasks run `copier_task_concurrency` at once,
        // never faster than its slowest one.
        let batch_secs: Vec<f64> = inputs
            .batches
            .iter()
            .map(|b| {
                (b.task_secs / stack.copier_task_concurrency.max(1) as f64).max(b.longest_task_secs)
                    + a.function_start_ms / 1000.0
            })
            .collect();
        let copier_secs: f64 = batch_secs.iter().sum();
        let list_secs = |keys: u64| {
            keys as f64 / (a.list_keys_per_second * self.shards.min(stack.shard_concurrency) as f64)
        };
        let write_list_secs = list_secs(inputs.listed_source + inputs.listed_destination);
        let copy_wall =
            copier_secs / stack.copier_concurrency.min(self.copier_invocations).max(1) as f64;
        let write_wall = write_list_secs.max(copy_wall);
        let polls = progress_polls(write_wall);
        let validate_list_secs = if self.validating {
            list_secs(inputs.listed_source + inputs.destination_after)
        } else {
            0.0
        };
        // Plan, the last poll's wait (half of it on average), validate, report.
        let last_wait = (2 * polls).min(60) as f64 / 2.0;
        Timing {
            copier_secs,
            polls,
            wall_secs: 2.0 + write_wall + last_wait + validate_list_secs + 2.0,
        }
    }

    /// S3: the copies, the listings, and the run's own state in the report
    /// bucket (a result per batch written, then read by the report; the
    /// results listed at each poll; a checkpoint per lister invocation).
    fn s3_requests(&self, polls: u64) -> Requests {
        let (inputs, shards, batches) = (self.inputs, self.shards, self.batches);
        let mut s3 = inputs.transfer_requests.clone();
        // A copier sends each message's deletes together (a message holds at
        // most 100 tasks): one DeleteObjects per batch with deletes, where the
        // local runtime sends one per thousand.
        s3.remove("DeleteObjects");
        let delete_batches = inputs.batches.iter().filter(|b| b.deletes > 0).count();
        add(&mut s3, "DeleteObjects", delete_batches as u64);
        for (op, n) in inputs.planner_requests {
            add(&mut s3, op, *n);
        }
        let mut pages = list_pages(shards, inputs.listed_source, inputs.listed_destination);
        if self.validating {
            pages += list_pages(shards, inputs.listed_source, inputs.destination_after);
        }
        pages += (polls + 1) * batches.div_ceil(1000).max(1);
        add(&mut s3, "ListObjectsV2", pages);
        // A checkpoint every ten pages of a pass, and one at each
        // invocation's end; with VALIDATE, what each shard's write phase
        // leaves it (a PUT, and VALIDATE's GET).
        let checkpoints = |keys: u64, invocations: u64| keys / CHECKPOINT_KEYS + invocations;
        let mut state_files = batches + checkpoints(inputs.listed_source, self.listers);
        if self.validating {
            state_files += checkpoints(inputs.listed_source, self.validators);
        } else {
            state_files += self.validators;
        }
        let handed_over = if self.stack.validate { shards } else { 0 };
        add(&mut s3, "PutObject", state_files + handed_over + 2);
        add(&mut s3, "GetObject", state_files + handed_over + 1);
        s3
    }

    /// SQS: sends of up to 10 messages, each 64 KiB of payload billed as a
    /// request; a receive and a delete per copier invocation; the
    /// mapping's idle polling for as long as the run lasts; a queue-depth
    /// read per poll.
    fn sqs_requests(&self, prices: &PriceTable, timing: &Timing) -> u64 {
        let chunk = prices.sqs.request_chunk_bytes.max(1);
        let chunks: u64 = self
            .inputs
            .batches
            .iter()
            .map(|b| b.body_bytes.div_ceil(chunk).max(1))
            .sum();
        let sends = chunks.max(self.batches.div_ceil(10));
        let idle_receives =
            (self.a.esm_idle_receives_per_minute * timing.wall_secs / 60.0).ceil() as u64;
        sends + chunks + self.copier_invocations + idle_receives + timing.polls
    }

    fn invocations(&self, polls: u64) -> BTreeMap<String, u64> {
        let mut invocations = BTreeMap::new();
        invocations.insert("planner".to_owned(), 1);
        invocations.insert("lister".to_owned(), self.listers + self.validators);
        invocations.insert("copier".to_owned(), self.copier_invocations);
        invocations.insert("reporter".to_owned(), polls + 1);
        invocations
    }

    fn gb_seconds(&self, timing: &Timing) -> BTreeMap<String, f64> {
        let (stack, inputs, a) = (self.stack, self.inputs, self.a);
        let start = a.function_start_ms / 1000.0;
        let gb = |mb: f64| mb / 1024.0;
        let mut gb_seconds = BTreeMap::new();
        gb_seconds.insert(
            "planner".to_owned(),
            gb(a.planner_memory_mb) * (start + 1.0),
        );
        let lister_secs = (inputs.listed_source + inputs.listed_destination) as f64
            / a.list_keys_per_second
            + if stack.validate {
                (inputs.listed_source + inputs.destination_after) as f64 / a.list_keys_per_second
            } else {
                0.0
            }
            + (self.listers + self.validators) as f64 * start;
        gb_seconds.insert("lister".to_owned(), gb(a.lister_memory_mb) * lister_secs);
        gb_seconds.insert(
            "copier".to_owned(),
            gb(a.copier_memory_mb) * timing.copier_secs,
        );
        gb_seconds.insert(
            "reporter".to_owned(),
            gb(a.reporter_memory_mb) * (timing.polls + 1) as f64 * (start + 0.2),
        );
        gb_seconds
    }

    /// States entered, following sync.asl.json: Plan, Write (the Map), per
    /// lister invocation ListShard + IsListShardDone and per shard
    /// ListShardDone, StartWaiting, per poll CheckProgress +
    /// AreAllBatchesDone and a WaitForCopies between polls, ShouldValidate,
    /// the same Map again for VALIDATE, Report, IsOverThreshold, then
    /// SyncedNotice and ShouldNotifySynced, NotifySynced when the stack
    /// publishes run notifications, and the end.
    fn state_transitions(&self, polls: u64) -> u64 {
        let map = |invocations: u64| 1 + 2 * invocations + self.shards;
        let mut transitions = 1 + map(self.listers) + 1 + 3 * polls - 1 + 1;
        if self.stack.validate {
            transitions += map(self.validators);
        }
        transitions + 5 + u64::from(self.stack.notifications)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_grow_to_a_minute() {
        assert_eq!(progress_polls(0.0), 1);
        assert_eq!(progress_polls(2.0), 2);
        // 2+4+...+60 = 930 s in 30 polls, then a minute each.
        assert_eq!(progress_polls(930.0), 31);
        assert_eq!(progress_polls(930.0 + 600.0), 41);
    }

    #[test]
    fn a_million_new_objects_cost_what_the_stack_would_spend() {
        let batch = BatchCost {
            tasks: 100,
            body_bytes: 20_000,
            task_secs: 8.0,
            longest_task_secs: 0.08,
            deletes: 0,
        };
        let batches = vec![batch; 10_000];
        let copies = Requests::from([("CopyObject".to_owned(), 1_000_000)]);
        let estimate = estimate(
            StackShape {
                copier_concurrency: 50,
                copier_batch_size: 1,
                copier_task_concurrency: 16,
                shard_concurrency: 16,
                lister_max_keys: 2_000_000,
                architecture: "arm64".into(),
                validate: true,
                notifications: false,
            },
            Inputs {
                shards: 64,
                listed_source: 1_000_000,
                listed_destination: 0,
                destination_after: 1_000_000,
                transfer_requests: &copies,
                batches: &batches,
                planner_requests: &Requests::new(),
            },
            &PriceTable::built_in(),
        )
        .unwrap();
        assert_eq!(estimate.sqs_messages, 10_000);
        assert_eq!(estimate.lambda_invocations["copier"], 10_000);
        // A million CopyObjects at $5 per million dominate.
        let s3 = estimate.cost_usd["s3_requests"];
        assert!((5.0..5.2).contains(&s3), "{s3}");
        // 10,000 batches of 0.55 s each over 50 copiers: under 2 minutes,
        // listing a million keys over 16 listers about 36 s.
        assert!(
            (100.0..400.0).contains(&estimate.wall_secs),
            "{}",
            estimate.wall_secs
        );
        assert!(estimate.total_usd < 6.0, "{}", estimate.total_usd);
    }

    #[test]
    fn a_copier_sends_one_delete_objects_per_message_with_deletes() {
        let batch = |deletes| BatchCost {
            tasks: 100,
            body_bytes: 10_000,
            task_secs: 2.0,
            longest_task_secs: 0.03,
            deletes,
        };
        let batches = [batch(100), batch(100), batch(40), batch(0)];
        // 240 deletes: the local runtime's one request per thousand.
        let transfer = Requests::from([
            ("HeadObject".to_owned(), 240),
            ("DeleteObjects".to_owned(), 1),
            ("CopyObject".to_owned(), 160),
        ]);
        let estimate = estimate(
            StackShape {
                copier_concurrency: 50,
                copier_batch_size: 1,
                copier_task_concurrency: 16,
                shard_concurrency: 16,
                lister_max_keys: 2_000_000,
                architecture: "arm64".into(),
                validate: false,
                notifications: false,
            },
            Inputs {
                shards: 1,
                listed_source: 160,
                listed_destination: 240,
                destination_after: 160,
                transfer_requests: &transfer,
                batches: &batches,
                planner_requests: &Requests::new(),
            },
            &PriceTable::built_in(),
        )
        .unwrap();
        assert_eq!(estimate.s3_requests["DeleteObjects"], 3);
        assert_eq!(estimate.s3_requests["HeadObject"], 240);
    }

    #[test]
    fn an_unchanged_night_lists_each_side_once_and_checkpoints_every_ten_pages() {
        let run = |keys: u64| {
            estimate(
                StackShape {
                    copier_concurrency: 50,
                    copier_batch_size: 1,
                    copier_task_concurrency: 16,
                    shard_concurrency: 16,
                    lister_max_keys: 2_000_000,
                    architecture: "arm64".into(),
                    validate: true,
                    notifications: false,
                },
                Inputs {
                    shards: 64,
                    listed_source: keys,
                    listed_destination: keys,
                    destination_after: keys,
                    transfer_requests: &Requests::new(),
                    batches: &[],
                    planner_requests: &Requests::new(),
                },
                &PriceTable::built_in(),
            )
            .unwrap()
        };
        let night = run(100_000_000);
        // One page per 1,000 keys a side, plus each shard's partial last
        // page, and a listing of the (empty) results per progress poll; no
        // second pass (VALIDATE would add 200,064).
        let listings = night.s3_requests["ListObjectsV2"];
        assert!((200_064..201_000).contains(&listings), "{listings}");
        // 100M keys: 10,000 checkpoints and one per invocation (64 shards,
        // 50 more for the 2M-key cap), 64 VALIDATE invocations that list
        // nothing, 64 hand-overs, and the run's own files.
        assert_eq!(night.s3_requests["PutObject"], 10_000 + 114 + 64 + 64 + 2);
        assert_eq!(night.lambda_invocations["lister"], 114 + 64);
    }
}
