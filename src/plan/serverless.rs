//! What the same sync would cost on the serverless runtime: SQS messages,
//! Lambda invocations and GB-seconds, Step Functions state transitions,
//! and the wall time at a given copier concurrency.
//!
//! Counts follow `statemachine/sync.asl.json` and the functions' code:
//! - the planner once; a lister per shard, again whenever an invocation
//!   reaches `lister_max_keys` keys or its deadline, for WRITE and, where
//!   a batch was sent, again for VALIDATE; each shard holds the keys the
//!   plan's own listing put between the planner's real cuts, and the Map
//!   runs `shard_concurrency` of them at once, in order, so the largest
//!   shard sets the listing's time;
//! - copies no faster than S3 takes writes under the busiest top-level
//!   prefix (3,500 a second while it is one partition);
//! - the run counters in DynamoDB: per batch a marker and a count when
//!   sent and when done, two timeline updates; two Queries per poll;
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
    /// Keys in each shard, from the plan's listing spread over the
    /// planner's cuts; empty: spread evenly.
    pub shard_keys: &'a [u64],
    /// Writes under the busiest top-level prefix.
    pub busiest_prefix_writes: u64,
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
    /// Events in the execution's history (Standard workflows stop at 25,000).
    pub history_events: u64,
    /// The run counters' write and read units (on-demand).
    pub dynamodb_write_units: u64,
    pub dynamodb_read_units: u64,
    /// Keys of the largest shard, and how long one pass lists.
    pub largest_shard_keys: u64,
    pub listing_secs: f64,
    /// The shortest time S3 takes the copies in, at its per-prefix rate.
    pub partition_bound_secs: f64,
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

/// One listing pass: its lister invocations, their time summed, and the
/// pass's wall time.
#[derive(Debug, Clone, Copy, Default)]
struct Pass {
    invocations: u64,
    lister_secs: f64,
    wall_secs: f64,
}

/// A pass listing `listed` keys (both sides) over shards of `shard_keys`
/// keys each: a shard's share of the listing goes to one invocation after
/// another, each ending at `max_keys` keys or `invocation_secs` of
/// listing; the Map runs `concurrency` shards at once, starting each in
/// order on the first lister free, as Step Functions does.
fn listing_pass(
    shard_keys: &[u64],
    listed: u64,
    (max_keys, concurrency): (u64, u64),
    a: &Assumptions,
) -> Pass {
    let total = shard_keys.iter().sum::<u64>().max(1) as f64;
    let start = a.function_start_ms / 1000.0;
    let mut free_at = vec![0.0f64; concurrency.max(1) as usize];
    let mut pass = Pass::default();
    for &keys in shard_keys {
        let shard_listed = listed as f64 * keys as f64 / total;
        let list_secs = shard_listed / a.list_keys_per_second;
        let by_keys = keys.div_ceil(max_keys.max(1));
        let by_time = (list_secs / a.lister_invocation_secs.max(1.0)).ceil() as u64;
        let invocations = by_keys.max(by_time).max(1);
        let secs = list_secs + invocations as f64 * start;
        pass.invocations += invocations;
        pass.lister_secs += secs;
        let first_free = free_at
            .iter_mut()
            .min_by(|x, y| x.total_cmp(y))
            .expect("at least one lister");
        *first_free += secs;
    }
    pass.wall_secs = free_at.into_iter().fold(0.0, f64::max);
    pass
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
    let a = &prices.assumptions;
    let shard_keys = shard_keys(&inputs, shards);
    let limits = (stack.lister_max_keys, stack.shard_concurrency);
    let write = listing_pass(
        &shard_keys,
        inputs.listed_source + inputs.listed_destination,
        limits,
        a,
    );
    // A shard whose write phase sent no batch is not listed again: with
    // none sent anywhere, VALIDATE is one invocation per shard that reads
    // what the write phase left and lists nothing.
    let validating = stack.validate && batches > 0;
    let validate = match (stack.validate, validating) {
        (true, true) => listing_pass(
            &shard_keys,
            inputs.listed_source + inputs.destination_after,
            limits,
            a,
        ),
        (true, false) => Pass {
            invocations: shards,
            lister_secs: shards as f64 * a.function_start_ms / 1000.0,
            wall_secs: 0.0,
        },
        (false, _) => Pass::default(),
    };
    let run = Run {
        stack: &stack,
        inputs: &inputs,
        a,
        shards,
        batches,
        copier_invocations: batches.div_ceil(stack.copier_batch_size.max(1)),
        listers: write.invocations,
        validators: validate.invocations,
        write,
        validate,
        validating,
    };
    let timing = run.timing();
    let s3 = run.s3_requests(timing.polls);
    let sqs_requests = run.sqs_requests(prices, &timing);
    let invocations = run.invocations(timing.polls);
    let gb_seconds = run.gb_seconds(&timing);
    let transitions = run.state_transitions(timing.polls);
    let history_events = run.history_events(timing.polls);
    let (write_units, read_units) = run.dynamodb_units(&timing);

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
    cost.insert(
        "dynamodb".to_owned(),
        write_units as f64 / 1e6 * prices.dynamodb.per_million_write_request_units
            + read_units as f64 / 1e6 * prices.dynamodb.per_million_read_request_units,
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
        history_events,
        dynamodb_write_units: write_units,
        dynamodb_read_units: read_units,
        largest_shard_keys: shard_keys.iter().copied().max().unwrap_or(0),
        listing_secs: write.wall_secs,
        partition_bound_secs: timing.partition_bound_secs,
        cost_usd: cost,
        total_usd,
        wall_secs: timing.wall_secs,
    })
}

/// Keys per shard: the plan's, or the listing spread evenly when it has
/// none for these shards.
fn shard_keys(inputs: &Inputs<'_>, shards: u64) -> Vec<u64> {
    if inputs.shard_keys.len() as u64 == shards && inputs.shard_keys.iter().any(|k| *k > 0) {
        return inputs.shard_keys.to_vec();
    }
    let keys = inputs.listed_source.max(inputs.listed_destination);
    (0..shards)
        .map(|i| keys / shards + u64::from(i < keys % shards))
        .collect()
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
    write: Pass,
    validate: Pass,
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
    /// The copies at S3's rate for the busiest top-level prefix.
    partition_bound_secs: f64,
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
        let partition_bound_secs =
            inputs.busiest_prefix_writes as f64 / a.s3_writes_per_second_per_prefix.max(1.0);
        let copy_wall = (copier_secs
            / stack.copier_concurrency.min(self.copier_invocations).max(1) as f64)
            .max(partition_bound_secs);
        let write_wall = self.write.wall_secs.max(copy_wall);
        // Progress is polled once the Write Map is done: only for the
        // copies still running then.
        let polls = progress_polls((copy_wall - self.write.wall_secs).max(0.0));
        let validate_list_secs = self.validate.wall_secs;
        // Plan, the last poll's wait (half of it on average), validate, report.
        let last_wait = (2 * polls).min(60) as f64 / 2.0;
        Timing {
            copier_secs,
            polls,
            wall_secs: 2.0 + write_wall + last_wait + validate_list_secs + 2.0,
            partition_bound_secs,
        }
    }

    /// S3: the copies, the listings, and the run's own state in the report
    /// bucket (a record per batch, never read back; the checkpoints, read
    /// once by the report; the folders it lists).
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
        let _ = polls; // progress reads the run counters, not the bucket
        add(&mut s3, "ListObjectsV2", pages);
        // A checkpoint every ten pages of a pass, and one at each
        // invocation's end; with VALIDATE, what each shard's write phase
        // leaves it (a PUT, and VALIDATE's GET).
        let checkpoints = self.checkpoints();
        let handed_over = if self.stack.validate { shards } else { 0 };
        // The report lists sent/, rows/ and validate/, a page per 1,000.
        add(&mut s3, "ListObjectsV2", checkpoints.div_ceil(1000) + 3);
        add(
            &mut s3,
            "PutObject",
            batches + checkpoints + handed_over + 2,
        );
        add(&mut s3, "GetObject", checkpoints + handed_over + 1);
        s3
    }

    /// Checkpoints written: one every ten pages of a pass, and one at each
    /// invocation's end; a VALIDATE that lists nothing writes one a shard.
    fn checkpoints(&self) -> u64 {
        let listed = self.inputs.listed_source;
        let mut checkpoints = listed / CHECKPOINT_KEYS + self.listers;
        checkpoints += if self.validating {
            listed / CHECKPOINT_KEYS + self.validators
        } else {
            self.validators
        };
        checkpoints
    }

    /// The run counters' write and read units. Per batch: a marker and its
    /// share of a count when sent (a transaction: two units an item), a
    /// marker and a count when done, and the two seconds of the timeline
    /// it adds to (plain updates, a unit each); per lister save that sent
    /// batches, a count. Per progress poll two consistent Queries of 128
    /// small counter items (about 26 KB: 7 units each); the report one more
    /// and its timeline (100 bytes a second copied).
    fn dynamodb_units(&self, timing: &Timing) -> (u64, u64) {
        let saves_with_batches = self.batches.min(self.checkpoints());
        let writes = self.batches * (2 + 4 + 2) + saves_with_batches * 2;
        let query = 7;
        let timeline = ((timing.wall_secs * 100.0) / 4096.0).ceil() as u64;
        let reads = timing.polls * 2 * query + query + timeline;
        (writes, reads)
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
        let a = self.a;
        let start = a.function_start_ms / 1000.0;
        let gb = |mb: f64| mb / 1024.0;
        let mut gb_seconds = BTreeMap::new();
        gb_seconds.insert(
            "planner".to_owned(),
            gb(a.planner_memory_mb) * (start + 1.0),
        );
        let lister_secs = self.write.lister_secs + self.validate.lister_secs;
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

    /// History events, as the execution records them (calibrated on moto's
    /// histories in `tests/serverless_scale.rs`: 101 shards listed by one
    /// invocation each, in WRITE and in a VALIDATE that lists nothing, made
    /// 2,261 events; 64 made 1,447 and 256 made 5,671): per Map pass 4 an
    /// iteration and 7 a lister invocation (ListShard's task events and its
    /// Choice), 9 a progress poll (CheckProgress, its Choice, the Wait),
    /// and 30 for the rest of the run.
    fn history_events(&self, polls: u64) -> u64 {
        let pass = |invocations: u64| 4 * self.shards + 7 * invocations;
        let mut events = 30 + 9 * polls + pass(self.listers);
        if self.stack.validate {
            events += pass(self.validators);
        }
        events
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

    /// 10,000 batches of 100 small copies (80 ms each), as a lister cuts them.
    fn a_million_small_copies() -> (Vec<BatchCost>, Requests) {
        let batch = BatchCost {
            tasks: 100,
            body_bytes: 20_000,
            task_secs: 8.0,
            longest_task_secs: 0.08,
            deletes: 0,
        };
        let copies = Requests::from([("CopyObject".to_owned(), 1_000_000)]);
        (vec![batch; 10_000], copies)
    }

    #[test]
    fn a_million_new_objects_cost_what_the_stack_would_spend() {
        let (batches, copies) = a_million_small_copies();
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
                shard_keys: &[],
                busiest_prefix_writes: 1_000_000 / 64,
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
                shard_keys: &[],
                busiest_prefix_writes: 400,
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
                    shard_keys: &[],
                    busiest_prefix_writes: 0,
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
        // 100M keys: 10,000 checkpoints and one per invocation (64 shards
        // of 3.1M keys listed at 1,750 a second: 30 minutes each, three
        // invocations of at most 780 s), 64 VALIDATE invocations that
        // list nothing, 64 hand-overs, and the run's own files.
        assert_eq!(night.s3_requests["PutObject"], 10_000 + 192 + 64 + 64 + 2);
        assert_eq!(night.lambda_invocations["lister"], 192 + 64);
        // AND 64 even shards, 16 at a time: four rounds of 30 minutes
        assert_eq!(night.largest_shard_keys, 1_562_500);
        assert!(
            (7_100.0..7_200.0).contains(&night.listing_secs),
            "{}",
            night.listing_secs
        );
        // AND nothing sent: progress reads the counters once, nothing is written there
        assert_eq!(night.dynamodb_write_units, 0);
        // AND the history: 64 iterations and 192 invocations, 64 and 64 in
        // VALIDATE, one poll
        assert_eq!(
            night.history_events,
            30 + 9 + (4 * 64 + 7 * 192) + (4 * 64 + 7 * 64)
        );
    }

    fn stack_of(shard_concurrency: u64) -> StackShape {
        StackShape {
            copier_concurrency: 50,
            copier_batch_size: 1,
            copier_task_concurrency: 16,
            shard_concurrency,
            lister_max_keys: 2_000_000,
            architecture: "arm64".into(),
            validate: true,
            notifications: false,
        }
    }

    #[test]
    fn the_largest_shard_sets_the_listings_time() {
        // GIVEN 100M unchanged keys in 256 shards, one holding 90M of them
        let mut skewed = vec![10_000_000 / 255; 255];
        skewed.push(90_000_000);
        let even = vec![100_000_000 / 256; 256];
        let night = |shard_keys: &[u64]| {
            estimate(
                stack_of(256),
                Inputs {
                    shards: 256,
                    shard_keys,
                    busiest_prefix_writes: 0,
                    listed_source: 100_000_000,
                    listed_destination: 100_000_000,
                    destination_after: 100_000_000,
                    transfer_requests: &Requests::new(),
                    batches: &[],
                    planner_requests: &Requests::new(),
                },
                &PriceTable::built_in(),
            )
            .unwrap()
        };
        let (skewed, even) = (night(&skewed), night(&even));
        // THEN even shards, all at once, list in under 8 minutes; the hot
        // one alone takes 180M keys at 1,750 a second: 29 hours, in 132
        // invocations of 780 s
        assert!(even.listing_secs < 8.0 * 60.0, "{}", even.listing_secs);
        assert!(
            skewed.listing_secs > 28.0 * 3600.0,
            "{}",
            skewed.listing_secs
        );
        assert_eq!(skewed.largest_shard_keys, 90_000_000);
        assert!(skewed.lambda_invocations["lister"] > even.lambda_invocations["lister"] + 100);
    }

    #[test]
    fn copies_into_one_prefix_wait_for_s3s_partition() {
        // GIVEN a million new objects, all under one top-level prefix, and
        // copiers enough to send 10,000 a second
        let (batches, copies) = a_million_small_copies();
        let run = |busiest_prefix_writes| {
            let mut stack = stack_of(64);
            stack.copier_concurrency = 1_000;
            estimate(
                stack,
                Inputs {
                    shards: 64,
                    shard_keys: &[],
                    busiest_prefix_writes,
                    listed_source: 1_000_000,
                    listed_destination: 0,
                    destination_after: 1_000_000,
                    transfer_requests: &copies,
                    batches: &batches,
                    planner_requests: &Requests::new(),
                },
                &PriceTable::built_in(),
            )
            .unwrap()
        };
        // THEN one prefix takes them at 3,500 a second: 286 s at least
        let one = run(1_000_000);
        assert!((285.0..286.0).contains(&one.partition_bound_secs));
        assert!(one.wall_secs > one.partition_bound_secs);
        // AND spread over 100 prefixes, the copiers set the pace
        let spread = run(10_000);
        assert!(
            spread.wall_secs < one.wall_secs / 2.0,
            "{} {}",
            spread.wall_secs,
            one.wall_secs
        );
        // AND each batch costs 8 write units of the run counters
        assert!(one.dynamodb_write_units >= 80_000);
        assert!(one.cost_usd["dynamodb"] < 0.1);
    }
}
